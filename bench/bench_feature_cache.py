"""The first and the repeat question on one video, through two workers sharing the feature store.

Two hf engines load the same checkpoint (as two LLM worker processes would) and share one
on-disk feature store (`model.engine.feature_store`). Asked in turn:
  worker A, first question     decode + vision tower + abstractor, written to the store
  worker B, same video         read from the store (B has never seen the video)
  worker A, again              its own in-process LRU
Each line gives the request's latency, the video stage's time and share of it, and the
video stage's speed-up against the first question. Times are medians of `--repeats`
rounds, each on a fresh store and fresh LRUs; the machine may be loaded, so compare the
ratios, measured in the same run. Run:
  .venv/bin/python bench/bench_feature_cache.py [--checkpoint DIR] [--sampling keyframe]
Default checkpoint: the tiny random one (built in a temporary directory).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_video_sampling import make_camera_like_video

from model.checkpoint import load_checkpoint
from model.engine.base import GenerationRequest, SamplingParams, Turn
from model.engine.feature_store import DiskFeatureStore
from model.engine.hf_engine import HFEngine
from model.video import SamplingOptions

STORE_BYTES = 1 << 30


class TimedStage:
    """Wraps an extractor's `features` and records how long each call took."""

    def __init__(self, call: Callable) -> None:
        self.call, self.seconds = call, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.call(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def ask(engine: HFEngine, stage: TimedStage, video: Path, tokens: int) -> tuple[float, float]:
    """(request latency, video stage) in seconds, for one question about `video`."""
    request = GenerationRequest(f"q{time.monotonic_ns()}", (Turn("user", "Describe the video.", ("clip",)),),
                                SamplingParams(max_new_tokens=tokens), {"clip": str(video)})
    stage.seconds = 0.0
    start = time.perf_counter()
    (result,) = engine.generate([request])
    if result.finish_reason == "error":
        raise SystemExit(f"the request failed: {result.error}")
    return time.perf_counter() - start, stage.seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--sampling", choices=("exact", "keyframe"), default="exact")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--tokens", type=int, default=16, help="tokens generated a question")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        checkpoint = args.checkpoint
        if checkpoint is None:
            from model.tiny import build_tiny_checkpoint

            checkpoint = build_tiny_checkpoint(scratch / "tiny", seed=0)
        video = scratch / "clip.mp4"
        make_camera_like_video(video, args.seconds, 30, args.width, args.height, 2.0)
        sampling = SamplingOptions(mode=args.sampling)
        models = [load_checkpoint(checkpoint), load_checkpoint(checkpoint)]  # worker A, worker B
        rows: dict[str, list[tuple[float, float]]] = {"A first": [], "B repeat (shared store)": [],
                                                      "A repeat (own LRU)": []}
        for round_ in range(args.repeats):
            root = scratch / f"features-{round_}"
            engines, stages = [], []
            for model in models:
                engine = HFEngine(model, sampling=sampling, feature_store=DiskFeatureStore(root, STORE_BYTES))
                stage = TimedStage(engine.inputs.features.features)
                engine.inputs.features.features = stage  # type: ignore[method-assign]
                engines.append(engine)
                stages.append(stage)
            rows["A first"].append(ask(engines[0], stages[0], video, args.tokens))
            rows["B repeat (shared store)"].append(ask(engines[1], stages[1], video, args.tokens))
            rows["A repeat (own LRU)"].append(ask(engines[0], stages[0], video, args.tokens))
            b = engines[1].inputs.features
            if (b.encoded_videos, b.store_hits) != (0, 1):
                raise SystemExit(f"worker B encoded the video itself ({b.encoded_videos} encodes, {b.store_hits} hits)")
    print(f"checkpoint {checkpoint if args.checkpoint else 'tiny (random)'}, {args.seconds:g} s "
          f"{args.width}x{args.height} video, sampling {args.sampling}, {args.tokens} tokens a reply, "
          f"median of {args.repeats} rounds (the machine may be loaded: compare the ratios)")
    first_stage = statistics.median(stage for _, stage in rows["A first"])
    print(f"  {'':<26}{'latency':>11}{'video stage':>13}{'share':>8}{'stage speed-up':>16}")
    for name, samples in rows.items():
        latency = statistics.median(t for t, _ in samples)
        stage = statistics.median(s for _, s in samples)
        print(f"  {name:<26}{latency * 1000:>8.1f} ms{stage * 1000:>10.2f} ms{stage / latency:>8.1%}"
              f"{first_stage / stage:>15.0f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
