"""The text-to-video RQ worker: one resident pipeline, jobs from the `t2v` queue.

Run it with `gpt4video t2v-worker` (or `python -m workers.t2v_worker`). It loads the
diffusers pipeline once, then serves jobs in-process (no fork per job, so the weights stay
on the device). The pipeline travels with the worker object: `T2VWorker` carries a
`RenderContext` and binds it to a context variable while a job runs, the same way RQ
exposes the current job; `render_video` reads it from there. While a job runs, a
heartbeat thread keeps its StartedJobRegistry entry fresh, so a killed worker's job is
seen as abandoned within `T2V_HEARTBEAT_TTL_S` (see `gpt4video.job_recovery`).
"""

from __future__ import annotations

import argparse
import contextvars
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.executions import Execution
from rq.job import Job, get_current_job
from rq.worker import WorkerStatus

from gpt4video.job_recovery import make_abandoned_job_handler, reconcile_job
from gpt4video.jobs import T2V_QUEUE, JobStore
from gpt4video.settings import Settings, load_settings
from model.safety.base import FrameChecker, PassThroughFrameChecker
from model.t2v import SHIPPED_T2V_PIPELINE, MemoryOptions, T2VBackend, ensure_tiny_t2v_pipeline
from workers.t2v_render import RenderContext, render_job

log = logging.getLogger(__name__)

__all__ = ["T2VWorker", "main", "reconcile_job", "render_video"]

_render_context: contextvars.ContextVar[RenderContext] = contextvars.ContextVar("t2v_render")


class WorkerContextMissing(RuntimeError):
    """`render_video` was called outside a T2VWorker (e.g. by a plain `rq worker`)."""


def render_video(job_id: str) -> dict[str, Any]:
    """RQ entry point (`workers.t2v_worker.render_video`, args `(job_id,)`)."""
    try:
        context = _render_context.get()
    except LookupError:
        raise WorkerContextMissing(
            "render_video must run in a t2v worker that holds the pipeline; start one with "
            "`gpt4video t2v-worker`, not a plain `rq worker`"
        ) from None
    return render_job(context, job_id, get_current_job())


class T2VWorker(SimpleWorker):
    """A SimpleWorker (jobs run in this process) that carries the render context and keeps
    each running job's heartbeat fresh from a side thread."""

    def __init__(self, queues: Any, *, render_context: RenderContext, heartbeat_ttl_s: int,
                 **kwargs: Any) -> None:
        super().__init__(queues, **kwargs)
        self.render_context = render_context
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.push_exc_handler(make_abandoned_job_handler(render_context.store))

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # Short and refreshed by JobHeartbeat, instead of SimpleWorker's `timeout + 60`
        # which would hide a dead worker's job for the whole job timeout.
        return self.heartbeat_ttl_s

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        token = _render_context.set(self.render_context)
        try:
            with job_heartbeat(self, job, execution):
                self.perform_job(job, queue, execution)
        finally:
            _render_context.reset(token)
        self.set_state(WorkerStatus.IDLE)


@contextmanager
def job_heartbeat(worker: T2VWorker, job: Job, execution: Execution) -> Iterator[None]:
    """Refresh the job's registry entry every ttl/3 s while the body runs.

    Stops refreshing once the job has overrun its own timeout by a heartbeat TTL: a job
    wedged where the timeout signal cannot reach it then expires like a dead worker's.
    """
    ttl = worker.heartbeat_ttl_s
    deadline = None if not job.timeout or job.timeout < 0 else time.monotonic() + job.timeout + ttl
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(max(1.0, ttl / 3)):
            if deadline is not None and time.monotonic() > deadline:
                log.error("job %s overran its timeout; no longer sending heartbeats", job.id)
                return
            try:
                worker.maintain_heartbeats(job, execution)
            except Exception:  # a missed beat is survivable; the next one may succeed
                log.warning("job %s: heartbeat failed", job.id, exc_info=True)

    thread = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


