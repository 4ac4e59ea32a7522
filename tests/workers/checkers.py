"""Frame checkers injected into test workers through T2V_FRAME_CHECKER / --frame-checker."""

from __future__ import annotations

import numpy as np

from model.safety.base import SafetyVerdict


class FlagEverythingChecker:
    """Flags every video; the category records the shape it was shown, so tests can see it."""

    def check(self, frames: np.ndarray) -> SafetyVerdict:
        shape = "x".join(str(n) for n in frames.shape)
        return SafetyVerdict(flagged=True, category=f"test-flag-{shape}", score=1.0)


def flag_everything() -> FlagEverythingChecker:
    return FlagEverythingChecker()
