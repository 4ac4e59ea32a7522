"""Faults: a lost LLM worker and a lost Redis give clear answers, never a hang."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from gpt4video import llm_protocol as wire
from tests.app.conftest import Service, _free_port, service_env, start_api

pytestmark = pytest.mark.slow

# A long heartbeat TTL: a frozen worker still counts as alive, so requests reach the stream.
SERVICE_ENV = {"LLM_REQUEST_TIMEOUT_S": "6", "HEARTBEAT_TTL_S": "15"}


def test_frozen_worker_gives_504_not_a_hang(service: Service) -> None:
    [worker] = service.workers
    worker.signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with service.client(timeout=30) as c:
            r = c.post("/v1/chat", json={"messages": [{"role": "user", "content": "hello"}]})
        elapsed = time.monotonic() - started
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "llm_timeout"
        assert elapsed < 20
    finally:
        worker.signal(signal.SIGCONT)


def test_killed_worker_requests_are_taken_over(service: Service, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    """Worker A holds a request when it is SIGKILLed; worker B claims it and answers.

    To make "A had read the entry" deterministic, A is frozen first. Redis still hands a
    new entry to A's pending blocking read (server side), or else the test reads it into
    A's pending list under A's consumer name; either way this is exactly the state a crash
    after XREADGROUP leaves. Then A is killed. The request may wait for B to start: a
    module may give a slower engine more time (`TAKEOVER_TIMEOUT_S`, tests/gpu).
    """
    [worker_a] = service.workers
    conn = redis.Redis.from_url(service.redis_url)
    timeout_s = getattr(request.module, "TAKEOVER_TIMEOUT_S", 90)
    api, base = start_api({**service.env, "LLM_REQUEST_TIMEOUT_S": str(timeout_s)}, tmp_path)
    result: dict = {}

    def ask() -> None:
        with httpx.Client(base_url=base, timeout=timeout_s + 30) as c:
            result["response"] = c.post("/v1/chat", json={
                "messages": [{"role": "user", "content": "show me a red circle"}], "max_new_tokens": 40})

    def entry_id(raw: bytes) -> tuple[int, ...]:
        return tuple(int(part) for part in raw.decode().split("-"))

    try:
        worker_a.signal(signal.SIGSTOP)
        # Only an entry added from now on counts: A may still hold one of an earlier test's.
        last = entry_id(conn.xinfo_stream(wire.REQUESTS_STREAM)["last-generated-id"])
        thread = threading.Thread(target=ask)
        thread.start()
        held = False
        deadline = time.monotonic() + 20
        while not held and time.monotonic() < deadline:
            conn.xreadgroup(wire.GROUP, worker_a.name, {wire.REQUESTS_STREAM: ">"}, count=1, block=200)
            pending = conn.xpending_range(wire.REQUESTS_STREAM, wire.GROUP, min="-", max="+", count=100,
                                          consumername=worker_a.name)
            held = any(entry_id(p["message_id"]) > last for p in pending)
        assert held, "the request never reached worker A's pending list"
        worker_a.signal(signal.SIGKILL)
        worker_b = service.start_worker()
        thread.join(timeout=timeout_s + 10)
        assert not thread.is_alive(), "the API hung"
        response = result["response"]
        assert response.status_code == 200, response.text
        assert response.json()["captions"] == ["a red circle moves to the left"]
        time.sleep(1.2)
        assert service.worker_stats(worker_b.name)["claimed_from_others"] >= 1
        assert conn.xlen(wire.REQUESTS_STREAM) == 0  # nothing left behind
    finally:
        api.stop()


@pytest.fixture
def private_redis(tmp_path: Path):
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield proc, url
    proc.kill()
    proc.wait()


def test_redis_down_gives_503_not_a_stack_trace(private_redis, tmp_path: Path, scripted_checkpoint_dir) -> None:
    proc, url = private_redis
    env = service_env(url, tmp_path / "data", scripted_checkpoint_dir)
    api, base = start_api(env, tmp_path)
    try:
        with httpx.Client(base_url=base, timeout=30) as c:
            assert c.get("/readyz").json()["error"]["code"] == "no_llm_worker"  # Redis up, no worker
            proc.kill()
            proc.wait()
            for method, path, kwargs in [
                ("GET", "/readyz", {}),
                ("GET", "/v1/jobs/abc", {}),
                ("POST", "/v1/chat", {"json": {"messages": [{"role": "user", "content": "hello"}]}}),
            ]:
                r = c.request(method, path, **kwargs)
                assert r.status_code == 503, (path, r.text)
                assert r.json()["error"]["code"] == "redis_unavailable", (path, r.text)
            assert c.get("/healthz").status_code == 200  # the process itself is alive
    finally:
        api.stop()
