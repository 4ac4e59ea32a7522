"""GET /metrics: Prometheus' text format (`app.metrics`).

Open when the service has no API keys. With API_KEYS set it answers only
`Authorization: Bearer <METRICS_TOKEN>` (a token apart from the clients' keys, for the
scraper), and is closed (403) while no METRICS_TOKEN is set; a set token is required
whether or not there are API keys.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from app.deps import SettingsDep
from app.errors import Forbidden, Unauthorized

router = APIRouter(tags=["metrics"])


def _check_access(request: Request, token: str, keys_set: bool) -> None:
    if not token:
        if keys_set:
            raise Forbidden("/metrics is closed while API_KEYS are set: set METRICS_TOKEN and scrape with "
                            "'Authorization: Bearer <METRICS_TOKEN>'", "metrics_closed")
        return
    scheme, _, sent = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip(), token):
        raise Unauthorized("send 'Authorization: Bearer <METRICS_TOKEN>' to read /metrics", "invalid_metrics_token",
                           {"WWW-Authenticate": "Bearer"})


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
async def metrics(request: Request, settings: SettingsDep) -> Response:
    _check_access(request, settings.metrics_token, bool(settings.api_key_set))
    body = await run_in_threadpool(generate_latest, request.app.state.metrics.registry)  # reads Redis
    return Response(body, media_type=CONTENT_TYPE_LATEST)
