"""The app's routes with their full paths, on either FastAPI line the project runs on.

FastAPI 0.14x and later keep an included router as one route (`_IncludedRouter`) and
expose its routes through `fastapi.routing.iter_route_contexts`; the FastAPI that vLLM's
CPU build pins (0.136, `.venv-vllm`) copies them into the app's route list. `route_contexts`
yields, on both, `(route, context)`: the route as declared (dependant, body, openapi_extra)
and what answers at the full path (`path_format`, `methods`, `matches`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from starlette.routing import BaseRoute

try:
    from fastapi.routing import iter_route_contexts
except ImportError:  # FastAPI < 0.140: routes are flat already
    iter_route_contexts = None


def route_contexts(routes: Sequence[BaseRoute]) -> Iterator[tuple[BaseRoute, Any]]:
    if iter_route_contexts is None:
        for route in routes:
            yield route, route
        return
    for context in iter_route_contexts(routes):
        yield context.original_route, context
