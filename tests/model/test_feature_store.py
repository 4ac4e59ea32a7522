"""The shared video-feature store: keys by weights, safe entries, shared between workers."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.engine.feature_store import DiskFeatureStore, decode_entry, encode_entry, feature_key
from model.engine.inputs import RequestInputs
from model.engine.video_features import encoder_fingerprint
from model.video import SamplingOptions
from tests.media import make_video

STORE_BYTES = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("clips") / "clip.mp4", frames=16)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inputs(model, store: DiskFeatureStore | None, sampling: SamplingOptions = SamplingOptions()) -> RequestInputs:
    return RequestInputs.for_model(model, cache_size=8, store=store, sampling=sampling)


def fingerprint(model, sampling: SamplingOptions = SamplingOptions()) -> str:
    return encoder_fingerprint(model, model.config.fingerprint(), sampling.key())


# -- keys ----------------------------------------------------------------------------------
def test_the_key_changes_with_the_weights_not_only_the_config(tiny_checkpoint_dir: Path) -> None:
    first, second = load_checkpoint(tiny_checkpoint_dir), load_checkpoint(tiny_checkpoint_dir)
    assert fingerprint(first) == fingerprint(second)  # same weights, two loads: one key
    assert first.config.fingerprint() == second.config.fingerprint()
    with torch.no_grad():
        second.abstractor.out_proj.weight[0, 0] += 1e-3
    assert fingerprint(second) != fingerprint(first)
    third = load_checkpoint(tiny_checkpoint_dir)
    with torch.no_grad():
        next(third.vision.parameters()).view(-1)[0] += 1e-3
    assert fingerprint(third) not in {fingerprint(first), fingerprint(second)}


def test_the_key_changes_with_the_sampling_mode(tiny_model) -> None:
    keys = {fingerprint(tiny_model, SamplingOptions(mode="exact")),
            fingerprint(tiny_model, SamplingOptions(mode="keyframe")),
            fingerprint(tiny_model, SamplingOptions(mode="keyframe", keyframe_tolerance_s=2.0))}
    assert len(keys) == 3
    assert fingerprint(tiny_model, SamplingOptions(threads=1)) == fingerprint(tiny_model, SamplingOptions(threads=3))


# -- entries -------------------------------------------------------------------------------
def test_an_entry_round_trips_and_checks_key_shape_and_dtype() -> None:
    features = torch.randn(6, 4)  # (Nq, D_llm)
    blob = encode_entry("k1", features)
    torch.testing.assert_close(decode_entry(blob, "k1", (6, 4), torch.float32), features)
    assert decode_entry(blob, "k2", (6, 4), torch.float32) is None  # another key's entry
    assert decode_entry(blob, "k1", (4, 6), torch.float32) is None
    assert decode_entry(blob, "k1", (6, 4), torch.bfloat16) is None
    for corrupt in (b"", b"\x00" * 7, blob[:20], blob[:-4], b"\xff" * 64, blob[:8] + b"[" + blob[9:]):
        assert decode_entry(corrupt, "k1", (6, 4), torch.float32) is None
    assert decode_entry(_two_tensor_entry("k1"), "k1", (6, 4), torch.float32) is None


def _two_tensor_entry(key: str) -> bytes:
    from safetensors.torch import save

    return save({"features": torch.zeros(6, 4), "extra": torch.zeros(1)}, metadata={"key": key})


class _Explodes:
    """Unpickling this creates a file: proof that an entry was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_foreign_and_corrupt_entries_are_ignored_and_recomputed(tiny_model, clip: Path, tmp_path: Path) -> None:
    store = DiskFeatureStore(tmp_path / "features", STORE_BYTES)
    reference = inputs(tiny_model, None).features.features({"v": str(clip)})["v"]  # (Nq, D)
    key = feature_key(fingerprint(tiny_model), sha256_of(clip))
    marker = tmp_path / "unpickled"
    bad_entries = [
        pickle.dumps(_Explodes(marker)),  # a pickle: never loaded
        b"not a safetensors file",
        encode_entry("some-other-key", reference),  # a foreign entry under this key
        encode_entry(key, reference[:, :2]),  # the wrong shape
        encode_entry(key, reference.to(torch.float64)),  # the wrong dtype
        encode_entry(key, reference)[:-8],  # truncated
    ]
    for blob in bad_entries:
        store.put(key, blob)
        extractor = inputs(tiny_model, store).features
        got = extractor.features({"v": str(clip)})["v"]
        assert (extractor.store_hits, extractor.encoded_videos) == (0, 1)
        torch.testing.assert_close(got, reference)
        assert decode_entry(store.get(key), key, reference.shape, reference.dtype) is not None  # rewritten
    assert not marker.exists()


