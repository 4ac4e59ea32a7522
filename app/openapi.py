"""An OpenAPI document that says what the service answers, errors included.

FastAPI documents a route's success and a 422 in its own validation shape; this service
answers every error in its envelope (`app.errors`; OpenAI's shape on the OpenAI routes).
`install_openapi` rewrites the generated document once:

- every operation declares, with the error schema, the statuses every route can answer
  (500, 503 Redis down), 400 and 422 where it reads a body (undecodable, invalid), 422
  where it takes parameters, 401 where it takes an API key, 404 where a path names a
  resource, and the statuses of `OPERATION_ERRORS`, the table of what each operation adds;
- FastAPI's own validation-error schemas go (nothing answers in that shape).

A route may still declare more (or describe one) in its own `responses=`; those are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from app.deps import get_owner
from app.routes import route_contexts


class ErrorBody(BaseModel):
    type: str = Field(description="the kind of failure (invalid_request, not_found, ...)")
    message: str = Field(description="what went wrong and what to do next")
    code: str = Field(description="a stable machine-readable code (upload_too_large, context_too_long, ...)")


class ErrorEnvelope(BaseModel):
    """Every error of the service's own routes."""

    error: ErrorBody


# What an operation answers beyond the statuses every route can (see the module doc).
OPERATION_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/v1/videos"): (413, 415, 429, 507),
    ("POST", "/v1/videos/understand"): (404, 413, 415, 429, 504, 507),
    ("POST", "/v1/chat"): (404, 429, 504),
    ("POST", "/v1/chat/completions"): (404, 413, 415, 429, 504, 507),
    ("GET", "/readyz"): (503,),
    ("GET", "/metrics"): (401, 403),
}
EVERY_ROUTE = (500, 503)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _calls(sub)


def error_statuses(route: APIRoute, path: str, method: str, has_path_params: bool) -> set[int]:
    statuses = set(EVERY_ROUTE) | set(OPERATION_ERRORS.get((method, path), ()))
    if route.body_field is not None or (route.openapi_extra and "requestBody" in route.openapi_extra):
        statuses |= {400, 422}
    if route.dependant.path_params or route.dependant.query_params:
        statuses.add(422)
    if get_owner in set(_calls(route.dependant)):
        statuses.add(401)
    if has_path_params:
        statuses.add(404)
    return statuses


def _error_response(status: int, schema_ref: str, described: dict | None) -> dict:
    response = dict(described or {})
    response.setdefault("description", HTTPStatus(status).phrase)
    response["content"] = {"application/json": {"schema": {"$ref": schema_ref}}}
    return response


def _error_model(route: APIRoute) -> type[BaseModel]:
    return getattr(route, "error_model", ErrorEnvelope)


def build_openapi(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for route, context in route_contexts(app.routes):  # included routers' routes, with their prefixes
        path = context.path_format
        if not isinstance(route, APIRoute) or not route.include_in_schema or path not in schema["paths"]:
            continue
        model = _error_model(route)
        model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema
        ref = f"#/components/schemas/{model.__name__}"
        for method in context.methods or ():
            operation = schema["paths"][path].get(method.lower())
            if operation is None:
                continue
            responses = operation.setdefault("responses", {})
            for status in sorted(error_statuses(route, path, method, "{" in path)):
                responses[str(status)] = _error_response(status, ref, responses.get(str(status)))
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _form_field(schema: dict) -> dict:
    """A sampling field's JSON schema as a multipart field (never null)."""
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    return {**branches[0], **({"default": schema["default"]} if schema.get("default") is not None else {})}


def understand_form_schema(sampling: type[BaseModel], video_id_pattern: str) -> dict:
    """POST /v1/videos/understand's multipart body: a prompt, and a file or a video_id."""
    fields = sampling.model_json_schema()["properties"]
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "pattern": r"\S", "description": "the question (MAX_PROMPT_CHARS at most)"},
            "file": {"type": "string", "format": "binary", "contentMediaType": "video/*"},
            "video_id": {"type": "string", "pattern": video_id_pattern, "description": "an id from POST /v1/videos"},
            **{name: _form_field(fields[name]) for name in ("max_new_tokens", "temperature", "top_p", "seed")},
        },
        "required": ["prompt"],
        "oneOf": [{"required": ["file"]}, {"required": ["video_id"]}],
    }}}}}
