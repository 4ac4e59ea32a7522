"""Video features for requests: sample frames, encode, and cache by content.

The cache key is (video content hash, checkpoint encoder fingerprint): asking a second
question about the same video does not decode or encode it again. Video ids in this
service are the sha256 of the file (content-addressed store); any other id is hashed
from the file's bytes.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def content_hash(video_id: str, path: str | Path) -> str:
    if _SHA256.match(video_id):
        return video_id
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FeatureCache:
    """Thread-safe LRU of `(Nq, D_llm)` feature tensors."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str]) -> torch.Tensor | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: tuple[str, str], value: torch.Tensor) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


FrameSampler = Callable[[str, int, int], np.ndarray]  # (path, n, size) -> (n, H, W, 3) uint8


class VideoFeatureExtractor:
    """Turns `{video_id: path}` into `{video_id: (Nq, D_llm)}` with caching.

    Encoding happens in one batched forward for all uncached videos of a batch.
    """

    def __init__(self, model, fingerprint: str, cache: FeatureCache, sampler: FrameSampler) -> None:
        self.model = model
        self.fingerprint = fingerprint
        self.cache = cache
        self.sampler = sampler
        self.encoded_videos = 0  # how many videos went through the encoder (for stats/tests)

    @torch.inference_mode()
    def features(self, video_paths: Mapping[str, str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        todo: list[tuple[str, tuple[str, str], str]] = []
        for video_id, path in video_paths.items():
            key = (content_hash(video_id, path), self.fingerprint)
            cached = self.cache.get(key)
            if cached is not None:
                out[video_id] = cached
            else:
                todo.append((video_id, key, path))
        if todo:
            cfg = self.model.vision.cfg
            frames = np.stack([self.sampler(path, cfg.num_frames, cfg.image_size) for _, _, path in todo])
            feats = self.model.encode_frames(torch.from_numpy(frames))  # (N, Nq, D)
            self.encoded_videos += len(todo)
            for (video_id, key, _), f in zip(todo, feats, strict=True):
                f = f.detach()
                self.cache.put(key, f)
                out[video_id] = f
        return out
