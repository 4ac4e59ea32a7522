"""SIGTERM to a t2v worker (issue 17): the running job finishes, the queued one waits for the
next worker, the worker exits 0. (A second SIGTERM is RQ's cold stop: the job is abandoned,
then retried or failed as `test_t2v_abandoned` shows for SIGKILL.)"""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from gpt4video.jobs import JobStatus, JobStore
from tests.workers.conftest import WorkerProcess, is_final, submit, wait_for

pytestmark = pytest.mark.slow

LONG = {"num_frames": 8, "height": 32, "width": 32, "num_inference_steps": 30}


def test_sigterm_lets_the_running_job_finish_and_leaves_the_queue_alone(
    start_worker: Callable[..., WorkerProcess], store: JobStore,
) -> None:
    worker = start_worker()
    running = submit(store, **LONG)
    waiting = submit(store)
    wait_for(store, running.id, lambda r: r.progress["step"] >= 1)
    worker.process.send_signal(signal.SIGTERM)

    done = wait_for(store, running.id, is_final)
    assert done.status == JobStatus.SUCCEEDED, (done.error, worker.log_tail())
    assert worker.process.wait(timeout=60) == 0, worker.log_tail()
    assert store.get(waiting.id).status == JobStatus.QUEUED  # not started by a stopping worker

    start_worker()
    assert wait_for(store, waiting.id, is_final).status == JobStatus.SUCCEEDED
