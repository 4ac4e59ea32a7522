"""`gpt4video healthcheck api|llm-worker|t2v-worker`: exit 0 when this container's
process is healthy (used by docker compose health checks)."""

from __future__ import annotations

import argparse
import socket
import sys
import time

import httpx
import redis

from gpt4video import llm_protocol as wire
from gpt4video.jobs import T2V_QUEUE
from gpt4video.settings import load_settings


def _api(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=3).status_code == 200


def _llm_worker(conn: redis.Redis, ttl_s: float) -> bool:
    host = socket.gethostname()
    fresh = conn.zrangebyscore(wire.WORKERS_ZSET, time.time() - ttl_s, "+inf")
    return any(name.decode().startswith(f"{host}-") for name in fresh)


def _t2v_worker(conn: redis.Redis) -> bool:
    from rq import Queue, Worker

    host = socket.gethostname()
    return any(w.hostname == host for w in Worker.all(queue=Queue(T2V_QUEUE, connection=conn)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("process", choices=["api", "llm-worker", "t2v-worker"])
    args = parser.parse_args(argv)
    settings = load_settings()
    try:
        if args.process == "api":
            ok = _api(settings.api_port)
        else:
            conn = redis.Redis.from_url(settings.redis_url, socket_timeout=3)
            ok = _llm_worker(conn, settings.heartbeat_ttl_s) if args.process == "llm-worker" else _t2v_worker(conn)
    except (httpx.HTTPError, redis.RedisError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    if not ok:
        print(f"unhealthy: no live {args.process} on this host", file=sys.stderr)
    return 0 if ok else 1
