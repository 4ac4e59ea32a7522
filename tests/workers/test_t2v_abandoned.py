"""A worker killed mid-job (SIGKILL): the job is retried or failed, never running forever."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from rq.job import Job
from rq.job import JobStatus as RQStatus

from gpt4video.job_recovery import reconcile_job
from gpt4video.jobs import JobStatus, JobStore
from tests.workers.conftest import (
    HEARTBEAT_TTL_S,
    MAINTENANCE_INTERVAL_S,
    WorkerProcess,
    is_final,
    submit,
    wait_for,
)

pytestmark = pytest.mark.slow

# The configured bound (heartbeat TTL + one maintenance tick) plus room for a loaded machine.
ABANDON_DEADLINE_S = HEARTBEAT_TTL_S + MAINTENANCE_INTERVAL_S + 30


def _kill_mid_job(start_worker: Callable[..., WorkerProcess], store: JobStore,
                  retries: int) -> str:
    doomed = start_worker()
    record = submit(store, num_inference_steps=60, retries=retries)
    running = wait_for(store, record.id, lambda r: r.progress["step"] >= 1)
    assert running.status == JobStatus.RUNNING
    doomed.kill()
    assert store.get(record.id).status == JobStatus.RUNNING  # the dead worker cannot say otherwise
    return record.id


def test_a_killed_workers_job_is_retried_by_the_next_worker(
    start_worker: Callable[..., WorkerProcess], store: JobStore, redis_conn: redis.Redis,
    data_dir: Path,
) -> None:
    job_id = _kill_mid_job(start_worker, store, retries=1)
    start_worker()  # its maintenance finds the lapsed heartbeat and requeues the job

    done = wait_for(store, job_id, is_final, timeout_s=ABANDON_DEADLINE_S + 60)
    assert done.status == JobStatus.SUCCEEDED, done.error
    assert Job.fetch(job_id, connection=redis_conn).retries_left == 0  # the retry was used
    names = sorted(p.name for p in (data_dir / "outputs").iterdir())
    assert names == [f"{job_id}.mp4"]  # one complete file, no leftovers of the killed attempt

    following = wait_for(store, submit(store).id, is_final)
    assert following.status == JobStatus.SUCCEEDED


def test_without_retries_the_api_reconcile_marks_it_failed(
    start_worker: Callable[..., WorkerProcess], store: JobStore, redis_conn: redis.Redis,
) -> None:
    job_id = _kill_mid_job(start_worker, store, retries=0)
    # No worker is left to clean up: the API's reconcile call does it once the heartbeat lapses.
    done = wait_for(store, job_id, lambda _: reconcile_job(store, redis_conn, job_id).status
                    .is_final, timeout_s=ABANDON_DEADLINE_S)
    record = store.get(job_id)
    assert done.id == record.id
    assert record.status == JobStatus.FAILED
    assert record.error is not None and record.error["type"] == "worker_lost"
    assert Job.fetch(job_id, connection=redis_conn).get_status() == RQStatus.FAILED
