"""Frame sampling: exact and keyframe modes against a full decode and torchcodec, in one run.

Generates a camera-like H.264 MP4 (default 60 s, 1280x720, 30 fps, a keyframe every
2 s, x264 ultrafast: P-frames only; `--preset veryfast` writes x264's usual 3 B-frames,
about half of them non-reference, which exact reads skip) and times, each `--repeats`
times (median reported), n frames at native size:
  full decode         every frame of the file (what a naive sampler does)
  exact, seek         sample_frames(mode="exact"), seek near each target, decode to it
  exact, sequential   sample_frames(mode="exact", strategy="sequential")
  keyframe            sample_frames(mode="keyframe"): the nearest keyframe, decoded alone
  torchcodec exact / approximate   VideoDecoder(seek_mode=...).get_frames_played_at
and prints each one's mean timestamp error (|frame pts - uniform target|). All decoders
use `--threads` threads (0: one a core). The ratios are measured in the
same run, so they hold under load even when the absolute times do not.

torchcodec is the peer, installed only for this bench (never into the project's venv):
  pip install --no-deps --target /tmp/torchcodec torchcodec
  .venv/bin/python bench/bench_video_sampling.py --torchcodec /tmp/torchcodec
It runs in a child process whose library path points at the FFmpeg that PyAV bundles
(torchcodec needs a shared FFmpeg 4-9 and the machine may have none); when it cannot be
loaded the bench says why and carries on without it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from model.video import SamplingOptions, VideoLimits, probe, read_frames

_SONAME = re.compile(r"^(lib(?:av|sw)[a-z]+)-[0-9a-f]+\.so\.(\d+)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="where to write the test video")
    parser.add_argument("--video", type=Path, default=None, help="time this file instead of generating one")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--keyframe-seconds", type=float, default=2.0)
    parser.add_argument("--preset", default="ultrafast",
                        help="x264 preset of the generated file (ultrafast: no B-frames; veryfast: 3)")
    parser.add_argument("--frames", type=int, default=8, help="frames to sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads (0: one a core): FFmpeg's in the full decode, a seeking read's shares")
    parser.add_argument("--torchcodec", type=Path, default=None,
                        help="directory torchcodec was installed into (pip --target); default: importable as is")
    parser.add_argument("--torchcodec-child", nargs=4, metavar=("VIDEO", "MODE", "THREADS", "TARGETS"),
                        help=argparse.SUPPRESS)
    return parser


def make_camera_like_video(
    path: Path, seconds: float, fps: int, width: int, height: int, keyframe_seconds: float,
    preset: str = "ultrafast",
) -> None:
    """A moving gradient with a sliding bar, H.264 with a fixed keyframe interval, one slice a frame."""
    keyint = max(1, round(keyframe_seconds * fps))
    options = {
        "preset": preset,
        "crf": "23",
        "g": str(keyint),
        # One slice a frame, as x264's and FFmpeg's defaults write (PyAV's encoder would
        # cut each frame into slices, which no camera-like file has and which lets a
        # decoder's slice threads do what only frame threads can on a real file).
        "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:sliced-threads=0",
    }
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 255 // (width + height))], axis=-1).astype(
        np.uint8
    )  # (H, W, 3)
    bar = max(8, width // 20)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_type = "FRAME"
        for index in range(round(seconds * fps)):
            image = np.roll(base, shift=index * 4, axis=1)  # (H, W, 3)
            left = (index * 7) % (width - bar)
            image[:, left : left + bar] = (255, 255, 255)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def decode_everything(path: Path, threads: int) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if threads == 1:  # PyAV's default is slice threads, one a core: ask for one thread
            stream.thread_type, stream.thread_count = "SLICE", 1
        else:
            stream.thread_type, stream.thread_count = "AUTO", threads
        return sum(1 for _ in container.decode(stream))


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass
class Row:
    name: str
    seconds: float
    error_s: float | None  # mean |pts - target|


# -- torchcodec, in a child process ---------------------------------------------------------
def pyav_ffmpeg_dir(scratch: Path) -> Path:
    """A directory of FFmpeg sonames (libavcodec.so.62, ...) pointing at PyAV's bundled libraries."""
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    links = scratch / "ffmpeg-sonames"
    links.mkdir(exist_ok=True)
    for lib in libs.glob("lib*.so*"):
        match = _SONAME.match(lib.name)
        if match:
            link = links / f"{match[1]}.so.{match[2]}"
            if not link.exists():
                link.symlink_to(lib)
    return links


def run_torchcodec(
    video: Path, mode: str, threads: int, targets: list[float], repeats: int, where: Path | None, scratch: Path
) -> tuple[list[float], list[float]] | str:
    """(times, frame timestamps) of torchcodec in `mode`, or why it could not run."""
    env = dict(os.environ)
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(pyav_ffmpeg_dir(scratch)), str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    if where is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(where), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, __file__, "--repeats", str(repeats),
               "--torchcodec-child", str(video), mode, str(threads), json.dumps(targets)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        why = next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else "no output")
        return why.strip()[:300]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["times"], result["pts"]


