"""Chat -> caption -> RQ job -> real t2v worker -> MP4 served by the API (with byte ranges);
and a video flagged by the frame check ends `refused` and is never served."""

from __future__ import annotations

import io
import sys
import time
import uuid
from pathlib import Path

import av
import httpx
import pytest

from tests.app.conftest import Process, Service

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_t2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.t2v.tiny import build_tiny_t2v_pipeline

    return build_tiny_t2v_pipeline(tmp_path_factory.mktemp("t2v") / "pipeline", seed=0)


def start_t2v_worker(service: Service, model_dir: Path, **env: str) -> Process:
    name = f"t2v-{uuid.uuid4().hex[:6]}"
    proc = Process([sys.executable, "-m", "workers.t2v_worker", "--name", name],
                   {**service.env, "T2V_MODEL_DIR": str(model_dir), **env}, service.tmp / f"{name}.log")
    service.workers.append(proc)
    return proc


def wait_final(c: httpx.Client, job_id: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    seen_steps = []
    while time.monotonic() < deadline:
        body = c.get(f"/v1/jobs/{job_id}").json()
        seen_steps.append(body["progress"]["step"])
        if body["status"] in {"succeeded", "failed", "refused", "expired"}:
            body["seen_steps"] = seen_steps
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def ask_for_video(c: httpx.Client, prompt: str = "show me a red circle") -> str:
    r = c.post("/v1/chat", json={"messages": [{"role": "user", "content": prompt}], "max_new_tokens": 40,
                                 "video": {"num_frames": 6, "height": 32, "width": 48, "fps": 6,
                                           "num_inference_steps": 4, "seed": 7}})
    assert r.status_code == 200, r.text
    [video] = r.json()["videos"]
    return video["job_id"]


def test_caption_is_rendered_and_served(service: Service, tiny_t2v_dir: Path) -> None:
    worker = start_t2v_worker(service, tiny_t2v_dir)
    try:
        with service.client() as c:
            job_id = ask_for_video(c)
            body = wait_final(c, job_id)
            assert body["status"] == "succeeded", (body, worker.log())
            assert body["progress"] == {"step": 4, "total": 4}
            result = body["result"]
            assert result["url"] == f"/v1/jobs/{job_id}/video"
            assert (result["frames"], result["fps"], result["width"], result["height"]) == (6, 6.0, 48, 32)
            assert result["caption"] == "a red circle moves to the left"

            full = c.get(result["url"])
            assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
            with av.open(io.BytesIO(full.content)) as container:
                frames = list(container.decode(video=0))
            assert len(frames) == 6 and frames[0].width == 48 and frames[0].height == 32

            part = c.get(result["url"], headers={"Range": "bytes=0-99"})
            assert part.status_code == 206
            assert part.content == full.content[:100]
            assert part.headers["content-range"].startswith("bytes 0-99/")
    finally:
        worker.stop()


def test_flagged_video_is_refused_and_not_served(service: Service, tiny_t2v_dir: Path) -> None:
    worker = start_t2v_worker(service, tiny_t2v_dir, T2V_FRAME_CHECKER="tests.workers.checkers:flag_everything")
    try:
        with service.client() as c:
            job_id = ask_for_video(c)
            body = wait_final(c, job_id)
            assert body["status"] == "refused", (body, worker.log())
            assert body["error"]["code"] == "unsafe_output"
            assert body["result"] is None
            r = c.get(f"/v1/jobs/{job_id}/video")
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "video_not_available"
        assert not list((service.data_dir / "outputs").glob(f"{job_id}*"))
    finally:
        worker.stop()
