"""Failures keep their meaning from the engine to the HTTP answer, and every limit has
one source: Settings for the conversation, the t2v parameter bounds for video fields."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from rq import Queue

from gpt4video.jobs import T2V_QUEUE
from model.t2v_request import MAX_SEED
from tests.app.conftest import Service
from tests.media import make_video

pytestmark = pytest.mark.slow

MAX_PROMPT_CHARS = 30_000  # above the schema's former fixed 8000
SERVICE_ENV = {"MAX_PROMPT_CHARS": str(MAX_PROMPT_CHARS)}
CONTEXT_TOKENS = 2048  # the tiny checkpoint's max_position_embeddings


def _chat(service: Service, content: str, **body: object):
    with service.client() as c:
        return c.post("/v1/chat", json={"messages": [{"role": "user", "content": content}],
                                        "max_new_tokens": 8, **body})


def test_a_prompt_longer_than_the_context_is_a_4xx_naming_the_limit(service: Service) -> None:
    r = _chat(service, "a" * 7000)  # within MAX_PROMPT_CHARS, about 7000 tokens
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "context_too_long"
    assert f"context is {CONTEXT_TOKENS} tokens" in error["message"]


def test_raising_max_prompt_chars_lets_a_longer_message_through(service: Service) -> None:
    r = _chat(service, "a" * 9000)
    # Past the API's bounds to the model, whose context (not a schema) turns it down.
    assert r.json()["error"]["code"] == "context_too_long", r.text
    too_long = _chat(service, "a" * (MAX_PROMPT_CHARS + 1))
    assert too_long.status_code == 422 and too_long.json()["error"]["code"] == "validation_error"
    assert "messages.0.content" in too_long.json()["error"]["message"]


def test_a_stored_video_deleted_from_disk_is_a_storage_error(service: Service, tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=8, width=32, height=32, fps=8)
    with service.client() as c:
        video_id = c.post("/v1/videos", files={"file": ("clip.mp4", clip.read_bytes(), "video/mp4")}).json()["id"]
        [stored] = (service.data_dir / "videos").rglob(f"{video_id}.video")
        stored.unlink()  # the storage lost it
        r = c.post("/v1/chat", json={"messages": [{"role": "user", "content": "hello", "videos": [video_id]}]})
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "video_missing"
    assert "upload it again" in r.json()["error"]["message"]


def test_a_video_seed_above_the_pipelines_range_is_422_with_no_job(service: Service) -> None:
    conn = redis.Redis.from_url(service.redis_url)
    jobs_before = len(conn.keys("g4v:job:*"))
    queued_before = Queue(T2V_QUEUE, connection=conn).count
    r = _chat(service, "show me a red circle", video={"seed": MAX_SEED + 1}, max_new_tokens=40)
    assert r.status_code == 422, r.text
    assert "video.seed" in r.json()["error"]["message"]
    assert len(conn.keys("g4v:job:*")) == jobs_before
    assert Queue(T2V_QUEUE, connection=conn).count == queued_before
    ok = _chat(service, "show me a red circle", video={"seed": MAX_SEED}, max_new_tokens=40)
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["videos"]) == 1
