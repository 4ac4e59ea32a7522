"""`gpt4video up`: the whole service on this machine, on the CPU, with local default models.

Starts the API, one LLM worker and one t2v worker as child processes, after building any
missing default model once (so the workers never race to build it). Redis: the one at
REDIS_URL when that is set, else a redis-server of its own with an append-only file under
DATA_DIR/redis on MANAGED_REDIS_PORT (`gpt4video.managed_redis`), so a restart forgets no job.

Ctrl-C (or SIGTERM) is passed on to every child, which stops gracefully (the API finishes
running requests, the LLM worker its batch, the t2v worker its job); `up` waits for them,
then a second SIGTERM stops those still running (a t2v job is then requeued), then SIGKILL.
Its own Redis stops last. If one child dies, the others are stopped the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time

import redis

from gpt4video.managed_redis import ManagedRedis, RedisNotStarted
from gpt4video.settings import Settings, SettingsError, load_settings

log = logging.getLogger("gpt4video.up")


def _check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.RedisError as exc:
        raise SystemExit(
            f"gpt4video up: Redis at REDIS_URL={url} does not answer ({exc}).\n"
            "Start it, or unset REDIS_URL to let `gpt4video up` run its own (with an append-only file)."
        ) from None


def _prepare_models() -> None:
    from gpt4video.defaults import ensure_base_for, resolve_model_dir
    from workers.t2v_worker import resolve_model_dir as resolve_t2v_dir

    settings = load_settings()
    model_dir = resolve_model_dir(settings)
    log.info("LLM checkpoint: %s", model_dir)
    base = ensure_base_for(model_dir, settings)  # converted once, before the workers start
    if base is not None:
        log.info("base LLM:       %s", base)
    log.info("T2V pipeline:   %s", resolve_t2v_dir(settings))


def _start_redis(settings: Settings) -> ManagedRedis | None:
    """The project's own Redis unless REDIS_URL (environment or .env) names one."""
    if "redis_url" in settings.model_fields_set:
        _check_redis(settings.redis_url)
        return None
    try:
        managed = ManagedRedis(settings.data_dir, settings.managed_redis_port).start()
    except RedisNotStarted as exc:
        raise SystemExit(f"gpt4video up: {exc}") from None
    os.environ["REDIS_URL"] = managed.url  # for the children (and load_settings below)
    return managed


def _stop_children(children: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM (graceful), wait `grace_s`; SIGTERM again (cold), wait 10 s; then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        alive = [c for c in children if c.poll() is None]
        if not alive:
            return
        if sig == signal.SIGKILL:
            log.error("%d process(es) did not stop; killing them", len(alive))
        for child in alive:
            child.send_signal(sig)
        deadline = time.monotonic() + wait_s
        for child in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.1, deadline - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video up", description=__doc__.splitlines()[0])
    parser.add_argument("--llm-workers", type=int, default=1)
    parser.add_argument("--t2v-workers", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"gpt4video up: {exc}") from None
    # Until the children run, SIGTERM ends `up` through the `finally` below (its Redis stops too).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    managed = _start_redis(settings)
    try:
        return _run(args, settings)
    finally:
        if managed is not None:
            managed.stop()


def _run(args: argparse.Namespace, settings: Settings) -> int:
    _prepare_models()
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    cli = [sys.executable, "-m", "gpt4video.cli"]
    commands = [[*cli, "api"]]
    commands += [[*cli, "llm-worker"] for _ in range(args.llm_workers)]
    commands += [[*cli, "t2v-worker"] for _ in range(args.t2v_workers)]
    # Own process groups: a Ctrl-C in the terminal reaches `up` alone, which passes it on once.
    children = [subprocess.Popen(cmd, env=os.environ.copy(), start_new_session=True) for cmd in commands]
    log.info("API on http://%s:%d  (docs: /docs); Ctrl-C stops everything",
             settings.api_host, settings.api_port)
    code = 0
    while not stopping:
        for child in children:
            if child.poll() is not None:
                log.error("%s exited with %s; stopping the others", " ".join(child.args[3:]), child.returncode)
                code = child.returncode or 1
                stopping = True
        time.sleep(0.5)
    log.info("stopping: waiting for running requests and jobs")
    _stop_children(children, max(settings.api_grace_s, settings.llm_request_timeout_s) + 5)
    # Ended by the SIGTERM `up` sent (e.g. still loading its model, before its handler was set): a clean stop.
    bad = [c for c in children if c.returncode not in (0, None, -signal.SIGTERM)]
    return code or (1 if bad else 0)
