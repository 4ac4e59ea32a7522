"""Video-generation job records and the RQ queue they travel on.

A job record lives in a Redis hash `g4v:job:<id>` independently of RQ's own job
(whose result expires after `t2v_result_ttl_s`). The API reads records; the t2v
worker updates them. RQ's job id is the record id, so either side can find the other.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis
from rq import Queue, Retry
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from model.t2v_request import VideoParams

T2V_QUEUE = "t2v"
RENDER_FUNC = "workers.t2v_worker.render_video"
_KEY = "g4v:job:{}"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"
    EXPIRED = "expired"
    CANCELED = "canceled"  # by its owner (DELETE /v1/jobs/{id}); sticky: no later update applies

    @property
    def is_final(self) -> bool:
        return self in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.REFUSED, JobStatus.EXPIRED,
                        JobStatus.CANCELED}


class JobNotFound(KeyError):
    """No job record with that id (or it belongs to another API key)."""


@dataclass
class JobRecord:
    id: str
    owner: str
    caption: str
    params: dict[str, Any] = field(default_factory=dict)
    status: JobStatus = JobStatus.QUEUED
    progress: dict[str, int] = field(default_factory=lambda: {"step": 0, "total": 0})
    result: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def to_redis(self) -> dict[str, str]:
        out = {key: _encode(value) for key, value in asdict(self).items()}
        out["status"] = str(self.status)
        return out

    @classmethod
    def from_redis(cls, raw: dict[bytes, bytes] | dict[str, str]) -> JobRecord:
        data = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}
        return cls(
            id=data["id"],
            owner=data["owner"],
            caption=data["caption"],
            params=json.loads(data.get("params", "{}")),
            status=JobStatus(data.get("status", "queued")),
            progress=json.loads(data.get("progress", '{"step": 0, "total": 0}')),
            result=json.loads(data.get("result", "null")),
            error=json.loads(data.get("error", "null")),
            created_at=float(json.loads(data.get("created_at", "0"))),
            updated_at=float(json.loads(data.get("updated_at", "0"))),
        )


# Set fields unless the record is gone (0) or canceled (-1); canceled records never change again.
_UPDATE_UNLESS_CANCELED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'status') == 'canceled' then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


class JobStore:
    """CRUD over job records. Explicit connection; no module globals."""

    def __init__(self, connection: redis.Redis, record_ttl_s: int) -> None:
        self.redis = connection
        self.record_ttl_s = record_ttl_s
        self._update = connection.register_script(_UPDATE_UNLESS_CANCELED)

    def create(self, record: JobRecord) -> None:
        key = _KEY.format(record.id)
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping=record.to_redis())
        pipe.expire(key, self.record_ttl_s)
        pipe.execute()

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        raw = self.redis.hgetall(_KEY.format(job_id))
        if not raw:
            raise JobNotFound(job_id)
        record = JobRecord.from_redis(raw)
        if owner is not None and record.owner != owner:
            raise JobNotFound(job_id)
        return record

    def update(self, job_id: str, **fields: Any) -> bool:
        """Set some fields (status, progress, result, error) of an existing record, atomically
        unless it is canceled: then nothing changes and the answer is False."""
        fields["updated_at"] = time.time()
        args = [part for key, value in fields.items() for part in (key, _encode(value))]
        applied = int(self._update(keys=[_KEY.format(job_id)], args=args))
        if applied == 0:
            raise JobNotFound(job_id)
        return applied == 1

    def cancel(self, job_id: str, error: dict[str, str]) -> None:
        """End the record `canceled` (whatever it was), dropping any result."""
        key = _KEY.format(job_id)
        if not self.redis.exists(key):
            raise JobNotFound(job_id)
        self.redis.hset(key, mapping={"status": str(JobStatus.CANCELED), "error": json.dumps(error),
                                      "result": "null", "updated_at": json.dumps(time.time())})

    def expire(self, job_id: str, ttl_s: int) -> None:
        """Let the record live `ttl_s` more seconds (e.g. as long as its output is kept)."""
        self.redis.expire(_KEY.format(job_id), ttl_s)


def _encode(value: Any) -> str:
    return str(value) if isinstance(value, StrEnum) else value if isinstance(value, str) else json.dumps(value)


def record_key(job_id: str) -> str:
    return _KEY.format(job_id)


def owner_jobs_key(owner: str) -> str:
    """The owner's job ids by creation time (for KEY_MAX_ACTIVE_JOBS; ended ones are pruned lazily)."""
    return f"g4v:owner:{owner}:jobs"


def output_path(outputs_dir: Path, job_id: str) -> Path:
    """Deterministic per job: a retried or duplicated job can only ever produce this file."""
    return outputs_dir / f"{job_id}.mp4"


def new_job_id() -> str:
    return uuid.uuid4().hex


def enqueue_video_job(
    store: JobStore,
    *,
    caption: str,
    owner: str,
    params: VideoParams,
    job_timeout_s: int,
    retries: int,
    result_ttl_s: int,
) -> JobRecord:
    """Write the job record, then put the render job on the RQ `t2v` queue."""
    record = JobRecord(id=new_job_id(), owner=owner, caption=caption,
                       params=params.model_dump(exclude_none=True))
    store.create(record)
    pipe = store.redis.pipeline()
    pipe.zadd(owner_jobs_key(owner), {record.id: record.created_at})
    pipe.expire(owner_jobs_key(owner), store.record_ttl_s)
    pipe.execute()
    queue = Queue(T2V_QUEUE, connection=store.redis)
    queue.enqueue_call(
        RENDER_FUNC,
        args=(record.id,),
        job_id=record.id,
        timeout=job_timeout_s,
        result_ttl=result_ttl_s,
        failure_ttl=result_ttl_s,
        retry=Retry(max=retries) if retries > 0 else None,
        description=f"t2v {record.id}",
    )
    return record


CANCELED_ERROR = {"type": "canceled", "code": "canceled",
                  "message": "canceled by its owner (DELETE /v1/jobs/{id}); its video, if any, was removed"}


def cancel_video_job(store: JobStore, job_id: str) -> None:
    """End the record `canceled`, then take a still-queued render job off the queue.

    A running render sees the canceled record at its next denoising step (its progress
    update does not apply) and stops; see `workers.t2v_render`."""
    store.cancel(job_id, CANCELED_ERROR)
    try:
        job = Job.fetch(job_id, connection=store.redis)
        if job.get_status(refresh=False) in {"queued", "scheduled", "deferred"}:
            job.cancel()
    except (NoSuchJobError, InvalidJobOperation):
        pass  # already gone or already ended: the record is what counts
