"""Compare the vllm and hf engines at 1, 8 and 32 concurrent requests, on a GPU or the CPU.

For each engine and each concurrency level N, N requests are submitted at once through
the engine's async face (what the LLM worker uses) and the script measures:

- tokens/s: completion tokens of all N requests / wall time until the last one ends;
- TTFT: time from submission to a request's first streamed text delta (mean, p50, p95).

Both engines serve the same checkpoint on the same device (the hf engine through
`BatchingEngine`, as the worker runs it), in the same dtype, and the table states the
threads each one computed with. On the CPU both get the same thread budget (--threads,
default all cores): torch.set_num_threads for hf; VLLM_CPU_OMP_THREADS_BIND for vLLM's
worker, unless it is set already (vLLM's own default reserves a core for its scheduler).
Without --checkpoint a tiny random one (head size 32) is built, which measures engine
overhead rather than a model.

    python bench/bench_engines.py [--checkpoint DIR] [--concurrency 1 8 32] [--video]
        [--vllm-modes merged lora] [--threads N]

On the CPU it runs from vLLM's CPU backend environment (`make vllm-env`):
    VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python bench/bench_engines.py --checkpoint runs/r1/init

Exits with status 2 and a message when vLLM, or a device for it, is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROMPTS = (
    "Describe the video.",
    "What happens in the video?",
    "Show me a red circle that moves to the left.",
    "How many objects? What colour is it?",
)


@dataclass(frozen=True)
class Measurement:
    engine: str
    concurrency: int
    wall_s: float
    completion_tokens: int
    ttft_s: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def ttft_ms(self, q: float) -> float:
        ordered = sorted(self.ttft_s)
        if not ordered:
            return float("nan")
        return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _requests(n: int, round_: int, max_new_tokens: int, video: tuple[str, str] | None):
    from model.engine.base import GenerationRequest, SamplingParams, Turn

    videos = (video[0],) if video else ()
    return [
        GenerationRequest(
            request_id=f"bench-{round_}-{i}",
            turns=(Turn("user", PROMPTS[i % len(PROMPTS)], videos),),
            sampling=SamplingParams(max_new_tokens=max_new_tokens),  # greedy
            video_paths=dict([video]) if video else {},
        )
        for i in range(n)
    ]


async def _measure(engine, name: str, n: int, round_: int, max_new_tokens: int, video) -> Measurement:
    requests = _requests(n, round_, max_new_tokens, video)
    first_delta: dict[str, float] = {}

    def on_delta(request_id: str, _delta: str) -> None:
        first_delta.setdefault(request_id, time.perf_counter())

    start = time.perf_counter()
    results = await asyncio.gather(*(engine.submit(r, on_delta) for r in requests))
    wall = time.perf_counter() - start
    failed = [r for r in results if r.finish_reason == "error"]
    if failed:
        raise RuntimeError(f"{name}: {len(failed)} request(s) failed: {failed[0].error}")
    return Measurement(
        engine=name, concurrency=n, wall_s=wall,
        completion_tokens=sum(r.completion_tokens for r in results),
        ttft_s=[t - start for t in first_delta.values()],
    )


async def _bench(engine, name: str, levels: list[int], max_new_tokens: int, video) -> list[Measurement]:
    await _measure(engine, name, 2, -1, 8, video)  # warm-up (kernels, caches, video features)
    out = []
    for round_, n in enumerate(levels):
        m = await _measure(engine, name, n, round_, max_new_tokens, video)
        print(f"  {name:<9} N={n:<3} {m.tokens_per_s:9.1f} tok/s  TTFT p50 {m.ttft_ms(0.5):7.1f} ms",
              flush=True)
        out.append(m)
    return out


def _table(rows: list[Measurement]) -> str:
    lines = [
        f"{'engine':<10}{'N':>4}{'tokens':>9}{'wall s':>9}{'tok/s':>10}"
        f"{'TTFT mean':>11}{'p50':>9}{'p95':>9}   (TTFT in ms)",
    ]
    for m in rows:
        mean = 1000 * statistics.fmean(m.ttft_s) if m.ttft_s else float("nan")
        lines.append(
            f"{m.engine:<10}{m.concurrency:>4}{m.completion_tokens:>9}{m.wall_s:>9.2f}"
            f"{m.tokens_per_s:>10.1f}{mean:>11.1f}{m.ttft_ms(0.5):>9.1f}{m.ttft_ms(0.95):>9.1f}"
        )
    by_key = {(m.engine, m.concurrency): m for m in rows}
    for engine in sorted({m.engine for m in rows} - {"hf"}):
        lines.append("")
        lines.append(f"{engine} / hf:  N   tok/s ratio   TTFT p50 ratio")
        for n in sorted({m.concurrency for m in rows}):
            v, h = by_key.get((engine, n)), by_key.get(("hf", n))
            if v and h and h.tokens_per_s > 0 and v.ttft_s and h.ttft_s:
                lines.append(f"{'':>{len(engine) + 6}}{n:>3}{v.tokens_per_s / h.tokens_per_s:>12.2f}x"
                             f"{v.ttft_ms(0.5) / h.ttft_ms(0.5):>16.2f}x")
    return "\n".join(lines)


def _tiny_checkpoint(directory: Path, dtype: str) -> Path:
    """A tiny checkpoint whose LLM runs in `dtype` in both engines (head size 32, which
    vLLM's CPU attention supports)."""
    from model.tiny import TinySizes, build_tiny_checkpoint

    path = build_tiny_checkpoint(directory, sizes=TinySizes(llm_heads=2, llm_kv_heads=1))
    config_file = path / "gpt4video.json"
    config = json.loads(config_file.read_text())
    config["llm"]["dtype"] = dtype
    config_file.write_text(json.dumps(config))
    return path


def _with_dtype(checkpoint: Path, dtype: str, directory: Path) -> Path:
    """`checkpoint` with its LLM dtype set to `dtype` (a copy of its config beside links to
    its files), so the hf engine computes in the precision vLLM is given."""
    config = json.loads((checkpoint / "gpt4video.json").read_text())
    if config["llm"].get("dtype") == dtype:
        return checkpoint
    directory.mkdir(parents=True)
    for item in checkpoint.iterdir():
        if item.name != "gpt4video.json":
            (directory / item.name).symlink_to(item.resolve())
    config["llm"]["dtype"] = dtype
    (directory / "gpt4video.json").write_text(json.dumps(config))
    return directory


def _vllm_threads() -> str:
    """The CPUs vLLM's processes compute on: per child process, its thread count and the
    CPU sets its threads are bound to (OpenMP binds each worker thread to one core)."""
    import psutil

    parts = [f"VLLM_CPU_OMP_THREADS_BIND={os.environ.get('VLLM_CPU_OMP_THREADS_BIND', 'auto')}"]
    for child in psutil.Process().children(recursive=True):
        try:
            bound = sorted({tuple(sorted(os.sched_getaffinity(t.id))) for t in child.threads()})
            parts.append(f"{child.name()}: {child.num_threads()} threads, bound to {bound}")
        except (psutil.Error, OSError):
            continue
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_engines", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="GPT4Video checkpoint (default: tiny)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--video", action="store_true", help="every request carries a video")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--dtype", default=None,
                        help="both engines' LLM dtype (default: float16 on a GPU, float32 on the CPU)")
    parser.add_argument("--engines", nargs="+", choices=["hf", "vllm"], default=["hf", "vllm"])
    parser.add_argument("--vllm-modes", nargs="+", choices=["merged", "lora"], default=["merged"],
                        help="VLLM_LORA_MODE(s) to run vLLM in")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU only: threads of each engine (default: all cores)")
    args = parser.parse_args(argv)

    from model.engine.base import EngineUnavailable
    from model.engine.vllm_engine import require_vllm, vllm_platform

    try:
        require_vllm()
    except EngineUnavailable as exc:
        print(f"bench_engines needs vLLM and a device for it, not available here:\n  {exc}")
        return 2

    import torch

    from model.checkpoint import load_checkpoint
    from model.engine.batching import BatchingEngine
    from model.engine.hf_engine import HFEngine
    from model.engine.vllm_engine import ModelPromptEmbedder, VllmEngine, VllmModelFiles, VllmOptions

    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    dtype = args.dtype or ("float16" if on_gpu else "float32")
    if not on_gpu:
        torch.set_num_threads(args.threads)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{args.threads - 1}")
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        if args.checkpoint:
            checkpoint = _with_dtype(args.checkpoint.resolve(), dtype, Path(tmp) / "checkpoint")
        else:
            checkpoint = _tiny_checkpoint(Path(tmp) / "tiny", dtype)
        video = None
        if args.video:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's tests/
            from tests.media import make_video

            clip = make_video(Path(tmp) / "clip.mp4", frames=32)
            video = (hashlib.sha256(clip.read_bytes()).hexdigest(), str(clip))
        model = load_checkpoint(checkpoint, device=device)
        levels = sorted(set(args.concurrency))
        print(f"checkpoint {args.checkpoint or 'tiny'}; device {device} (vLLM platform {vllm_platform()}); "
              f"dtype {dtype}; concurrency {levels}; max_new_tokens {args.max_new_tokens}; "
              f"video {'yes' if video else 'no'}", flush=True)
        rows: list[Measurement] = []
        threads: dict[str, str] = {}

        if "hf" in args.engines:
            hf = BatchingEngine(HFEngine(model), max_batch=max(levels))
            threads["hf"] = f"torch threads {torch.get_num_threads()} (in this process)"

            async def run_hf() -> list[Measurement]:
                try:
                    return await _bench(hf, "hf", levels, args.max_new_tokens, video)
                finally:
                    await hf.shutdown()

            rows += asyncio.run(run_hf())

        for mode in args.vllm_modes if "vllm" in args.engines else []:
            name = "vllm" if mode == "merged" else "vllm-lora"
            vllm = VllmEngine.start(
                VllmModelFiles.of_model(model, checkpoint),
                ModelPromptEmbedder.for_model(model, cache_size=64),
                VllmOptions(gpu_memory_utilization=args.gpu_memory_utilization,
                            max_model_len=args.max_model_len, max_num_seqs=max(levels),
                            dtype=dtype, request_timeout_s=None, lora_mode=mode,
                            merged_cache_dir=Path(tmp) / "merged"),
                eos_token_id=model.tokenizer.eos_token_id,
            )
            threads[name] = _vllm_threads()
            try:
                rows += asyncio.run(_bench(vllm, name, levels, args.max_new_tokens, video))
            finally:
                vllm.close()

    print()
    print(_table(rows))
    print()
    print("threads:")
    for name, used in threads.items():
        print(f"  {name:<10}{used}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
