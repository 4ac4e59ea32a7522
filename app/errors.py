"""One error envelope for every failure: `{"error": {"type", "message", "code"}}`.

Routes raise `APIError` subclasses; the handlers below also turn validation errors,
unknown routes and a lost Redis into the same envelope, so no client ever sees a stack
trace or a 500 for its own mistake.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.routes import route_contexts

log = logging.getLogger("gpt4video.api")


class APIError(Exception):
    status = 400
    type = "invalid_request"

    def __init__(self, message: str, code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.type
        self.headers = headers


class BadRequest(APIError):
    status, type = 400, "invalid_request"


class Unauthorized(APIError):
    status, type = 401, "unauthorized"


class Forbidden(APIError):
    status, type = 403, "forbidden"


class NotFound(APIError):
    status, type = 404, "not_found"


class PayloadTooLarge(APIError):
    status, type = 413, "payload_too_large"


class UnsupportedMedia(APIError):
    status, type = 415, "unsupported_media"


class Unprocessable(APIError):
    status, type = 422, "unprocessable"


class TooManyRequests(APIError):
    status, type = 429, "rate_limited"


class InternalError(APIError):
    status, type = 500, "internal_error"


class InsufficientStorage(APIError):
    status, type = 507, "insufficient_storage"


class ServiceUnavailable(APIError):
    status, type = 503, "service_unavailable"


class GatewayTimeout(APIError):
    status, type = 504, "timeout"


def envelope(status: int, type_: str, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message, "code": code}}, status_code=status,
                        headers=headers)


def validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def allowed_methods(request: Request) -> list[str]:
    """The methods of the resource at this path: every route with the path template of the
    first route that matches it. Starlette's 405 names only that first route's methods, and
    one template may have several routes (GET and DELETE /v1/jobs/{job_id})."""
    template = None
    methods: set[str] = set()
    for _, route in route_contexts(request.app.router.routes):  # included routers' routes too
        if not getattr(route, "methods", None):
            continue
        if template is None and route.matches(request.scope)[0] != Match.NONE:  # PARTIAL: path, not method
            template = route.path_format
        if route.path_format == template:
            methods |= set(route.methods)
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return envelope(exc.status, exc.type, exc.message, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return envelope(422, "invalid_request", validation_message(exc), "validation_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return envelope(exc.status_code, type_, str(exc.detail), type_, headers)

    @app.exception_handler(RedisConnectionError)
    @app.exception_handler(RedisTimeoutError)
    async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        log.error("redis unavailable: %s", exc)
        return envelope(503, "service_unavailable", "the job store (Redis) is unreachable; retry shortly",
                        "redis_unavailable", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return envelope(500, "internal_error", "internal error; it has been logged", "internal_error")
