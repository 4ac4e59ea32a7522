"""A video-feature store every LLM worker shares: entries on disk under the data directory.

Why disk and not Redis: the service's Redis runs with `maxmemory-policy noeviction` (the
request streams and job records must never be evicted), so a cache there could not be
LRU-bounded without risking the queues; and a feature tensor of the reference model
(128 x 4096 bf16) is 1 MiB, too big to push through Redis on every hit. DATA_DIR is
already the volume the api and all workers share.

An entry is one safetensors file (never pickle): a single tensor "features" plus
metadata naming its key, so a file copied under another name is ignored. `decode_entry`
checks the key, the shape and the dtype before the tensor is used, and anything that
does not parse or match is treated as a miss. Writes are atomic (temporary file +
rename); the store is bounded by size and evicts the least recently used entries (a
hit refreshes the file's mtime).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

log = logging.getLogger(__name__)

_TENSOR = "features"
_MAX_HEADER = 64 * 1024  # a one-tensor header is ~200 bytes; refuse anything far larger
# After an eviction the store is this fraction of its cap, so eviction is not on every put.
_EVICT_TO = 0.9


class FeatureStore(Protocol):
    """Bytes by key, shared between processes. A failure is a miss, never an error."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, blob: bytes) -> None: ...


def feature_key(encoder_fingerprint: str, content_sha256: str) -> str:
    return f"{encoder_fingerprint}-{content_sha256}"


def encode_entry(key: str, features: torch.Tensor) -> bytes:
    """One safetensors blob holding `features` (Nq, D_llm) and the key it belongs to."""
    return save_safetensors({_TENSOR: features.detach().to("cpu").contiguous()}, metadata={"key": key})


def decode_entry(blob: bytes, key: str, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor | None:
    """The tensor in `blob` if it is an entry for `key` with this shape and dtype, else None."""
    try:
        (header_len,) = struct.unpack("<Q", blob[:8])
        if header_len > min(_MAX_HEADER, len(blob) - 8):
            return None
        header = json.loads(blob[8 : 8 + header_len])
        if header.get("__metadata__", {}).get("key") != key or set(header) - {"__metadata__"} != {_TENSOR}:
            return None
        tensor = load_safetensors(blob)[_TENSOR]
    except Exception:  # any malformed blob is a miss: this is a cache, the encoder is the truth
        log.debug("feature entry %s does not parse; ignored", key, exc_info=True)
        return None
    if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
        log.warning("feature entry %s is %s %s, expected %s %s; ignored",
                    key, tuple(tensor.shape), tensor.dtype, tuple(shape), dtype)
        return None
    return tensor


class DiskFeatureStore:
    """Entries as files `<root>/<2 hex>/<sha256 of the key>.safetensors`, at most `max_bytes` in all."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}; use no store to disable it")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._approx_bytes = self._scan_bytes()  # others write too: re-counted before evicting

    def _path(self, key: str) -> Path:
        name = hashlib.sha256(key.encode()).hexdigest()  # any key, a safe file name; the key is inside
        return self.root / name[:2] / f"{name}.safetensors"

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            blob = path.read_bytes()
            os.utime(path)  # recently used: evicted last
        except OSError:  # absent, or removed by another worker's eviction meanwhile
            return None
        return blob

    def put(self, key: str, blob: bytes) -> None:
        if len(blob) > self.max_bytes:
            return
        path = self._path(key)
        tmp: str | None = None
        try:
            path.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
            os.replace(tmp, path)
        except OSError as exc:  # disk full, permissions: the cache is an optimisation
            log.warning("could not store video features under %s (%s); check FEATURE_STORE_DIR", self.root, exc)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return
        with self._lock:
            self._approx_bytes += len(blob)
            if self._approx_bytes > self.max_bytes:
                self._approx_bytes = self._evict()

    def _entries(self) -> list[tuple[float, int, Path]]:
        found = []
        for path in self.root.glob("*/*.safetensors"):
            with contextlib.suppress(OSError):
                stat = path.stat()
                found.append((stat.st_mtime, stat.st_size, path))
        return found

    def _scan_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _evict(self) -> int:
        """Remove the least recently used entries until the store is under its target size."""
        entries = sorted(self._entries())
        total = sum(size for _, size, _ in entries)
        target = int(self.max_bytes * _EVICT_TO)
        for _, size, path in entries:
            if total <= target:
                break
            with contextlib.suppress(OSError):
                path.unlink()
            total -= size
        return total