# -- sharing -------------------------------------------------------------------------------
def test_two_workers_share_entries(tiny_checkpoint_dir: Path, clip: Path, tmp_path: Path) -> None:
    """Two engines (two loads of one checkpoint, as two worker processes) on one store
    directory: the second never decodes or encodes a video the first has seen."""
    root = tmp_path / "features"
    first = inputs(load_checkpoint(tiny_checkpoint_dir), DiskFeatureStore(root, STORE_BYTES)).features
    second = inputs(load_checkpoint(tiny_checkpoint_dir), DiskFeatureStore(root, STORE_BYTES)).features
    computed = first.features({"clip": str(clip)})["clip"]
    shared = second.features({"other-id": str(clip)})["other-id"]  # another id, same content
    assert (first.encoded_videos, second.encoded_videos, second.store_hits) == (1, 0, 1)
    torch.testing.assert_close(shared, computed, rtol=0, atol=0)
    second.features({"clip": str(clip)})  # now in the second worker's own LRU
    assert second.store_hits == 1


def test_other_weights_do_not_read_the_entries(tiny_checkpoint_dir: Path, clip: Path, tmp_path: Path) -> None:
    root = tmp_path / "features"
    inputs(load_checkpoint(tiny_checkpoint_dir), DiskFeatureStore(root, STORE_BYTES)).features.features(
        {"clip": str(clip)})
    changed = load_checkpoint(tiny_checkpoint_dir)
    with torch.no_grad():
        changed.abstractor.out_proj.bias += 0.5
    extractor = inputs(changed, DiskFeatureStore(root, STORE_BYTES)).features
    extractor.features({"clip": str(clip)})
    assert (extractor.store_hits, extractor.encoded_videos) == (0, 1)
    keyframes = inputs(load_checkpoint(tiny_checkpoint_dir), DiskFeatureStore(root, STORE_BYTES),
                       SamplingOptions(mode="keyframe")).features
    keyframes.features({"clip": str(clip)})
    assert (keyframes.store_hits, keyframes.encoded_videos) == (0, 1)  # other frames, other key


def test_a_custom_sampler_never_writes_the_shared_store(tiny_model, clip: Path, tmp_path: Path) -> None:
    store = DiskFeatureStore(tmp_path / "features", STORE_BYTES)
    def black(path: str, n: int, size: int):
        return torch.zeros(n, size, size, 3, dtype=torch.uint8).numpy()  # (n, H, W, 3)

    fake = RequestInputs.for_model(tiny_model, cache_size=8, store=store, sampler=black)
    fake.features.features({"clip": str(clip)})
    assert not list((tmp_path / "features").rglob("*.safetensors"))


# -- the disk store --------------------------------------------------------------------------
def test_the_store_is_bounded_and_evicts_the_least_recently_used(tmp_path: Path) -> None:
    store = DiskFeatureStore(tmp_path, max_bytes=10_000)
    blob = b"x" * 3000
    for index, key in enumerate(("a", "b", "c")):
        store.put(key, blob)
        path = store._path(key)
        os.utime(path, (1000 + index, 1000 + index))  # a, then b, then c
    store.get("a")  # a is now the most recent
    store.put("d", blob)  # 12 000 bytes > 10 000: evict to 9 000, oldest first (b)
    assert [store.get(k) is not None for k in "abcd"] == [True, False, True, True]
    store.put("huge", b"x" * 20_000)  # larger than the whole store: not kept
    assert store.get("huge") is None


def test_a_missing_entry_and_an_unwritable_store_are_misses(tmp_path: Path) -> None:
    store = DiskFeatureStore(tmp_path / "s", max_bytes=10_000)
    assert store.get("nothing") is None
    (tmp_path / "s").chmod(0o500)
    try:
        store.put("k", b"1234")  # logged, not raised (root may still write: then it is stored)
    finally:
        (tmp_path / "s").chmod(0o700)
    with pytest.raises(ValueError, match="max_bytes"):
        DiskFeatureStore(tmp_path / "t", max_bytes=0)
