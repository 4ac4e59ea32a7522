"""End-to-end fixtures: real Redis (a dedicated db), the real API and LLM worker as
subprocesses on a scripted tiny checkpoint.

The db number defaults to 10 (override with APP_TEST_REDIS_DB); it is flushed when the
service starts and stops, so nothing else should use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import redis

from gpt4video import llm_protocol as wire

REPO_ROOT = Path(__file__).resolve().parents[2]

SCRIPT = {
    "hello": "Hello! Ask me about a video.",
    "show me a red circle": "Here it is: <video>a red circle moves to the left</video> Enjoy!",
    "surprise me with a video": "Sure. <video>a man stabs another man, blood everywhere</video>",
    "make a knife video": "Here: <video>a chef slices bread with a knife</video>",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_redis_url(db: str | None = None) -> str:
    parts = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    return urlunsplit(parts._replace(path=f"/{db or os.environ.get('APP_TEST_REDIS_DB', '10')}"))


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("wb")
        # Its own process group: `stop` also ends what it started (vLLM's EngineCore), which
        # outlives a SIGKILLed worker.
        self.proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     process_group=0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # children left behind, if any
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


@dataclass
class Service:
    base_url: str
    data_dir: Path
    redis_url: str
    env: dict[str, str]
    tmp: Path
    api: Process | None = None
    workers: list[Process] = field(default_factory=list)
    worker_start_timeout_s: float = 120  # how long a new LLM worker may take to send its first heartbeat

    def client(self, key: str | None = None, timeout: float = 60.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def start_worker(self, **env: str) -> Process:
        name = f"llm-test-{uuid.uuid4().hex[:6]}"
        proc = Process([sys.executable, "-m", "workers.llm_worker", "--name", name], {**self.env, **env},
                       self.tmp / f"{name}.log")
        proc.name = name  # type: ignore[attr-defined]
        self.workers.append(proc)
        wait_for_worker(self.redis_url, name, proc, self.worker_start_timeout_s)
        return proc

    def worker_stats(self, name: str) -> dict:
        raw = redis.Redis.from_url(self.redis_url).get(wire.worker_stats_key(name))
        return json.loads(raw) if raw else {}

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        if self.api:
            self.api.stop()


def wait_for_worker(redis_url: str, name: str, proc: Process, timeout_s: float = 120) -> None:
    conn = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if conn.zscore(wire.WORKERS_ZSET, name) is not None:
            return
        if not proc.alive():
            raise RuntimeError(f"LLM worker exited early:\n{proc.log()}")
        time.sleep(0.2)
    raise RuntimeError(f"LLM worker {name} sent no heartbeat in {timeout_s} s:\n{proc.log()}")


def wait_for_http(url: str, proc: Process, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if not proc.alive():
            raise RuntimeError(f"API exited early:\n{proc.log()}")
        time.sleep(0.2)
    raise RuntimeError(f"API did not come up:\n{proc.log()}")


def start_api(env: dict[str, str], tmp: Path) -> tuple[Process, str]:
    port = _free_port()
    proc = Process([sys.executable, "-m", "gpt4video.cli", "api", "--port", str(port)], env, tmp / f"api-{port}.log")
    base = f"http://127.0.0.1:{port}"
    wait_for_http(base, proc)
    return proc, base


@pytest.fixture(scope="session")
def scripted_checkpoint_dir(tiny_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.scripted import build_scripted_checkpoint

    return build_scripted_checkpoint(tiny_checkpoint_dir, tmp_path_factory.mktemp("scripted"), SCRIPT)


def service_env(redis_url: str, data_dir: Path, model_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "LLM_", "MAX_"))}
    env.update({
        "REDIS_URL": redis_url, "DATA_DIR": str(data_dir), "MODEL_DIR": str(model_dir),
        "LLM_REQUEST_TIMEOUT_S": "20", "LLM_CLAIM_IDLE_S": "2", "HEARTBEAT_INTERVAL_S": "0.5",
        "HEARTBEAT_TTL_S": "3", "MAX_UPLOAD_BYTES": str(2 * 1024 * 1024), "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1", "ENGINE": "hf",  # not auto: vLLM's CPU attention rejects the tiny head size 16
    })
    env.update(extra)
    return env


@contextmanager
def running_service(checkpoint_dir: Path, tmp: Path, extra_env: dict[str, str],
                    worker_start_timeout_s: float = 120) -> Iterator[Service]:
    """API + one LLM worker on the app tests' Redis db, flushed before and after."""
    url = app_redis_url()
    conn = redis.Redis.from_url(url)
    try:
        conn.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"these tests need a Redis server at {url}: {exc}")
    conn.flushdb()
    env = service_env(url, tmp / "data", checkpoint_dir, **extra_env)
    svc = Service(base_url="", data_dir=tmp / "data", redis_url=url, env=env, tmp=tmp,
                  worker_start_timeout_s=worker_start_timeout_s)
    try:
        svc.start_worker()
        svc.api, svc.base_url = start_api(env, tmp)
        yield svc
    finally:
        svc.stop()
        conn.flushdb()


@pytest.fixture(scope="module")
def service(scripted_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[Service]:
    """API + one LLM worker. A module may set `SERVICE_ENV = {...}` for extra settings and
    `WORKER_START_TIMEOUT_S` for an engine that starts slower (vLLM: tests/gpu)."""
    with running_service(scripted_checkpoint_dir, tmp_path_factory.mktemp("service"),
                         getattr(request.module, "SERVICE_ENV", {}),
                         getattr(request.module, "WORKER_START_TIMEOUT_S", 120)) as svc:
        yield svc
