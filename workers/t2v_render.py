"""One video job, start to finish: validate, render with progress, check frames, publish.

Runs inside a t2v worker with a `RenderContext` (the resident backend, the job store,
the frame checker, the output directory). The job record is the source of truth for
the API; every outcome the render itself can see is written there before returning or
raising. Outcomes the render cannot see (the worker was killed) are handled by
`gpt4video.job_recovery`.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.job import Job
from rq.timeouts import JobTimeoutException

from gpt4video.job_timings import record_duration
from gpt4video.jobs import JobNotFound, JobRecord, JobStatus, JobStore, output_path
from model.safety.base import FrameChecker, SafetyVerdict
from model.safety.policy import screen_frames
from model.t2v import InvalidVideoParams, T2VBackend
from model.video import write_mp4

log = logging.getLogger(__name__)
_REDIS_LOST = (RedisConnectionError, RedisTimeoutError)
REDIS_WAIT_S = 60.0  # how long a finished render waits for a restarting Redis to record it


@dataclass(frozen=True)
class RenderContext:
    """Everything a render needs that outlives one job; built once per worker process."""

    backend: T2VBackend
    store: JobStore
    frame_checker: FrameChecker
    outputs_dir: Path
    safety_sample_frames: int = 8
    output_retention_s: int = 0  # 0: the record keeps JOB_RECORD_TTL_S


class RenderCanceled(Exception):
    """The job's record was canceled while it rendered; the render stops where it is."""


def render_job(ctx: RenderContext, job_id: str, rq_job: Job | None) -> dict[str, Any]:
    """Render job `job_id`; return a short outcome for RQ's result. Raises to let RQ retry."""
    try:
        record = ctx.store.get(job_id)
    except JobNotFound:
        log.warning("job %s has no record (expired or deleted); nothing to render", job_id)
        return {"status": "missing"}
    if record.status.is_final:
        log.info("job %s is already %s; skipping duplicate delivery", job_id, record.status)
        return {"status": str(record.status)}
    started = time.monotonic()
    outcome = "error"  # the render raised: failed, or queued again for a retry
    try:
        result = _render(ctx, record, rq_job)
        outcome = result["status"]
        return result
    except RenderCanceled:
        output_path(ctx.outputs_dir, job_id).unlink(missing_ok=True)  # the API may have removed it first
        log.info("job %s canceled by its owner; render stopped", job_id)
        outcome = str(JobStatus.CANCELED)
        return {"status": outcome}
    except Exception as exc:
        _record_failure(ctx.store, job_id, rq_job, exc)
        raise
    finally:
        try:  # for /metrics (g4v_t2v_job_duration_seconds); never in the way of the job's own outcome
            record_duration(ctx.store.redis, outcome, time.monotonic() - started)
        except Exception:
            log.warning("job %s: duration not recorded", job_id, exc_info=True)


def _render(ctx: RenderContext, record: JobRecord, rq_job: Job | None) -> dict[str, Any]:
    store = ctx.store
    # 1. Parameters: a bad request fails at once, without retries.
    try:
        params = ctx.backend.validate(record.params)
    except InvalidVideoParams as exc:
        error = {"type": "invalid_parameters", "message": str(exc), "code": "invalid_parameters"}
        store.update(record.id, status=JobStatus.FAILED, error=error)
        log.info("job %s rejected: %s", record.id, exc)
        return {"status": str(JobStatus.FAILED), "error": error}

    # 2. Denoise, publishing progress after every step.
    total = params.num_inference_steps
    progress = _ProgressReporter(store, record.id, rq_job)
    progress(0, total, status=JobStatus.RUNNING)
    started = time.perf_counter()
    frames = ctx.backend.generate(record.caption, params, on_step=progress)  # (T, H, W, 3)
    pipeline_s = time.perf_counter() - started

    # 3. Output safety: nothing flagged is ever written where the API serves files.
    path = output_path(ctx.outputs_dir, record.id)
    verdict = screen_frames(ctx.frame_checker, sample_evenly(frames, ctx.safety_sample_frames), "t2v_output")
    if verdict.flagged:
        path.unlink(missing_ok=True)  # a duplicate run must not leave an earlier copy behind
        error = {"type": "refused", "message": _refusal_message(verdict), "code": "unsafe_output"}
        _applied_or_canceled(store.update(record.id, status=JobStatus.REFUSED, error=error, progress=progress.last))
        log.warning("job %s refused by the frame check: %s", record.id, verdict)
        return {"status": str(JobStatus.REFUSED), "error": error}

    # 4. Publish: write_mp4 writes a temporary file and renames it, so readers see all or nothing.
    encode_started = time.perf_counter()
    ctx.outputs_dir.mkdir(parents=True, exist_ok=True)
    write_mp4(frames, path, fps=params.fps)
    encode_s = time.perf_counter() - encode_started
    result = {
        "path": str(path.resolve()),
        "filename": path.name,
        "frames": int(frames.shape[0]),
        "fps": params.fps,
        "duration_s": round(frames.shape[0] / params.fps, 6),
        "seed": params.seed,
        "width": int(frames.shape[2]),
        "height": int(frames.shape[1]),
        "safety_checked": verdict.active,
        # pipeline_s includes the per-step progress reporting, which progress_s measures.
        "timings": {"pipeline_s": round(pipeline_s, 6), "progress_s": round(progress.seconds, 6),
                    "encode_write_s": round(encode_s, 6)},
    }
    _applied_or_canceled(_when_redis_answers(lambda: store.update(
        record.id, status=JobStatus.SUCCEEDED, result=result, error=None, progress={"step": total, "total": total})))
    if ctx.output_retention_s:
        store.expire(record.id, ctx.output_retention_s)  # the record lives as long as its MP4
    log.info("job %s done: %s (%d frames, %.2fs pipeline)", record.id, path, frames.shape[0],
             pipeline_s)
    return {"status": str(JobStatus.SUCCEEDED), "path": result["path"]}


