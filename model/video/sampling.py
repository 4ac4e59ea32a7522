"""`sample_frames`: n frames spread uniformly over a video's duration, as RGB arrays.

Which frames. The duration is cut into n equal segments and frame i is the frame on
screen at the middle of segment i, t_i = start + (i + 1/2) * duration / n: the last frame
whose presentation timestamp (pts) is <= t_i, or the first frame when t_i precedes it.
Times are computed from pts and the stream time base, never from frame indices, so
variable-frame-rate video is sampled by time. For a constant-rate clip of F frames this
is frame floor((i + 1/2) * F / n). When the video has fewer than n frames (or the
targets are closer than a frame apart) the same frame is returned for several targets:
the output always has n frames, neighbours repeated in order.

How they are read. Two strategies return the same frames:
- sequential: decode from the start and stop after the last target;
- seek: for each target whose preceding keyframe lies after what was already decoded,
  `container.seek` to the target (FFmpeg lands on the keyframe at or before it) and
  decode forward to the target; otherwise keep decoding forward.
`strategy="auto"` estimates the frames each strategy would decode, from the keyframe
positions the container index records (MP4, AVI, WebM cues; when it records none, a
keyframe every `ASSUMED_KEYFRAME_INTERVAL_S` seconds is assumed), charging each seek
`SEEK_COST_FRAMES` frames, and picks the cheaper. So short clips, clips whose targets
are dense relative to the keyframe interval and all-intra files with few frames read
sequentially, and long videos seek. A seek that fails or lands after its target (a
container that cannot seek, a wrong index) falls back to sequential reading.

Every strategy stops with `VideoTooLong` once it has decoded `limits.max_decoded_frames`.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av.error
import numpy as np
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from model.video.container import ffmpeg_errors, open_input, video_stream
from model.video.errors import VideoTooLong, ZeroFrames
from model.video.metadata import VideoInfo, VideoLimits
from model.video.probe import StreamTiming, describe_stream

logger = logging.getLogger(__name__)

Size = int | tuple[int, int] | None
Strategy = Literal["auto", "seek", "sequential"]

# A seek flushes the decoder and re-syncs the demuxer: about the work of a few frames.
SEEK_COST_FRAMES = 8
# Keyframe spacing assumed when the container index lists no keyframes (x264's default
# keyint is 250 frames, 10 s at 25 fps; cameras use 1-4 s, so this errs towards reading).
ASSUMED_KEYFRAME_INTERVAL_S = 10.0
# How many times a seek that landed after its target is retried from further back.
_SEEK_RETRIES = 2


@dataclass(frozen=True)
class SamplingPlan:
    """Where the n frames are and how they will be read."""

    targets_pts: tuple[int, ...]  # ascending, in the stream time base
    seek_before: tuple[bool, ...]  # per target: seek before reading towards it
    strategy: Literal["seek", "sequential"]
    sequential_cost: float  # frames a sequential read would decode
    seek_cost: float  # frames (plus seek charges) the seek strategy would decode


def sample_frames(
    path: str | Path,
    n: int,
    size: Size = None,
    limits: VideoLimits = VideoLimits(),
    *,
    strategy: Strategy = "auto",
) -> np.ndarray:
    """Return (n, H, W, 3) uint8 RGB frames spread uniformly over the video at `path`.

    size: an int gives size x size (squashed, what the vision tower takes); a tuple is
    (height, width); None keeps the stream's native size. strategy: "auto" picks seeking
    or sequential reading by estimated cost (see the module doc); "seek"/"sequential"
    force one (tests and benchmarks compare them). Raises the typed `VideoError`s of
    `probe`, plus `ZeroFrames` when nothing decodes and `VideoTooLong` when more than
    `limits.max_decoded_frames` frames would have to be decoded.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if strategy not in ("auto", "seek", "sequential"):
        raise ValueError(f"strategy must be 'auto', 'seek' or 'sequential', got {strategy!r}")
    out_size = _output_size(size)
    with open_input(path) as container:
        stream = video_stream(container, path)
        info, timing = describe_stream(container, stream, path, limits)
        if not timing.container_consumed:
            return _sample_open(container, stream, info, timing, n, out_size, limits, strategy, path)
    # Finding the duration read the file to its end; start again from a fresh handle.
    with open_input(path) as container:
        stream = video_stream(container, path)
        return _sample_open(container, stream, info, timing, n, out_size, limits, strategy, path)


