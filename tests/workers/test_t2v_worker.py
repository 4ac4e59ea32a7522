"""End to end: Redis + a real t2v worker process on the tiny pipeline."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
import redis
from rq import Queue
from rq.job import Job

from gpt4video.jobs import RENDER_FUNC, T2V_QUEUE, JobStatus, JobStore
from tests.workers.conftest import WorkerLauncher, WorkerProcess, is_final, submit, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker(worker_launcher: WorkerLauncher) -> WorkerProcess:
    return worker_launcher.start()


def _outputs(data_dir: Path) -> list[str]:
    outputs = data_dir / "outputs"
    return sorted(p.name for p in outputs.iterdir()) if outputs.exists() else []


def test_caption_becomes_an_mp4_with_the_requested_shape(
    worker: WorkerProcess, store: JobStore, redis_conn: redis.Redis, data_dir: Path
) -> None:
    seen: list[dict[str, int]] = []
    record = submit(store, num_frames=6, height=32, width=48, fps=12, num_inference_steps=30,
                    seed=7)
    done = wait_for(store, record.id, is_final, on_poll=lambda r: seen.append(dict(r.progress)))

    assert done.status == JobStatus.SUCCEEDED, done.error
    result = done.result
    assert result is not None
    path = Path(result["path"])
    assert path == (data_dir / "outputs" / f"{record.id}.mp4").resolve()
    assert result["filename"] == f"{record.id}.mp4"
    assert (result["frames"], result["fps"], result["seed"]) == (6, 12, 7)
    assert (result["width"], result["height"]) == (48, 32)
    assert result["duration_s"] == pytest.approx(0.5)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 12
    assert len(decoded) == 6
    assert decoded[0].shape == (32, 48, 3)
    assert _outputs(data_dir).count(f"{record.id}.mp4") == 1
    assert not [name for name in _outputs(data_dir) if name.startswith(".") or "tmp" in name]

    # Progress went 0 -> 30 without going backwards, with steps in between, and RQ saw it too.
    steps = [p["step"] for p in seen if p["total"] == 30]
    assert steps == sorted(steps)
    assert any(0 < step < 30 for step in steps), seen
    assert done.progress == {"step": 30, "total": 30}
    assert Job.fetch(record.id, connection=redis_conn).get_meta()["progress"] == done.progress


def test_frames_beyond_the_model_limit_fail_with_a_clear_message(
    worker: WorkerProcess, store: JobStore, data_dir: Path
) -> None:
    record = submit(store, num_frames=100, retries=2)
    done = wait_for(store, record.id, is_final)
    assert done.status == JobStatus.FAILED
    assert done.error is not None
    assert done.error["type"] == done.error["code"] == "invalid_parameters"
    assert "num_frames=100" in done.error["message"]
    assert "between 1 and 16" in done.error["message"]
    assert f"{record.id}.mp4" not in _outputs(data_dir)


def test_a_job_over_its_timeout_fails_with_the_reason_and_the_worker_goes_on(
    worker: WorkerProcess, store: JobStore, data_dir: Path
) -> None:
    slow = submit(store, num_inference_steps=200, timeout_s=1)
    done = wait_for(store, slow.id, is_final)
    assert done.status == JobStatus.FAILED
    assert done.error is not None and done.error["type"] == "timeout"
    assert "job timeout (1 s)" in done.error["message"]
    assert f"{slow.id}.mp4" not in _outputs(data_dir)

    following = wait_for(store, submit(store).id, is_final)
    assert following.status == JobStatus.SUCCEEDED


def test_a_duplicate_delivery_of_a_finished_job_leaves_its_one_file_alone(
    worker: WorkerProcess, store: JobStore, redis_conn: redis.Redis, data_dir: Path
) -> None:
    first = wait_for(store, submit(store, seed=3).id, is_final)
    assert first.status == JobStatus.SUCCEEDED and first.result is not None
    path = Path(first.result["path"])
    written_at = path.stat().st_mtime_ns

    queue = Queue(T2V_QUEUE, connection=redis_conn)
    queue.enqueue_call(RENDER_FUNC, args=(first.id,), job_id=first.id, result_ttl=600)
    # One worker, FIFO queue: once a later job is done, the duplicate has been handled.
    later = wait_for(store, submit(store).id, is_final)
    assert later.status == JobStatus.SUCCEEDED

    assert Job.fetch(first.id, connection=redis_conn).return_value() == {"status": "succeeded"}
    assert store.get(first.id).result == first.result
    assert path.stat().st_mtime_ns == written_at
    assert _outputs(data_dir).count(path.name) == 1
