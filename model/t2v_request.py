"""What a caller may ask of a generated video: the parameter names and the bounds that
hold for every pipeline.

The one list of video parameters. The API validates requests with it (a value outside
these bounds is a 422, never a failed job), job records carry it, and
`model.t2v.params.resolve_params` checks the same names against the loaded pipeline's
own profile, which may be narrower (e.g. Wan takes only 4k+1 frames). Torch-free, and
outside `model.t2v` (whose package imports diffusers), so that the API can import it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_SEED = 2**32 - 1  # diffusers seeds a torch.Generator; numpy-backed schedulers take 32 bits
MAX_NEGATIVE_PROMPT_CHARS = 2000
MAX_NUM_FRAMES = 512  # above every built-in profile (LTX: 257)
MIN_SIZE, MAX_SIZE = 16, 2048
MAX_FPS = 60
MAX_STEPS = 200
MAX_GUIDANCE_SCALE = 50.0


class VideoParams(BaseModel):
    """Per-job generation parameters; `None` means the pipeline's own default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_frames: int | None = Field(default=None, ge=1, le=MAX_NUM_FRAMES)
    height: int | None = Field(default=None, ge=MIN_SIZE, le=MAX_SIZE)
    width: int | None = Field(default=None, ge=MIN_SIZE, le=MAX_SIZE)
    fps: int | None = Field(default=None, ge=1, le=MAX_FPS)
    num_inference_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    guidance_scale: float | None = Field(default=None, ge=0.0, le=MAX_GUIDANCE_SCALE)
    negative_prompt: str | None = Field(default=None, max_length=MAX_NEGATIVE_PROMPT_CHARS)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
