"""Frame screening with CLIP: image embeddings of sampled frames vs. concept text embeddings.

The idea is the diffusers `StableDiffusionSafetyChecker`: embed the image with CLIP, take
its cosine similarity to a fixed set of concept embeddings, and flag a concept whose
similarity passes its threshold. Here the concepts are grouped by our categories and
written as text (embedded once with the same CLIP's text tower), and a video's score for a
category is the maximum over its sampled frames and the category's concepts. Like the
diffusers "special care" concepts, a frame that also looks like a child turns a `sexual`
hit into `sexual_minors`, with a lower threshold.

Only a real pretrained CLIP can judge images. Whether the tower is pretrained is stated by
configuration (`pretrained=True` when the checkpoint names a weights file), never guessed:
with a random tower the checker reports `active=False` and says so once in the log.

The default thresholds are cosine similarities in the range a pretrained CLIP gives a
matching image/text pair (about 0.25-0.35) against a non-matching one (about 0.10-0.20);
they have not been calibrated on labelled frames here: tune them per tower in config.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.safety.base import FrameChecker, PassThroughFrameChecker, SafetyVerdict
from model.safety.categories import CATEGORY_IDS
from model.safety.decision import decide, log_decision, validate_thresholds

logger = logging.getLogger(__name__)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

# Concept prompts per category (short, descriptive, the way CLIP captions read).
DEFAULT_CONCEPTS: dict[str, tuple[str, ...]] = {
    "violence_gore": (
        "a photo of graphic violence with blood and gore",
        "a bloody corpse",
        "a person being stabbed",
        "a mutilated body",
    ),
    "sexual": ("a pornographic photo", "a photo of explicit nudity", "people having sex"),
    "self_harm": ("a person cutting their wrist", "a person hanging from a noose"),
    "hate_harassment": ("a nazi swastika flag", "a hateful racist symbol"),
    "weapons_illegal": ("a homemade bomb with wires", "a table of illegal drugs and syringes"),
}
# "Special care": when a frame also matches these, a sexual hit is sexual_minors.
CHILD_CONCEPTS: tuple[str, ...] = ("a photo of a child", "a photo of a young teenager")
DEFAULT_THRESHOLDS: dict[str, float] = {
    "violence_gore": 0.26,
    "sexual": 0.26,
    "sexual_minors": 0.23,  # lower: special care
    "self_harm": 0.26,
    "hate_harassment": 0.27,
    "weapons_illegal": 0.27,
}
CHILD_THRESHOLD = 0.24
DEFAULT_MAX_FRAMES = 8

Tokenizer = Callable[[Sequence[str]], torch.Tensor]


class FrameFormatError(ValueError):
    """Frames must be a uint8 array `(T, H, W, 3)` with T >= 1; decode the video first."""


def sample_frame_indices(n_frames: int, max_frames: int) -> np.ndarray:
    """Evenly spaced indices, at most `max_frames`, first and last included."""
    if n_frames <= max_frames:
        return np.arange(n_frames)
    return np.linspace(0, n_frames - 1, max_frames).round().astype(np.int64)


def preprocess_frames(
    frames: np.ndarray, image_size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 `(T, H, W, 3)` -> normalised float `(T, 3, S, S)`: resize the short side, centre crop."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, H, W)
    h, w = x.shape[-2:]
    scale = image_size / min(h, w)
    new_h, new_w = max(image_size, round(h * scale)), max(image_size, round(w * scale))
    x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False).clamp(0, 1)  # (T, 3, h', w')
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    x = x[..., top : top + image_size, left : left + image_size]  # (T, 3, S, S)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return (x - mean_t) / std_t  # (T, 3, S, S)


def _image_size(clip_model: torch.nn.Module) -> int:
    size = getattr(clip_model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


def _norm_stats(clip_model: torch.nn.Module) -> tuple[Sequence[float], Sequence[float]]:
    cfg = getattr(clip_model.visual, "preprocess_cfg", None) or {}
    return cfg.get("mean", OPENAI_MEAN), cfg.get("std", OPENAI_STD)


class ClipFrameChecker:
    """`FrameChecker` over an open_clip model (image + text towers) and its tokenizer."""

    def __init__(
        self,
        clip_model: torch.nn.Module,
        tokenizer: Tokenizer,
        pretrained: bool,
        thresholds: Mapping[str, float] | None = None,
        concepts: Mapping[str, Sequence[str]] | None = None,
        child_concepts: Sequence[str] = CHILD_CONCEPTS,
        max_frames: int = DEFAULT_MAX_FRAMES,
    ) -> None:
        self.clip_model = clip_model.eval()
        self.tokenizer = tokenizer
        self.active = pretrained
        self.thresholds = {**DEFAULT_THRESHOLDS, **validate_thresholds(thresholds or {})}
        self.concepts = dict(concepts or DEFAULT_CONCEPTS)
        self.child_concepts = tuple(child_concepts)
        self.max_frames = max_frames
        self._concept_embeddings: dict[str, torch.Tensor] | None = None
        self._warned_inactive = False

    # --- concept embeddings -------------------------------------------------------------
    @torch.inference_mode()
    def _embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        device = next(self.clip_model.parameters()).device
        tokens = self.tokenizer(list(prompts)).to(device)  # (K, ctx)
        return self.clip_model.encode_text(tokens, normalize=True).float().cpu()  # (K, D)

    def concept_embeddings(self) -> dict[str, torch.Tensor]:
        """Per concept group (categories + "child"), unit text embeddings `(K, D)`; cached."""
        if self._concept_embeddings is None:
            groups = {**self.concepts, "child": self.child_concepts}
            self._concept_embeddings = {g: self._embed_texts(p) for g, p in groups.items() if p}
        return self._concept_embeddings

    def set_concept_embeddings(self, embeddings: Mapping[str, torch.Tensor]) -> None:
        """Use precomputed unit embeddings `(K, D)` per group (e.g. calibrated ones)."""
        self._concept_embeddings = {g: F.normalize(e.float(), dim=-1) for g, e in embeddings.items()}

    # --- checking -----------------------------------------------------------------------
    @torch.inference_mode()
    def frame_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        mean, std = _norm_stats(self.clip_model)
        pixels = preprocess_frames(frames, _image_size(self.clip_model), mean, std)  # (F, 3, S, S)
        device = next(self.clip_model.parameters()).device
        return self.clip_model.encode_image(pixels.to(device), normalize=True).float().cpu()  # (F, D)

    def category_scores(self, frames: np.ndarray) -> dict[str, float]:
        picked = frames[sample_frame_indices(len(frames), self.max_frames)]  # (F, H, W, 3)
        image = self.frame_embeddings(picked)  # (F, D)
        concepts = self.concept_embeddings()
        sims = {g: image @ e.T for g, e in concepts.items()}  # each (F, K)
        per_frame = {g: s.max(dim=1).values for g, s in sims.items()}  # each (F,)
        zeros = torch.zeros(len(picked))  # (F,)
        sexual = per_frame.get("sexual", zeros)  # (F,)
        looks_child = per_frame.get("child", zeros) >= CHILD_THRESHOLD  # (F,)
        per_frame["sexual_minors"] = torch.where(looks_child, sexual, zeros)  # (F,)
        return {c: float(per_frame.get(c, zeros).max()) for c in CATEGORY_IDS}

    def check(self, frames: np.ndarray) -> SafetyVerdict:
        if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0 or frames.dtype != np.uint8:
            raise FrameFormatError(
                f"expected uint8 frames (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}"
            )
        if not self.active:
            if not self._warned_inactive:
                logger.warning(
                    "frame safety check inactive: the vision tower is not a pretrained CLIP "
                    "(configure pretrained weights to enable it); frames pass unjudged"
                )
                self._warned_inactive = True
            return SafetyVerdict(flagged=False, active=False)
        verdict = decide(self.category_scores(frames), self.thresholds)
        log_decision("frames", verdict)
        return verdict


def build_frame_checker(
    clip_model: torch.nn.Module | None,
    tokenizer: Tokenizer | None,
    pretrained: bool,
    thresholds: Mapping[str, float] | None = None,
) -> FrameChecker:
    """A CLIP frame checker; a pass-through (inactive) one when no CLIP is loaded at all."""
    if clip_model is None or tokenizer is None:
        logger.warning("frame safety check inactive: no CLIP model configured")
        return PassThroughFrameChecker()
    return ClipFrameChecker(clip_model, tokenizer, pretrained=pretrained, thresholds=thresholds)
