"""Soak: a bounded mixed load on the whole service, then what it left behind.

Starts its own redis-server (AOF, as `gpt4video up` does), the API, one LLM worker (a
scripted tiny checkpoint: "hello" is answered in text, "show me a red circle" with a video
caption) and one t2v worker (tiny pipeline), all on free local ports under a temporary
DATA_DIR. Then `--clients` clients, each with its own API key, loop for `--duration-s`
over a weighted mix: upload a video, chat, ask for a video, poll a job, delete one of
their videos, cancel one of their jobs. After the load it waits (`--drain-s`) for every
job to end and prints:
  - requests by route and status;
  - p50 and p99 latency per route;
  - RSS of every process after warm-up (`--warmup-s`) and at the end;
  - files on disk after warm-up and at the end;
  - jobs not ended.
429s are expected (per-key limits: KEY_MAX_CONCURRENT_LLM=2, KEY_MAX_ACTIVE_JOBS=4 here);
no fault is injected, so any 5xx is a finding.

    .venv/bin/python bench/bench_soak.py [--duration-s 600] [--clients 16] [--warmup-s 60] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_service import free_port, wait_http  # noqa: E402
from gpt4video.managed_redis import ManagedRedis  # noqa: E402

log = logging.getLogger("bench_soak")
SCRIPT = {"hello": "Hello! Ask me about a video.",
          "show me a red circle": "Here it is: <video>a red circle moves to the left</video> Enjoy!"}
VIDEO = {"num_frames": 4, "height": 32, "width": 32, "fps": 4, "num_inference_steps": 4, "seed": 1}
# op -> weight
MIX = {"upload": 3, "chat": 4, "video": 2, "poll": 6, "delete": 1, "cancel": 1}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


class Client:
    def __init__(self, base: str, key: str, clips: list[bytes], rng: random.Random, stats: dict) -> None:
        self.http = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=120)
        self.clips, self.rng, self.stats = clips, rng, stats
        self.videos: list[str] = []
        self.jobs: list[str] = []

    async def call(self, route: str, method: str, path: str, **kwargs: object) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            r = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.stats["requests"][(route, type(exc).__name__)] += 1
            return None
        self.stats["latency"][route].append(time.perf_counter() - started)
        self.stats["requests"][(route, r.status_code)] += 1
        return r

    async def step(self) -> None:
        op = self.rng.choices(list(MIX), weights=list(MIX.values()))[0]
        if op == "upload":
            data = self.rng.choice(self.clips) + bytes(self.rng.randrange(64))  # some distinct, some shared
            r = await self.call("POST /v1/videos", "POST", "/v1/videos", files={"file": ("c.mp4", data, "video/mp4")})
            if r is not None and r.status_code == 201:
                self.videos.append(r.json()["id"])
        elif op == "chat":
            turn = {"role": "user", "content": "hello"}
            if self.videos and self.rng.random() < 0.5:
                turn["videos"] = [self.rng.choice(self.videos)]
            await self.call("POST /v1/chat", "POST", "/v1/chat", json={"messages": [turn], "max_new_tokens": 8})
        elif op == "video":
            r = await self.call("POST /v1/chat (video)", "POST", "/v1/chat", json={
                "messages": [{"role": "user", "content": "show me a red circle"}], "max_new_tokens": 40,
                "video": VIDEO})
            if r is not None and r.status_code == 200:
                self.jobs += [v["job_id"] for v in r.json()["videos"]]
        elif op == "poll" and self.jobs:
            await self.call("GET /v1/jobs/{id}", "GET", f"/v1/jobs/{self.rng.choice(self.jobs)}")
        elif op == "delete" and self.videos:
            video_id = self.videos.pop(self.rng.randrange(len(self.videos)))
            await self.call("DELETE /v1/videos/{id}", "DELETE", f"/v1/videos/{video_id}")
        elif op == "cancel" and self.jobs:
            await self.call("DELETE /v1/jobs/{id}", "DELETE", f"/v1/jobs/{self.rng.choice(self.jobs)}")


async def soak(clients: list[Client], duration_s: float, warmup_s: float, on_warm) -> None:
    end = time.monotonic() + duration_s
    warm_at = time.monotonic() + warmup_s

    async def loop(client: Client) -> None:
        while time.monotonic() < end:
            await client.step()

    async def warm() -> None:
        await asyncio.sleep(max(0.0, warm_at - time.monotonic()))
        on_warm()

    await asyncio.gather(warm(), *(loop(c) for c in clients))


async def jobs_not_ended(clients: list[Client], drain_s: float) -> list[str]:
    deadline = time.monotonic() + drain_s
    pending = [(c, j) for c in clients for j in c.jobs]
    while pending:
        still = []
        for client, job_id in pending:
            r = await client.http.get(f"/v1/jobs/{job_id}")
            if r.status_code == 200 and r.json()["status"] in {"queued", "running"}:
                still.append((client, job_id))
        pending = still
        if not pending or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    return [j for _, j in pending]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--warmup-s", type=float, default=None, help="default: a tenth of the duration")
    parser.add_argument("--drain-s", type=float, default=120.0, help="how long to wait for jobs to end")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    warmup_s = args.duration_s / 10 if args.warmup_s is None else args.warmup_s

    from model.t2v.tiny import build_tiny_t2v_pipeline
    from model.tiny import build_tiny_checkpoint
    from tests.media import make_video
    from tests.scripted import build_scripted_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="g4v-soak-"))
    log.info("building the scripted checkpoint and the tiny pipeline under %s", tmp)
    ckpt = build_scripted_checkpoint(build_tiny_checkpoint(tmp / "tiny", seed=0), tmp / "scripted", SCRIPT)
    t2v_dir = build_tiny_t2v_pipeline(tmp / "t2v", seed=0)
    clips = [make_video(tmp / f"clip{i}.mp4", frames=8, width=64, height=48, fps=8).read_bytes() for i in range(3)]
    data = tmp / "data"
    server = ManagedRedis(tmp, free_port()).start()
    keys = [f"soak-key-{i}" for i in range(args.clients)]
    env = {**os.environ, "REDIS_URL": server.url, "DATA_DIR": str(data), "MODEL_DIR": str(ckpt),
           "T2V_MODEL_DIR": str(t2v_dir), "API_KEYS": ",".join(keys), "OMP_NUM_THREADS": "1",
           "KEY_MAX_CONCURRENT_LLM": "2", "KEY_MAX_ACTIVE_JOBS": "4", "DISK_MIN_FREE_BYTES": "0"}
    api_port = free_port()
    cli = [sys.executable, "-m", "gpt4video.cli"]
    procs = {name: subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name, cmd in {"api": [*cli, "api", "--port", str(api_port)], "llm-worker": [*cli, "llm-worker"],
                               "t2v-worker": [*cli, "t2v-worker"]}.items()}
    pids = {**{n: p.pid for n, p in procs.items()}, "redis": server.process.pid}  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{api_port}"
    try:
        wait_http(base + "/healthz", procs["api"])
        deadline = time.monotonic() + 300
        while httpx.get(base + "/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise SystemExit("the LLM worker did not become ready")
            time.sleep(0.5)
        stats: dict = {"requests": collections.Counter(), "latency": collections.defaultdict(list)}
        rng = random.Random(args.seed)
        snapshot: dict = {}

        def on_warm() -> None:
            snapshot["rss"] = {n: rss_mb(pid) for n, pid in pids.items()}
            snapshot["files"] = count_files(data)

        async def run() -> list[str]:
            clients = [Client(base, key, clips, random.Random(rng.random()), stats) for key in keys]
            log.info("soak: %d clients for %.0f s (warm-up %.0f s)", len(clients), args.duration_s, warmup_s)
            await soak(clients, args.duration_s, warmup_s, on_warm)
            left = await jobs_not_ended(clients, args.drain_s)
            for c in clients:
                await c.http.aclose()
            return left

        left = asyncio.run(run())
        end_rss = {n: rss_mb(pid) for n, pid in pids.items()}
        end_files = count_files(data)
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        server.stop()

    print(f"\nsoak: {args.clients} clients, {args.duration_s:.0f} s (warm-up {warmup_s:.0f} s)")
    print("\nrequests by route and status")
    for (route, status), n in sorted(stats["requests"].items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        print(f"  {route:<26} {status!s:<18} {n}")
    print("\nlatency per route (ms)          n      p50      p99")
    for route, lat in sorted(stats["latency"].items()):
        lat.sort()
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(f"  {route:<26} {len(lat):>6} {statistics.median(lat) * 1000:>8.1f} {p99 * 1000:>8.1f}")
    print("\nRSS (MiB)          after warm-up      end   growth")
    for name in pids:
        start, end = snapshot.get("rss", {}).get(name, 0.0), end_rss[name]
        growth = f"{(end - start) / start * 100:+.1f}%" if start else "n/a"
        print(f"  {name:<12} {start:>14.1f} {end:>8.1f}   {growth}")
    print(f"\nfiles under DATA_DIR: {snapshot.get('files', 'n/a')} after warm-up, {end_files} at the end")
    five = sum(n for (_, status), n in stats["requests"].items() if isinstance(status, int) and status >= 500)
    print(f"5xx: {five}    jobs not ended after {args.drain_s:.0f} s: {len(left)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
