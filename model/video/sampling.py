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

Two modes (`SamplingOptions.mode`):
- exact (default): the frame on screen at each target, as above;
- keyframe: a target takes its nearest keyframe when one lies within the tolerance
  (`model.video.keyframes`), which decodes one frame instead of a GOP; the other targets
  are read exactly. Needs the keyframe positions from the container index; without
  them every target is read exactly.
Threads (`SamplingOptions.threads`) are used per read: a sequential read gives them to
FFmpeg's decoder (frame and slice threads, `thread_type="AUTO"`); a seeking read (seek
strategy, keyframe mode) splits its independent GOP reads (or keyframes) into contiguous
shares of near-equal decode cost (frames from each seek's keyframe to its last target),
each decoded on its own container in its own thread (FFmpeg releases the GIL), with
slice threads at most. Frame threads buffer a frame per thread, and every seek
flushes and refills them: on a 720p H.264 with 2 cores that made 8 seeks 1.5x slower
than decoding in the calling thread (`bench/bench_video_sampling.py`). Frames are scaled
and converted to RGB by libswscale (`VideoFrame.to_ndarray` with a size), only for the
frames chosen. An exact read drops the non-reference frames that no target shows
(`model.video.nonref_skip`, `skip_frame="NONREF"`): the same frames, bit for bit, from
about half the decodes on x264's usual B-frame output.

Every strategy stops with `VideoTooLong` once it has decoded `limits.max_decoded_frames`.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import av.error
import numpy as np
from av.codec.context import ThreadType
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from model.video.container import ffmpeg_errors, open_input, video_stream
from model.video.errors import CorruptVideo, VideoTooLong, ZeroFrames
from model.video.keyframes import decode_keyframe, snap_to_keyframes, tolerance_ticks
from model.video.metadata import VideoInfo, VideoLimits
from model.video.nonref_skip import UnneededFrames, decode_skipping
from model.video.probe import StreamTiming, describe_stream

logger = logging.getLogger(__name__)

Size = int | tuple[int, int] | None
Strategy = Literal["auto", "seek", "sequential"]
SamplingMode = Literal["exact", "keyframe"]

# A seek flushes the decoder and re-syncs the demuxer: about the work of a few frames.
SEEK_COST_FRAMES = 8
# Keyframe spacing assumed when the container index lists no keyframes (x264's default
# keyint is 250 frames, 10 s at 25 fps; cameras use 1-4 s, so this errs towards reading).
ASSUMED_KEYFRAME_INTERVAL_S = 10.0
# How many times a seek that landed after its target is retried from further back.
_SEEK_RETRIES = 2


@dataclass(frozen=True)
class SamplingOptions:
    """How frames are chosen and decoded; the same options give the same frames."""

    # "exact": the frame on screen at each target. "keyframe": the nearest keyframe
    # when it lies within `keyframe_tolerance_s` (and half a segment), else exact.
    mode: SamplingMode = "exact"
    # 1 s: within one GOP of a camera-like file (keyframes every 1-4 s, so half the gap).
    keyframe_tolerance_s: float = 1.0
    # Threads: 0 one a core, 1 the calling thread only. A sequential read gives them to
    # FFmpeg's decoder; a seeking read decodes its GOPs (or keyframes) on that many
    # containers at once, one thread each.
    threads: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("exact", "keyframe"):
            raise ValueError(f"sampling mode must be 'exact' or 'keyframe', got {self.mode!r}")
        if self.keyframe_tolerance_s < 0:
            raise ValueError(f"keyframe_tolerance_s must be >= 0, got {self.keyframe_tolerance_s}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: one a core), got {self.threads}")

    def key(self) -> str:
        """What changes which frames come out (for feature cache keys); threads do not."""
        return self.mode if self.mode == "exact" else f"keyframe:{self.keyframe_tolerance_s:g}"


# A read spread over threads (`_in_shares`) decodes in each share's own thread.
_ONE_THREAD = SamplingOptions(threads=1)
_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


@dataclass(frozen=True)
class SampledFrames:
    """The frames and where they came from (seconds on the stream's clock)."""

    frames: np.ndarray  # (n, H, W, 3) uint8 RGB
    timestamps_s: tuple[float, ...]  # pts of each returned frame
    targets_s: tuple[float, ...]  # the uniform target each frame stands for

    def mean_error_s(self) -> float:
        return float(np.mean([abs(a - b) for a, b in zip(self.timestamps_s, self.targets_s, strict=True)]))


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
    options: SamplingOptions = SamplingOptions(),
) -> np.ndarray:
    """Return (n, H, W, 3) uint8 RGB frames spread uniformly over the video at `path`.

    size: an int gives size x size (squashed, what the vision tower takes); a tuple is
    (height, width); None keeps the stream's native size. strategy: "auto" picks seeking
    or sequential reading by estimated cost (see the module doc); "seek"/"sequential"
    force one (tests and benchmarks compare them). options: the mode (exact or
    keyframe) and decoder threads. Raises the typed `VideoError`s of `probe`, plus
    `ZeroFrames` when nothing decodes and `VideoTooLong` when more than
    `limits.max_decoded_frames` frames would have to be decoded.
    """
    return read_frames(path, n, size, limits, strategy=strategy, options=options).frames


