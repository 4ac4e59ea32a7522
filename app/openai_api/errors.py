"""OpenAI's error shape on the OpenAI-compatible routes.

The service's errors are the same objects everywhere (`app.errors.APIError`, statuses
from `app.failures`); on these routes they are written as OpenAI writes them,
`{"error": {"message", "type", "param", "code"}}`, so the SDK raises the right exception
class with the service's message. `type` is OpenAI's vocabulary (by status), `code` the
service's own code (`context_too_long`, `llm_backlog_full`, ...). A request the schema
rejects is a 400 (as OpenAI and vLLM answer), naming the field in `param`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from app.errors import APIError, BadRequest, PayloadTooLarge, ServiceUnavailable, validation_message
from app.openai_api.schemas import OpenAIError, OpenAIErrorBody

log = logging.getLogger("gpt4video.api")

_TOO_LARGE = ("the request body is too large: a data: video may hold at most MAX_UPLOAD_BYTES; upload a larger "
              "one with POST /v1/videos and send gpt4video://videos/<id>")
_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def openai_error(exc: APIError, param: str | None = None) -> OpenAIError:
    type_ = "server_error" if exc.status >= 500 else _TYPES.get(exc.status, "invalid_request_error")
    return OpenAIError(error=OpenAIErrorBody(message=exc.message, type=type_, param=param, code=exc.code))


def openai_error_response(exc: APIError, param: str | None = None) -> JSONResponse:
    return JSONResponse(openai_error(exc, param).model_dump(), status_code=exc.status, headers=exc.headers)


def _param(exc: RequestValidationError) -> str | None:
    """The field at fault, as a path (`messages.0.content`), without pydantic's union labels."""
    for err in exc.errors()[:1]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body" and re.fullmatch(r"\w+", str(p))]
        return ".".join(loc) or None
    return None


def as_api_error(exc: Exception) -> tuple[APIError, str | None] | None:
    """The service error (and the offending field) an exception stands for; None: a bug."""
    if isinstance(exc, APIError):
        return exc, getattr(exc, "param", None)
    if isinstance(exc, RequestValidationError):
        return BadRequest(validation_message(exc), "validation_error"), _param(exc)
    if isinstance(exc, _BodyTooLarge):
        return PayloadTooLarge(_TOO_LARGE, "request_too_large"), None
    if isinstance(exc, StarletteHTTPException):
        error = APIError(str(exc.detail), "http_error", dict(exc.headers or {}))
        error.status = exc.status_code
        return error, None
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        log.error("redis unavailable: %s", exc)
        return ServiceUnavailable("the job store (Redis) is unreachable; retry shortly", "redis_unavailable",
                                  {"Retry-After": "5"}), None
    return None


class _BodyTooLarge(StarletteHTTPException):
    """Raised while FastAPI reads the body (it re-raises HTTP exceptions only)."""

    def __init__(self) -> None:
        super().__init__(413, _TOO_LARGE)


class _CappedRequest(Request):
    """A request whose body is read with a size cap (FastAPI's custom-request recipe)."""

    max_body_bytes = 0

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise _BodyTooLarge
            chunks, size = [], 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise _BodyTooLarge
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body


def openai_route(max_body_bytes: int) -> type[APIRoute]:
    """A route class whose failures (validation included) answer in OpenAI's error shape,
    and whose body is refused past `max_body_bytes` (413, in that shape too)."""

    capped = type("CappedRequest", (_CappedRequest,), {"max_body_bytes": max_body_bytes})

    class OpenAIRoute(APIRoute):
        error_model = OpenAIError  # what app.openapi documents for its error statuses

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def route(request: Request) -> Response:
                try:
                    return await handler(capped(request.scope, request.receive))
                except Exception as exc:
                    mapped = as_api_error(exc)
                    if mapped is None:
                        raise
                    return openai_error_response(*mapped)

            return route

    return OpenAIRoute
