"""What every safety check returns, and the frame-check interface the t2v worker calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class SafetyVerdict:
    flagged: bool
    category: str | None = None  # the highest-scoring category over its threshold
    score: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)
    active: bool = True  # False: the checker could not judge (e.g. random vision tower)


class FrameChecker(Protocol):
    """Screens decoded frames `(T, H, W, 3)` uint8 before a video is served."""

    def check(self, frames: np.ndarray) -> SafetyVerdict: ...


class PassThroughFrameChecker:
    """Flags nothing and says so (`active=False`). Used when no real CLIP is configured."""

    def check(self, frames: np.ndarray) -> SafetyVerdict:
        return SafetyVerdict(flagged=False, active=False)
