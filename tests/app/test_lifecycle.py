"""Delete and cancel against the real API, LLM worker, t2v worker and Redis (issue 17).

Two API keys: what one key uploads or starts, the other can neither see nor delete."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.deps import key_owner
from gpt4video import llm_protocol as wire
from tests.app.conftest import Process, Service, start_api
from tests.app.test_video_jobs import start_t2v_worker, wait_final
from tests.media import make_video
from tests.waiting import eventually

pytestmark = pytest.mark.slow

KEY_A, KEY_B = "lifecycle-key-a", "lifecycle-key-b"
# A long heartbeat TTL: a frozen LLM worker still counts as alive (the LLM limit test freezes it).
SERVICE_ENV = {"API_KEYS": f"{KEY_A},{KEY_B}", "HEARTBEAT_TTL_S": "15",
               "KEY_MAX_CONCURRENT_LLM": "2", "KEY_MAX_ACTIVE_JOBS": "3"}
FAST = {"num_frames": 4, "height": 32, "width": 32, "fps": 4, "num_inference_steps": 2, "seed": 1}
SLOW = {**FAST, "num_frames": 16, "num_inference_steps": 200}  # a minute or more on the tiny pipeline


@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4", frames=8, width=64, height=48,
                      fps=8).read_bytes()


@pytest.fixture(scope="module")
def t2v_worker(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    from model.t2v.tiny import build_tiny_t2v_pipeline

    model_dir = build_tiny_t2v_pipeline(tmp_path_factory.mktemp("t2v") / "pipeline", seed=0)
    worker = start_t2v_worker(service, model_dir)
    yield worker
    worker.stop()


def _upload(c: httpx.Client, data: bytes) -> str:
    r = c.post("/v1/videos", files={"file": ("clip.mp4", data, "video/mp4")})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _video_file(service: Service, video_id: str) -> Path:
    return service.data_dir / "videos" / video_id[:2] / f"{video_id}.video"


def _ask_for_video(c: httpx.Client, video: dict) -> str:
    r = c.post("/v1/chat", json={"messages": [{"role": "user", "content": "show me a red circle"}],
                                 "max_new_tokens": 40, "video": video})
    assert r.status_code == 200, r.text
    return r.json()["videos"][0]["job_id"]


def _ask_about(c: httpx.Client, video_id: str) -> httpx.Response:
    return c.post("/v1/chat", json={"messages": [{"role": "user", "content": "hello", "videos": [video_id]}],
                                    "max_new_tokens": 8})


def test_a_video_goes_when_its_last_owner_deletes_it(service: Service, video_bytes: bytes) -> None:
    with service.client(KEY_A) as a, service.client(KEY_B) as b, service.client("not-a-key") as stranger:
        video_id = _upload(a, video_bytes)
        assert _upload(b, video_bytes) == video_id  # same bytes, one file, two owners
        path = _video_file(service, video_id)

        assert stranger.delete(f"/v1/videos/{video_id}").status_code == 401
        r = a.delete(f"/v1/videos/{video_id}")
        assert r.status_code == 204, r.text
        assert a.delete(f"/v1/videos/{video_id}").status_code == 204  # idempotent
        assert path.is_file()  # B still owns it
        r = _ask_about(a, video_id)
        assert r.status_code == 404 and r.json()["error"]["code"] == "video_not_found", r.text
        assert _ask_about(b, video_id).status_code == 200

        assert b.delete(f"/v1/videos/{video_id}").status_code == 204
        assert not path.is_file() and not path.with_suffix(".json").exists()
        assert _ask_about(b, video_id).json()["error"]["code"] == "video_not_found"

        r = a.delete("/v1/videos/" + "0" * 64)
        assert r.status_code == 404 and r.json()["error"]["code"] == "video_not_found"
        assert a.delete("/v1/videos/not-an-id").status_code == 404

        assert _upload(a, video_bytes) == video_id and path.is_file()  # uploading again restores it


def test_another_key_cannot_delete_a_video(service: Service, video_bytes: bytes) -> None:
    with service.client(KEY_A) as a, service.client(KEY_B) as b:
        video_id = _upload(a, video_bytes + b"\0")  # other bytes: a video only A owns
        r = b.delete(f"/v1/videos/{video_id}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "video_not_found", r.text
        assert _video_file(service, video_id).is_file()
        assert _ask_about(a, video_id).status_code == 200


def test_a_running_job_is_canceled_mid_denoising(service: Service, t2v_worker: Process) -> None:
    with service.client(KEY_A) as a, service.client(KEY_B) as b:
        job_id = _ask_for_video(a, SLOW)
        assert eventually(lambda: a.get(f"/v1/jobs/{job_id}").json()["progress"]["step"] >= 2, 60), \
            (a.get(f"/v1/jobs/{job_id}").json()["progress"], t2v_worker.log()[-1500:])

        r = b.delete(f"/v1/jobs/{job_id}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "job_not_found", r.text
        assert a.get(f"/v1/jobs/{job_id}").json()["status"] == "running"

        r = a.delete(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "canceled" and r.json()["error"]["code"] == "canceled"
        again = a.delete(f"/v1/jobs/{job_id}")
        assert again.status_code == 200 and again.json() == r.json()  # idempotent

        # The worker stops at its next step and takes the next job.
        assert eventually(lambda: f"job {job_id} canceled by its owner; render stopped" in t2v_worker.log(), 30), \
            t2v_worker.log()
        following = wait_final(a, _ask_for_video(a, FAST))
        assert following["status"] == "succeeded", (following, t2v_worker.log())
        body = a.get(f"/v1/jobs/{job_id}").json()
        assert body["status"] == "canceled" and body["progress"]["step"] < 200
        assert a.get(f"/v1/jobs/{job_id}/video").json()["error"]["code"] == "video_not_available"
        assert not list((service.data_dir / "outputs").glob(f"*{job_id}*"))


def test_queued_and_finished_jobs_are_canceled_and_lose_their_video(service: Service, t2v_worker: Process) -> None:
    with service.client(KEY_A) as a:
        done_id = _ask_for_video(a, FAST)
        assert wait_final(a, done_id)["status"] == "succeeded"
        mp4 = service.data_dir / "outputs" / f"{done_id}.mp4"
        assert mp4.is_file()

        blocker = _ask_for_video(a, SLOW)  # keeps the one worker busy
        queued = _ask_for_video(a, FAST)
        assert a.get(f"/v1/jobs/{queued}").json()["status"] == "queued"
        assert a.delete(f"/v1/jobs/{queued}").json()["status"] == "canceled"
        assert a.delete(f"/v1/jobs/{blocker}").json()["status"] == "canceled"

        r = a.delete(f"/v1/jobs/{done_id}")
        assert r.status_code == 200 and r.json()["status"] == "canceled" and r.json()["result"] is None
        assert not mp4.exists()
        assert a.get(f"/v1/jobs/{done_id}/video").status_code == 404

        # The canceled queued job is never rendered: the worker goes straight to the next one.
        started = time.monotonic()
        assert wait_final(a, _ask_for_video(a, FAST))["status"] == "succeeded"
        assert a.get(f"/v1/jobs/{queued}").json()["progress"]["step"] == 0
        assert not (service.data_dir / "outputs" / f"{queued}.mp4").exists()
        assert time.monotonic() - started < 60
        assert a.delete("/v1/jobs/nope").status_code == 404


def _chat_in_thread(c: httpx.Client, results: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(
        c.post("/v1/chat", json={"messages": [{"role": "user", "content": "hello"}], "max_new_tokens": 8})))
    thread.start()
    return thread


def test_a_key_past_its_llm_limit_gets_429_while_another_key_is_served(service: Service) -> None:
    llm_worker = service.workers[0]
    conn = redis.Redis.from_url(service.redis_url)
    slots = lambda key: conn.zcard(f"g4v:limits:{key_owner(key)}:llm")  # noqa: E731
    results: list[httpx.Response] = []
    with service.client(KEY_A) as a, service.client(KEY_B) as b:
        llm_worker.signal(signal.SIGSTOP)
        try:
            threads = [_chat_in_thread(a, results), _chat_in_thread(a, results)]
            assert eventually(lambda: slots(KEY_A) == 2, 20)
            r = a.post("/v1/chat", json={"messages": [{"role": "user", "content": "hello"}]})
            assert r.status_code == 429, r.text
            assert r.json()["error"]["code"] == "key_llm_limit" and int(r.headers["Retry-After"]) >= 1
            threads.append(_chat_in_thread(b, results))  # B is not held back by A
            assert eventually(lambda: slots(KEY_B) == 1, 20)
        finally:
            llm_worker.signal(signal.SIGCONT)
        for thread in threads:
            thread.join(timeout=60)
    assert [r.status_code for r in results] == [200, 200, 200], [r.text for r in results]
    assert slots(KEY_A) == slots(KEY_B) == 0  # every slot given back


def test_a_key_past_its_video_job_limit_gets_429_while_another_key_is_served(
        service: Service, t2v_worker: Process) -> None:
    with service.client(KEY_A) as a, service.client(KEY_B) as b:
        mine = [_ask_for_video(a, SLOW), _ask_for_video(a, FAST), _ask_for_video(a, FAST)]  # 1 running, 2 queued
        r = a.post("/v1/chat", json={"messages": [{"role": "user", "content": "show me a red circle"}]})
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "key_job_limit" and "DELETE /v1/jobs/" in r.json()["error"]["message"]
        assert r.headers["Retry-After"]
        theirs = _ask_for_video(b, FAST)
        assert a.delete(f"/v1/jobs/{mine[1]}").json()["status"] == "canceled"
        mine.append(_ask_for_video(a, FAST))  # room again
        for job_id in mine:
            a.delete(f"/v1/jobs/{job_id}")
        assert wait_final(b, theirs)["status"] == "succeeded"


@pytest.fixture(scope="module")
def small_api(service: Service, video_bytes: bytes,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """An API whose disk holds about 3.5 videos and whose keys may upload 2.5 videos a day."""
    tmp = tmp_path_factory.mktemp("small-api")
    size = len(video_bytes)
    env = {**service.env, "DATA_DIR": str(tmp / "data"), "DISK_MAX_BYTES": str(int(3.5 * size)),
           "KEY_UPLOAD_BYTES_PER_DAY": str(int(2.5 * size))}
    api, base = start_api(env, tmp)
    yield base, tmp / "data"
    api.stop()


def test_upload_quota_and_disk_cap_refuse_without_leaving_anything(small_api: tuple[str, Path],
                                                                   video_bytes: bytes) -> None:
    base, data = small_api

    def upload(key: str, n: int) -> httpx.Response:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
            return c.post("/v1/videos", files={"file": ("clip.mp4", video_bytes + bytes(n), "video/mp4")})

    assert upload(KEY_A, 1).status_code == 201 and upload(KEY_A, 2).status_code == 201
    r = upload(KEY_A, 3)  # past A's daily quota
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "key_upload_quota" and "00:00 UTC" in r.json()["error"]["message"]
    assert int(r.headers["Retry-After"]) > 0
    assert upload(KEY_B, 3).status_code == 201  # B has its own quota; the disk holds 3 videos now
    r = upload(KEY_B, 4)  # past the disk cap
    assert r.status_code == 507, r.text
    assert r.json()["error"]["code"] == "storage_full" and "DELETE /v1/videos/" in r.json()["error"]["message"]
    assert not list((data / "tmp").iterdir())
    assert len(list((data / "videos").rglob("*.video"))) == 3


def _refuses_connections(base: str) -> bool:
    try:
        httpx.get(base + "/healthz", timeout=1)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        pass
    return False


@pytest.mark.parametrize(("grace_s", "status"), [(30, 200), (1, 503)])
def test_sigterm_to_the_api_finishes_running_requests_within_the_grace(
        service: Service, tmp_path: Path, grace_s: int, status: int) -> None:
    """The request waits on a frozen LLM worker when the API gets SIGTERM: the API stops
    accepting connections; within the grace the request is answered, past it it gets 503."""
    llm_worker = service.workers[0]
    api, base = start_api({**service.env, "API_GRACE_S": str(grace_s)}, tmp_path)
    conn = redis.Redis.from_url(service.redis_url)
    results: list[httpx.Response] = []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=60) as a:
        llm_worker.signal(signal.SIGSTOP)
        try:
            thread = _chat_in_thread(a, results)
            assert eventually(lambda: conn.zcard(f"g4v:limits:{key_owner(KEY_A)}:llm") == 1, 20)
            api.signal(signal.SIGTERM)
            assert eventually(lambda: _refuses_connections(base), 10), api.log()
            if status == 503:
                thread.join(timeout=30)
        finally:
            llm_worker.signal(signal.SIGCONT)
        thread.join(timeout=60)
    assert api.proc.wait(timeout=30) == 0, api.log()
    [r] = results
    assert r.status_code == status, r.text
    if status == 503:
        assert r.json()["error"]["code"] == "shutting_down" and r.headers["Retry-After"]


def test_sigterm_to_an_llm_worker_loses_no_request(service: Service) -> None:
    """Runs last: it stops the module's first LLM worker (a second one is left)."""
    worker_a = service.workers[0]
    service.start_worker()
    conn = redis.Redis.from_url(service.redis_url)
    # A request the stopping API cut off (503 above) holds its slot until its timeout: clear them.
    conn.delete(*(f"g4v:limits:{key_owner(k)}:llm" for k in (KEY_A, KEY_B)))
    results: list[httpx.Response] = []
    with service.client(KEY_A) as a, service.client(KEY_B) as b:
        threads = [_chat_in_thread(c, results) for c in (a, a, b, b)]
        worker_a.signal(signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=60)
    assert [r.status_code for r in results] == [200] * 4, [r.text for r in results]
    assert worker_a.proc.wait(timeout=60) == 0, worker_a.log()
    assert conn.xlen(wire.REQUESTS_STREAM) == 0
    assert conn.xpending(wire.REQUESTS_STREAM, wire.GROUP)["pending"] == 0
