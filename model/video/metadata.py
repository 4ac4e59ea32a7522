"""Value types at the video boundary: the limits a caller enforces and what a probe finds."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on what a video may cost to read. Defaults match `Settings` (10 min, 4K)."""

    max_duration_s: float = 600.0
    max_pixels: int = 3840 * 2160  # width * height of one frame
    # Frames one `sample_frames` call may decode in total (seeking keeps this small even
    # for long videos; the cap stops files whose frame count dwarfs their duration).
    max_decoded_frames: int = 20000

    def __post_init__(self) -> None:
        if self.max_duration_s <= 0 or self.max_pixels < 1 or self.max_decoded_frames < 1:
            raise ValueError(f"video limits must be positive, got {self}")


@dataclass(frozen=True)
class VideoInfo:
    """Container metadata of the video stream, read without decoding the whole file.

    `container` is FFmpeg's demuxer name ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm",
    "avi"). `fps` is the stream's average frame rate (frames / duration, so it is also
    meaningful for variable-frame-rate video). `frame_count` is the count the container
    records when it records one (MP4, AVI); otherwise (WebM/Matroska) it is estimated as
    round(duration_s * fps) and `frame_count_is_estimate` is True. It is None only when
    neither is known.
    """

    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    frame_count: int | None
    container: str
    frame_count_is_estimate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
