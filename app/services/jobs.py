"""Job views: the Redis record, reconciled with RQ (`reconcile_job`) while it is not final."""

from __future__ import annotations

import logging
from pathlib import Path

import redis

from app.errors import NotFound
from app.schemas import JobError, JobProgress, JobResponse, JobVideoResult
from gpt4video.job_recovery import reconcile_job
from gpt4video.jobs import JobNotFound, JobRecord, JobStatus, JobStore, cancel_video_job, output_path
from gpt4video.settings import Settings

log = logging.getLogger("gpt4video.api")

# What DELETE leaves alone: these never had, and never will have, a video.
_NOTHING_TO_CANCEL = {JobStatus.FAILED, JobStatus.REFUSED, JobStatus.EXPIRED, JobStatus.CANCELED}


def get_job(store: JobStore, connection: redis.Redis, job_id: str, owner: str) -> JobRecord:
    try:
        record = store.get(job_id, owner=owner)
    except JobNotFound:
        raise NotFound(f"no job {job_id}", "job_not_found") from None
    if record.status.is_final:
        return record
    return reconcile_job(store, connection, job_id)


def to_response(record: JobRecord) -> JobResponse:
    result = None
    if record.status == JobStatus.SUCCEEDED and record.result:
        r = record.result
        result = JobVideoResult(
            url=f"/v1/jobs/{record.id}/video", caption=record.caption, frames=int(r.get("frames", 0)),
            fps=float(r.get("fps", 0)), duration_s=float(r.get("duration_s", 0)), width=r.get("width"),
            height=r.get("height"), seed=r.get("seed"),
        )
    error = JobError(**record.error) if record.error else None
    progress = JobProgress(step=int(record.progress.get("step", 0)), total=int(record.progress.get("total", 0)))
    return JobResponse(id=record.id, status=record.status, caption=record.caption, progress=progress,
                       result=result, error=error, created_at=record.created_at, updated_at=record.updated_at)


def video_path(record: JobRecord, settings: Settings) -> Path:
    """The MP4 of a succeeded job, only from inside the outputs directory."""
    if record.status != JobStatus.SUCCEEDED or not record.result:
        reason = f" ({record.error['code']})" if record.error else ""
        raise NotFound(f"job {record.id} has no video: status {record.status}{reason}", "video_not_available")
    path = Path(record.result.get("path", "")).resolve()
    outputs = settings.outputs_dir.resolve()
    if outputs not in path.parents or not path.is_file():
        raise NotFound(f"job {record.id}'s video file is missing", "video_missing")
    return path


def cancel_job(store: JobStore, connection: redis.Redis, job_id: str, owner: str, settings: Settings) -> JobRecord:
    """DELETE /v1/jobs/{id}: a queued, running or succeeded job ends `canceled` with no MP4 left;
    a job that already ended without a video is returned as it is. Repeating it changes nothing."""
    record = get_job(store, connection, job_id, owner)
    if record.status in _NOTHING_TO_CANCEL:
        return record
    cancel_video_job(store, job_id)
    output_path(settings.outputs_dir, job_id).unlink(missing_ok=True)
    log.info("job %s canceled by its owner (was %s)", job_id, record.status)
    return store.get(job_id)
