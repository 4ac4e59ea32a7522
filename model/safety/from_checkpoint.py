"""Frame checkers built from a GPT4Video checkpoint's own CLIP tower.

The checker is active only when the checkpoint says its tower is a real pretrained
CLIP (`vision.pretrained: true`); otherwise it is the pass-through, which reports
`active=False` (tiny and shapes-trained towers cannot judge real images).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from model.safety.base import FrameChecker, PassThroughFrameChecker
from model.safety.frames import build_frame_checker

log = logging.getLogger(__name__)


def frame_checker_for_model(model, thresholds: Mapping[str, float] | None = None) -> FrameChecker:
    """Reuse a loaded model's tower (the LLM worker screens uploads with it)."""
    from model.vision import clip_tokenizer

    config = model.config
    if not config.vision.pretrained:
        log.info("upload frame screening inactive: the checkpoint's vision tower is not a pretrained CLIP")
        return PassThroughFrameChecker()
    tokenizer = clip_tokenizer(config.vision, Path(model.checkpoint_dir))
    return build_frame_checker(model.vision.clip, tokenizer, pretrained=True, thresholds=thresholds)


def frame_checker_for_checkpoint(
    model_dir: Path, device: str = "cpu", thresholds: Mapping[str, float] | None = None
) -> FrameChecker:
    """Load only the CLIP tower of a checkpoint (the t2v worker screens generated frames)."""
    from model.checkpoint import read_config
    from model.vision import clip_tokenizer, create_clip

    config = read_config(model_dir)
    if not config.vision.pretrained:
        log.warning("generated-frame screening inactive: the checkpoint at %s has no pretrained CLIP; "
                    "frames pass unjudged", model_dir)
        return PassThroughFrameChecker()
    clip = create_clip(config.vision, model_dir, device=device)
    return build_frame_checker(clip, clip_tokenizer(config.vision, model_dir), pretrained=True, thresholds=thresholds)


def from_settings() -> FrameChecker:
    """Factory for `T2V_FRAME_CHECKER=model.safety.from_checkpoint:from_settings`: the CLIP
    of the LLM checkpoint the service is configured with (MODEL_DIR or the local default)."""
    from gpt4video.defaults import SHIPPED_CHECKPOINT
    from gpt4video.settings import load_settings

    settings = load_settings()
    model_dir = settings.model_dir or (SHIPPED_CHECKPOINT if SHIPPED_CHECKPOINT.is_dir() else None)
    if model_dir is None:  # the tiny random checkpoint: no pretrained CLIP by construction
        log.warning("generated-frame screening inactive: no checkpoint with a pretrained CLIP configured")
        return PassThroughFrameChecker()
    return frame_checker_for_checkpoint(model_dir, device=settings.t2v_device,
                                        thresholds=settings.safety_frame_thresholds)
