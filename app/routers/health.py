"""GET /healthz (process alive) and GET /readyz (Redis reachable, a healthy LLM worker).

A worker beats only while its engine passes `check_health` (see `gpt4video.llm_protocol`),
so the workers counted here are the healthy ones."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import RedisDep, SettingsDep
from app.errors import ServiceUnavailable
from app.llm_client import live_llm_workers

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(redis: RedisDep, settings: SettingsDep) -> dict[str, object]:
    await redis.ping()  # a lost Redis becomes the 503 envelope
    workers = await live_llm_workers(redis, settings.heartbeat_ttl_s)
    if workers == 0:
        raise ServiceUnavailable("no healthy LLM worker has sent a heartbeat recently; start `gpt4video llm-worker` "
                                 "(one whose engine failed its health check has exited: see its log)",
                                 "no_llm_worker", {"Retry-After": "10"})
    return {"status": "ready", "llm_workers": workers}
