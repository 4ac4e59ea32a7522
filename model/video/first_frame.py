"""Probe a video and decode its first frame (what upload validation needs)."""

from __future__ import annotations

from pathlib import Path

from av.container import InputContainer

from model.video.container import ffmpeg_errors, open_input, video_stream
from model.video.errors import ZeroFrames
from model.video.metadata import VideoInfo, VideoLimits
from model.video.probe import describe_stream


def probe_and_decode_first_frame(path: str | Path, limits: VideoLimits) -> VideoInfo:
    """`probe(path, limits)`, then decode the first frame to prove the pictures decode.

    Raises the errors of `probe`, ZeroFrames when the video track yields no frame and
    CorruptVideo when decoding fails.
    """
    with open_input(path) as container:
        stream = video_stream(container, path)
        info, timing = describe_stream(container, stream, path, limits)
        if not timing.container_consumed:
            _decode_first_frame(container, path)
            return info
    with open_input(path) as container:  # the probe read to the end: start over
        _decode_first_frame(container, path)
    return info


def _decode_first_frame(container: InputContainer, path: str | Path) -> None:
    stream = video_stream(container, path)
    stream.codec_context.thread_count = 1  # one decoder thread: small, predictable memory
    with ffmpeg_errors(path, "decoding the first frame"):
        first = next(container.decode(stream), None)
    if first is None:
        raise ZeroFrames(f"{Path(path).name}: the video track holds no decodable frame")
