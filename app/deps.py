"""FastAPI dependencies as typed aliases (settings, Redis, the caller's identity)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated

import redis
import redis.asyncio as aioredis
from fastapi import Depends, Request

from app.errors import Unauthorized
from gpt4video.jobs import JobStore
from gpt4video.settings import Settings

ANONYMOUS = "anonymous"


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_redis(request: Request) -> aioredis.Redis:
    return request.app.state.redis


def get_sync_redis(request: Request) -> redis.Redis:
    return request.app.state.sync_redis


def get_job_store(request: Request) -> JobStore:
    return request.app.state.job_store


def key_owner(api_key: str) -> str:
    """A stable owner id for a key; raw keys are never stored."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:24]


def get_owner(request: Request) -> str:
    keys: frozenset[str] = request.app.state.settings.api_key_set
    if not keys:
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'", "missing_api_key",
                           {"WWW-Authenticate": "Bearer"})
    if not any(hmac.compare_digest(token.strip(), k) for k in keys):
        raise Unauthorized("invalid API key", "invalid_api_key", {"WWW-Authenticate": "Bearer"})
    return key_owner(token.strip())


SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[aioredis.Redis, Depends(get_redis)]
SyncRedisDep = Annotated[redis.Redis, Depends(get_sync_redis)]
JobStoreDep = Annotated[JobStore, Depends(get_job_store)]
OwnerDep = Annotated[str, Depends(get_owner)]
