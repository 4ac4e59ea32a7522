"""Graceful stop of the API: what SIGTERM does.

uvicorn stops accepting connections at once and lets running requests finish for
API_GRACE_S (`timeout_graceful_shutdown`); then it cancels them. `AnswerWhenCanceled`
turns such a cancellation into the error envelope's 503, so the client is told to retry
instead of seeing its connection drop.
"""

from __future__ import annotations

import asyncio
import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("gpt4video.api")

_BODY = json.dumps({"error": {
    "type": "service_unavailable", "code": "shutting_down",
    "message": "the server stopped before this request finished; retry (another instance, or this one "
               "once it is back)"}}).encode()


class AnswerWhenCanceled:
    """ASGI middleware: a request cancelled before its response started is answered 503."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except asyncio.CancelledError:
            if not started:
                log.warning("%s %s cancelled by the shutdown; answered 503", scope.get("method"), scope.get("path"))
                try:
                    await send({"type": "http.response.start", "status": 503, "headers": [
                        (b"content-type", b"application/json"), (b"retry-after", b"5"),
                        (b"content-length", str(len(_BODY)).encode()), (b"connection", b"close")]})
                    await send({"type": "http.response.body", "body": _BODY})
                except Exception:  # the client is gone too: nothing to tell it
                    pass
            raise