def torchcodec_child(video: str, mode: str, threads: str, targets: str, repeats: int) -> int:
    from torchcodec.decoders import VideoDecoder

    seconds = json.loads(targets)
    times, pts = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        decoder = VideoDecoder(video, seek_mode=mode, num_ffmpeg_threads=int(threads))  # exact: scans the file
        batch = decoder.get_frames_played_at(seconds)  # (n, 3, H, W) uint8
        times.append(time.perf_counter() - start)
        pts = [float(p) for p in batch.pts_seconds]
    print(json.dumps({"times": times, "pts": pts}))
    return 0


# -- the run ----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.torchcodec_child:
        return torchcodec_child(*args.torchcodec_child, repeats=args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        path = args.video or args.out or scratch / "camera.mp4"
        if args.video is None:
            start = time.perf_counter()
            make_camera_like_video(path, args.seconds, args.fps, args.width, args.height, args.keyframe_seconds,
                                   args.preset)
            print(f"generated in {time.perf_counter() - start:.1f} s")
        info = probe(path)
        print(
            f"video: {info.width}x{info.height} {info.codec}, {info.duration_s:.1f} s, "
            f"{info.frame_count} frames at {info.fps:g} fps, keyframe every {args.keyframe_seconds:g} s"
            f"{'' if args.video else f', x264 {args.preset}'}; "
            f"{args.frames} frames sampled at native size, decoder threads {args.threads or 'auto'}"
        )
        limits = VideoLimits(max_decoded_frames=10**7)
        exact = SamplingOptions(mode="exact", threads=args.threads)
        keyframe = SamplingOptions(mode="keyframe", threads=args.threads)
        by_seek = read_frames(path, args.frames, limits=limits, strategy="seek", options=exact)
        by_reading = read_frames(path, args.frames, limits=limits, strategy="sequential", options=exact)
        snapped = read_frames(path, args.frames, limits=limits, options=keyframe)
        if not np.array_equal(by_seek.frames, by_reading.frames):
            print("ERROR: the seek and sequential paths returned different frames")
            return 1
        targets = list(by_seek.targets_s)
        actions: dict[str, Callable[[], object]] = {
            "full decode": lambda: decode_everything(path, args.threads),
            # On 2 shared cores FFmpeg's frame threads can lose to one thread: the ratios
            # are taken against the faster of the two full decodes.
            "full decode, 1 thread": lambda: decode_everything(path, 1),
            "exact, seek": lambda: read_frames(path, args.frames, limits=limits, strategy="seek", options=exact),
            "exact, sequential": lambda: read_frames(path, args.frames, limits=limits, strategy="sequential",
                                                     options=exact),
            "keyframe": lambda: read_frames(path, args.frames, limits=limits, options=keyframe),
        }
        if args.threads == 1:
            del actions["full decode, 1 thread"]
        errors: dict[str, float | None] = {"full decode": None, "full decode, 1 thread": None,
                                           "exact, seek": by_seek.mean_error_s(),
                                           "exact, sequential": by_reading.mean_error_s(),
                                           "keyframe": snapped.mean_error_s()}
        times: dict[str, list[float]] = {name: [] for name in actions}
        skipped: dict[str, str] = {}
        # Round-robin: a burst of load on the machine hits every method alike.
        for _ in range(args.repeats):
            for name, action in actions.items():
                times[name].append(median_seconds(action, 1))
            for mode in ("exact", "approximate"):
                name = f"torchcodec {mode}"
                if name in skipped:
                    continue
                got = run_torchcodec(path, mode, args.threads, targets, 1, args.torchcodec, scratch)
                if isinstance(got, str):
                    skipped[name] = got
                    continue
                times.setdefault(name, []).extend(got[0])
                errors[name] = float(np.mean([abs(p - t) for p, t in zip(got[1], targets, strict=True)]))
        for name, why in skipped.items():
            print(f"{name}: not measured ({why})")
        rows = [Row(name, statistics.median(spent), errors[name]) for name, spent in times.items()]
        peers = {row.name.removeprefix("torchcodec "): row for row in rows if row.name.startswith("torchcodec")}
    by_name = {row.name: row for row in rows}
    baseline = min((row for row in rows if row.name.startswith("full decode")), key=lambda row: row.seconds)
    full = baseline.seconds
    print(f"median of {args.repeats} runs (the machine may be loaded: compare the ratios, measured together);"
          f" full = the faster full decode ({baseline.name}):")
    print(f"  {'':<24}{'time':>10}{'full / this':>13}{'mean |pts - target|':>22}")
    for row in rows:
        error = f"{row.error_s * 1000:.1f} ms" if row.error_s is not None else "-"
        print(f"  {row.name:<24}{row.seconds * 1000:>8.1f} ms{full / row.seconds:>12.1f}x{error:>22}")
    ours = {"exact": by_name["exact, seek"], "approximate": by_name["keyframe"]}
    for mode, peer in peers.items():
        mine = ours[mode]
        print(f"  torchcodec {mode} / {mine.name}: {peer.seconds / mine.seconds:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
