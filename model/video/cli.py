"""`gpt4video probe-video`: print what a video file is, and optionally sample frames.

    gpt4video probe-video clip.mp4                # VideoInfo as JSON
    gpt4video probe-video clip.mp4 --isolated     # the same, in the capped child process
    gpt4video probe-video clip.mp4 --sample 8 --out frames.mp4   # 8 frames -> an MP4

Exit status: 0 on success, 2 when the file is refused (the error code is printed as JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.video.errors import VideoError
from model.video.isolated import probe_isolated
from model.video.metadata import VideoLimits
from model.video.probe import probe
from model.video.sampling import sample_frames
from model.video.writer import write_mp4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpt4video probe-video", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="video file to inspect")
    parser.add_argument("--isolated", action="store_true", help="probe in a capped child process")
    parser.add_argument("--timeout", type=float, default=20.0, help="isolated probe timeout (s)")
    parser.add_argument("--memory-mb", type=int, default=1024, help="isolated probe memory (MB)")
    parser.add_argument("--max-seconds", type=float, default=VideoLimits.max_duration_s)
    parser.add_argument("--max-pixels", type=int, default=VideoLimits.max_pixels)
    parser.add_argument("--sample", type=int, default=0, help="also sample this many frames")
    parser.add_argument("--size", type=int, default=None, help="resize sampled frames to N x N")
    parser.add_argument("--out", type=Path, default=None, help="write sampled frames to this MP4")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limits = VideoLimits(max_duration_s=args.max_seconds, max_pixels=args.max_pixels)
    try:
        if args.isolated:
            info = probe_isolated(args.path, limits, args.timeout, args.memory_mb)
        else:
            info = probe(args.path, limits)
        report: dict[str, object] = {"ok": True, "info": info.to_dict()}
        if args.sample > 0:
            frames = sample_frames(args.path, args.sample, size=args.size, limits=limits)
            report["sampled"] = list(frames.shape)
            if args.out is not None:
                report["written"] = str(write_mp4(frames, args.out, fps=1))
    except VideoError as exc:
        print(json.dumps({"ok": False, "code": exc.code, "message": str(exc)}))
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
