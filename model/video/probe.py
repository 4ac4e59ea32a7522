"""`probe`: what a video file is (size, length, rate, codec), from container metadata only.

Duration comes from the first of these that is known: the video stream's own duration,
the container's duration, frame count / frame rate. When none is (raw elementary
streams, some Matroska files) the packets are demuxed (read, not decoded) and the last
timestamp is taken; that scan stops at `limits.max_decoded_frames` packets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.container import InputContainer
from av.video.stream import VideoStream

from model.video.container import ffmpeg_errors, open_input, video_stream
from model.video.errors import CorruptVideo, ResolutionTooLarge, VideoTooLong, ZeroFrames
from model.video.metadata import VideoInfo, VideoLimits


@dataclass(frozen=True)
class StreamTiming:
    """The video stream's clock, in its own time base, as sampling needs it."""

    time_base: Fraction  # seconds per pts tick
    start_pts: int  # pts of the first frame (0 for most files)
    duration_pts: int  # span of the stream, first frame to end of the last one
    # True when finding the duration meant reading every packet: the container is at its
    # end, so a reader must reopen the file.
    container_consumed: bool = False

    def seconds(self, pts: int) -> float:
        return float((pts - self.start_pts) * self.time_base)


def probe(path: str | Path, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Read container metadata of `path` (no full decode) and enforce `limits`.

    Raises VideoNotFound, CorruptVideo, NoVideoStream, ZeroFrames, VideoTooLong or
    ResolutionTooLarge; never a PyAV exception.
    """
    with open_input(path) as container:
        stream = video_stream(container, path)
        info, _ = describe_stream(container, stream, path, limits)
    return info


def describe_stream(
    container: InputContainer, stream: VideoStream, path: str | Path, limits: VideoLimits
) -> tuple[VideoInfo, StreamTiming]:
    """Probe an already-open stream: its `VideoInfo` and clock, with `limits` enforced."""
    name = Path(path).name
    with ffmpeg_errors(path, "reading the stream header"):
        width, height = stream.codec_context.width, stream.codec_context.height
        time_base = stream.time_base or Fraction(1, av.time_base)
        start_pts = stream.start_time if stream.start_time is not None else 0
        recorded_frames = max(0, stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        duration_pts = _recorded_duration_pts(container, stream, time_base, recorded_frames, rate)
    if width <= 0 or height <= 0:
        raise CorruptVideo(f"{name}: the video track has no picture size; the file is damaged")
    if width * height > limits.max_pixels:
        raise ResolutionTooLarge(
            f"{name} is {width}x{height} ({width * height} pixels), over the limit of "
            f"{limits.max_pixels} pixels; downscale it before uploading"
        )
    consumed = duration_pts is None
    if duration_pts is None:
        recorded_frames, start_pts, duration_pts = _scan_packets(
            container, stream, path, limits, _ticks_per_frame(rate, time_base)
        )
    duration_s = float(duration_pts * time_base)
    if duration_s > limits.max_duration_s:
        raise VideoTooLong(
            f"{name} lasts {duration_s:.1f} s, over the limit of {limits.max_duration_s:.0f} s;"
            " trim it before uploading"
        )
    fps = float(rate) if rate else (recorded_frames / duration_s if duration_s > 0 else 0.0)
    if recorded_frames > 0:
        frame_count, estimated = recorded_frames, False
    elif fps > 0 and duration_s > 0:
        frame_count, estimated = max(1, round(duration_s * fps)), True
    else:
        frame_count, estimated = None, False
    info = VideoInfo(
        duration_s=duration_s,
        fps=fps,
        width=width,
        height=height,
        codec=stream.codec_context.name,
        frame_count=frame_count,
        container=container.format.name,
        frame_count_is_estimate=estimated,
    )
    return info, StreamTiming(time_base, start_pts, duration_pts, consumed)


def _recorded_duration_pts(
    container: InputContainer,
    stream: VideoStream,
    time_base: Fraction,
    recorded_frames: int,
    rate: Fraction | None,
) -> int | None:
    """The stream's duration in its time base, from metadata; None when nothing says."""
    if stream.duration and stream.duration > 0:
        return int(stream.duration)
    if container.duration and container.duration > 0:
        return _to_pts(Fraction(container.duration, av.time_base), time_base)
    if recorded_frames > 0 and rate:
        return _to_pts(recorded_frames / Fraction(rate), time_base)
    return None


def _scan_packets(
    container: InputContainer,
    stream: VideoStream,
    path: str | Path,
    limits: VideoLimits,
    ticks_per_frame: int,
) -> tuple[int, int, int]:
    """Demux (not decode) every video packet: (count, first pts, span in pts).

    Packets without timestamps (raw elementary streams) count one frame period each.
    Leaves the container at its end: callers that go on reading must reopen the file.
    """
    count, first, end = 0, None, None
    with ffmpeg_errors(path, "reading packets"):
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # flush packets carry no frame
            count += 1
            if count > limits.max_decoded_frames:
                raise VideoTooLong(
                    f"{Path(path).name} has more than {limits.max_decoded_frames} frames and "
                    "records no duration; trim or re-encode it"
                )
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None:
                continue
            packet_end = stamp + max(packet.duration or 0, ticks_per_frame)
            first = stamp if first is None else min(first, stamp)
            end = packet_end if end is None else max(end, packet_end)
    if count == 0:
        raise ZeroFrames(f"{Path(path).name} has a video track with no frames in it")
    if first is None or end is None:
        return count, 0, count * ticks_per_frame
    return count, first, max(end - first, count * ticks_per_frame if count == 1 else 1)


def _ticks_per_frame(rate: Fraction | None, time_base: Fraction) -> int:
    """One frame period in the stream time base (25 fps assumed when no rate is known)."""
    return max(1, round(1 / (Fraction(rate or 25) * time_base)))


def _to_pts(seconds: Fraction, time_base: Fraction) -> int:
    return math.ceil(seconds / time_base)
