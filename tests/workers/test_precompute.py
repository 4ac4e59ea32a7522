"""Precompute on upload: the API asks, an LLM worker encodes into the shared store, and the
first question about the video is answered from there (real Redis, real hf engine)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from fastapi.testclient import TestClient

from app.main import create_app
from gpt4video import llm_protocol as wire
from gpt4video.settings import load_settings
from model.engine.base import GenerationRequest, SamplingParams, Turn
from model.engine.batching import BatchingEngine
from model.engine.feature_store import DiskFeatureStore
from model.engine.hf_engine import HFEngine
from model.engine.inputs import RequestInputs
from tests.media import make_video
from workers.llm_worker import LLMWorker

STORE_BYTES = 64 * 1024 * 1024


def _redis_url() -> str:
    parts = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    return urlunsplit(parts._replace(path="/13"))


@pytest.fixture
def conn():
    client = redis.Redis.from_url(_redis_url())
    client.flushdb()
    yield client
    client.flushdb()


def _worker(tiny_model, store: DiskFeatureStore) -> tuple[LLMWorker, RequestInputs]:
    settings = load_settings(redis_url=_redis_url())
    precompute = RequestInputs.for_model(tiny_model, cache_size=0, store=store)
    worker = LLMWorker(settings, BatchingEngine(HFEngine(tiny_model), max_batch=2), None, lambda c: c,
                       name="precompute-test", precompute=lambda v, p: precompute.features.features({v: p}))
    return worker, precompute


def _run_until(worker: LLMWorker, done) -> None:
    async def run() -> None:
        await worker._ensure_group()
        task = asyncio.create_task(worker._precompute())
        for _ in range(600):
            if done():
                break
            await asyncio.sleep(0.05)
        worker.stop()
        await task
        await worker.redis.aclose()

    asyncio.run(run())


def test_a_precomputed_video_is_not_encoded_again_by_the_engine(tiny_model, conn, tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=16)
    video_id = hashlib.sha256(clip.read_bytes()).hexdigest()
    store = DiskFeatureStore(tmp_path / "features", STORE_BYTES)
    worker, precompute = _worker(tiny_model, store)
    conn.xadd(wire.PRECOMPUTE_STREAM, {"video_id": video_id, "path": str(clip)})
    conn.xadd(wire.PRECOMPUTE_STREAM, {"video_id": "b" * 64, "path": str(tmp_path / "gone.mp4")})
    _run_until(worker, lambda: conn.xlen(wire.PRECOMPUTE_STREAM) == 0)
    assert precompute.features.encoded_videos == 1
    assert conn.xlen(wire.PRECOMPUTE_STREAM) == 0  # both acknowledged and deleted, the bad one too
    assert conn.xpending(wire.PRECOMPUTE_STREAM, wire.GROUP)["pending"] == 0

    engine = HFEngine(tiny_model, feature_store=DiskFeatureStore(tmp_path / "features", STORE_BYTES))
    (result,) = engine.generate([GenerationRequest(
        "q", (Turn("user", "Describe the video.", (video_id,)),), SamplingParams(max_new_tokens=2),
        {video_id: str(clip)})])
    assert result.finish_reason != "error", result.error
    assert (engine.inputs.features.encoded_videos, engine.inputs.features.store_hits) == (0, 1)


def test_an_upload_asks_for_precompute_only_when_enabled(conn, tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=8)
    for enabled, expected in ((False, 0), (True, 1)):
        settings = load_settings(redis_url=_redis_url(), data_dir=tmp_path / f"data-{enabled}",
                                 precompute_features=enabled, api_keys="")
        with TestClient(create_app(settings)) as api:
            response = api.post("/v1/videos", files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")})
            assert response.status_code in (200, 201), response.text
        entries = conn.xrange(wire.PRECOMPUTE_STREAM)
        assert len(entries) == expected
    fields = entries[0][1]
    assert fields[b"video_id"].decode() == response.json()["id"]
    assert Path(fields[b"path"].decode()).read_bytes() == clip.read_bytes()
