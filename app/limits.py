"""Per-key limits (KEY_MAX_CONCURRENT_LLM, KEY_MAX_ACTIVE_JOBS, KEY_UPLOAD_BYTES_PER_DAY).

Owners are the hashed key ids of `app.deps.key_owner` (raw keys are never stored). Every
count lives in Redis, so the limits hold across API processes, and heals itself: an LLM
slot older than the request timeout is dropped, a job counts only while its record says
queued or running, a day's upload counter expires with the day.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis

from app.errors import TooManyRequests
from app.uploads import Budget
from gpt4video.jobs import owner_jobs_key, record_key
from gpt4video.settings import Settings

# KEYS[1] the owner's slots (zset request id -> start); ARGV now, stale before, limit, id, ttl.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""
_ACTIVE = {b"queued", b"running"}


def _llm_key(owner: str) -> str:
    return f"g4v:limits:{owner}:llm"


def _upload_key(owner: str, day: str) -> str:
    return f"g4v:limits:{owner}:upload:{day}"


def _seconds_to_midnight_utc() -> int:
    now = datetime.now(UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((midnight - now).total_seconds()))


class KeyLimits:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._acquire = redis.register_script(_ACQUIRE)

    # -- concurrent LLM requests ----------------------------------------------------------
    async def acquire_llm(self, owner: str, request_id: str) -> None:
        limit = self.settings.key_max_concurrent_llm
        if not limit:
            return
        now = time.time()
        stale = now - self.settings.llm_request_timeout_s - 30
        ttl = int(self.settings.llm_request_timeout_s) + 60
        if not int(await self._acquire(keys=[_llm_key(owner)], args=[now, stale, limit, request_id, ttl])):
            raise TooManyRequests(
                f"this API key already has {limit} requests with the model (KEY_MAX_CONCURRENT_LLM); "
                "wait for one to finish, then retry", "key_llm_limit", {"Retry-After": "1"})

    async def release_llm(self, owner: str, request_id: str) -> None:
        if self.settings.key_max_concurrent_llm:
            await self.redis.zrem(_llm_key(owner), request_id)

    # -- video jobs queued or running -----------------------------------------------------
    async def check_active_jobs(self, owner: str) -> None:
        """429 when the key's queued and running jobs reach the limit (before the model runs:
        a reply's captions would become jobs). Ended or expired jobs are pruned here."""
        limit = self.settings.key_max_active_jobs
        if not limit:
            return
        key = owner_jobs_key(owner)
        job_ids = await self.redis.zrange(key, 0, -1)
        if len(job_ids) < limit:
            return
        pipe = self.redis.pipeline()
        for job_id in job_ids:
            pipe.hget(record_key(job_id.decode()), "status")
        statuses = await pipe.execute()
        ended = [j for j, status in zip(job_ids, statuses, strict=True) if status not in _ACTIVE]
        if ended:
            await self.redis.zrem(key, *ended)
        active = len(job_ids) - len(ended)
        if active >= limit:
            raise TooManyRequests(
                f"this API key has {active} video jobs queued or running (KEY_MAX_ACTIVE_JOBS={limit}); "
                "wait for one to end or cancel one with DELETE /v1/jobs/{id}", "key_job_limit",
                {"Retry-After": "5"})

    # -- upload bytes a day ----------------------------------------------------------------
    async def upload_budget(self, owner: str) -> Budget | None:
        quota = self.settings.key_upload_bytes_per_day
        if not quota:
            return None
        used = int(await self.redis.get(_upload_key(owner, _today())) or 0)
        retry = str(_seconds_to_midnight_utc())

        def exceeded() -> TooManyRequests:
            return TooManyRequests(
                f"this API key has used its upload quota of {quota} bytes today (KEY_UPLOAD_BYTES_PER_DAY; "
                f"{used} used); it renews at 00:00 UTC", "key_upload_quota", {"Retry-After": retry})

        if used >= quota:
            raise exceeded()
        return Budget(quota - used, exceeded)

    async def count_upload(self, owner: str, nbytes: int) -> None:
        if self.settings.key_upload_bytes_per_day and nbytes:
            key = _upload_key(owner, _today())
            pipe = self.redis.pipeline()
            pipe.incrby(key, nbytes)
            pipe.expire(key, 2 * 24 * 3600)
            await pipe.execute()


def _today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")
