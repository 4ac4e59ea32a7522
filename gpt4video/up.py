"""`gpt4video up`: the whole service on this machine, on the CPU, with local default models.

Starts the API, one LLM worker and one t2v worker as child processes against the Redis
at REDIS_URL, after building any missing default model once (so the workers never race
to build it). Ctrl-C (or SIGTERM) stops them all; if one dies, the others are stopped.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time

import redis

from gpt4video.settings import SettingsError, load_settings

log = logging.getLogger("gpt4video.up")


def _check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.exceptions.RedisError as exc:
        raise SystemExit(
            f"gpt4video up: Redis at {url} does not answer ({exc}).\n"
            "Start one (e.g. `redis-server --daemonize yes`) or set REDIS_URL."
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
    _check_redis(settings.redis_url)
    _prepare_models()

    cli = [sys.executable, "-m", "gpt4video.cli"]
    commands = [[*cli, "api"]]
    commands += [[*cli, "llm-worker"] for _ in range(args.llm_workers)]
    commands += [[*cli, "t2v-worker"] for _ in range(args.t2v_workers)]
    children = [subprocess.Popen(cmd, env=os.environ.copy()) for cmd in commands]
    log.info("API on http://%s:%d  (docs: /docs); Ctrl-C stops everything",
             settings.api_host, settings.api_port)

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        for child in children:
            if child.poll() is not None:
                log.error("%s exited with %s; stopping the others", " ".join(child.args[3:]), child.returncode)
                code = child.returncode or 1
                stopping = True
        time.sleep(0.5)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.time() + 30
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            child.kill()
    return code
