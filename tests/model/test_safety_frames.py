"""The CLIP frame checker on a tiny random open_clip model built from a config.

What this proves: the inactive path is decided by configuration (a random tower with
`pretrained=False` judges nothing and says so, even though its raw scores are high), and
the active path's mechanics (frame sampling, preprocessing, image embedding, max over
frames and concepts, thresholds, category choice) work end to end. What it cannot prove:
that the default concepts and thresholds catch real harmful frames - that needs a real
pretrained CLIP and labelled frames.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import open_clip
import pytest
import torch

from model.safety.base import PassThroughFrameChecker
from model.safety.frames import (
    ClipFrameChecker,
    FrameFormatError,
    build_frame_checker,
    preprocess_frames,
    sample_frame_indices,
)
from model.safety.policy import screen_frames

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_clip")
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP}))
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{directory}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{directory}")
    return model, tokenizer


def noise_frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 40, 56, 3), dtype=np.uint8)


def test_random_tower_reports_inactive_and_logs_once(tiny_clip, caplog) -> None:
    model, tokenizer = tiny_clip
    checker = build_frame_checker(model, tokenizer, pretrained=False)
    # The same random tower scores noise far above the thresholds: only the configuration
    # keeps it from pretending to judge.
    assert max(ClipFrameChecker(model, tokenizer, pretrained=True).category_scores(noise_frames(4)).values()) > 0.3
    with caplog.at_level(logging.INFO, logger="model.safety"):
        first = checker.check(noise_frames(4))
        second = checker.check(noise_frames(2, seed=1))
    assert first.active is False and first.flagged is False and second.active is False
    inactive_lines = [r for r in caplog.records if "inactive" in r.getMessage()]
    assert len(inactive_lines) == 1


def test_no_clip_at_all_gives_pass_through() -> None:
    checker = build_frame_checker(None, None, pretrained=True)
    assert isinstance(checker, PassThroughFrameChecker)
    assert screen_frames(checker, noise_frames(1)).active is False


def _constructed_checker(model, tokenizer, target: np.ndarray, threshold: float) -> ClipFrameChecker:
    """Active checker whose violence concept is the embedding of `target` and whose other
    concepts point the opposite way, so only `target`-like frames can be flagged."""
    checker = ClipFrameChecker(
        model, tokenizer, pretrained=True, thresholds={"violence_gore": threshold}
    )
    anchor = checker.frame_embeddings(target)  # (1, D)
    concepts = {g: -anchor for g in ("sexual", "self_harm", "hate_harassment", "weapons_illegal", "child")}
    checker.set_concept_embeddings({"violence_gore": anchor, **concepts})
    return checker


def test_active_path_flags_the_frame_matching_a_concept(tiny_clip, caplog) -> None:
    model, tokenizer = tiny_clip
    target = noise_frames(1, seed=7)
    black = np.zeros((5, 40, 56, 3), dtype=np.uint8)
    checker = _constructed_checker(model, tokenizer, target, threshold=0.999)
    clean = checker.check(black)
    assert clean.active and not clean.flagged and clean.scores["violence_gore"] < 0.999
    video = np.concatenate([black[:2], target, black[2:]])  # the target hidden mid-video
    with caplog.at_level(logging.INFO, logger="model.safety"):
        verdict = checker.check(video)
    assert verdict.active and verdict.flagged and verdict.category == "violence_gore"
    assert verdict.score == pytest.approx(1.0, abs=1e-4)
    assert verdict.scores["sexual"] < 0 and verdict.scores["sexual_minors"] == 0.0
    decision = [r for r in caplog.records if "safety decision" in r.getMessage()][-1]
    assert decision.safety_category == "violence_gore" and decision.safety_score > 0.99


def test_thresholds_from_config_change_the_frame_decision(tiny_clip) -> None:
    model, tokenizer = tiny_clip
    target = noise_frames(1, seed=7)
    black = np.zeros((3, 40, 56, 3), dtype=np.uint8)
    score = _constructed_checker(model, tokenizer, target, 0.999).check(black).scores["violence_gore"]
    lenient = _constructed_checker(model, tokenizer, target, threshold=max(0.01, score - 0.01))
    assert lenient.check(black).flagged


def test_sampling_and_preprocessing() -> None:
    assert sample_frame_indices(3, 8).tolist() == [0, 1, 2]
    picked = sample_frame_indices(100, 8)
    assert len(picked) == 8 and picked[0] == 0 and picked[-1] == 99
    pixels = preprocess_frames(noise_frames(2), 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert pixels.shape == (2, 3, 32, 32) and pixels.min() >= -1.0 and pixels.max() <= 1.0


def test_bad_frames_are_rejected(tiny_clip) -> None:
    model, tokenizer = tiny_clip
    checker = build_frame_checker(model, tokenizer, pretrained=True)
    with pytest.raises(FrameFormatError, match="uint8"):
        checker.check(np.zeros((2, 8, 8), dtype=np.uint8))
