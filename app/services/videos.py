"""Receiving, probing, storing and resolving uploaded videos."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import asdict

import redis
import redis.asyncio as aioredis
from fastapi import Request

from app.disk import DiskGuard
from app.errors import NotFound, Unprocessable, UnsupportedMedia
from app.failures import failure_error
from app.limits import KeyLimits
from app.schemas import VIDEO_ID_PATTERN, VideoInfoOut, VideoUploadResponse
from app.uploads import ReceivedForm, VideoStore
from gpt4video import llm_protocol as wire
from gpt4video.settings import Settings
from model.engine.base import FailureCode

log = logging.getLogger("gpt4video.api")


def owners_key(video_id: str) -> str:
    return f"g4v:video:{video_id}:owners"


def _deleted_key(video_id: str) -> str:
    """Owners who deleted the video lately: their repeated DELETE is answered as the first."""
    return f"g4v:video:{video_id}:deleted"


def video_lock(connection: aioredis.Redis | redis.Redis, video_id: str):
    """Serialises storing, deleting and expiring one content hash across API processes, so
    a delete never removes a file that a concurrent upload has just claimed."""
    return connection.lock(f"g4v:video:{video_id}:lock", timeout=30, blocking_timeout=30)


DELETED_MEMORY_S = 24 * 3600


async def receive_upload(request: Request, settings: Settings, redis: aioredis.Redis, owner: str) -> ReceivedForm:
    """Stream the form in, within MAX_UPLOAD_BYTES (413), the disk's room (507) and the key's
    daily quota (429); past any of them nothing is left on disk."""
    guard: DiskGuard = request.app.state.disk_guard
    budgets = [await asyncio.to_thread(guard.budget), await KeyLimits(redis, settings).upload_budget(owner)]
    store: VideoStore = request.app.state.video_store
    form = await store.receive(request, settings.max_upload_bytes, budgets=[b for b in budgets if b is not None])
    guard.added(form.file_size)
    return form


async def probe_upload(form: ReceivedForm, settings: Settings) -> dict:
    """Probe in a separate, time- and memory-capped process; map failures to 415/422."""
    from model.video import (
        CorruptVideo,
        NoVideoStream,
        VideoError,
        VideoLimits,
        probe_isolated,
    )

    assert form.file_path is not None
    limits = VideoLimits(max_duration_s=settings.max_video_seconds, max_pixels=settings.max_video_pixels)
    try:
        info = await asyncio.to_thread(probe_isolated, form.file_path, limits, settings.probe_timeout_s,
                                       settings.probe_memory_mb)
    except (NoVideoStream, CorruptVideo) as exc:
        form.file_path.unlink(missing_ok=True)
        raise UnsupportedMedia(f"not a readable video: {_in_client_terms(exc, form)}", exc.code) from None
    except VideoError as exc:
        form.file_path.unlink(missing_ok=True)
        raise Unprocessable(_in_client_terms(exc, form), exc.code) from None
    return asdict(info)


def _in_client_terms(exc: Exception, form: ReceivedForm) -> str:
    """The probe's message names the server's temporary file: name the client's file instead."""
    assert form.file_path is not None
    return str(exc).replace(str(form.file_path), form.file_name).replace(form.file_path.name, form.file_name)


async def store_upload(form: ReceivedForm, settings: Settings, store: VideoStore, redis: aioredis.Redis,
                       owner: str) -> VideoUploadResponse:
    if form.file_path is None or form.file_size == 0:
        if form.file_path is not None:
            form.file_path.unlink(missing_ok=True)
        raise Unprocessable("the 'file' part is missing or empty", "missing_file")
    info = await probe_upload(form, settings)
    async with video_lock(redis, form.sha256):
        created = store.commit(form.file_path, form.sha256, info)
        pipe = redis.pipeline()
        pipe.sadd(owners_key(form.sha256), owner)
        if settings.video_retention_s:
            pipe.expire(owners_key(form.sha256), settings.video_retention_s)
        await pipe.execute()
    await KeyLimits(redis, settings).count_upload(owner, form.file_size)
    log.info("video %s stored (%d bytes, new=%s)", form.sha256[:12], form.file_size, created)
    if settings.precompute_features and created:
        await request_precompute(redis, form.sha256, str(store.path_for(form.sha256).resolve()))
    fields = {k: info[k] for k in VideoInfoOut.model_fields}
    return VideoUploadResponse(id=form.sha256, bytes=form.file_size, info=VideoInfoOut(**fields), created=created)


async def request_precompute(redis: aioredis.Redis, video_id: str, path: str) -> None:
    """Ask an LLM worker to encode the video's features now (PRECOMPUTE_FEATURES)."""
    await redis.xadd(wire.PRECOMPUTE_STREAM, {"video_id": video_id, "path": path},
                     maxlen=wire.PRECOMPUTE_MAXLEN, approximate=True)


async def resolve_videos(video_ids: list[str], store: VideoStore, redis: aioredis.Redis,
                         owner: str) -> dict[str, str]:
    """Video id -> absolute path, for videos this caller uploaded; 404 otherwise, and a
    storage error when an uploaded video's file is gone (the server's fault)."""
    paths = {}
    for video_id in video_ids:
        if not await redis.sismember(owners_key(video_id), owner):
            raise NotFound(f"no video {video_id}; upload it with POST /v1/videos", "video_not_found")
        if not store.exists(video_id):
            log.error("video %s was uploaded but its file %s is missing", video_id, store.path_for(video_id))
            raise failure_error(FailureCode.VIDEO_MISSING, (
                f"video {video_id} was uploaded but the server lost its file; upload it again "
                "with POST /v1/videos"))
        paths[video_id] = str(store.path_for(video_id).resolve())
    return paths


async def delete_video(video_id: str, store: VideoStore, redis: aioredis.Redis, owner: str) -> None:
    """DELETE /v1/videos/{id}: drop this owner's claim; the file goes with the last claim.
    404 for a video this owner never uploaded; a repeated delete succeeds again."""
    if re.fullmatch(VIDEO_ID_PATTERN[1:-1], video_id) is None:
        raise NotFound(f"no video {video_id}", "video_not_found")
    async with video_lock(redis, video_id):
        pipe = redis.pipeline()
        pipe.srem(owners_key(video_id), owner)
        pipe.scard(owners_key(video_id))
        removed, remaining = await pipe.execute()
        if not removed:
            if await redis.sismember(_deleted_key(video_id), owner):
                return
            raise NotFound(f"no video {video_id}", "video_not_found")
        pipe = redis.pipeline()
        pipe.sadd(_deleted_key(video_id), owner)
        pipe.expire(_deleted_key(video_id), DELETED_MEMORY_S)
        await pipe.execute()
        if remaining == 0:
            store.remove(video_id)
    log.info("video %s deleted by an owner (%s)", video_id[:12],
             "file removed" if remaining == 0 else f"{remaining} owner(s) keep it")
