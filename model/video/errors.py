"""Typed failures of video reading and writing.

Every error carries a stable machine `code` (the API puts it in its error body) and a
message that says what the caller can do about it.
"""

from __future__ import annotations


class VideoError(Exception):
    """Base class: something about a video file makes it unusable."""

    code: str = "video_error"


class VideoNotFound(VideoError):
    """The path does not name a readable file (a storage problem, not a bad upload)."""

    code = "video_not_found"


class NoVideoStream(VideoError):
    """The file is a valid media file without a picture track (e.g. audio only)."""

    code = "no_video_stream"


class CorruptVideo(VideoError):
    """The file is not a video FFmpeg can read: random bytes, truncated, empty, undecodable."""

    code = "corrupt_video"


class VideoTooLong(VideoError):
    """The video lasts longer (or needs more decoded frames) than the limits allow."""

    code = "video_too_long"


class ResolutionTooLarge(VideoError):
    """The picture has more pixels than the limits allow."""

    code = "resolution_too_large"


class ZeroFrames(VideoError):
    """The video track holds no frame at all."""

    code = "zero_frames"


class ProbeTimeout(VideoError):
    """The isolated probe process ran out of time or memory (or died) before answering."""

    code = "probe_timeout"


class VideoWriteError(VideoError):
    """Encoding or writing an MP4 failed; nothing was left at the target path."""

    code = "video_write_failed"


ERRORS_BY_CODE: dict[str, type[VideoError]] = {
    cls.code: cls
    for cls in (
        VideoNotFound,
        NoVideoStream,
        CorruptVideo,
        VideoTooLong,
        ResolutionTooLarge,
        ZeroFrames,
        ProbeTimeout,
        VideoWriteError,
    )
}
