"""GET /metrics on the running service: behind METRICS_TOKEN when API keys are set, and
counting what the requests before it did (routes, uploads, moderation, queue, jobs)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request

from app.errors import Forbidden, Unauthorized
from app.routers.metrics import _check_access
from tests.app.conftest import Service
from tests.app.surface.conftest import KEY, METRICS_TOKEN, SURFACE_ENV
from tests.media import make_video
from tests.waiting import eventually

pytestmark = pytest.mark.slow


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_need_their_own_token_when_keys_are_set(service: Service) -> None:
    with service.client() as anonymous, service.client(KEY) as client:
        assert anonymous.get("/metrics").status_code == 401
        denied = client.get("/metrics")  # a client's key is not the scraper's token
        assert denied.status_code == 401 and "METRICS_TOKEN" in denied.json()["error"]["message"]


def test_metrics_count_requests_uploads_moderation_and_jobs(service: Service, tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=8, width=32, height=32, fps=8)
    with service.client(KEY) as c, service.client(METRICS_TOKEN) as scraper:
        before = _samples(scraper.get("/metrics").text)
        assert c.post("/v1/videos", files={"file": ("c.mp4", clip.read_bytes(), "video/mp4")}).status_code == 201
        big = b"\0" * (int(SURFACE_ENV["MAX_UPLOAD_BYTES"]) + 1)
        assert c.post("/v1/videos", files={"file": ("big.mp4", big, "video/mp4")}).status_code == 413
        for prompt in ("show me a red circle", "surprise me with a video"):
            r = c.post("/v1/chat/completions", json={"model": SURFACE_ENV["SERVED_MODEL_NAME"], "max_tokens": 40,
                                                      "temperature": 0,
                                                      "messages": [{"role": "user", "content": prompt}]})
            assert r.status_code == 200, r.text
        page = scraper.get("/metrics")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    after = _samples(page.text)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("g4v_http_requests_total", route="/v1/chat/completions", method="POST", status="200") == 2
    assert grew("g4v_http_request_duration_seconds_count", route="/v1/videos", method="POST", status="413") == 1
    assert grew("g4v_upload_bytes_total") == clip.stat().st_size
    assert grew("g4v_upload_rejections_total", reason="upload_too_large") == 1
    assert grew("g4v_moderation_decisions_total", stage="caption", decision="allowed", category="") == 1
    assert sum(v for (name, labels), v in after.items() if name == "g4v_moderation_decisions_total"
               and ("decision", "withheld") in labels) >= 1
    assert grew("g4v_llm_tokens_total", kind="completion") > 0
    assert _value(after, "g4v_t2v_jobs", state="queued") >= 1  # no t2v worker here: the job waits
    assert _value(after, "g4v_llm_workers") == 1 and ("g4v_llm_queue_depth", ()) in after
    assert _value(after, "g4v_metrics_redis_up") == 1
    # the worker's batch sizes arrive with its next heartbeat (stats in Redis)
    with service.client(METRICS_TOKEN) as scraper:
        assert eventually(lambda: "g4v_llm_worker_batch_size_count{" in scraper.get("/metrics").text, 10)
    # the raw path never becomes a label: an unknown URL is counted as "unmatched"
    httpx.get(f"{service.base_url}/no/such/page/12345")
    with service.client(METRICS_TOKEN) as scraper:
        assert "/no/such/page" not in scraper.get("/metrics").text


def _request(authorization: str | None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return Request({"type": "http", "method": "GET", "path": "/metrics", "headers": headers})


def test_metrics_access_rules() -> None:
    _check_access(_request(None), token="", keys_set=False)  # no keys, no token: open
    with pytest.raises(Forbidden, match="METRICS_TOKEN"):
        _check_access(_request(None), token="", keys_set=True)  # keys and no token: closed
    _check_access(_request("Bearer t0k"), token="t0k", keys_set=True)
    with pytest.raises(Unauthorized):
        _check_access(_request("Bearer wrong"), token="t0k", keys_set=False)  # a set token is always asked
