"""Seconds per generated video on the t2v worker's path, on this machine's CPU.

The path is the worker's own: `T2VBackend.load` once, then per video `validate` (the
pipeline profile's defaults: steps, guidance, size, frames), `generate` and `write_mp4`.
Pipeline load and one warm-up video are timed apart. Default pipeline: the shipped
trained one (model/checkpoints/t2v-shapes); `--pipeline DIR` for another, `--tiny` for
the random tiny one.

Usage: .venv/bin/python bench/bench_t2v_render.py [--videos 10] [--threads 2] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from model.t2v import SHIPPED_T2V_PIPELINE, T2VBackend, build_tiny_t2v_pipeline  # noqa: E402
from model.video import write_mp4  # noqa: E402

CAPTIONS = ("a red circle moves to the left", "a blue square moves up", "a yellow triangle stays still",
            "a green circle and a white square; the square moves down")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, default=SHIPPED_T2V_PIPELINE)
    parser.add_argument("--tiny", action="store_true", help="bench the tiny random pipeline instead")
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, help="denoising steps (default: the profile's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_dir = build_tiny_t2v_pipeline(Path(tmp) / "tiny") if args.tiny else args.pipeline
        started = time.perf_counter()
        backend = T2VBackend.load(pipeline_dir)
        load_s = time.perf_counter() - started
        requested = {} if args.steps is None else {"num_inference_steps": args.steps}
        times = []
        for i in range(args.videos + 1):  # video 0 warms up
            started = time.perf_counter()
            params = backend.validate({**requested, "seed": i})
            frames = backend.generate(CAPTIONS[i % len(CAPTIONS)], params)  # (T, H, W, 3)
            write_mp4(frames, Path(tmp) / f"{i}.mp4", fps=params.fps)
            if i:
                times.append(time.perf_counter() - started)
    print(json.dumps({
        "pipeline": "tiny (random)" if args.tiny else str(pipeline_dir), "threads": args.threads,
        "steps": params.num_inference_steps, "guidance_scale": params.guidance_scale,
        "frames": params.num_frames, "size": [params.height, params.width], "load_s": round(load_s, 3),
        "videos": len(times), "mean_s": round(statistics.mean(times), 3),
        "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
    }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
