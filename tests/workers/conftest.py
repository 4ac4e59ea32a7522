"""Real Redis (a dedicated db) and real t2v worker processes on a tiny pipeline.

The db number defaults to 12 (override with T2V_TEST_REDIS_DB); it is flushed when a
test module starts and ends, so nothing else should use it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from gpt4video.jobs import JobRecord, JobStore, VideoParams, enqueue_video_job

REPO_ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_TTL_S = 2
MAINTENANCE_INTERVAL_S = 1


def _test_redis_url() -> str:
    parts = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    return urlunsplit(parts._replace(path=f"/{os.environ.get('T2V_TEST_REDIS_DB', '12')}"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = _test_redis_url()
    try:
        redis.Redis.from_url(url).ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"these tests need a Redis server at {url}: {exc}")
    return url


@pytest.fixture(scope="module")
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    yield connection
    connection.flushdb()
    connection.close()


@pytest.fixture(scope="module")
def store(redis_conn: redis.Redis) -> JobStore:
    return JobStore(redis_conn, record_ttl_s=600)


@pytest.fixture(scope="session")
def tiny_t2v_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.t2v.tiny import build_tiny_t2v_pipeline

    return build_tiny_t2v_pipeline(tmp_path_factory.mktemp("tiny-t2v") / "pipeline", seed=0)


class WorkerProcess:
    """`python -m workers.t2v_worker` in a subprocess, with its log kept for failures."""

    def __init__(self, env: dict[str, str], log_path: Path, args: list[str]) -> None:
        self.name = f"t2v-test-{uuid.uuid4().hex[:8]}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers.t2v_worker", "--name", self.name, *args],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, connection: redis.Redis, timeout_s: float = 120.0) -> WorkerProcess:
        """Ready once RQ has registered the worker (after the pipeline is loaded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")
            if connection.exists(f"rq:worker:{self.name}"):
                return self
            time.sleep(0.1)
        raise AssertionError(f"worker not ready after {timeout_s}s:\n{self.log_tail()}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("t2v-data")


class WorkerLauncher:
    """Starts ready workers against the test db and tiny pipeline; stops what it started."""

    def __init__(self, redis_url: str, connection: redis.Redis, model_dir: Path,
                 data_dir: Path) -> None:
        self.connection = connection
        self.data_dir = data_dir
        self.base_env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "DATA_DIR": str(data_dir),
            "T2V_MODEL_DIR": str(model_dir),
            "T2V_HEARTBEAT_TTL_S": str(HEARTBEAT_TTL_S),
            "T2V_MAINTENANCE_INTERVAL_S": str(MAINTENANCE_INTERVAL_S),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO_ROOT),
        }
        self.started: list[WorkerProcess] = []

    def start(self, *args: str, **env_overrides: str) -> WorkerProcess:
        """`start(*cli_args, SETTING_NAME=value)`: a worker whose pipeline is loaded."""
        log_path = self.data_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        worker = WorkerProcess({**self.base_env, **env_overrides}, log_path, list(args))
        self.started.append(worker)
        return worker.wait_ready(self.connection)

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()


@pytest.fixture(scope="module")
def worker_launcher(redis_url: str, redis_conn: redis.Redis, tiny_t2v_dir: Path,
                    data_dir: Path) -> Iterator[WorkerLauncher]:
    launcher = WorkerLauncher(redis_url, redis_conn, tiny_t2v_dir, data_dir)
    yield launcher
    launcher.stop_all()


@pytest.fixture
def start_worker(redis_url: str, redis_conn: redis.Redis, tiny_t2v_dir: Path, data_dir: Path,
                 ) -> Iterator[Callable[..., WorkerProcess]]:
    """Workers that live for one test only (see `WorkerLauncher.start`)."""
    launcher = WorkerLauncher(redis_url, redis_conn, tiny_t2v_dir, data_dir)
    yield launcher.start
    launcher.stop_all()


def submit(store: JobStore, caption: str = "a red ball bouncing", *, timeout_s: int = 120,
           retries: int = 0, **params: object) -> JobRecord:
    return enqueue_video_job(store, caption=caption, owner="tests", params=VideoParams(**params),
                             job_timeout_s=timeout_s, retries=retries, result_ttl_s=600)


def wait_for(store: JobStore, job_id: str, done: Callable[[JobRecord], bool],
             timeout_s: float = 60.0, on_poll: Callable[[JobRecord], None] | None = None,
             ) -> JobRecord:
    """Poll the record every 10 ms until `done(record)`; fail with the last record."""
    deadline = time.monotonic() + timeout_s
    record = store.get(job_id)
    while time.monotonic() < deadline:
        record = store.get(job_id)
        if on_poll is not None:
            on_poll(record)
        if done(record):
            return record
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} not done after {timeout_s}s; last record: {record}")


def is_final(record: JobRecord) -> bool:
    return record.status.is_final
