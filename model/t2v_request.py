"""What a caller may ask of a generated video: the parameter names and the bounds that
hold for every pipeline.

The one list of video parameters. The API validates requests with it (a value outside
these bounds is a 422, never a failed job), job records carry it, and
`model.t2v.params.resolve_params` checks the same names against the loaded pipeline's
own profile, which may be narrower (e.g. Wan takes only 4k+1 frames). Torch-free, and
outside `model.t2v` (whose package imports diffusers), so that the API can import it.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MAX_SEED = 2**32 - 1  # diffusers seeds a torch.Generator; numpy-backed schedulers take 32 bits
MAX_NEGATIVE_PROMPT_CHARS = 2000
MAX_NUM_FRAMES = 512  # above every built-in profile (LTX: 257)
MIN_SIZE, MAX_SIZE = 16, 2048
MAX_FPS = 60
MAX_STEPS = 200
MAX_GUIDANCE_SCALE = 50.0


def _integral_to_int(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def json_int(ge: int, le: int) -> Any:
    """An integer in [ge, le] as JSON Schema counts one: 8 or 8.0, never 8.5, true or "8"
    (in a strict model). The bounds sit inside the type so the JSON schema keeps them in
    an optional field too."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_integral_to_int)]


class VideoParams(BaseModel):
    """Per-job generation parameters; `None` means the pipeline's own default."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)  # no true for 1, no "8" for 8

    num_frames: json_int(1, MAX_NUM_FRAMES) | None = None
    height: json_int(MIN_SIZE, MAX_SIZE) | None = None
    width: json_int(MIN_SIZE, MAX_SIZE) | None = None
    fps: json_int(1, MAX_FPS) | None = None
    num_inference_steps: json_int(1, MAX_STEPS) | None = None
    guidance_scale: float | None = Field(default=None, ge=0.0, le=MAX_GUIDANCE_SCALE)
    negative_prompt: str | None = Field(default=None, max_length=MAX_NEGATIVE_PROMPT_CHARS)
    seed: json_int(0, MAX_SEED) | None = None
