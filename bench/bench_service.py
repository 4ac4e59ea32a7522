"""Load benchmark of the running service on loopback, against a hello-world FastAPI.

Starts (as subprocesses, on free local ports): a hello-world FastAPI app, the GPT4Video
API and one LLM worker on a tiny checkpoint, all against the Redis at REDIS_URL (db 9,
flushed). Then, with N concurrent clients, measures:
  - GET /hello                 (the machine's reference figure)
  - GET /v1/jobs/{id}          (Redis read + RQ reconcile path)
  - POST /v1/chat              (API -> Redis stream -> worker batch -> reply)
  - POST /v1/chat/completions  (the same reply through the OpenAI-compatible layer),
                               alternating with /v1/chat in rounds; its req/s ratio is the
                               layer's overhead
and prints throughput and p50/p99 latency, with each endpoint's throughput as a ratio of
the hello-world figure measured in the same run. Bounded: a fixed request count each.

    .venv/bin/python bench/bench_service.py [--clients 8] [--requests 400] [--chat-requests 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import redis

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


async def load(url: str, clients: int, total: int, method: str = "GET", json: dict | None = None) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def client() -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=120) as c:
            for _ in counter:
                t0 = time.perf_counter()
                r = await c.request(method, url, json=json)
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code >= 400

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    latencies.sort()
    return {"rps": len(latencies) / wall, "p50": statistics.median(latencies) * 1000,
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, "n": len(latencies),
            "errors": errors, "latencies": latencies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--chat-requests", type=int, default=64, help="a route, a round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the two chat routes")
    args = parser.parse_args(argv)

    parts = urlsplit(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    redis_url = urlunsplit(parts._replace(path="/9"))
    redis.Redis.from_url(redis_url).flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="g4v-bench-"))
    py = sys.executable
    sys.path.insert(0, str(REPO))
    from model.tiny import build_tiny_checkpoint

    ckpt = build_tiny_checkpoint(tmp / "ckpt")
    env = {**os.environ, "REDIS_URL": redis_url, "DATA_DIR": str(tmp / "data"), "MODEL_DIR": str(ckpt),
           "SAFETY_ENABLED": os.environ.get("SAFETY_ENABLED", "true"), "OMP_NUM_THREADS": "1"}
    hello_port, api_port = free_port(), free_port()
    procs = [
        subprocess.Popen([py, "-m", "uvicorn", "bench.hello_app:app", "--port", str(hello_port), "--log-level",
                          "warning"], cwd=REPO, env=env),
        subprocess.Popen([py, "-m", "gpt4video.cli", "api", "--port", str(api_port)], cwd=REPO, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([py, "-m", "gpt4video.cli", "llm-worker"], cwd=REPO, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    try:
        hello = f"http://127.0.0.1:{hello_port}/hello"
        api = f"http://127.0.0.1:{api_port}"
        wait_http(hello, procs[0])
        wait_http(api + "/healthz", procs[1])
        deadline = time.monotonic() + 180
        while httpx.get(api + "/readyz").status_code != 200:
            if time.monotonic() > deadline or procs[2].poll() is not None:
                raise SystemExit("the LLM worker did not become ready")
            time.sleep(0.5)

        from gpt4video.jobs import JobRecord, JobStore

        job = JobRecord(id="bench-job", owner="anonymous", caption="a red circle moves to the left",
                        status="succeeded", result={"path": "/nonexistent", "frames": 8, "fps": 8, "duration_s": 1.0})
        JobStore(redis.Redis.from_url(redis_url), 3600).create(job)
        messages = [{"role": "user", "content": "describe a red circle"}]
        chat = {"messages": messages, "max_new_tokens": 16}
        # The same greedy 16-token reply through the OpenAI layer: its cost is what differs.
        completions = {"model": "gpt4video", "messages": messages, "max_tokens": 16, "temperature": 0}

        async def run_all() -> dict:
            await load(hello, args.clients, 50)  # warm-up
            results = {
                "GET /hello (reference)": await load(hello, args.clients, args.requests),
                "GET /v1/jobs/{id}": await load(f"{api}/v1/jobs/bench-job", args.clients, args.requests),
            }
            # Alternate the two chat routes in rounds so the machine's drift hits both alike.
            routes = {"POST /v1/chat (16 tokens)": ("/v1/chat", chat),
                      "POST /v1/chat/completions": ("/v1/chat/completions", completions)}
            rounds: dict[str, list[dict]] = {name: [] for name in routes}
            for _ in range(args.rounds):
                for name, (path, body) in routes.items():
                    rounds[name].append(await load(f"{api}{path}", args.clients, args.chat_requests, "POST", body))
            results.update({name: merge(runs) for name, runs in rounds.items()})
            return results

        results = asyncio.run(run_all())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        redis.Redis.from_url(redis_url).flushdb()

    ref = results["GET /hello (reference)"]["rps"]
    print(f"\n{args.clients} concurrent clients, loopback, {os.cpu_count()} CPUs\n")
    print(f"{'endpoint':<28}{'n':>6}{'errors':>8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'vs hello':>10}")
    for name, r in results.items():
        print(f"{name:<28}{r['n']:>6}{r['errors']:>8}{r['rps']:>10.1f}{r['p50']:>10.1f}{r['p99']:>10.1f}"
              f"{r['rps'] / ref:>10.3f}")
    native, compat = results["POST /v1/chat (16 tokens)"], results["POST /v1/chat/completions"]
    spread = [c["rps"] / n["rps"] for n, c in zip(native["rounds"], compat["rounds"], strict=True)]
    print(f"\n/v1/chat/completions req/s vs /v1/chat: {compat['rps'] / native['rps']:.3f} "
          f"(overhead {1 - compat['rps'] / native['rps']:+.1%}; rounds {', '.join(f'{x:.3f}' for x in spread)})")
    return 0


def merge(runs: list[dict]) -> dict:
    """Rounds of one route as one figure: requests over total wall time, pooled percentiles."""
    wall = sum(r["n"] / r["rps"] for r in runs)
    latencies = sorted(x for r in runs for x in r["latencies"])
    return {"rps": sum(r["n"] for r in runs) / wall, "p50": statistics.median(latencies) * 1000,
            "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
            "n": len(latencies), "errors": sum(r["errors"] for r in runs), "rounds": runs}


if __name__ == "__main__":
    raise SystemExit(main())
