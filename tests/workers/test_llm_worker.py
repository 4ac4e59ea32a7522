"""The LLM worker's request path in-process: real Redis stream entries, the real hf engine
on the tiny checkpoint, and the policy hooks (caption moderation, upload screening)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pytest
import redis

from gpt4video import llm_protocol as wire
from gpt4video.settings import load_settings
from model.engine.base import GenerationResult
from model.engine.batching import BatchingEngine
from model.engine.hf_engine import HFEngine
from model.safety.base import SafetyVerdict
from tests.workers.checkers import FlagEverythingChecker
from workers.llm_worker import LLMWorker, moderate_reply


def _redis_url() -> str:
    parts = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    return urlunsplit(parts._replace(path="/11"))


class KeywordModerator:
    """A stand-in moderator with a visible rule, to test the worker's policy plumbing
    (the real head is tested in tests/model/test_safety_*.py and tests/app)."""

    def check(self, text: str) -> SafetyVerdict:
        hit = "blood" in text
        return SafetyVerdict(flagged=hit, category="violence_gore" if hit else None, score=0.9 if hit else 0.1)


def _request(turns: list[wire.WireTurn], video_paths: dict[str, str] | None = None) -> wire.LLMRequest:
    return wire.LLMRequest(id=f"r{time.monotonic_ns()}", turns=turns, video_paths=video_paths or {},
                           sampling=wire.WireSampling(max_new_tokens=4, temperature=0.0, top_p=1.0),
                           deadline=time.time() + 60)


def test_flagged_captions_are_withheld_and_markers_renumbered() -> None:
    result = GenerationResult("r", "a [video:0] b [video:1] c [video:2]", "raw",
                              ("a cat", "blood everywhere", "a dog"), 5, 7, "stop")
    reply = moderate_reply(_request([wire.WireTurn(role="user", content="x")]), result, KeywordModerator(), "w")
    assert reply.captions == ["a cat", "a dog"]
    assert reply.text == "a [video:0] b [video withheld] c [video:1]"
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