class _ProgressReporter:
    """`on_step` callback: mirrors {"step", "total"} into the record and RQ's job meta."""

    def __init__(self, store: JobStore, job_id: str, rq_job: Job | None) -> None:
        self.store = store
        self.job_id = job_id
        self.rq_job = rq_job
        self.last = {"step": 0, "total": 0}
        self.seconds = 0.0  # time spent reporting, so benchmarks can subtract it

    def __call__(self, step: int, total: int, status: JobStatus | None = None) -> None:
        started = time.perf_counter()
        self.last = {"step": step, "total": total}
        fields: dict[str, Any] = {"progress": self.last}
        if status is not None:
            fields.update(status=status, error=None)
        try:
            _applied_or_canceled(self.store.update(self.job_id, **fields))
            if self.rq_job is not None:
                self.rq_job.meta["progress"] = self.last
                self.rq_job.save_meta()
        except _REDIS_LOST as exc:  # progress is best effort: a restarting Redis does not stop the render
            log.warning("job %s: progress %d/%d not recorded (Redis unavailable: %s)", self.job_id, step, total, exc)
        self.seconds += time.perf_counter() - started


def _when_redis_answers(write: Callable[[], bool], within_s: float = REDIS_WAIT_S) -> bool:
    """Retry a record write while Redis restarts (for `within_s`), so finished work is kept."""
    deadline = time.monotonic() + within_s
    delay = 0.2
    while True:
        try:
            return write()
        except _REDIS_LOST:
            if time.monotonic() > deadline:
                raise
            log.warning("Redis unavailable; retrying the job record write in %.1f s", delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _applied_or_canceled(applied: bool) -> None:
    """A record update that did not apply means the owner canceled the job: stop rendering."""
    if not applied:
        raise RenderCanceled


def sample_evenly(frames: np.ndarray, count: int) -> np.ndarray:
    """`count` frames spread over the clip, first and last included: (T, H, W, 3) -> (n, H, W, 3)."""
    indices = np.unique(np.linspace(0, frames.shape[0] - 1, num=min(count, frames.shape[0])).round())
    return frames[indices.astype(int)]  # (n, H, W, 3)


def _refusal_message(verdict: SafetyVerdict) -> str:
    category = f" ({verdict.category}, score {verdict.score:.2f})" if verdict.category else ""
    return (f"the generated video was withheld by the output safety check{category}; "
            "rephrase the request")


def _record_failure(store: JobStore, job_id: str, rq_job: Job | None, exc: Exception) -> None:
    """Write why the render failed; `queued` if RQ is about to retry it, else `failed`."""
    if isinstance(exc, JobTimeoutException):
        timeout = rq_job.timeout if rq_job is not None else "?"
        error = {"type": "timeout", "code": "timeout",
                 "message": f"rendering took longer than the job timeout ({timeout} s); ask for "
                            "fewer frames or steps, or raise T2V_JOB_TIMEOUT_S"}
    elif isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        error = {"type": "storage_full", "code": "storage_full",
                 "message": "the server's storage is full, so the video could not be written (nothing was "
                            "kept); delete videos you no longer need (DELETE /v1/jobs/{id}) and ask again"}
    else:
        error = {"type": "render_error", "code": "render_error",
                 "message": f"rendering failed: {type(exc).__name__}: {exc}"}
    will_retry = rq_job is not None and rq_job.should_retry
    try:
        if will_retry:
            error = {**error, "message": f"{error['message']} (retrying, "
                                         f"{rq_job.retries_left} attempt(s) left)"}
            store.update(job_id, status=JobStatus.QUEUED, error=error,
                         progress={"step": 0, "total": 0})
        else:
            store.update(job_id, status=JobStatus.FAILED, error=error)
    except Exception:  # never let bookkeeping hide the render's own error
        log.exception("job %s: could not record failure %r", job_id, exc)
    log.error("job %s failed (%s): %s", job_id, "will retry" if will_retry else "final", exc)
