"""The service end to end: real Redis, real API and LLM worker processes, real videos."""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from rq import Queue

from gpt4video.jobs import T2V_QUEUE
from tests.app.conftest import Service
from tests.media import make_video

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def video_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4", frames=16, width=64, height=48, fps=8)


def test_health_and_readiness(service: Service) -> None:
    with service.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["llm_workers"] == 1


def test_upload_is_content_addressed_and_probed(service: Service, video_file: Path) -> None:
    with service.client() as c:
        first = c.post("/v1/videos", files={"file": ("clip.mp4", video_file.read_bytes(), "video/mp4")})
        second = c.post("/v1/videos", files={"file": ("other-name.mp4", video_file.read_bytes(), "video/mp4")})
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["id"] == hashlib.sha256(video_file.read_bytes()).hexdigest()
    assert body["info"]["width"] == 64 and body["info"]["height"] == 48
    assert body["info"]["codec"] == "h264"
    assert body["created"] is True
    assert second.json()["id"] == body["id"] and second.json()["created"] is False
    stored = list((service.data_dir / "videos").rglob("*.video"))
    assert [p.name for p in stored] == [f"{body['id']}.video"]


def test_understand_an_uploaded_video(service: Service, video_file: Path) -> None:
    with service.client() as c:
        r = c.post("/v1/videos/understand", files={"file": ("clip.mp4", video_file.read_bytes(), "video/mp4")},
                   data={"prompt": "hello", "max_new_tokens": "32"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["message"]["role"] == "assistant"
        assert isinstance(body["message"]["content"], str)
        # the video's tokens were part of the prompt: more prompt tokens than the text alone
        text_only = c.post("/v1/chat", json={"messages": [{"role": "user", "content": "hello"}],
                                             "max_new_tokens": 32}).json()
        assert body["usage"]["prompt_tokens"] > text_only["usage"]["prompt_tokens"]
        # asking again by id works without re-uploading
        again = c.post("/v1/videos/understand", data={"prompt": "hello", "video_id": body_id(c, video_file)})
        assert again.status_code == 200, again.text


def body_id(c, video_file: Path) -> str:
    return c.post("/v1/videos", files={"file": ("x.mp4", video_file.read_bytes(), "video/mp4")}).json()["id"]


def test_chat_with_video_reference(service: Service, video_file: Path) -> None:
    with service.client() as c:
        vid = body_id(c, video_file)
        r = c.post("/v1/chat", json={"messages": [{"role": "user", "content": "hello", "videos": [vid]}],
                                     "max_new_tokens": 16})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] > 0


def test_reply_caption_becomes_a_queued_job(service: Service) -> None:
    with service.client() as c:
        r = c.post("/v1/chat", json={"messages": [{"role": "user", "content": "show me a red circle"}],
                                     "max_new_tokens": 40, "video": {"num_frames": 8, "seed": 3}})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["captions"] == ["a red circle moves to the left"]
        assert body["message"]["content"] == "Here it is: [video:0] Enjoy!"
        [job] = body["videos"]
        assert job["status_url"] == f"/v1/jobs/{job['job_id']}"
        status = c.get(job["status_url"])
        assert status.status_code == 200, status.text
        assert status.json()["status"] == "queued"
        assert status.json()["caption"] == "a red circle moves to the left"
    queue = Queue(T2V_QUEUE, connection=redis.Redis.from_url(service.redis_url))
    assert job["job_id"] in queue.job_ids
    rq_job = queue.fetch_job(job["job_id"])
    assert rq_job.timeout is not None and rq_job.result_ttl is not None


def test_streaming_chat_sends_deltas_then_the_result(service: Service) -> None:
    with service.client() as c, c.stream(
        "POST", "/v1/chat", json={"messages": [{"role": "user", "content": "show me a red circle"}],
                                  "max_new_tokens": 40, "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _parse_sse("".join(r.iter_text()))
    deltas = [json.loads(d)["text"] for e, d in events if e == "delta"]
    done = [json.loads(d) for e, d in events if e == "done"]
    assert len(deltas) > 1
    assert len(done) == 1 and done[0]["captions"] == ["a red circle moves to the left"]
    assert "".join(deltas) == done[0]["message"]["content"] == "Here it is: [video:0] Enjoy!"  # moderated text
    assert len(done[0]["videos"]) == 1


def _parse_sse(text: str) -> list[tuple[str, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((lines.get("event", ""), lines.get("data", "")))
    return events


def test_concurrent_requests_are_batched_by_the_worker(service: Service) -> None:
    name = service.workers[0].name
    time.sleep(1.2)  # let the last heartbeat publish the stats of earlier tests
    before = service.worker_stats(name)
    prompts = ["hello", "show me a red circle", "make a knife video", "hello"] * 2

    def ask(prompt: str) -> int:
        with service.client() as c:
            r = c.post("/v1/chat", json={"messages": [{"role": "user", "content": prompt}], "max_new_tokens": 40})
            return r.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(ask, prompts))
    assert codes == [200] * 8
    time.sleep(1.2)  # one heartbeat publishes the stats
    after = service.worker_stats(name)
    assert after["requests"] - before["requests"] == 8
    assert after["max_batch_size"] > 1, after
