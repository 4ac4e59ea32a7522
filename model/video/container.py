"""Opening a video file with PyAV and turning FFmpeg failures into typed errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import av.error
from av.container import InputContainer
from av.stream import Disposition
from av.video.stream import VideoStream

from model.video.errors import CorruptVideo, NoVideoStream, VideoNotFound

# FFmpeg can take long to "probe" a hostile file; these bound how much it reads to
# recognise the format and find the streams (bytes and microseconds).
_OPEN_OPTIONS = {"probesize": str(10 * 1024 * 1024), "analyzeduration": str(10_000_000)}


@contextmanager
def ffmpeg_errors(path: str | Path, doing: str) -> Iterator[None]:
    """Map PyAV/FFmpeg exceptions raised inside the block to `CorruptVideo`.

    PyAV 18 raises `av.error.FFmpegError` subclasses (also exported as `av.FFmpegError`);
    a few come out as plain ValueError/EOFError/OverflowError from its Python layer
    (bad timestamps, exhausted packets), so those are mapped too.
    """
    try:
        yield
    except MemoryError:
        raise  # out of memory is not a property of the file; callers decide (see isolated)
    except av.error.FileNotFoundError as exc:
        raise VideoNotFound(f"no video file at {path}") from exc
    except (av.error.FFmpegError, ValueError, EOFError, OverflowError, IndexError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise CorruptVideo(
            f"{Path(path).name} is not a readable video ({doing} failed: {reason}); "
            "re-encode it (e.g. to H.264 MP4) and upload again"
        ) from exc


@contextmanager
def open_input(path: str | Path) -> Iterator[InputContainer]:
    """Open `path` for reading; raise `VideoNotFound` or `CorruptVideo` instead of av errors."""
    if not os.path.exists(path):
        raise VideoNotFound(f"no video file at {path}")
    if os.path.isdir(path):
        raise VideoNotFound(f"{path} is a directory, not a video file")
    with ffmpeg_errors(path, "opening the container"):
        container = av.open(str(path), mode="r", options=dict(_OPEN_OPTIONS))
    try:
        yield container
    finally:
        container.close()


def video_stream(container: InputContainer, path: str | Path) -> VideoStream:
    """The first real picture track: cover art (attached pictures) does not count."""
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            if stream.codec_context is None:
                raise CorruptVideo(
                    f"{Path(path).name} has a video track in a codec FFmpeg cannot decode"
                    f" ({stream.codec_tag or 'unknown'}); re-encode it to H.264"
                )
            return stream
    kinds = sorted({s.type for s in container.streams}) or ["none"]
    if not container.streams:
        raise CorruptVideo(f"{Path(path).name} holds no media stream at all; not a video")
    raise NoVideoStream(
        f"{Path(path).name} has no video track (streams: {', '.join(kinds)}); upload a file with pictures"
    )
