"""Jobs whose worker vanished: make them visible as retried or failed, never `running` forever.

How an abandoned job is found (rq 3.0): a running job's execution sits in the queue's
StartedJobRegistry with score `now + ttl`; the t2v worker refreshes it every few seconds
(`T2V_HEARTBEAT_TTL_S`). When the worker dies the score falls behind the clock, and the
next `StartedJobRegistry.cleanup()` requeues the job (retries left) or moves it to the
FailedJobRegistry, calling the exception handlers with `AbandonedJobError`. Every idle t2v
worker runs that cleanup every `T2V_MAINTENANCE_INTERVAL_S`; the API can run it on demand
through `reconcile_job`. Either way `abandoned_job_handler` mirrors the outcome into the
job record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import redis
from rq.exceptions import AbandonedJobError, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry

from gpt4video.jobs import T2V_QUEUE, JobNotFound, JobRecord, JobStatus, JobStore

log = logging.getLogger(__name__)

ExceptionHandler = Callable[[Job, type[BaseException], BaseException, TracebackType | None], Any]
_RQ_ENDED_BADLY = {RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED}


def make_abandoned_job_handler(store: JobStore) -> ExceptionHandler:
    """An RQ exception handler that records abandoned jobs; ignores every other exception."""

    def abandoned_job_handler(job: Job, exc_type: type[BaseException], exc_value: BaseException,
                              traceback: TracebackType | None) -> bool:
        if exc_type is AbandonedJobError:
            record_abandoned(store, job.id, will_retry=job.should_retry,
                             retries_left=job.retries_left or 0)
        return True  # let the next handler run

    return abandoned_job_handler


def record_abandoned(store: JobStore, job_id: str, *, will_retry: bool, retries_left: int) -> None:
    message = "the worker rendering this video stopped responding (killed or crashed)"
    try:
        if will_retry:
            store.update(job_id, status=JobStatus.QUEUED, progress={"step": 0, "total": 0},
                         error={"type": "worker_lost", "code": "worker_lost",
                                "message": f"{message}; retrying ({retries_left} attempt(s) left)"})
        else:
            store.update(job_id, status=JobStatus.FAILED,
                         error={"type": "worker_lost", "code": "worker_lost",
                                "message": f"{message}; submit the request again"})
    except JobNotFound:
        log.warning("abandoned job %s has no record left to update", job_id)
    log.warning("job %s abandoned by its worker; %s", job_id, "requeued" if will_retry else "failed")


def reconcile_job(store: JobStore, connection: redis.Redis, job_id: str,
                  lost_after_s: float = 60.0) -> JobRecord:
    """Bring a queued/running record in line with RQ and return it (for GET /v1/jobs/{id}).

    - RQ says failed/stopped/canceled but the record does not: record becomes `failed`.
    - RQ has requeued a job the record still calls running: record becomes `queued`.
    - RQ says started but the worker's heartbeat has lapsed: run RQ's abandoned-job cleanup
      now (it requeues or fails the job; the record follows).
    - RQ has no such job and the record has not moved for `lost_after_s`: `failed`.
    Final records are returned untouched. Raises `JobNotFound` if there is no record.
    """
    record = store.get(job_id)
    if record.status.is_final:
        return record
    try:
        job = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        if time.time() - record.updated_at >= lost_after_s:
            store.update(job_id, status=JobStatus.FAILED, error={
                "type": "job_lost", "code": "job_lost",
                "message": "the render job is no longer in the queue (expired or deleted); "
                           "submit the request again"})
        return store.get(job_id)
    status = job.get_status(refresh=False)
    if status in _RQ_ENDED_BADLY:
        store.update(job_id, status=JobStatus.FAILED, error={
            "type": "render_error", "code": f"rq_{status.value}",
            "message": f"the render job ended as {status.value}: {_last_error_line(job)}"})
    elif status == RQStatus.QUEUED and record.status == JobStatus.RUNNING:
        # Requeued by a cleanup that ran without our handler (e.g. an rq CLI command).
        store.update(job_id, status=JobStatus.QUEUED, progress={"step": 0, "total": 0})
    elif status == RQStatus.STARTED:
        registry = StartedJobRegistry(T2V_QUEUE, connection=connection)
        registry.cleanup(exception_handlers=[make_abandoned_job_handler(store)])
    return store.get(job_id)


def _last_error_line(job: Job) -> str:
    result = job.latest_result()
    text = (result.exc_string or "").strip() if result is not None else ""
    return text.splitlines()[-1] if text else "no error details were kept"
