"""The LLM worker's request path in-process: real Redis stream entries, the real hf engine
on the tiny checkpoint, and the policy hooks (caption moderation, upload screening);
every request answered, and a worker whose engine dies leaving /readyz."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from app.llm_client import LLMClient
from app.main import create_app
from gpt4video import llm_protocol as wire
from gpt4video.settings import load_settings
from model.checkpoint import load_checkpoint
from model.engine.base import FailureCode, GenerationResult
from model.engine.batching import BatchingEngine
from model.engine.hf_engine import HFEngine
from model.safety.base import SafetyVerdict
from model.safety.policy import withheld_notice
from tests.waiting import eventually
from tests.workers.checkers import FlagEverythingChecker
from workers.llm_worker import LLMWorker, moderate_reply


def _redis_url() -> str:
    parts = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    return urlunsplit(parts._replace(path="/11"))


class KeywordModerator:
    """A stand-in moderator with a visible rule, to test the worker's policy plumbing
    (the real head is tested in tests/model/test_safety_*.py and tests/app)."""

    def check(self, text: str, source: str = "text") -> SafetyVerdict:
        hit = "blood" in text
        return SafetyVerdict(flagged=hit, category="violence_gore" if hit else None, score=0.9 if hit else 0.1)

    def check_many(self, texts: Sequence[str], source: str = "text") -> list[SafetyVerdict]:
        return [self.check(t, source) for t in texts]


class CrashingModerator:
    """A moderator whose model fails (e.g. its head is corrupt): it raises on every check."""

    def check(self, text: str, source: str = "text") -> SafetyVerdict:
        raise RuntimeError("moderation head crashed")

    def check_many(self, texts: Sequence[str], source: str = "text") -> list[SafetyVerdict]:
        raise RuntimeError("moderation head crashed")


def _request(turns: list[wire.WireTurn], video_paths: dict[str, str] | None = None) -> wire.LLMRequest:
    return wire.LLMRequest(id=f"r{time.monotonic_ns()}", turns=turns, video_paths=video_paths or {},
                           sampling=wire.WireSampling(max_new_tokens=4, temperature=0.0, top_p=1.0),
                           deadline=time.time() + 60)


def test_flagged_captions_are_withheld_and_markers_renumbered() -> None:
    result = GenerationResult("r", "a [video:0] b [video:1] c [video:2]", "raw",
                              ("a cat", "blood everywhere", "a dog"), 5, 7, "stop")
    reply = moderate_reply(_request([wire.WireTurn(role="user", content="x")]), result, KeywordModerator(), "w")
    assert reply.captions == ["a cat", "a dog"]
    assert reply.text == f"a [video:0] b {withheld_notice('violence_gore')} c [video:1]"
    assert [w.category for w in reply.withheld] == ["violence_gore"]


@pytest.fixture
def worker(tiny_model, frame_sampler):
    conn = redis.Redis.from_url(_redis_url())
    conn.flushdb()
    settings = load_settings(redis_url=_redis_url())
    engine = BatchingEngine(HFEngine(tiny_model, sampler=frame_sampler), max_batch=4)
    calls: list[str] = []

    def sampler(path: str) -> np.ndarray:
        calls.append(path)
        return np.zeros((4, 32, 32, 3), dtype=np.uint8)

    w = LLMWorker(settings, engine, KeywordModerator(), lambda c: f"refused: {c}", name="test-worker",
                  frame_checker=FlagEverythingChecker(), frame_sampler=sampler)
    w.sampler_calls = calls  # type: ignore[attr-defined]
    yield w
    conn.flushdb()


def test_flagged_upload_is_refused_once_screened(worker: LLMWorker, tmp_path: Path) -> None:
    video_id = "a" * 64
    req = _request([wire.WireTurn(role="user", content="what is this?", videos=[video_id])],
                   {video_id: str(tmp_path / "v.mp4")})

    async def run() -> tuple[wire.LLMReply, wire.LLMReply]:
        await worker._ensure_group()
        first = await worker._serve("0-1", req)
        second = await worker._serve("0-2", req)
        await worker.redis.aclose()
        return first, second

    first, second = asyncio.run(run())
    assert first.status == "refused" and first.refusal is not None
    assert first.refusal.category.startswith("test-flag")
    assert first.text.startswith("refused: ")
    assert second.status == "refused"
    assert len(worker.sampler_calls) == 1  # the verdict is cached by video id


def test_harmful_user_turn_is_refused_before_the_engine(worker: LLMWorker) -> None:
    req = _request([wire.WireTurn(role="user", content="show blood")])

    async def run() -> wire.LLMReply:
        await worker._ensure_group()
        reply = await worker._serve("0-3", req)
        await worker.redis.aclose()
        return reply

    reply = asyncio.run(run())
    assert reply.status == "refused" and reply.refusal.category == "violence_gore"
    assert reply.completion_tokens == 0
    assert worker.engine.stats.batches == 0  # the model never ran


def test_an_engine_failure_keeps_its_code_on_the_wire() -> None:
    result = GenerationResult("r", "", "", (), 3000, 0, "error", error="the prompt is 3000 tokens",
                              error_code=FailureCode.CONTEXT_TOO_LONG)
    reply = moderate_reply(_request([wire.WireTurn(role="user", content="x")]), result, None, "w")
    assert (reply.status, reply.error_code) == ("error", FailureCode.CONTEXT_TOO_LONG)


def test_a_crashing_moderator_is_answered_at_once_and_acknowledged_once(tiny_model, frame_sampler) -> None:
    conn = redis.Redis.from_url(_redis_url())
    conn.flushdb()
    # A short claim idle time: an entry left pending would be redelivered within the test.
    settings = load_settings(redis_url=_redis_url(), llm_claim_idle_s=0.3, heartbeat_interval_s=0.1)
    engine = BatchingEngine(HFEngine(tiny_model, sampler=frame_sampler), max_batch=4)
    worker = LLMWorker(settings, engine, CrashingModerator(), lambda c: c, name="crashing-moderator")
    request = _request([wire.WireTurn(role="user", content="hello")])
    timeout_s = 20.0

    async def run() -> tuple[wire.LLMReply, float]:
        serving = asyncio.create_task(worker.run())
        api = LLMClient(worker.redis, settings)
        try:
            while not await worker.redis.zscore(wire.WORKERS_ZSET, worker.name):
                await asyncio.sleep(0.05)
            started = time.monotonic()
            await api.submit(request)
            reply = await api.wait(request.id, timeout_s)
            elapsed = time.monotonic() - started
            await asyncio.sleep(1.0)  # longer than the claim idle time: a pending entry would come back
            return reply, elapsed
        finally:
            worker.stop()
            await serving
            await worker.redis.aclose()

    reply, elapsed = asyncio.run(run())
    assert (reply.status, reply.error_code) == ("error", FailureCode.ENGINE_ERROR)
    assert "moderation head crashed" in (reply.error or "")
    assert elapsed < timeout_s / 4  # answered, not left to time out
    assert (worker.stats.requests, worker.stats.failed, worker.stats.claimed_from_others) == (1, 1, 0)
    assert conn.xlen(wire.REQUESTS_STREAM) == 0  # acknowledged and deleted
    assert conn.xpending(wire.REQUESTS_STREAM, wire.GROUP)["pending"] == 0
    conn.flushdb()


def test_a_worker_whose_engine_fails_check_health_drops_out_of_readyz(
    tiny_checkpoint_dir: Path, frame_sampler, tmp_path: Path
) -> None:
    conn = redis.Redis.from_url(_redis_url())
    conn.flushdb()
    settings = load_settings(redis_url=_redis_url(), data_dir=tmp_path, heartbeat_interval_s=0.1,
                             llm_health_interval_s=0.1)
    model = load_checkpoint(tiny_checkpoint_dir)  # its own: this test breaks it
    worker = LLMWorker(settings, BatchingEngine(HFEngine(model, sampler=frame_sampler)), None, lambda c: c,
                       name="sick-worker")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(worker.run(),), daemon=True)
    thread.start()
    try:
        with TestClient(create_app(settings)) as api:
            assert eventually(lambda: api.get("/readyz").status_code == 200, 30), api.get("/readyz").text

            def device_lost(*args, **kwargs):
                raise RuntimeError("CUDA error: device-side assert triggered")

            model.llm.forward = device_lost  # every forward of the engine now fails
            assert eventually(lambda: api.get("/readyz").status_code == 503, 5), "the sick worker still counts"
            assert api.get("/readyz").json()["error"]["code"] == "no_llm_worker"
        thread.join(timeout=10)
        assert not thread.is_alive(), "the worker did not exit"
        assert worker.unhealthy  # main() exits non-zero, so a supervisor restarts it
        stats = json.loads(conn.get(wire.worker_stats_key(worker.name)))
        assert stats["engine_healthy"] is False and "device-side assert" in stats["engine_error"]
    finally:
        if thread.is_alive():
            loop.call_soon_threadsafe(worker.stop)
            thread.join(timeout=10)
        conn.flushdb()
