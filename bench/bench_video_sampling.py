"""Seek-based frame sampling versus decoding the whole file, measured in one run.

Generates a camera-like H.264 MP4 (default 60 s, 1280x720, 30 fps, a keyframe every
2 s, x264 ultrafast) and times, each `--repeats` times (median reported):
  seek        sample_frames(n, strategy="seek")        seek near each target, decode a GOP
  sequential  sample_frames(n, strategy="sequential")  decode from the start to the last target
  full        decode every frame of the file           what a naive sampler does
It checks that the seek and sequential paths return identical frames, and prints the
times and ratios. Run:  .venv/bin/python bench/bench_video_sampling.py [--out clip.mp4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from model.video import VideoLimits, probe, sample_frames


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="where to write the test video")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--keyframe-seconds", type=float, default=2.0)
    parser.add_argument("--frames", type=int, default=8, help="frames to sample")
    parser.add_argument("--repeats", type=int, default=3)
    return parser


def make_camera_like_video(
    path: Path, seconds: float, fps: int, width: int, height: int, keyframe_seconds: float
) -> None:
    """A moving gradient with a sliding bar, H.264 with a fixed keyframe interval."""
    keyint = max(1, round(keyframe_seconds * fps))
    options = {
        "preset": "ultrafast",
        "crf": "23",
        "g": str(keyint),
        "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0",
    }
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 255 // (width + height))], axis=-1).astype(
        np.uint8
    )  # (H, W, 3)
    bar = max(8, width // 20)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(round(seconds * fps)):
            image = np.roll(base, shift=index * 4, axis=1)  # (H, W, 3)
            left = (index * 7) % (width - bar)
            image[:, left : left + bar] = (255, 255, 255)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def decode_everything(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        path = args.out or Path(scratch) / "camera.mp4"
        start = time.perf_counter()
        make_camera_like_video(path, args.seconds, args.fps, args.width, args.height, args.keyframe_seconds)
        info = probe(path)
        print(
            f"video: {info.width}x{info.height} {info.codec}, {info.duration_s:.1f} s, "
            f"{info.frame_count} frames at {info.fps:g} fps, keyframe every "
            f"{args.keyframe_seconds:g} s (generated in {time.perf_counter() - start:.1f} s)"
        )
        limits = VideoLimits(max_decoded_frames=10**7)
        by_seek = sample_frames(path, args.frames, limits=limits, strategy="seek")
        by_reading = sample_frames(path, args.frames, limits=limits, strategy="sequential")
        auto = sample_frames(path, args.frames, limits=limits)
        if not (np.array_equal(by_seek, by_reading) and np.array_equal(by_seek, auto)):
            print("ERROR: the seek and sequential paths returned different frames")
            return 1
        seek_s = median_seconds(
            lambda: sample_frames(path, args.frames, limits=limits, strategy="seek"),
            args.repeats,
        )
        sequential_s = median_seconds(
            lambda: sample_frames(path, args.frames, limits=limits, strategy="sequential"),
            args.repeats,
        )
        full_s = median_seconds(lambda: decode_everything(path), args.repeats)
    print(f"sampling {args.frames} frames, median of {args.repeats} runs:")
    print(f"  seek path             {seek_s * 1000:9.1f} ms")
    print(f"  sequential path       {sequential_s * 1000:9.1f} ms")
    print(f"  full decode           {full_s * 1000:9.1f} ms")
    print(f"  full decode / seek    {full_s / seek_s:9.1f}x")
    print(f"  sequential / seek     {sequential_s / seek_s:9.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
