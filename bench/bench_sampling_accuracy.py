"""`gpt4video eval`'s shape questions in exact and keyframe sampling mode, side by side.

The same checkpoint, the same generated videos and questions; only the engine's
`SamplingOptions.mode` differs (what VIDEO_SAMPLING sets for the workers). The shapes
world's clips (2 s) hold one keyframe, so keyframe mode falls back to exact on them;
`--keyframe-every N` re-encodes each clip with a keyframe every N frames first, so that
keyframe mode really takes keyframes, as it would on camera files. Run:
  .venv/bin/python bench/bench_sampling_accuracy.py model/checkpoints/shapes-small --limit 50 --keyframe-every 2
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from fractions import Fraction
from pathlib import Path

import av

from model.checkpoint import load_checkpoint
from model.data.shapes import WorldConfig, generate_split, read_records
from model.engine.hf_engine import HFEngine
from model.eval.shapes import METRICS, build_requests, run_eval
from model.video import SamplingOptions

log = logging.getLogger("bench_sampling_accuracy")


def reencode_with_keyframes(path: Path, every: int) -> None:
    """Rewrite `path` in place as H.264 with a keyframe every `every` frames (same frames and rate)."""
    with av.open(str(path)) as source:
        stream = source.streams.video[0]
        rate = stream.average_rate
        frames = [f.to_ndarray(format="rgb24") for f in source.decode(stream)]  # each (H, W, 3)
    options = {"preset": "ultrafast", "crf": "18", "g": str(every),
               "x264-params": f"keyint={every}:min-keyint={every}:scenecut=0"}
    temporary = path.with_suffix(".keyframes.mp4")
    with av.open(str(temporary), mode="w", format="mp4") as container:
        out = container.add_stream("libx264", rate=rate, options=options)
        out.height, out.width = frames[0].shape[:2]
        out.pix_fmt = "yuv420p"
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, rate)
            container.mux(out.encode(frame))
        container.mux(out.encode())
    temporary.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--limit", type=int, default=50, help="videos (4 questions, a caption and a request each)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--keyframe-every", type=int, default=0,
                        help="re-encode each clip with a keyframe every N frames first (0: as generated)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = load_checkpoint(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        generate_split(data, args.split, args.limit, args.data_seed, WorldConfig(), progress=False)
        records = list(read_records(data / f"{args.split}.jsonl"))[: args.limit]
        if args.keyframe_every:
            for record in records:
                reencode_with_keyframes(data / record.video, args.keyframe_every)
        reports = {}
        for mode in ("exact", "keyframe"):
            engine = HFEngine(model, feature_cache_size=0, sampling=SamplingOptions(mode=mode))
            reports[mode] = run_eval(engine, build_requests(records, data, args.seed), args.batch, False)
    keyframes = f"a keyframe every {args.keyframe_every} frames" if args.keyframe_every else "as generated"
    print(f"checkpoint {args.checkpoint}, {len(records)} videos ({args.split}, {keyframes}), held-out wording")
    print(f"  {'metric':<14}{'n':>6}{'exact':>10}{'keyframe':>10}")
    for metric in METRICS:
        if metric in reports["exact"].counts:
            print(f"  {metric:<14}{reports['exact'].counts[metric]:>6}"
                  f"{reports['exact'].accuracy(metric):>10.3f}{reports['keyframe'].accuracy(metric):>10.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
