"""The FastAPI application. It never loads a model: it validates, stores, enqueues,
waits with a timeout and answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app.disk import DiskGuard
from app.draining import AnswerWhenCanceled
from app.errors import install_error_handlers
from app.metrics import install_metrics
from app.openapi import install_openapi
from app.reaper import Reaper
from app.routers import chat, health, jobs, openai_chat, videos
from app.routers.web import install_web
from app.uploads import VideoStore
from gpt4video.jobs import JobStore
from gpt4video.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.outputs_dir.mkdir(parents=True, exist_ok=True)
        app.state.settings = settings
        app.state.redis = aioredis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        app.state.sync_redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        app.state.job_store = JobStore(app.state.sync_redis, settings.job_record_ttl_s)
        app.state.video_store = VideoStore(settings.data_dir)
        app.state.disk_guard = DiskGuard(settings)
        reaper = asyncio.create_task(Reaper(settings, app.state.video_store, app.state.sync_redis).run_forever())
        try:
            yield
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            await app.state.redis.aclose()
            app.state.sync_redis.close()

    # /docs and /redoc from assets in the fastapi-offline package: they render with no internet.
    app = FastAPIOffline(
        title="GPT4Video",
        version="0.1.0",
        description="Video understanding and safe video generation inside a conversation.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(AnswerWhenCanceled)
    for router in (health.router, videos.router, chat.build_router(settings), openai_chat.build_router(settings),
                   jobs.router):
        app.include_router(router)
    install_web(app)  # GET / (the chat page) and its assets under /web/
    install_openapi(app)
    install_metrics(app, settings)
    return app


def main(argv: list[str] | None = None) -> int:
    import argparse
    import signal

    import uvicorn

    parser = argparse.ArgumentParser(prog="gpt4video api", description="Run the HTTP API.")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    # SIGTERM: stop accepting, let running requests finish for API_GRACE_S, then 503 (app.draining).
    # uvicorn re-raises the signal it handled once it is done, to the handler it found; a no-op
    # one makes a completed graceful stop exit 0 instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(create_app(settings), host=args.host or settings.api_host, port=args.port or settings.api_port,
                log_level="info", timeout_graceful_shutdown=settings.api_grace_s)
    return 0
