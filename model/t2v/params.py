"""Turn a job's requested parameters into complete, checked generation parameters."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from model.t2v.errors import InvalidVideoParams
from model.t2v.profiles import PipelineProfile
from model.t2v_request import MAX_NEGATIVE_PROMPT_CHARS, MAX_SEED, VideoParams

REQUEST_KEYS = frozenset(VideoParams.model_fields)


@dataclass(frozen=True)
class ResolvedVideoParams:
    """Every value a generation needs; nothing left to a pipeline default."""

    num_frames: int
    height: int
    width: int
    fps: int
    num_inference_steps: int
    guidance_scale: float
    negative_prompt: str | None
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_params(
    requested: Mapping[str, Any],
    profile: PipelineProfile,
    *,
    pipeline_class: str,
    supports_negative_prompt: bool,
) -> ResolvedVideoParams:
    """Fill defaults from `profile` and check bounds; raise `InvalidVideoParams` naming the field."""
    unknown = sorted(set(requested) - REQUEST_KEYS)
    if unknown:
        raise InvalidVideoParams(
            unknown[0], f"unknown video parameter(s) {unknown}; allowed: {sorted(REQUEST_KEYS)}"
        )
    given = {k: v for k, v in requested.items() if v is not None}
    num_frames = _int(given, "num_frames", profile.default_num_frames)
    if not profile.frames_allowed(num_frames):
        rule = "" if profile.frames_step == 1 else (
            f" and of the form {profile.frames_offset} + {profile.frames_step}*k"
        )
        raise InvalidVideoParams(
            "num_frames",
            f"num_frames={num_frames} is not supported by {pipeline_class}: it must be between "
            f"{profile.min_num_frames} and {profile.max_num_frames}{rule}",
        )
    height = _size(given, "height", profile.default_height, profile, pipeline_class)
    width = _size(given, "width", profile.default_width, profile, pipeline_class)
    fps = _bounded_int(given, "fps", profile.default_fps, 1, profile.max_fps, pipeline_class)
    steps = _bounded_int(given, "num_inference_steps", profile.default_steps, 1,
                         profile.max_steps, pipeline_class)
    guidance = _guidance(given, profile, pipeline_class)
    negative_prompt = _negative_prompt(given, supports_negative_prompt, pipeline_class)
    seed = _bounded_int(given, "seed", secrets.randbelow(MAX_SEED + 1), 0, MAX_SEED, pipeline_class)
    return ResolvedVideoParams(
        num_frames=num_frames, height=height, width=width, fps=fps, num_inference_steps=steps,
        guidance_scale=guidance, negative_prompt=negative_prompt, seed=seed,
    )


def _int(given: Mapping[str, Any], name: str, default: int) -> int:
    value = given.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidVideoParams(name, f"{name} must be an integer, got {value!r}")
    return value


def _bounded_int(given: Mapping[str, Any], name: str, default: int, low: int, high: int,
                 pipeline_class: str) -> int:
    value = _int(given, name, default)
    if not low <= value <= high:
        raise InvalidVideoParams(
            name, f"{name}={value} is out of range for {pipeline_class}: allowed {low}..{high}"
        )
    return value


def _size(given: Mapping[str, Any], name: str, default: int, profile: PipelineProfile,
          pipeline_class: str) -> int:
    value = _int(given, name, default)
    low, high, multiple = profile.min_size, profile.max_size, profile.size_multiple
    if not low <= value <= high or value % multiple:
        raise InvalidVideoParams(
            name, f"{name}={value} is not supported by {pipeline_class}: it must be a multiple "
                  f"of {multiple} between {low} and {high}",
        )
    return value


def _guidance(given: Mapping[str, Any], profile: PipelineProfile, pipeline_class: str) -> float:
    value = given.get("guidance_scale", profile.default_guidance_scale)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidVideoParams("guidance_scale", f"guidance_scale must be a number, got {value!r}")
    if not 0.0 <= value <= profile.max_guidance_scale:
        raise InvalidVideoParams(
            "guidance_scale",
            f"guidance_scale={value} is out of range for {pipeline_class}: "
            f"allowed 0..{profile.max_guidance_scale}",
        )
    return float(value)


def _negative_prompt(given: Mapping[str, Any], supported: bool, pipeline_class: str) -> str | None:
    value = given.get("negative_prompt")
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NEGATIVE_PROMPT_CHARS:
        raise InvalidVideoParams(
            "negative_prompt",
            f"negative_prompt must be text of at most {MAX_NEGATIVE_PROMPT_CHARS} characters",
        )
    if not supported:
        raise InvalidVideoParams(
            "negative_prompt", f"{pipeline_class} does not accept a negative_prompt; leave it out"
        )
    return value
