"""Group captions by sentence-embedding similarity, for multi-video dialogues.

Each caption is embedded (MiniLM, L2-normalised), so cosine similarity is a dot
product. Greedy, deterministic: anchors are taken in order; an anchor that is not yet
grouped collects its `top_k` most similar ungrouped captions whose similarity is at
least `threshold`. Similarities are computed a block of rows at a time, so memory stays
bounded (`block * N` floats) on large caption sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Encoder(Protocol):
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


@dataclass(frozen=True)
class GroupingConfig:
    top_k: int = 1  # neighbours joined to an anchor: groups have at most top_k + 1 captions
    threshold: float = 0.6  # minimum cosine similarity to the anchor
    block: int = 1024  # rows of the similarity matrix computed at once


def group_embeddings(embeddings: np.ndarray, cfg: GroupingConfig) -> list[list[int]]:
    """`(N, E)` L2-normalised embeddings -> groups of >= 2 indices (anchor first)."""
    n = embeddings.shape[0]
    if cfg.top_k < 1:
        raise ValueError("grouping top_k must be at least 1")
    used = np.zeros(n, dtype=bool)
    groups: list[list[int]] = []
    for start in range(0, n, cfg.block):
        sims = embeddings[start:start + cfg.block] @ embeddings.T  # (b, N)
        for row, anchor in enumerate(range(start, min(start + cfg.block, n))):
            if used[anchor]:
                continue
            scores = sims[row].copy()  # (N,)
            scores[used] = -np.inf
            scores[anchor] = -np.inf
            order = np.argsort(-scores, kind="stable")[: cfg.top_k]
            members = [int(j) for j in order if scores[j] >= cfg.threshold]
            if members:
                group = [anchor, *members]
                used[group] = True
                groups.append(group)
    return groups


def group_captions(captions: Sequence[str], encoder: Encoder, cfg: GroupingConfig) -> list[list[int]]:
    """Captions -> groups of similar captions' indices (each group has >= 2 members)."""
    return group_embeddings(encoder.encode(list(captions)), cfg)
