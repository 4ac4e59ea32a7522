"""A loaded diffusers text-to-video pipeline: validate a job's parameters, render frames.

Any pipeline `DiffusionPipeline.from_pretrained` can load plugs in (ModelScope/ZeroScope
TextToVideoSDPipeline, Wan, LTX-Video, CogVideoX, ...): the class comes from the
directory's model_index.json, its defaults and limits from `model.t2v.profiles`, and the
arguments we pass are checked against the pipeline's own `__call__` signature.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline

from model.t2v.errors import T2VConfigError, T2VModelNotFound
from model.t2v.params import ResolvedVideoParams, resolve_params
from model.t2v.profiles import PipelineProfile, profile_for

log = logging.getLogger(__name__)

StepCallback = Callable[[int, int], None]  # (steps done, total steps)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class MemoryOptions:
    """Memory savers; each maps to one diffusers switch and fails loudly where it cannot apply."""

    cpu_offload: bool = False  # enable_model_cpu_offload: needs an accelerator device
    vae_slicing: bool = False  # decode one video/frame batch slice at a time
    vae_tiling: bool = False  # decode in spatial tiles (large resolutions)


class T2VBackend:
    """Holds one resident pipeline; `validate` then `generate` per job."""

    def __init__(self, pipeline: DiffusionPipeline, profile: PipelineProfile) -> None:
        self.pipeline = pipeline
        self.profile = profile
        self.pipeline_class = type(pipeline).__name__
        self._call_args = frozenset(inspect.signature(pipeline.__call__).parameters)
        pipeline.set_progress_bar_config(disable=True)

    # 1. Loading -------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        model_dir: Path,
        device: str = "cpu",
        dtype: str = "float32",
        options: MemoryOptions | None = None,
    ) -> T2VBackend:
        """Load the pipeline in `model_dir` (local files only) onto `device` in `dtype`."""
        options = options or MemoryOptions()
        model_dir = Path(model_dir)
        if not (model_dir / "model_index.json").is_file():
            raise T2VModelNotFound(
                f"{model_dir} is not a diffusers pipeline directory (no model_index.json); "
                "set T2V_MODEL_DIR to a pipeline saved with save_pretrained, or leave it empty "
                "to use the tiny pipeline"
            )
        if dtype not in DTYPES:
            raise T2VConfigError(f"T2V_DTYPE={dtype!r} is not one of {sorted(DTYPES)}")
        if options.cpu_offload and torch.device(device).type == "cpu":
            raise T2VConfigError(
                "T2V_CPU_OFFLOAD needs an accelerator device; set T2V_DEVICE=cuda or turn it off"
            )
        pipeline = DiffusionPipeline.from_pretrained(
            model_dir, dtype=DTYPES[dtype], local_files_only=True
        )
        _place(pipeline, device, options)
        profile = profile_for(type(pipeline).__name__, model_dir)
        log.info("loaded %s from %s on %s (%s)", type(pipeline).__name__, model_dir, device, dtype)
        return cls(pipeline, profile)

    # 2. Parameters ----------------------------------------------------------------------
    def validate(self, requested: Mapping[str, Any]) -> ResolvedVideoParams:
        """Complete `requested` with this pipeline's defaults; raise `InvalidVideoParams`."""
        return resolve_params(
            requested,
            self.profile,
            pipeline_class=self.pipeline_class,
            supports_negative_prompt="negative_prompt" in self._call_args,
        )

    # 3. Generation ----------------------------------------------------------------------
    @torch.inference_mode()
    def generate(
        self, caption: str, params: ResolvedVideoParams, on_step: StepCallback | None = None
    ) -> np.ndarray:
        """Render `caption`; return frames `(T, H, W, 3)` uint8. `on_step(i, N)` after step i."""
        kwargs: dict[str, Any] = {
            "prompt": caption,
            "num_frames": params.num_frames,
            "height": params.height,
            "width": params.width,
            "num_inference_steps": params.num_inference_steps,
            "guidance_scale": params.guidance_scale,
            "generator": torch.Generator(device="cpu").manual_seed(params.seed),
            "output_type": "np",
        }
        if params.negative_prompt is not None:
            kwargs["negative_prompt"] = params.negative_prompt
        if on_step is not None:
            kwargs.update(self._progress_kwargs(on_step, params.num_inference_steps))
        output = self.pipeline(**kwargs)
        frames = to_uint8_frames(output.frames)  # (T, H, W, 3)
        if frames.shape[0] != params.num_frames:
            log.warning("%s returned %d frames for num_frames=%d", self.pipeline_class,
                        frames.shape[0], params.num_frames)
        return frames

    def _progress_kwargs(self, on_step: StepCallback, total: int) -> dict[str, Any]:
        """Progress hook in whichever form this pipeline's __call__ accepts."""
        if "callback_on_step_end" in self._call_args:
            def on_step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
                on_step(step + 1, total)
                return tensors

            return {"callback_on_step_end": on_step_end}
        if "callback" in self._call_args:  # older pipelines, e.g. TextToVideoSDPipeline
            def legacy_callback(step: int, timestep: Any, latents: torch.Tensor) -> None:
                on_step(step + 1, total)

            return {"callback": legacy_callback, "callback_steps": 1}
        log.warning("%s takes no step callback; progress jumps from 0 to done", self.pipeline_class)
        return {}


def _place(pipeline: DiffusionPipeline, device: str, options: MemoryOptions) -> None:
    vae = getattr(pipeline, "vae", None)
    for enabled, method, setting in ((options.vae_slicing, "enable_slicing", "T2V_VAE_SLICING"),
                                     (options.vae_tiling, "enable_tiling", "T2V_VAE_TILING")):
        if not enabled:
            continue
        if vae is None or not hasattr(vae, method):
            raise T2VConfigError(f"{setting} is on but this pipeline's VAE has no {method}(); "
                                 "turn the setting off")
        getattr(vae, method)()
    if options.cpu_offload:
        pipeline.enable_model_cpu_offload(device=device)
    else:
        pipeline.to(device)


def to_uint8_frames(frames: Any) -> np.ndarray:
    """Pipeline output (batch of one video, floats in [0, 1]) -> `(T, H, W, 3)` uint8."""
    if isinstance(frames, torch.Tensor):
        frames = frames.float().cpu().numpy()
    first_video = frames[0]  # batch of one: list of frames/PIL images, or (T, H, W, 3)
    frames = np.stack([np.asarray(frame) for frame in first_video])  # (T, H, W, 3)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)  # (T, H, W, 3)
