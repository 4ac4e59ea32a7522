"""Keyframe mode: a target takes its nearest keyframe when one lies close enough.

A keyframe decodes alone (no earlier frame is needed), so a target that snaps costs a
seek and one decoded frame, where the exact frame costs decoding forward from the
keyframe before it (up to a whole GOP: 60 frames for a 2 s GOP at 30 fps). This is the
approximate mode decord and most VLM data loaders use.

How close is close enough: `tolerance_s`, and never more than half a segment (the
duration / n), so a snapped frame still lies inside its own segment: the frames stay in
order and spread over the video. A target with no keyframe that near is read exactly.

How a keyframe is read: seek to it, demux to its packet, decode only that packet with
the decoder told to drop non-keyframes (`skip_frame="NONKEY"`), then drain the decoder
(`decode(None)`) so a decoder with delay (B-frames, frame threads) hands it out. The next
`container.seek` flushes the decoder for whatever comes after.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from pathlib import Path

import av.error
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from model.video.container import ffmpeg_errors

logger = logging.getLogger(__name__)


def snap_to_keyframes(
    targets_pts: Sequence[int], keyframes_pts: Sequence[int], tolerance_ticks: int
) -> tuple[int | None, ...]:
    """Per target, the nearest keyframe (the earlier one on a tie) when it lies within
    `tolerance_ticks`, else None (read that target exactly). `keyframes_pts` is sorted."""
    snapped: list[int | None] = []
    for target in targets_pts:
        index = bisect.bisect_left(keyframes_pts, target)
        near = keyframes_pts[max(0, index - 1) : index + 1]
        best = min(near, key=lambda k: (abs(k - target), k)) if near else None
        snapped.append(best if best is not None and abs(best - target) <= tolerance_ticks else None)
    return tuple(snapped)


def tolerance_ticks(tolerance_s: float, segment_ticks: float, time_base: float) -> int:
    """The snapping tolerance in stream ticks: `tolerance_s`, at most half a segment."""
    return int(min(tolerance_s / time_base, segment_ticks / 2))


def decode_keyframe(
    container: InputContainer, stream: VideoStream, pts: int, path: str | Path
) -> tuple[int, VideoFrame] | None:
    """Decode only the keyframe at `pts`: (its pts, the frame).

    None when the container cannot seek there, or the first keyframe after the seek is
    not at `pts` (a coarse or wrong index): the caller reads that target exactly.
    """
    try:
        container.seek(pts, stream=stream, backward=True)
    except av.error.FFmpegError:
        logger.debug("seek to keyframe pts %d failed", pts, exc_info=True)
        return None
    codec = stream.codec_context
    codec.skip_frame = "NONKEY"
    try:
        with ffmpeg_errors(path, "decoding a keyframe"):
            for packet in container.demux(stream):
                if packet.pts is None or not packet.is_keyframe or packet.pts < pts:
                    continue  # the demuxer may hand out packets just before the keyframe
                if packet.pts != pts:
                    return None
                frames = codec.decode(packet) or codec.decode(None)  # drain: decoders with delay
                if not frames:
                    return None
                frame = frames[0]
                return (frame.pts if frame.pts is not None else pts), frame
    finally:
        codec.skip_frame = "DEFAULT"
    return None
