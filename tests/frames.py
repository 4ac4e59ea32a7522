"""Deterministic frames for model tests, without real videos or the video package.

`SeededFrameSampler` plugs into `HFEngine(model, sampler=...)`: it makes frames from
the path string (same path, same frames) instead of decoding a file, and counts calls.
`fake_video_id` gives content-addressed ids (sha256 hex), which the feature cache keys
directly, so a fake video needs no file on disk.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np


def seeded_frames(key: str, n: int, size: int) -> np.ndarray:
    """`n` random uint8 frames `(n, size, size, 3)`, the same for the same key."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def fake_video_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


class SeededFrameSampler:
    """A `FrameSampler`; paths in `unreadable` raise like a corrupt file would."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.unreadable: set[str] = set()

    def __call__(self, path: str, n: int, size: int) -> np.ndarray:
        self.calls[path] += 1
        if path in self.unreadable:
            raise OSError(f"cannot decode {path}")
        return seeded_frames(path, n, size)  # (n, size, size, 3)

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())
