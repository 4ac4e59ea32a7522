"""A redis-server the project runs itself (for `gpt4video up` when REDIS_URL is not set).

Its data lives in DATA_DIR/redis: an append-only file with `appendfsync everysec`, so a
restarted (or killed and restarted) server comes back with every job record, request
stream and queue written more than a second before it stopped. `noeviction`: Redis
refuses writes when full instead of dropping job records, as in docker-compose.yml.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

import redis

log = logging.getLogger("gpt4video.redis")


class RedisNotStarted(RuntimeError):
    """redis-server is missing or did not answer; the message says what to do."""


class ManagedRedis:
    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.dir = (data_dir / "redis").resolve()
        self.host = host
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return ["redis-server", "--bind", self.host, "--port", str(self.port), "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                "--maxmemory-policy", "noeviction", "--logfile", str(self.dir / "redis.log")]

    def answers(self) -> bool:
        try:
            return bool(redis.Redis(host=self.host, port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def start(self, timeout_s: float = 10.0) -> ManagedRedis:
        if shutil.which("redis-server") is None:
            raise RedisNotStarted("redis-server is not installed: run `scripts/ensure-redis.sh --install-only` "
                                  "(or install your system's redis-server), or set REDIS_URL")
        if self.answers():
            raise RedisNotStarted(f"something already answers on {self.host}:{self.port}; stop it, or set "
                                  "MANAGED_REDIS_PORT to a free port, or REDIS_URL to use that server")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RedisNotStarted(f"redis-server did not come up on port {self.port}; see "
                                      f"{self.dir / 'redis.log'}")
            time.sleep(0.05)
        log.info("redis-server on %s (append-only file in %s)", self.url, self.dir)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
