"""Turning per-category scores into a verdict, and logging it without the content."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from model.safety.base import SafetyVerdict
from model.safety.categories import CATEGORY_IDS, UnknownCategoryError

logger = logging.getLogger("model.safety.decision")


class InvalidThresholdError(ValueError):
    """A configured threshold is outside (0, 1]."""


def validate_thresholds(thresholds: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for category, value in thresholds.items():
        if category not in CATEGORY_IDS:
            raise UnknownCategoryError(
                f"threshold for unknown safety category {category!r}; known: {', '.join(CATEGORY_IDS)}"
            )
        if not 0.0 < float(value) <= 1.0:
            raise InvalidThresholdError(f"threshold for {category!r} is {value}; use a value in (0, 1]")
        out[category] = float(value)
    return out


def decide(scores: Mapping[str, float], thresholds: Mapping[str, float]) -> SafetyVerdict:
    """Flag the highest-scoring category whose score reaches its threshold."""
    hits = {c: s for c, s in scores.items() if s >= thresholds[c]}
    if hits:
        category = max(hits, key=hits.__getitem__)
        return SafetyVerdict(True, category, hits[category], dict(scores))
    return SafetyVerdict(False, None, max(scores.values(), default=0.0), dict(scores))


def log_decision(source: str, verdict: SafetyVerdict) -> None:
    """Category and score only: the moderated content never reaches the logs."""
    logger.info(
        "safety decision source=%s active=%s flagged=%s category=%s score=%.3f",
        source, verdict.active, verdict.flagged, verdict.category, verdict.score,
        extra={"safety_category": verdict.category, "safety_score": round(verdict.score, 4)},
    )
