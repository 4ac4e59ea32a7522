"""The API's side of the LLM request stream: submit, wait or stream, abort."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.errors import GatewayTimeout, ServiceUnavailable, TooManyRequests
from app.limits import KeyLimits
from gpt4video import llm_protocol as wire
from gpt4video.settings import Settings

log = logging.getLogger("gpt4video.api")
_REDIS_LOST = (RedisConnectionError, RedisTimeoutError)


async def live_llm_workers(redis: aioredis.Redis, ttl_s: float) -> int:
    return int(await redis.zcount(wire.WORKERS_ZSET, time.time() - ttl_s, "+inf"))


class LLMClient:
    """One caller's requests; with an `owner`, its per-key limits hold (app.limits): a slot is
    taken at submit and given back when the reply has been read (or the wait ends)."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, owner: str | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.owner = owner
        self.limits = KeyLimits(redis, settings)

    async def submit(self, request: wire.LLMRequest) -> None:
        if await live_llm_workers(self.redis, self.settings.heartbeat_ttl_s) == 0:
            raise ServiceUnavailable("no LLM worker is running; start one with `gpt4video llm-worker`",
                                     "no_llm_worker", {"Retry-After": "10"})
        backlog = await self.redis.xlen(wire.REQUESTS_STREAM)
        if backlog >= self.settings.max_pending_llm_requests:
            raise TooManyRequests(f"{backlog} requests are waiting for the model; retry shortly",
                                  "llm_backlog_full", {"Retry-After": "2"})
        if self.owner is not None:
            await self.limits.check_active_jobs(self.owner)
            await self.limits.acquire_llm(self.owner, request.id)
        try:
            await self.redis.xadd(wire.REQUESTS_STREAM, {"payload": request.model_dump_json()})
        except BaseException:
            await self._release(request.id)
            raise

    async def _release(self, request_id: str) -> None:
        if self.owner is not None:
            await self.limits.release_llm(self.owner, request_id)

    async def abort(self, request_id: str) -> None:
        await self.redis.publish(wire.ABORT_CHANNEL, request_id)

    async def events(self, request_id: str, timeout_s: float) -> AsyncIterator[tuple[str, str | wire.LLMReply]]:
        """Yield ("delta", text)… then ("final", reply). Raise 504 at the deadline (and abort)."""
        key = wire.reply_stream(request_id)
        last_id = "0-0"
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    await self.abort(request_id)
                    raise GatewayTimeout(
                        f"the model did not answer within {timeout_s:.0f} s (worker busy or lost); "
                        "retry, or raise LLM_REQUEST_TIMEOUT_S", "llm_timeout")
                block_ms = max(1, int(min(remaining, 1.0) * 1000))
                try:
                    entries = await self.redis.xread({key: last_id}, count=100, block=block_ms)
                except _REDIS_LOST as exc:  # a restarting Redis: the reply is waited for, not lost
                    log.warning("request %s: Redis unavailable while waiting (%s); retrying", request_id, exc)
                    await asyncio.sleep(min(0.5, max(0.0, remaining)))
                    continue
                for _stream, messages in entries or []:
                    for entry_id, fields in messages:
                        last_id = entry_id
                        kind = fields.get(b"type", b"").decode()
                        if kind == "delta":
                            yield "delta", fields[b"text"].decode()
                        elif kind == "final":
                            yield "final", wire.LLMReply.model_validate_json(fields[b"result"])
                            return
        finally:
            with contextlib.suppress(*_REDIS_LOST):  # both expire by themselves
                await self.redis.delete(key)
                await self._release(request_id)

    async def wait(self, request_id: str, timeout_s: float) -> wire.LLMReply:
        # Closed here, not when garbage-collected: its finally (reply stream gone, the key's
        # LLM slot given back) runs before the answer goes out.
        async with contextlib.aclosing(self.events(request_id, timeout_s)) as events:
            async for kind, value in events:
                if kind == "final":
                    assert isinstance(value, wire.LLMReply)
                    return value
        raise GatewayTimeout("the model's reply stream ended without a result", "llm_no_result")


