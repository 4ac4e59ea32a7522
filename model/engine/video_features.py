"""Video features for requests: sample frames, encode, and cache by content.

The cache key is (video content hash, encoder fingerprint): asking a second question
about the same video does not decode or encode it again. The encoder fingerprint
(`encoder_fingerprint`) hashes the vision tower's and abstractor's config *and weights*
and the sampling mode, so two checkpoints with the same sizes but other weights never
share an entry. Video ids in this service are the sha256 of the file
(content-addressed store); any other id is hashed from the file's bytes.

Two levels: the per-process LRU (`FeatureCache`, tensors on the model's device) in
front of an optional shared store (`model.engine.feature_store`, entries every worker
reads), looked up in that order; a fresh encoding is written to both.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.engine.feature_store import FeatureStore, decode_entry, encode_entry, feature_key

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def content_hash(video_id: str, path: str | Path) -> str:
    if _SHA256.match(video_id):
        return video_id
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_digest(*modules: nn.Module) -> str:
    """blake2b of every parameter and buffer (name, dtype, shape, bytes) of `modules`."""
    digest = hashlib.blake2b(digest_size=16)
    for index, module in enumerate(modules):
        for name, tensor in sorted(module.state_dict().items()):
            flat = tensor.detach().to("cpu").contiguous().reshape(-1)  # (numel,)
            digest.update(f"{index}/{name}/{flat.dtype}/{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def encoder_fingerprint(model, config_fingerprint: str, sampling_key: str) -> str:
    """Identifies what turns a video into features: config, vision + abstractor weights,
    and the sampling mode (it changes which frames are encoded)."""
    weights = weights_digest(model.vision, model.abstractor)
    key = f"{config_fingerprint}|{weights}|{sampling_key}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


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
    `store`: the shared store behind the LRU (None: the LRU alone).
    """

    def __init__(
        self,
        model,
        fingerprint: str,
        cache: FeatureCache,
        sampler: FrameSampler,
        store: FeatureStore | None = None,
    ) -> None:
        self.model = model
        self.fingerprint = fingerprint
        self.cache = cache
        self.sampler = sampler
        self.store = store
        self.encoded_videos = 0  # how many videos went through the encoder (for stats/tests)
        self.store_hits = 0

    @torch.inference_mode()
    def features(self, video_paths: Mapping[str, str]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        todo: list[tuple[str, tuple[str, str], str]] = []
        for video_id, path in video_paths.items():
            key = (content_hash(video_id, path), self.fingerprint)
            cached = self.cache.get(key)
            if cached is None:
                cached = self._from_store(key)
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
                f = f.detach()  # (Nq, D)
                self.cache.put(key, f)
                self._to_store(key, f)
                out[video_id] = f
        return out

    def _expected(self) -> tuple[tuple[int, int], torch.dtype]:
        """Shape and dtype of one video's features: (Nq, D_llm), the abstractor's dtype."""
        abstractor = self.model.abstractor
        cfg = abstractor.cfg
        return (cfg.num_tokens, cfg.llm_width), abstractor.out_proj.weight.dtype

    def _from_store(self, key: tuple[str, str]) -> torch.Tensor | None:
        if self.store is None:
            return None
        name = feature_key(key[1], key[0])
        blob = self.store.get(name)
        if blob is None:
            return None
        shape, dtype = self._expected()
        tensor = decode_entry(blob, name, shape, dtype)
        if tensor is None:
            return None
        tensor = tensor.to(self.model.device)  # (Nq, D)
        self.store_hits += 1
        self.cache.put(key, tensor)
        return tensor

    def _to_store(self, key: tuple[str, str], features: torch.Tensor) -> None:
        if self.store is not None:
            name = feature_key(key[1], key[0])
            self.store.put(name, encode_entry(name, features))