def plan_sampling(
    timing: StreamTiming,
    fps: float,
    keyframes_pts: list[int] | None,
    n: int,
    strategy: Strategy = "auto",
) -> SamplingPlan:
    """Targets for n frames and the cheaper way to reach them (see the module doc)."""
    targets = tuple(timing.start_pts + ((2 * i + 1) * timing.duration_pts) // (2 * n) for i in range(n))
    frames_per_tick = float(timing.time_base) * max(fps, 1e-9)
    interval_ticks = max(1, round(ASSUMED_KEYFRAME_INTERVAL_S / float(timing.time_base)))

    def keyframe_before(pts: int) -> int:
        if keyframes_pts:
            index = bisect.bisect_right(keyframes_pts, pts) - 1
            return keyframes_pts[index] if index >= 0 else timing.start_pts
        return timing.start_pts + (pts - timing.start_pts) // interval_ticks * interval_ticks

    seek_before: list[bool] = []
    seek_cost, position = 0.0, timing.start_pts  # position: where the decoder stands
    for target in targets:
        keyframe = keyframe_before(target)
        jump = keyframe > position  # seeking would skip frames a forward read decodes
        seek_before.append(jump)
        from_pts = keyframe if jump else position
        seek_cost += (SEEK_COST_FRAMES if jump else 0) + (target - from_pts) * frames_per_tick
        position = max(position, target)
    sequential_cost = (targets[-1] - timing.start_pts) * frames_per_tick + 1
    if strategy == "auto":
        cheaper = any(seek_before) and seek_cost < sequential_cost
        chosen: Literal["seek", "sequential"] = "seek" if cheaper else "sequential"
    else:
        chosen = strategy
    if chosen == "sequential":
        seek_before = [False] * n
    return SamplingPlan(targets, tuple(seek_before), chosen, sequential_cost, seek_cost)


def keyframe_timestamps(stream: VideoStream) -> list[int] | None:
    """Keyframe timestamps the container index records (sorted), None if it lists none."""
    stamps = sorted({entry.timestamp for entry in stream.index_entries if entry.is_keyframe})
    return stamps or None


def _sample_open(
    container: InputContainer,
    stream: VideoStream,
    info: VideoInfo,
    timing: StreamTiming,
    n: int,
    out_size: tuple[int, int] | None,
    limits: VideoLimits,
    strategy: Strategy,
    path: str | Path,
) -> np.ndarray:
    height, width = out_size or (info.height, info.width)
    with ffmpeg_errors(path, "reading the index"):
        keyframes = keyframe_timestamps(stream)
    plan = plan_sampling(timing, info.fps, keyframes, n, strategy)
    logger.debug(
        "sampling %d frames of %s by %s (estimated decodes: sequential %.0f, seek %.0f)",
        n,
        Path(path).name,
        plan.strategy,
        plan.sequential_cost,
        plan.seek_cost,
    )
    budget = _DecodeBudget(limits.max_decoded_frames, path)
    cursor = _FrameCursor(container, stream, timing, info.fps, budget, path)
    out = np.empty((n, height, width, 3), dtype=np.uint8)  # (n, H, W, 3)
    if _read_plan(cursor, plan, keyframes, timing, out, path):
        return out
    # A seek failed or overshot: this container has to be read front to back.
    logger.warning("seeking in %s was unreliable; reading it sequentially", Path(path).name)
    sequential = SamplingPlan(plan.targets_pts, (False,) * n, "sequential", 0.0, 0.0)
    with open_input(path) as fresh:
        cursor = _FrameCursor(fresh, video_stream(fresh, path), timing, info.fps, budget, path)
        _read_plan(cursor, sequential, keyframes, timing, out, path)
    return out


def _read_plan(
    cursor: _FrameCursor,
    plan: SamplingPlan,
    keyframes: list[int] | None,
    timing: StreamTiming,
    out: np.ndarray,
    path: str | Path,
) -> bool:
    """Fill `out` (n, H, W, 3) with the frame on screen at each target.

    Returns False when a seek failed or overshot (`out` is then partly filled).
    Each distinct frame is converted to RGB once, as soon as it is chosen, so only a
    few decoded frames are alive at a time, whatever n is.
    """
    height, width = out.shape[1:3]
    last: VideoFrame | None = None
    for i, (target, seek) in enumerate(zip(plan.targets_pts, plan.seek_before, strict=True)):
        if seek and not _seek_to(cursor, target, keyframes, timing):
            return False
        frame = cursor.frame_at(target)
        if frame is last:
            out[i] = out[i - 1]  # fewer frames than targets: repeat the neighbour
            continue
        with ffmpeg_errors(path, "converting a frame to RGB"):
            out[i] = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BILINEAR")  # (H, W, 3)
        last = frame
    return True


def _seek_to(cursor: _FrameCursor, target: int, keyframes: list[int] | None, timing: StreamTiming) -> bool:
    """Seek so the next decoded frame is at or before `target`; retry from further back."""
    seek_pts = target
    for _ in range(_SEEK_RETRIES + 1):
        first_pts = cursor.seek(seek_pts)
        if first_pts is not None and first_pts <= target:
            return True
        if first_pts is None or seek_pts <= timing.start_pts:
            return False
        # Landed past the target (B-frame reordering, coarse index): go one keyframe back.
        earlier = [k for k in (keyframes or []) if k < min(first_pts, seek_pts)]
        seek_pts = earlier[-1] if earlier else timing.start_pts
    return False


class _DecodeBudget:
    def __init__(self, max_frames: int, path: str | Path) -> None:
        self.max_frames, self.path, self.decoded = max_frames, path, 0

    def spend(self) -> None:
        self.decoded += 1
        if self.decoded > self.max_frames:
            raise VideoTooLong(
                f"sampling {Path(self.path).name} needed more than {self.max_frames} decoded "
                "frames (limits.max_decoded_frames); trim or re-encode the video"
            )


class _FrameCursor:
    """Decoded frames in presentation order, with one frame of look-ahead.

    `frame_at(t)` moves forward until the next frame would be after t and returns the
    frame on screen at t. `seek(pts)` repositions the demuxer and primes the look-ahead.
    """

    def __init__(
        self,
        container: InputContainer,
        stream: VideoStream,
        timing: StreamTiming,
        fps: float,
        budget: _DecodeBudget,
        path: str | Path,
    ) -> None:
        self.container, self.stream, self.budget, self.path = container, stream, budget, path
        self.step_ticks = max(1, round(1 / (fps * float(timing.time_base)))) if fps > 0 else 1
        self.fallback_pts = timing.start_pts
        self.frames = self._decode()
        self.current: tuple[int, VideoFrame] | None = None  # last frame at or before target
        self.ahead: tuple[int, VideoFrame] | None = None  # the next frame (None: EOF)
        self.primed = False  # whether `ahead` holds the next frame yet (decoding is lazy)

    def seek(self, pts: int) -> int | None:
        """Seek to the keyframe at or before `pts`; the pts of the next frame (None: EOF)."""
        try:
            self.container.seek(pts, stream=self.stream, backward=True)
        except av.error.FFmpegError:  # a container that cannot seek: caller falls back
            logger.debug("seek to pts %d failed", pts, exc_info=True)
            return None
        self.frames = self._decode()
        self.current, self.ahead, self.primed = None, self._next(), True
        return self.ahead[0] if self.ahead else None

    def frame_at(self, target: int) -> VideoFrame:
        if not self.primed:
            self.ahead, self.primed = self._next(), True
        while self.ahead is not None and self.ahead[0] <= target:
            self.current = self.ahead
            self.ahead = self._next()
        on_screen = self.current or self.ahead  # before the first frame: the first frame
        if on_screen is None:
            raise ZeroFrames(f"{Path(self.path).name}: no frame of the video track decodes")
        return on_screen[1]

    def _decode(self) -> Iterator[VideoFrame]:
        return self.container.decode(self.stream)

    def _next(self) -> tuple[int, VideoFrame] | None:
        with ffmpeg_errors(self.path, "decoding"):
            frame = next(self.frames, None)
        if frame is None:
            return None
        self.budget.spend()
        pts = frame.pts if frame.pts is not None else self.fallback_pts
        self.fallback_pts = pts + self.step_ticks  # frames without pts: assume a steady rate
        return pts, frame


def _output_size(size: Size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int) and not isinstance(size, bool):
        height = width = size
    elif (
        isinstance(size, tuple) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        height, width = size
    else:
        raise ValueError(f"size must be an int, a (height, width) tuple or None, got {size!r}")
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return height, width