# --- startup --------------------------------------------------------------------------------
def load_frame_checker(spec: str) -> FrameChecker:
    """`module:factory` -> factory(); empty -> PassThroughFrameChecker."""
    if not spec:
        log.warning("no T2V_FRAME_CHECKER configured: generated videos are NOT screened "
                    "(PassThroughFrameChecker)")
        return PassThroughFrameChecker()
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"T2V_FRAME_CHECKER={spec!r} must look like 'package.module:factory'")
    factory: Callable[[], FrameChecker] = getattr(importlib.import_module(module_name), attr)
    checker = factory()
    if not callable(getattr(checker, "check", None)):
        raise TypeError(f"T2V_FRAME_CHECKER={spec!r} returned {checker!r}, which has no check()")
    return checker


def resolve_model_dir(settings: Settings) -> Path:
    """T2V_MODEL_DIR if set; else the trained shapes pipeline shipped in the repository
    (`gpt4video train t2v` rebuilds it); else a tiny random one built under DATA_DIR."""
    if settings.t2v_model_dir is not None:
        return settings.t2v_model_dir
    if (SHIPPED_T2V_PIPELINE / "model_index.json").is_file():
        return SHIPPED_T2V_PIPELINE
    return ensure_tiny_t2v_pipeline(settings.data_dir / "models" / "tiny-t2v")


def build_worker(settings: Settings, *, name: str | None = None,
                 frame_checker: FrameChecker | None = None) -> T2VWorker:
    """Load the pipeline and wire a worker for the `t2v` queue (does not start it)."""
    backend = T2VBackend.load(
        resolve_model_dir(settings), device=settings.t2v_device, dtype=settings.t2v_dtype,
        options=MemoryOptions(cpu_offload=settings.t2v_cpu_offload,
                              vae_slicing=settings.t2v_vae_slicing,
                              vae_tiling=settings.t2v_vae_tiling),
    )
    connection = redis.Redis.from_url(settings.redis_url)
    context = RenderContext(
        backend=backend,
        store=JobStore(connection, record_ttl_s=settings.job_record_ttl_s),
        frame_checker=frame_checker or load_frame_checker(settings.t2v_frame_checker),
        outputs_dir=settings.outputs_dir.resolve(),
        safety_sample_frames=settings.t2v_safety_sample_frames,
        output_retention_s=settings.output_retention_s,
    )
    context.outputs_dir.mkdir(parents=True, exist_ok=True)
    return T2VWorker(
        [Queue(T2V_QUEUE, connection=connection)],
        render_context=context,
        heartbeat_ttl_s=settings.t2v_heartbeat_ttl_s,
        connection=connection,
        name=name,
        maintenance_interval=settings.t2v_maintenance_interval_s,
        # The idle loop wakes every dequeue timeout (= worker_ttl - 15) to run maintenance.
        worker_ttl=settings.t2v_maintenance_interval_s + 15,
        default_result_ttl=settings.t2v_result_ttl_s,
    )


def main(argv: list[str] | None = None) -> int:
    """`t2v-worker [--burst] [--name NAME] [--frame-checker module:factory]`."""
    parser = argparse.ArgumentParser(prog="t2v-worker", description="Serve text-to-video jobs.")
    parser.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    parser.add_argument("--name", default=None, help="worker name (default: random)")
    parser.add_argument("--frame-checker", default=None,
                        help="module:factory for the output frame check (overrides "
                             "T2V_FRAME_CHECKER)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {} if args.frame_checker is None else {"t2v_frame_checker": args.frame_checker}
    settings = load_settings(**overrides)
    worker = build_worker(settings, name=args.name)
    log.info("t2v worker %s ready on queue %r (%s)", worker.name, T2V_QUEUE,
             worker.render_context.backend.pipeline_class)
    worker.work(burst=args.burst, logging_level=args.log_level)
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this `__main__` copy: RQ imports
    # `workers.t2v_worker.render_video`, which must see the same context variable.
    from workers import t2v_worker

    raise SystemExit(t2v_worker.main())
