"""The LLM worker: loads the checkpoint once, serves requests from a Redis Stream.

Several workers share the consumer group; each runs many requests at once through
the engine's batching. See `gpt4video.llm_protocol` for the wire format and the
takeover rules.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gpt4video import llm_protocol as wire
from gpt4video.settings import Settings, load_settings
from model.engine.base import (
    AsyncEngine,
    FailureCode,
    GenerationRequest,
    SamplingParams,
    Turn,
)
from model.safety.base import FrameChecker, PassThroughFrameChecker, SafetyVerdict
from model.safety.policy import TextChecker, screen_frames, screen_user_turn
from workers.reply_moderation import StreamModerator, moderate_reply

log = logging.getLogger("gpt4video.llm_worker")
_REDIS_LOST = (RedisConnectionError, RedisTimeoutError)


@dataclass
class WorkerStats:
    started_at: float = field(default_factory=time.time)
    requests: int = 0
    refused: int = 0
    failed: int = 0
    claimed_from_others: int = 0
    engine_healthy: bool = True
    engine_error: str | None = None  # why the last health check failed
    health_checked_at: float = 0.0

    def as_dict(self, engine: Any) -> dict[str, Any]:
        batching = getattr(engine, "stats", None)
        histogram: dict[int, int] = dict(getattr(batching, "size_histogram", None) or {})
        return {
            "started_at": self.started_at, "requests": self.requests, "refused": self.refused,
            "failed": self.failed, "claimed_from_others": self.claimed_from_others,
            "engine_healthy": self.engine_healthy, "engine_error": self.engine_error,
            "health_checked_at": self.health_checked_at,
            "batches": sum(histogram.values()), "max_batch_size": max(histogram, default=0),
            "batch_size_histogram": {str(size): n for size, n in sorted(histogram.items())},
        }


def to_generation_request(req: wire.LLMRequest) -> GenerationRequest:
    return GenerationRequest(
        request_id=req.id,
        turns=tuple(Turn(t.role, t.content, tuple(t.videos)) for t in req.turns),
        sampling=SamplingParams(
            max_new_tokens=req.sampling.max_new_tokens, temperature=req.sampling.temperature,
            top_p=req.sampling.top_p, seed=req.sampling.seed, stop=tuple(req.sampling.stop),
        ),
        video_paths=dict(req.video_paths),
    )


class LLMWorker:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        moderator: TextChecker | None,
        refusal_text: Callable[[str], str],
        name: str | None = None,
        frame_checker: FrameChecker | None = None,
        frame_sampler: Callable[[str], np.ndarray] | None = None,
        precompute: Callable[[str, str], object] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.moderator = moderator
        # Uploaded videos are screened when a checker that can judge is configured.
        self.frame_checker = frame_checker
        self.frame_sampler = frame_sampler
        # (video id, path) -> features into the shared store; None: no precompute loop.
        self.precompute = precompute
        self._video_verdicts: OrderedDict[str, SafetyVerdict] = OrderedDict()
        self.refusal_text = refusal_text
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.redis = aioredis.from_url(settings.redis_url)
        self.stats = WorkerStats()
        self.in_flight: dict[str, str] = {}  # stream entry id -> request id
        self._tasks: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()
        self.unhealthy = False  # the engine failed check_health: the worker exits non-zero

    async def run(self) -> None:
        await self._ensure_group()
        names = [self._consume, self._heartbeat, self._takeover, self._listen_aborts]
        if self.precompute is not None:
            names.append(self._precompute)
        loops = [self._resilient(loop) for loop in names]
        log.info("llm worker %s ready (max batch %d)", self.name, self.settings.llm_max_batch)
        try:
            await asyncio.gather(*loops)
            await self._drain()
        finally:
            await self.redis.zrem(wire.WORKERS_ZSET, self.name)
            await self.engine.shutdown()

    def stop(self) -> None:
        self._stopping.set()

    async def _drain(self) -> None:
        """After stop (SIGTERM): answer and ack what this worker holds, for at most the request
        timeout (a dead engine answers nothing: no wait), then hand every entry still pending
        under this worker's name back to the group, claimable by another worker at once."""
        with contextlib.suppress(*_REDIS_LOST):
            await self.redis.zrem(wire.WORKERS_ZSET, self.name)  # no new work is expected of us
        if self._tasks and not self.unhealthy:
            log.info("stopping: finishing %d request(s) (at most %.0f s)", len(self._tasks),
                     self.settings.llm_request_timeout_s)
            await asyncio.wait(list(self._tasks), timeout=self.settings.llm_request_timeout_s)
        for request_id in list(self.in_flight.values()):
            await self.engine.abort(request_id)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
        with contextlib.suppress(*_REDIS_LOST):
            await self._hand_back()

    async def _hand_back(self) -> None:
        pending = await self.redis.xpending_range(wire.REQUESTS_STREAM, wire.GROUP, min="-", max="+",
                                                  count=10_000, consumername=self.name)
        entry_ids = [p["message_id"] for p in pending]
        if entry_ids:
            # Idle time past LLM_CLAIM_IDLE_S: the next XAUTOCLAIM of any worker takes them.
            # JUSTID leaves the delivery count alone (a handed-back entry is not a failure).
            idle_ms = int(self.settings.llm_claim_idle_s * 1000) * 10
            await self.redis.xclaim(wire.REQUESTS_STREAM, wire.GROUP, self.name, min_idle_time=0,
                                    message_ids=entry_ids, idle=idle_ms, justid=True)
            log.warning("stopping: handed %d unanswered request(s) back to the other workers", len(entry_ids))

    async def _resilient(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop until stop; a lost or slow Redis is waited out, not fatal."""
        delay = 0.2
        while not self._stopping.is_set():
            try:
                await loop()
                return
            except _REDIS_LOST as exc:
                log.warning("%s: Redis unavailable (%s); retrying in %.1f s", loop.__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _ensure_group(self) -> None:
        streams = [wire.REQUESTS_STREAM] + ([wire.PRECOMPUTE_STREAM] if self.precompute is not None else [])
        for stream in streams:
            try:
                await self.redis.xgroup_create(stream, wire.GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # -- loops ------------------------------------------------------------------------------
    async def _consume(self) -> None:
        capacity = self.settings.llm_max_batch * 2  # keep the next batch queued behind the current
        while not self._stopping.is_set():
            room = capacity - len(self.in_flight)
            if room <= 0:
                await asyncio.sleep(0.01)
                continue
            entries = await self.redis.xreadgroup(
                wire.GROUP, self.name, {wire.REQUESTS_STREAM: ">"}, count=room, block=500)
            for _stream, messages in entries or []:
                for entry_id, fields in messages:
                    self._start(entry_id, fields)

    async def _precompute(self) -> None:
        """Encode uploaded videos into the shared feature store, one at a time, between requests."""
        assert self.precompute is not None
        while not self._stopping.is_set():
            entries = await self.redis.xreadgroup(
                wire.GROUP, self.name, {wire.PRECOMPUTE_STREAM: ">"}, count=1, block=500)
            for _stream, messages in entries or []:
                for entry_id, fields in messages:
                    video_id = (fields.get(b"video_id") or b"").decode()
                    path = (fields.get(b"path") or b"").decode()
                    try:
                        await asyncio.to_thread(self.precompute, video_id, path)
                        log.info("precomputed the features of video %s", video_id[:12])
                    except Exception as exc:  # best effort: the first question will say what is wrong
                        log.warning("could not precompute the features of video %s: %s", video_id[:12], exc)
                    pipe = self.redis.pipeline()
                    pipe.xack(wire.PRECOMPUTE_STREAM, wire.GROUP, entry_id)
                    pipe.xdel(wire.PRECOMPUTE_STREAM, entry_id)
                    await pipe.execute()

    async def _takeover(self) -> None:
        """Claim entries a dead worker left pending."""
        idle_ms = int(self.settings.llm_claim_idle_s * 1000)
        while not self._stopping.is_set():
            await asyncio.sleep(max(0.2, self.settings.llm_claim_idle_s / 4))
            _next, claimed, _deleted = await self.redis.xautoclaim(
                wire.REQUESTS_STREAM, wire.GROUP, self.name, min_idle_time=idle_ms, start_id="0-0", count=50)
            for entry_id, fields in claimed:
                if not fields or entry_id in self.in_flight:
                    continue
                self.stats.claimed_from_others += 1
                log.warning("took over request entry %s from a silent worker", entry_id)
                self._start(entry_id, fields)

    async def _heartbeat(self) -> None:
        """Beat while the engine is healthy; when it is not, leave the pool and stop."""
        next_check = 0.0
        while not self._stopping.is_set():
            if time.monotonic() >= next_check:
                if not await self._engine_healthy():
                    await self._leave_unhealthy()
                    return
                next_check = time.monotonic() + self.settings.llm_health_interval_s
            now = time.time()
            pipe = self.redis.pipeline()
            pipe.zadd(wire.WORKERS_ZSET, {self.name: now})
            pipe.set(wire.worker_stats_key(self.name), json.dumps(self.stats.as_dict(self.engine)),
                     ex=int(self.settings.heartbeat_ttl_s * 3))
            await pipe.execute()
            if self.in_flight:  # keep our own entries from looking idle to other workers
                await self.redis.xclaim(wire.REQUESTS_STREAM, wire.GROUP, self.name, min_idle_time=0,
                                        message_ids=list(self.in_flight), justid=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.heartbeat_interval_s)

    async def _engine_healthy(self) -> bool:
        try:
            await asyncio.wait_for(self.engine.check_health(), self.settings.llm_health_timeout_s)
        except Exception as exc:  # EngineUnhealthy, a hung check, or whatever a dead engine raises
            self.stats.engine_healthy = False
            self.stats.engine_error = f"{type(exc).__name__}: {exc}"
        self.stats.health_checked_at = time.time()
        return self.stats.engine_healthy

    async def _leave_unhealthy(self) -> None:
        log.error("engine unhealthy (%s): leaving the worker pool and exiting so that a supervisor "
                  "restarts the llm-worker", self.stats.engine_error)
        self.unhealthy = True
        pipe = self.redis.pipeline()
        pipe.zrem(wire.WORKERS_ZSET, self.name)
        pipe.set(wire.worker_stats_key(self.name), json.dumps(self.stats.as_dict(self.engine)),
                 ex=int(self.settings.heartbeat_ttl_s * 3))
        await pipe.execute()
        self.stop()

    async def _listen_aborts(self) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(wire.ABORT_CHANNEL)
        try:
            while not self._stopping.is_set():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message and message.get("data"):
                    request_id = message["data"].decode()
                    if request_id in self.in_flight.values():
                        log.info("abort %s", request_id)
                        await self.engine.abort(request_id)
        finally:
            await pubsub.aclose()

    # -- one request ------------------------------------------------------------------------
    def _start(self, entry_id: bytes | str, fields: dict) -> None:
        entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        task = asyncio.create_task(self._handle(entry, fields))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, entry_id: str, fields: dict) -> None:
        raw = fields.get(b"payload") or fields.get("payload")
        try:
            req = wire.LLMRequest.model_validate_json(raw)
        except Exception:  # an unreadable entry can never succeed: drop it
            log.error("dropping malformed request entry %s", entry_id)
            await self._ack(entry_id)
            return
        self.in_flight[entry_id] = req.id
        try:
            reply = await self._answer(entry_id, req)
            await self._publish(req.id, {"type": "final", "result": reply.model_dump_json()})
            await self._ack(entry_id)
        except _REDIS_LOST as exc:
            # Not acknowledged: the entry stays pending and is claimed again later.
            log.warning("request %s: Redis lost while replying (%s); it will be retried", req.id, exc)
        finally:
            self.in_flight.pop(entry_id, None)

    async def _answer(self, entry_id: str, req: wire.LLMRequest) -> wire.LLMReply:
        """The reply to one request, whatever fails while serving it; only a lost Redis
        raises (the entry then stays pending, to be served again)."""
        try:
            return await self._serve(entry_id, req)
        except _REDIS_LOST:
            raise
        except Exception as exc:  # the engine, a safety check, or the worker itself failed
            log.exception("request %s failed", req.id)
            self.stats.failed += 1
            return wire.LLMReply.failure(req.id, FailureCode.ENGINE_ERROR,
                                         f"the llm-worker failed serving the request: {exc}", self.name)

    async def _serve(self, entry_id: str, req: wire.LLMRequest) -> wire.LLMReply:
        self.stats.requests += 1
        if time.time() > req.deadline:
            return wire.LLMReply.failure(req.id, FailureCode.EXPIRED, "the request expired before a worker took it",
                                         self.name)
        deliveries = await self._delivery_count(entry_id)
        if deliveries > wire.MAX_DELIVERIES:
            self.stats.failed += 1
            return wire.LLMReply.failure(
                req.id, FailureCode.WORKER_LOST,
                f"the request was taken over {deliveries - 1} times after worker failures", self.name)
        user_turns = [t for t in req.turns if t.role == "user"]
        if self.moderator and user_turns:
            verdict = screen_user_turn(self.moderator, user_turns[-1].content)
            if verdict.flagged:
                self.stats.refused += 1
                category = verdict.category or "unsafe"
                return wire.LLMReply(
                    id=req.id, status="refused", text=self.refusal_text(category), finish_reason="stop",
                    refusal=wire.SafetyHit(category=category, score=verdict.score), worker=self.name)

        last_delta: list[asyncio.Task] = []  # deltas publish in order: each waits for the previous

        flagged_video = await self._screen_videos(req.video_paths)
        if flagged_video is not None:
            self.stats.refused += 1
            category = flagged_video.category or "unsafe"
            return wire.LLMReply(
                id=req.id, status="refused", text=self.refusal_text(category), finish_reason="stop",
                refusal=wire.SafetyHit(category=category, score=flagged_video.score), worker=self.name)

        # Streamed deltas are the moderated text (workers.reply_moderation): a caption goes
        # out only once judged, as its marker or the withheld notice.
        moderated = StreamModerator(self.moderator)

        def on_delta(request_id: str, delta: str) -> None:
            previous = last_delta[-1] if last_delta else None
            last_delta[:] = [asyncio.create_task(self._publish_after(previous, request_id, moderated, delta))]

        try:
            result = await self.engine.submit(to_generation_request(req), on_delta if req.stream else None)
        finally:
            if last_delta:
                await last_delta[-1]
        return moderate_reply(req, result, self.moderator, self.name, known=moderated.verdicts)

    async def _publish_after(self, previous: asyncio.Task | None, request_id: str, moderated: StreamModerator,
                             delta: str) -> None:
        if previous is not None:
            await previous
        if text := moderated.feed(delta):
            await self._publish(request_id, {"type": "delta", "text": text})

    async def _screen_videos(self, video_paths: dict[str, str]) -> SafetyVerdict | None:
        """The first flagged video's verdict, or None. Verdicts are cached by video id
        (ids are content hashes), so a video is screened once."""
        if self.frame_checker is None or self.frame_sampler is None:
            return None
        for video_id, path in video_paths.items():
            verdict = self._video_verdicts.get(video_id)
            if verdict is None:
                try:
                    frames = await asyncio.to_thread(self.frame_sampler, path)
                except Exception:  # unreadable: the engine reports it with the video's own code
                    continue
                verdict = await asyncio.to_thread(screen_frames, self.frame_checker, frames, "upload")
                self._video_verdicts[video_id] = verdict
                while len(self._video_verdicts) > 4096:
                    self._video_verdicts.popitem(last=False)
            if verdict.flagged:
                return verdict
        return None

    async def _delivery_count(self, entry_id: str) -> int:
        info = await self.redis.xpending_range(wire.REQUESTS_STREAM, wire.GROUP, min=entry_id, max=entry_id, count=1)
        return int(info[0]["times_delivered"]) if info else 1

    async def _publish(self, request_id: str, fields: dict[str, str]) -> None:
        key = wire.reply_stream(request_id)
        pipe = self.redis.pipeline()
        pipe.xadd(key, fields)
        pipe.expire(key, wire.REPLY_TTL_S)
        await pipe.execute()

    async def _ack(self, entry_id: str) -> None:
        pipe = self.redis.pipeline()
        pipe.xack(wire.REQUESTS_STREAM, wire.GROUP, entry_id)
        pipe.xdel(wire.REQUESTS_STREAM, entry_id)
        await pipe.execute()


def build_worker(settings: Settings) -> LLMWorker:
    from gpt4video.defaults import bases_dir, resolve_model_dir
    from model.checkpoint import load_checkpoint
    from model.engine.factory import build_engine, resolve_engine, sampling_options
    from model.safety.from_checkpoint import frame_checker_for_model
    from model.video import sample_frames

    settings = settings.model_copy(update={"engine": resolve_engine(settings)})  # ENGINE=auto decided once
    model_dir = resolve_model_dir(settings)
    log.info("loading checkpoint %s on %s", model_dir, settings.device)
    # vLLM holds the LLM itself: load only the embedding table beside it.
    llm_weights = "embeddings" if settings.engine == "vllm" else "full"
    model = load_checkpoint(model_dir, device=settings.device, llm_weights=llm_weights,
                            bases_dir=bases_dir(settings))
    engine = build_engine(settings, model, model_dir)
    precompute = _precomputer(settings, model) if settings.precompute_features else None
    moderator = None
    refusal_text: Callable[[str], str] = _no_policy_refusal
    if settings.safety_enabled:
        from model.safety.policy import refusal_message
        from model.safety.text import TextModerator

        moderator = TextModerator.load(settings.safety_head_path, thresholds=settings.safety_thresholds)
        refusal_text = refusal_message
    else:
        log.warning("SAFETY_ENABLED=false: user turns and captions are not moderated")
    frame_checker = frame_checker_for_model(model, thresholds=settings.safety_frame_thresholds)
    if isinstance(frame_checker, PassThroughFrameChecker):
        return LLMWorker(settings, engine, moderator, refusal_text, precompute=precompute)
    cfg = model.config.vision
    sampling = sampling_options(settings)

    def sample(path: str) -> np.ndarray:  # the frames the model sees
        return sample_frames(path, cfg.num_frames, size=cfg.image_size, options=sampling)

    return LLMWorker(settings, engine, moderator, refusal_text, frame_checker=frame_checker, frame_sampler=sample,
                     precompute=precompute)


def _precomputer(settings: Settings, model: Any) -> Callable[[str, str], object] | None:
    """Encodes one video into the shared store (the engine reads it there on the first question)."""
    from model.engine.factory import feature_store, sampling_options
    from model.engine.inputs import RequestInputs

    store = feature_store(settings)
    if store is None:
        log.warning("PRECOMPUTE_FEATURES=true needs the shared feature store (FEATURE_STORE_MAX_MB > 0); off")
        return None
    extractor = RequestInputs.for_model(model, cache_size=0, store=store, sampling=sampling_options(settings)).features
    return lambda video_id, path: extractor.features({video_id: path})


def _no_policy_refusal(category: str) -> str:
    return f"I can't help with that ({category})."



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video llm-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--name", help="consumer name (default: host-pid)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    worker = build_worker(settings)
    if args.name:
        worker.name = args.name

    async def run() -> None:
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    asyncio.run(run())
    return 1 if worker.unhealthy else 0


if __name__ == "__main__":
    raise SystemExit(main())
