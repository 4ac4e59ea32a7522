"""Per-pipeline defaults and limits for video generation parameters.

A profile is data: built-in profiles are keyed by the exact diffusers pipeline class
name that `model_index.json` names, and a pipeline directory may carry its own
`g4v_t2v_profile.json` whose keys override the built-in ones (the tiny pipeline does).
Unknown pipeline classes get a conservative generic profile.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

from model.t2v.errors import T2VConfigError

PROFILE_FILENAME = "g4v_t2v_profile.json"


@dataclass(frozen=True)
class PipelineProfile:
    """Defaults a job gets when it leaves a parameter out, and the bounds it must respect."""

    # Frame count: num_frames == frames_offset + k * frames_step (Wan/CogVideoX: 4k+1,
    # LTX: 8k+1, because their VAEs compress time by 4 or 8).
    default_num_frames: int = 16
    min_num_frames: int = 1
    max_num_frames: int = 64
    frames_step: int = 1
    frames_offset: int = 0
    # Spatial size: both sides a multiple of size_multiple (VAE downsampling x patching).
    default_height: int = 256
    default_width: int = 256
    min_size: int = 64
    max_size: int = 1024
    size_multiple: int = 8
    # Playback rate written into the MP4; the model's training fps is the natural default.
    default_fps: int = 8
    max_fps: int = 60
    # Denoising.
    default_steps: int = 25
    max_steps: int = 150
    default_guidance_scale: float = 7.5
    max_guidance_scale: float = 30.0

    def frames_allowed(self, num_frames: int) -> bool:
        in_range = self.min_num_frames <= num_frames <= self.max_num_frames
        return in_range and (num_frames - self.frames_offset) % self.frames_step == 0


# Keys are exact `_class_name` values from model_index.json; sizes follow each model card.
BUILTIN_PROFILES: dict[str, PipelineProfile] = {
    # ModelScope text-to-video / ZeroScope (UNet3D, SD VAE: /8 spatial, no time compression).
    "TextToVideoSDPipeline": PipelineProfile(
        default_num_frames=16, max_num_frames=64, default_height=256, default_width=256,
        size_multiple=8, default_fps=8, default_steps=25, default_guidance_scale=9.0,
    ),
    # Wan 2.1/2.2: VAE /8 spatial /4 temporal, transformer patch 2 -> multiples of 16.
    "WanPipeline": PipelineProfile(
        default_num_frames=81, min_num_frames=5, max_num_frames=161, frames_step=4,
        frames_offset=1, default_height=480, default_width=832, min_size=128, max_size=1280,
        size_multiple=16, default_fps=16, default_steps=50, default_guidance_scale=5.0,
    ),
    # LTX-Video: VAE /32 spatial /8 temporal.
    "LTXPipeline": PipelineProfile(
        default_num_frames=161, min_num_frames=9, max_num_frames=257, frames_step=8,
        frames_offset=1, default_height=512, default_width=704, min_size=128, max_size=1280,
        size_multiple=32, default_fps=24, default_steps=50, default_guidance_scale=3.0,
    ),
    # CogVideoX: VAE /8 spatial /4 temporal, patch 2.
    "CogVideoXPipeline": PipelineProfile(
        default_num_frames=49, min_num_frames=5, max_num_frames=81, frames_step=4,
        frames_offset=1, default_height=480, default_width=720, min_size=128, max_size=1360,
        size_multiple=16, default_fps=8, default_steps=50, default_guidance_scale=6.0,
    ),
}

GENERIC_PROFILE = PipelineProfile()


def profile_for(pipeline_class: str, model_dir: Path | None = None) -> PipelineProfile:
    """The built-in profile for `pipeline_class`, overridden by the directory's profile file."""
    profile = BUILTIN_PROFILES.get(pipeline_class, GENERIC_PROFILE)
    if model_dir is None or not (model_dir / PROFILE_FILENAME).is_file():
        return profile
    return replace(profile, **read_profile_overrides(model_dir / PROFILE_FILENAME))


def read_profile_overrides(path: Path) -> dict[str, int | float]:
    try:
        overrides = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise T2VConfigError(f"cannot read pipeline profile {path}: {exc}; fix or delete it") from exc
    if not isinstance(overrides, dict):
        raise T2VConfigError(f"pipeline profile {path} must be a JSON object")
    known = {f.name for f in fields(PipelineProfile)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise T2VConfigError(
            f"pipeline profile {path} has unknown keys {unknown}; allowed: {sorted(known)}"
        )
    return overrides


def write_profile(model_dir: Path, profile: PipelineProfile) -> Path:
    """Save every field of `profile` next to a pipeline so it travels with the weights."""
    path = model_dir / PROFILE_FILENAME
    path.write_text(json.dumps({f.name: getattr(profile, f.name) for f in fields(profile)}, indent=2))
    return path
