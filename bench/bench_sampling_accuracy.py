"""`gpt4video eval`'s shape questions in exact and keyframe sampling mode, side by side.

The same checkpoint, the same generated videos and questions; only the engine's
`SamplingOptions.mode` differs (what VIDEO_SAMPLING sets for the workers). Run:
  .venv/bin/python bench/bench_sampling_accuracy.py runs/r1/stage1 --limit 50
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from model.checkpoint import load_checkpoint
from model.data.shapes import WorldConfig, generate_split, read_records
from model.engine.hf_engine import HFEngine
from model.eval.shapes import METRICS, build_requests, run_eval
from model.video import SamplingOptions

log = logging.getLogger("bench_sampling_accuracy")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--limit", type=int, default=50, help="videos (4 questions, a caption and a request each)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = load_checkpoint(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        generate_split(data, args.split, args.limit, args.data_seed, WorldConfig(), progress=False)
        records = list(read_records(data / f"{args.split}.jsonl"))[: args.limit]
        reports = {}
        for mode in ("exact", "keyframe"):
            engine = HFEngine(model, feature_cache_size=0, sampling=SamplingOptions(mode=mode))
            reports[mode] = run_eval(engine, build_requests(records, data, args.seed), args.batch, False)
    print(f"checkpoint {args.checkpoint}, {len(records)} videos ({args.split}), held-out wording")
    print(f"  {'metric':<14}{'n':>6}{'exact':>10}{'keyframe':>10}")
    for metric in METRICS:
        if metric in reports["exact"].counts:
            print(f"  {metric:<14}{reports['exact'].counts[metric]:>6}"
                  f"{reports['exact'].accuracy(metric):>10.3f}{reports['keyframe'].accuracy(metric):>10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
