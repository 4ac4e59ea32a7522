"""Per-job overhead of the t2v worker against the pipeline's own time, on the tiny pipeline.

Starts a real worker process against real Redis (db 13 unless BENCH_REDIS_DB says
otherwise; flushed before and after), submits jobs one at a time and splits each job's
end-to-end time (record created -> record succeeded, both stamped with time.time()) into:

  pickup      enqueue -> the worker starts the job (RQ enqueued_at -> started_at)
  pipeline    the diffusers call, less our per-step progress callbacks (result["timings"])
  encode      MP4 encode + write + rename (result["timings"])
  bookkeeping the rest: per-step progress writes to Redis, record updates, parameter
              checks, frame check, RQ's job start

Usage: .venv/bin/python bench/bench_t2v_overhead.py [--jobs 20] [--steps 2] [--frames 8]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from rq.job import Job

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from gpt4video.jobs import JobStatus, JobStore, VideoParams, enqueue_video_job  # noqa: E402
from model.t2v.tiny import build_tiny_t2v_pipeline  # noqa: E402


def _redis_url() -> str:
    parts = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    return urlunsplit(parts._replace(path=f"/{os.environ.get('BENCH_REDIS_DB', '13')}"))


def _start_worker(url: str, model_dir: Path, data_dir: Path, connection: redis.Redis,
                  ) -> subprocess.Popen:
    env = {**os.environ, "REDIS_URL": url, "DATA_DIR": str(data_dir),
           "T2V_MODEL_DIR": str(model_dir), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO_ROOT)}
    log = (data_dir / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.t2v_worker", "--name", "bench-t2v", "--log-level",
         "WARNING"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while not connection.exists("rq:worker:bench-t2v"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"worker did not start; see {data_dir / 'worker.log'}")
        time.sleep(0.1)
    return process


def _run_job(store: JobStore, connection: redis.Redis, params: VideoParams) -> dict[str, float]:
    record = enqueue_video_job(store, caption="a red ball bouncing on grass", owner="bench",
                               params=params, job_timeout_s=600, retries=0, result_ttl_s=600)
    while not (done := store.get(record.id)).status.is_final:
        time.sleep(0.002)
    if done.status != JobStatus.SUCCEEDED or done.result is None:
        raise SystemExit(f"job {record.id} ended {done.status}: {done.error}")
    job = Job.fetch(record.id, connection=connection)
    assert job.enqueued_at is not None and job.started_at is not None
    total = done.updated_at - done.created_at
    pickup = (job.started_at - job.enqueued_at).total_seconds()
    timings = done.result["timings"]
    pipeline = timings["pipeline_s"] - timings["progress_s"]  # the diffusers call alone
    encode = timings["encode_write_s"]
    return {"total": total, "pickup": pickup, "pipeline": pipeline, "encode": encode,
            "bookkeeping": total - pickup - pipeline - encode}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args(argv)

    url = _redis_url()
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    store = JobStore(connection, record_ttl_s=600)
    params = VideoParams(num_frames=args.frames, height=args.size, width=args.size, fps=8,
                         num_inference_steps=args.steps, seed=0)
    with tempfile.TemporaryDirectory(prefix="bench-t2v-") as tmp:
        model_dir = build_tiny_t2v_pipeline(Path(tmp) / "tiny-t2v")
        worker = _start_worker(url, model_dir, Path(tmp), connection)
        try:
            for _ in range(args.warmup):
                _run_job(store, connection, params)
            rows = [_run_job(store, connection, params) for _ in range(args.jobs)]
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
            connection.flushdb()

    def median_ms(key: str) -> float:
        return 1000 * statistics.median(row[key] for row in rows)

    overhead = [row["total"] - row["pipeline"] for row in rows]
    pipeline = [row["pipeline"] for row in rows]
    print(f"tiny TextToVideoSDPipeline, {args.frames} frames {args.size}x{args.size}, "
          f"{args.steps} steps; {args.jobs} jobs one at a time (+{args.warmup} warm-up), "
          "CPU, OMP_NUM_THREADS=1")
    print(f"{'component':<12} {'median ms':>10} {'mean ms':>10}")
    for key in ("pickup", "pipeline", "encode", "bookkeeping", "total"):
        mean = 1000 * statistics.fmean(row[key] for row in rows)
        print(f"{key:<12} {median_ms(key):>10.1f} {mean:>10.1f}")
    ratio = statistics.fmean(overhead) / statistics.fmean(pipeline)
    print(f"overhead (total - pipeline): median {1000 * statistics.median(overhead):.1f} ms; "
          f"overhead / pipeline time = {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
