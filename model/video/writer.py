"""`write_mp4`: RGB frames to an H.264 MP4 that browsers play, written atomically.

The file is H.264 (libx264) in yuv420p, with the `moov` index before the media
(+faststart) so playback can start before the download ends. It is written under a
temporary name in the target's directory, fsynced, then renamed over the target
(`os.replace`), and the directory is fsynced: a reader sees no file or the whole file,
and a failed write leaves nothing behind (an existing target is left as it was).

4:2:0 chroma needs an even width and height: an odd dimension is PADDED by one pixel
that repeats the last row / column, so no content is lost and the video is at most one
pixel larger than the frames (e.g. 65x49 frames give a 66x50 video).
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np

from model.video.errors import VideoWriteError

logger = logging.getLogger(__name__)

_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
)


def write_mp4(
    frames: np.ndarray,
    path: str | Path,
    fps: int | float,
    crf: int = 23,
    *,
    preset: str = "medium",
) -> Path:
    """Encode (T, H, W, 3) uint8 RGB `frames` at `fps` into an MP4 at `path`; return the path.

    crf: x264 constant rate factor, 0 (lossless) to 51 (worst); 23 is x264's default.
    preset: x264 speed/size trade-off ("ultrafast" ... "veryslow").
    Raises ValueError for bad arguments, VideoWriteError when encoding or writing fails.
    """
    _check_inputs(frames, fps, crf, preset)
    target = Path(path)
    if not target.parent.is_dir():
        raise VideoWriteError(f"cannot write {target}: directory {target.parent} does not exist")
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        _encode(frames, temporary, _rate(fps), crf, preset)
        _fsync_file(temporary)
        os.replace(temporary, target)
        _fsync_directory(target.parent)
    except (av.error.FFmpegError, OSError) as exc:
        _remove_quietly(temporary)
        raise VideoWriteError(f"writing {target} failed: {exc}") from exc
    except BaseException:
        _remove_quietly(temporary)
        raise
    logger.debug("wrote %s (%d frames at %s fps)", target, len(frames), fps)
    return target


def even_size(height: int, width: int) -> tuple[int, int]:
    """The (height, width) `write_mp4` encodes frames of (height, width) at."""
    return height + height % 2, width + width % 2


def _encode(frames: np.ndarray, temporary: Path, rate: Fraction, crf: int, preset: str) -> None:
    height, width = frames.shape[1:3]
    out_height, out_width = even_size(height, width)
    pad = ((0, out_height - height), (0, out_width - width), (0, 0))
    with av.open(str(temporary), mode="w", format="mp4", container_options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
        stream.width, stream.height, stream.pix_fmt = out_width, out_height, "yuv420p"
        for index in range(frames.shape[0]):
            image = frames[index]  # (H, W, 3)
            if out_height != height or out_width != width:
                image = np.pad(image, pad, mode="edge")  # (H', W', 3), H' and W' even
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _check_inputs(frames: np.ndarray, fps: int | float, crf: int, preset: str) -> None:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be uint8, got {frames.dtype}; convert floats in [0, 1] with "
            "(x * 255).round().clip(0, 255).astype(np.uint8)"
        )
    if min(frames.shape[:3]) < 1:
        raise ValueError(f"frames must hold at least one non-empty frame, got {frames.shape}")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or not math.isfinite(fps):
        raise ValueError(f"fps must be a finite number, got {fps!r}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
        raise ValueError(f"crf must be an int in 0..51, got {crf!r}")
    if preset not in _PRESETS:
        raise ValueError(f"preset must be one of {', '.join(_PRESETS)}; got {preset!r}")


def _rate(fps: int | float) -> Fraction:
    """fps as a rational the muxer accepts (denominator at most 1001)."""
    return Fraction(fps).limit_denominator(1001)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        logger.warning("could not remove the temporary file %s", path, exc_info=True)
