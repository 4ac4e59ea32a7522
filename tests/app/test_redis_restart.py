"""Redis killed (SIGKILL) and started again on the same append-only file, in the middle of a
video job and of a chat request: the chat is answered, the job ends succeeded, its record
intact (issue 17). The server is the project's own `ManagedRedis`, as `gpt4video up` runs it."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from gpt4video import llm_protocol as wire
from gpt4video.managed_redis import ManagedRedis
from tests.app.conftest import Process, Service, _free_port, service_env, start_api
from tests.app.test_video_jobs import start_t2v_worker, wait_final
from tests.waiting import eventually

pytestmark = pytest.mark.slow

VIDEO = {"num_frames": 8, "height": 32, "width": 32, "fps": 4, "num_inference_steps": 100, "seed": 3}


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedRedis]:
    server = ManagedRedis(tmp_path_factory.mktemp("redis-data"), _free_port()).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def restart_service(own_redis: ManagedRedis, scripted_checkpoint_dir: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Process]]:
    from model.t2v.tiny import build_tiny_t2v_pipeline

    tmp = tmp_path_factory.mktemp("restart")
    # A long heartbeat TTL: the frozen LLM worker still counts as alive.
    env = service_env(own_redis.url, tmp / "data", scripted_checkpoint_dir, HEARTBEAT_TTL_S="15")
    svc = Service(base_url="", data_dir=tmp / "data", redis_url=own_redis.url, env=env, tmp=tmp)
    try:
        svc.start_worker()
        t2v = start_t2v_worker(svc, build_tiny_t2v_pipeline(tmp / "t2v", seed=0))
        svc.api, svc.base_url = start_api(env, tmp)
        yield svc, t2v
    finally:
        svc.stop()


def test_a_redis_restart_mid_job_and_mid_chat_loses_nothing(restart_service: tuple[Service, Process],
                                                             own_redis: ManagedRedis) -> None:
    service, t2v = restart_service
    llm_worker = service.workers[0]
    conn = redis.Redis.from_url(own_redis.url)
    results: list[httpx.Response] = []
    with service.client(timeout=120) as c:
        r = c.post("/v1/chat", json={"messages": [{"role": "user", "content": "show me a red circle"}],
                                     "max_new_tokens": 40, "video": VIDEO})
        assert r.status_code == 200, r.text
        job_id = r.json()["videos"][0]["job_id"]
        assert eventually(lambda: c.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] >= 1, 90), t2v.log()
        before = c.get(f"/v1/jobs/{job_id}").json()

        llm_worker.signal(signal.SIGSTOP)  # the chat request waits in the stream during the restart
        try:
            thread = threading.Thread(target=lambda: results.append(c.post("/v1/chat", json={
                "messages": [{"role": "user", "content": "hello"}], "max_new_tokens": 8})))
            thread.start()
            assert eventually(lambda: conn.xlen(wire.REQUESTS_STREAM) >= 1, 20)
            time.sleep(1.2)  # past one appendfsync everysec
            assert conn.hget(f"g4v:job:{job_id}", "status") == b"running"  # the kill lands mid-job
            own_redis.kill()
            time.sleep(1.0)
            own_redis.start()
        finally:
            llm_worker.signal(signal.SIGCONT)
        thread.join(timeout=90)

        [answer] = results
        assert answer.status_code == 200, answer.text
        assert answer.json()["message"]["content"].startswith("Hello")
        done = wait_final(c, job_id, timeout_s=180)
        assert done["status"] == "succeeded", (done, t2v.log())
        assert (done["caption"], done["created_at"]) == (before["caption"], before["created_at"])
        assert c.get(done["result"]["url"]).status_code == 200
    assert t2v.alive() and llm_worker.alive() and service.api is not None and service.api.alive()