def read_frames(
    path: str | Path,
    n: int,
    size: Size = None,
    limits: VideoLimits = VideoLimits(),
    *,
    strategy: Strategy = "auto",
    options: SamplingOptions = SamplingOptions(),
) -> SampledFrames:
    """`sample_frames` with the timestamps of the frames it chose and of their targets."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if strategy not in ("auto", "seek", "sequential"):
        raise ValueError(f"strategy must be 'auto', 'seek' or 'sequential', got {strategy!r}")
    out_size = _output_size(size)
    with open_input(path) as container:
        stream = video_stream(container, path)
        info, timing = describe_stream(container, stream, path, limits)
        if not timing.container_consumed:
            return _sample_open(container, stream, info, timing, n, out_size, limits, strategy, options, path)
    # Finding the duration read the file to its end; start again from a fresh handle.
    with open_input(path) as container:
        stream = video_stream(container, path)
        return _sample_open(container, stream, info, timing, n, out_size, limits, strategy, options, path)


def _set_decoder_threads(stream: VideoStream, options: SamplingOptions, *, seeking: bool) -> bool:
    """Set the decoder's threads for a read that seeks or not; whether frame threads are on.

    Only before the decoder opens (FFmpeg fixes them then); on an open decoder this
    reports what it already has.
    """
    if not stream.codec_context.is_open:
        # Seeking: slice threads only (no frame delay to refill after each seek). One
        # thread must be asked for: FFmpeg's default is slice threads, one a core.
        stream.thread_type = "SLICE" if seeking or options.threads == 1 else "AUTO"
        stream.thread_count = options.threads
    return bool(stream.thread_type & ThreadType.FRAME) and stream.thread_count != 1


def plan_sampling(
    timing: StreamTiming,
    fps: float,
    keyframes_pts: list[int] | None,
    n: int,
    strategy: Strategy = "auto",
) -> SamplingPlan:
    """Targets for n frames and the cheaper way to reach them (see the module doc)."""
    return plan_targets(uniform_targets(timing, n), timing, fps, keyframes_pts, strategy)


def uniform_targets(timing: StreamTiming, n: int) -> tuple[int, ...]:
    """The middle of each of n equal segments of the duration, in stream ticks."""
    return tuple(timing.start_pts + ((2 * i + 1) * timing.duration_pts) // (2 * n) for i in range(n))


def plan_targets(
    targets: tuple[int, ...],
    timing: StreamTiming,
    fps: float,
    keyframes_pts: list[int] | None,
    strategy: Strategy = "auto",
) -> SamplingPlan:
    """The cheaper way to reach ascending `targets` (see the module doc)."""
    n = len(targets)
    frames_per_tick = float(timing.time_base) * max(fps, 1e-9)

    def keyframe_before(pts: int) -> int:
        return _keyframe_before(pts, keyframes_pts, timing)

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


def keyframe_timestamps(stream: VideoStream, timing: StreamTiming) -> list[int] | None:
    """The pts of the keyframes the container index records (sorted), None if it lists none.

    MP4's index records decode timestamps. With B-frames a keyframe is shown its reorder
    delay after it is decoded (x264 veryfast at 24 fps: first dts -1024, its pts 0), so
    the entries are shifted by the first frame's pts less the first entry, where that is
    positive (the first keyframe is the first frame shown). Other containers (Matroska
    cues) record pts, and their shift is 0. `decode_keyframe` checks each against the
    packet it lands on and a target whose keyframe does not match is read exactly.
    """
    stamps = sorted({entry.timestamp for entry in stream.index_entries if entry.is_keyframe})
    if not stamps:
        return None
    shift = timing.start_pts - stamps[0]
    return [stamp + shift for stamp in stamps] if shift > 0 else stamps


def _sample_open(
    container: InputContainer,
    stream: VideoStream,
    info: VideoInfo,
    timing: StreamTiming,
    n: int,
    out_size: tuple[int, int] | None,
    limits: VideoLimits,
    strategy: Strategy,
    options: SamplingOptions,
    path: str | Path,
) -> SampledFrames:
    height, width = out_size or (info.height, info.width)
    with ffmpeg_errors(path, "reading the index"):
        keyframes = keyframe_timestamps(stream, timing)
    targets = uniform_targets(timing, n)
    out = np.empty((n, height, width, 3), dtype=np.uint8)  # (n, H, W, 3)
    chosen: list[int | None] = [None] * n  # pts of the frame in out[i]
    budget = _DecodeBudget(limits.max_decoded_frames, path)
    snapped: tuple[int | None, ...] = (None,) * n
    if options.mode == "keyframe" and keyframes:
        segment = timing.duration_pts / n
        tolerance = tolerance_ticks(options.keyframe_tolerance_s, segment, float(timing.time_base))
        snapped = snap_to_keyframes(targets, keyframes, tolerance)
    elif options.mode == "keyframe":
        logger.debug("%s: the index lists no keyframes; sampling exactly", Path(path).name)
    exact = [i for i, k in enumerate(snapped) if k is None]
    if exact:  # first, while the decoder stands at the start of the file
        sub = [targets[i] for i in exact]
        frames, pts = _read_exact(container, stream, info, timing, sub, keyframes, strategy, options, budget,
                                  path, out)
        for j, i in enumerate(exact):
            out[i], chosen[i] = frames[j], pts[j]
    # One decode per distinct keyframe, spread over threads; targets on the same keyframe after.
    distinct = [i for i, k in enumerate(snapped) if k is not None and not (i > 0 and snapped[i - 1] == k)]

    def read_keyframes(share: Sequence[int], on: InputContainer, track: VideoStream, parallel: bool) -> None:
        _set_decoder_threads(track, _ONE_THREAD if parallel else options, seeking=True)
        for i in share:
            keyframe = snapped[i]
            assert keyframe is not None
            got = decode_keyframe(on, track, keyframe, path)
            if got is None:  # a wrong index: this one target the exact way, on a fresh handle
                logger.debug("%s: no keyframe at pts %d; reading its target exactly", Path(path).name, keyframe)
                with open_input(path) as fresh:
                    frames, pts = _read_exact(fresh, video_stream(fresh, path), info, timing,
                                              [targets[i]], keyframes, "auto", options, budget, path, out)
                out[i], chosen[i] = frames[0], pts[0]
                continue
            budget.spend()
            chosen[i] = got[0]
            out[i] = _to_rgb(got[1], height, width, path)  # (H, W, 3)

    if distinct:
        _in_shares(distinct, options.threads, container, stream, path, read_keyframes)
    for i, keyframe in enumerate(snapped):
        if keyframe is not None and i > 0 and snapped[i - 1] == keyframe:  # several targets on one keyframe
            out[i], chosen[i] = out[i - 1], chosen[i - 1]
    seconds = float(timing.time_base)
    return SampledFrames(out, tuple(float(p or 0) * seconds for p in chosen), tuple(t * seconds for t in targets))


def _read_exact(
    container: InputContainer,
    stream: VideoStream,
    info: VideoInfo,
    timing: StreamTiming,
    targets: list[int],
    keyframes: list[int] | None,
    strategy: Strategy,
    options: SamplingOptions,
    budget: _DecodeBudget,
    path: str | Path,
    like: np.ndarray,
) -> tuple[np.ndarray, list[int]]:
    """The frame on screen at each of ascending `targets`: (len, H, W, 3) and their pts."""
    plan = plan_targets(tuple(targets), timing, info.fps, keyframes, strategy)
    logger.debug(
        "sampling %d frames of %s by %s (estimated decodes: sequential %.0f, seek %.0f)",
        len(targets),
        Path(path).name,
        plan.strategy,
        plan.sequential_cost,
        plan.seek_cost,
    )
    out = np.empty((len(targets), *like.shape[1:]), dtype=np.uint8)  # (k, H, W, 3)
    if plan.strategy == "seek":
        pts = _read_runs(container, stream, plan, keyframes, timing, info, options, budget, path, out)
    else:
        frame_threads = _set_decoder_threads(stream, options, seeking=False)
        cursor = _FrameCursor(container, stream, timing, info.fps, budget, path, _index_end(stream, frame_threads))
        pts = _read_run(cursor, plan, range(len(targets)), keyframes, timing, out, path)
    if pts is not None:
        return out, pts
    # A seek failed or overshot: this container has to be read front to back.
    logger.warning("seeking in %s was unreliable; reading it sequentially", Path(path).name)
    sequential = SamplingPlan(plan.targets_pts, (False,) * len(targets), "sequential", 0.0, 0.0)
    with open_input(path) as fresh:
        stream = video_stream(fresh, path)
        frame_threads = _set_decoder_threads(stream, options, seeking=False)
        cursor = _FrameCursor(fresh, stream, timing, info.fps, budget, path, _index_end(stream, frame_threads))
        pts = _read_run(cursor, sequential, range(len(targets)), keyframes, timing, out, path)
    assert pts is not None  # a sequential plan never seeks
    return out, pts


def _keyframe_before(pts: int, keyframes_pts: list[int] | None, timing: StreamTiming) -> int:
    """The keyframe a seek to `pts` lands on: from the index, else the assumed interval."""
    if keyframes_pts:
        index = bisect.bisect_right(keyframes_pts, pts) - 1
        return keyframes_pts[index] if index >= 0 else timing.start_pts
    interval_ticks = max(1, round(ASSUMED_KEYFRAME_INTERVAL_S / float(timing.time_base)))
    return timing.start_pts + (pts - timing.start_pts) // interval_ticks * interval_ticks


def run_costs(plan: SamplingPlan, runs: Sequence[Sequence[int]], keyframes: list[int] | None,
              timing: StreamTiming, fps: float) -> list[float]:
    """Frames each run of `plan_runs` decodes (plus its seek's charge), as `plan_targets`
    estimates them: from the keyframe before its first target to its last target."""
    frames_per_tick = float(timing.time_base) * max(fps, 1e-9)
    costs = []
    for run in runs:
        first, last = plan.targets_pts[run[0]], plan.targets_pts[run[-1]]
        seeks = plan.seek_before[run[0]]
        start = _keyframe_before(first, keyframes, timing) if seeks else timing.start_pts
        costs.append((SEEK_COST_FRAMES if seeks else 0) + (last - start) * frames_per_tick + 1)
    return costs


def balanced_shares(items: Sequence[_Item], costs: Sequence[float], workers: int) -> list[Sequence[_Item]]:
    """`items` cut into at most `workers` contiguous, non-empty shares of near-equal cost.

    Share k ends where the running cost comes nearest to k / workers of the total, so one
    long GOP read does not leave the other threads idle behind it.
    """
    workers = max(1, min(workers, len(items)))
    prefix = list(itertools.accumulate(costs))  # prefix[j]: cost of items[:j + 1]
    bounds = [0]
    for k in range(1, workers):
        goal = prefix[-1] * k / workers
        first, last = bounds[-1] + 1, len(items) - (workers - k)  # one item at least a share
        bounds.append(min(range(first, last + 1), key=lambda end: abs(prefix[end - 1] - goal)))
    bounds.append(len(items))
    return [items[a:b] for a, b in itertools.pairwise(bounds)]


def plan_runs(plan: SamplingPlan) -> list[list[int]]:
    """The plan's targets in runs: each run starts with a seek (or at the file's start) and
    reads forward through the rest; runs share no decoded frame."""
    runs: list[list[int]] = []
    for i, seek in enumerate(plan.seek_before):
        if seek or not runs:
            runs.append([i])
        else:
            runs[-1].append(i)
    return runs


def _read_runs(
    container: InputContainer,
    stream: VideoStream,
    plan: SamplingPlan,
    keyframes: list[int] | None,
    timing: StreamTiming,
    info: VideoInfo,
    options: SamplingOptions,
    budget: _DecodeBudget,
    path: str | Path,
    out: np.ndarray,
) -> list[int] | None:
    """A seek plan's runs (independent GOP reads) spread over `options.threads` decoders
    (`_in_shares`); pts per target, or None when a seek failed or overshot in any share."""

    def read_share(share: Sequence[list[int]], on: InputContainer, track: VideoStream, parallel: bool
                   ) -> list[int] | None:
        _set_decoder_threads(track, _ONE_THREAD if parallel else options, seeking=True)
        cursor = _FrameCursor(on, track, timing, info.fps, budget, path)
        chosen: list[int] = []
        for run in share:
            got = _read_run(cursor, plan, run, keyframes, timing, out, path)
            if got is None:
                return None
            chosen += got
        return chosen

    runs = plan_runs(plan)
    costs = run_costs(plan, runs, keyframes, timing, info.fps)
    results = _in_shares(runs, options.threads, container, stream, path, read_share, costs)
    if any(r is None for r in results):
        return None
    return [pts for r in results for pts in r]  # type: ignore[union-attr]


def _in_shares(
    items: Sequence[_Item],
    threads: int,
    container: InputContainer,
    stream: VideoStream,
    path: str | Path,
    work: Callable[[Sequence[_Item], InputContainer, VideoStream, bool], _Result],
    costs: Sequence[float] | None = None,
) -> list[_Result]:
    """`work(share, container, stream, parallel)` on contiguous shares of `items`, in order.

    Up to `threads` shares (0: one a core) run at once, each on its own container (FFmpeg
    decodes without the GIL); the first runs in the calling thread on `container`. The
    shares balance `costs` (frames to decode per item; default: one each). With one
    share, `work` gets all items and `parallel=False`.
    """
    workers = min(len(items), threads or os.cpu_count() or 1)
    if workers <= 1:
        return [work(items, container, stream, False)]
    shares = balanced_shares(items, costs if costs is not None else [1.0] * len(items), workers)

    def on_own_container(share: Sequence[_Item]) -> _Result:
        with open_input(path) as own:
            return work(share, own, video_stream(own, path), True)

    with ThreadPoolExecutor(max_workers=workers - 1, thread_name_prefix="video-share") as pool:
        others = [pool.submit(on_own_container, share) for share in shares[1:]]
        first = work(shares[0], container, stream, True)
        return [first, *(f.result() for f in others)]


def _read_run(
    cursor: _FrameCursor,
    plan: SamplingPlan,
    indices: Sequence[int],
    keyframes: list[int] | None,
    timing: StreamTiming,
    out: np.ndarray,
    path: str | Path,
) -> list[int] | None:
    """Fill `out[i]` (H, W, 3) with the frame on screen at each target `i` of ascending
    `indices`; their pts. None when a seek failed or overshot (`out` is then partly filled).

    Each distinct frame is converted to RGB once, as soon as it is chosen, so only a
    few decoded frames are alive at a time, whatever n is.
    """
    height, width = out.shape[1:3]
    last: VideoFrame | None = None
    chosen: list[int] = []
    for i in indices:
        target = plan.targets_pts[i]
        if plan.seek_before[i] and not _seek_to(cursor, target, keyframes, timing):
            return None
        pts, frame = cursor.frame_at(target)
        chosen.append(pts)
        if frame is last:
            out[i] = out[i - 1]  # fewer frames than targets: repeat the neighbour
            continue
        out[i] = _to_rgb(frame, height, width, path)  # (H, W, 3)
        last = frame
    return chosen


def _to_rgb(frame: VideoFrame, height: int, width: int, path: str | Path) -> np.ndarray:
    """Scale and convert in libswscale (one pass), not in numpy: (H, W, 3) uint8."""
    with ffmpeg_errors(path, "converting a frame to RGB"):
        return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="BILINEAR")


def _index_end(stream: VideoStream, frame_threads: bool) -> int | None:
    """The last timestamp the index lists, when frame threads could hide a decode error.

    FFmpeg's frame-threaded decoder reports a damaged packet by producing no frame, not
    by an error (a truncated MP4 decodes 22 of its 48 indexed frames and then "ends"),
    so a threaded read that ends well before this is a corrupt file. None: no frame
    threads (errors surface themselves) or an index that lists nothing.
    """
    if not frame_threads:
        return None
    stamps = [entry.timestamp for entry in stream.index_entries]
    return max(stamps) if stamps else None


def _seek_to(cursor: _FrameCursor, target: int, keyframes: list[int] | None, timing: StreamTiming) -> bool:
    """Seek so the next decoded frame is at or before `target`; retry from further back."""
    seek_pts = target
    for _ in range(_SEEK_RETRIES + 1):
        first_pts = cursor.seek(seek_pts, target)
        if first_pts is not None and first_pts <= target:
            return True
        if first_pts is None or seek_pts <= timing.start_pts:
            return False
        # Landed past the target (B-frame reordering, coarse index): go one keyframe back.
        earlier = [k for k in (keyframes or []) if k < min(first_pts, seek_pts)]
        seek_pts = earlier[-1] if earlier else timing.start_pts
    return False


class _DecodeBudget:
    """Frames decoded so far, against `limits.max_decoded_frames`; shared by a read's threads."""

    def __init__(self, max_frames: int, path: str | Path) -> None:
        self.max_frames, self.path, self.decoded = max_frames, path, 0
        self._lock = threading.Lock()

    def spend(self) -> None:
        with self._lock:
            self.decoded += 1
            over = self.decoded > self.max_frames
        if over:
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
        index_end_pts: int | None = None,
    ) -> None:
        self.container, self.stream, self.budget, self.path = container, stream, budget, path
        self.index_end_pts = index_end_pts  # see _index_end
        self.unneeded = UnneededFrames()  # the non-reference frames no target shows (nonref_skip)
        self.last_pts: int | None = None  # of the latest decoded frame
        self.step_ticks = max(1, round(1 / (fps * float(timing.time_base)))) if fps > 0 else 1
        self.fallback_pts = timing.start_pts
        self.frames = self._decode()
        self.current: tuple[int, VideoFrame] | None = None  # last frame at or before target
        self.ahead: tuple[int, VideoFrame] | None = None  # the next frame (None: EOF)
        self.primed = False  # whether `ahead` holds the next frame yet (decoding is lazy)

    def seek(self, pts: int, target: int | None = None) -> int | None:
        """Seek to the keyframe at or before `pts` (to read on to `target`, default `pts`);
        the pts of the next frame (None: EOF)."""
        try:
            self.container.seek(pts, stream=self.stream, backward=True)
        except av.error.FFmpegError:  # a container that cannot seek: caller falls back
            logger.debug("seek to pts %d failed", pts, exc_info=True)
            return None
        self.frames = self._decode()
        self.unneeded.aim(pts if target is None else target)
        # Nothing after a seek is the caller's cue to read sequentially, not a corrupt file.
        self.current, self.ahead, self.primed = None, self._next(check_end=False), True
        return self.ahead[0] if self.ahead else None

    def frame_at(self, target: int) -> tuple[int, VideoFrame]:
        self.unneeded.aim(target)
        if not self.primed:
            self.ahead, self.primed = self._next(), True
        while self.ahead is not None and self.ahead[0] <= target:
            self.current = self.ahead
            self.ahead = self._next()
        on_screen = self.current or self.ahead  # before the first frame: the first frame
        if on_screen is None:
            raise ZeroFrames(f"{Path(self.path).name}: no frame of the video track decodes")
        return on_screen

    def _decode(self) -> Iterator[VideoFrame]:
        self.unneeded = UnneededFrames()  # a new forward read: nothing demuxed yet
        return decode_skipping(self.container, self.stream, self.unneeded)

    def _next(self, check_end: bool = True) -> tuple[int, VideoFrame] | None:
        with ffmpeg_errors(self.path, "decoding"):
            frame = next(self.frames, None)
        if frame is None:
            if check_end:
                self._check_complete()
            return None
        self.budget.spend()
        pts = frame.pts if frame.pts is not None else self.fallback_pts
        self.fallback_pts = pts + self.step_ticks  # frames without pts: assume a steady rate
        self.last_pts = pts
        return pts, frame

    def _check_complete(self) -> None:
        """At the end of decoding: raise `CorruptVideo` if frames the index lists never came."""
        if self.index_end_pts is None:
            return
        reached = self.last_pts if self.last_pts is not None else self.fallback_pts
        if reached + 2 * self.step_ticks < self.index_end_pts:
            raise CorruptVideo(
                f"{Path(self.path).name} is not a readable video (decoding stopped at pts {reached} but its "
                f"index lists frames up to pts {self.index_end_pts}: the file is truncated or damaged); "
                "re-encode it (e.g. to H.264 MP4) and upload again"
            )


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
