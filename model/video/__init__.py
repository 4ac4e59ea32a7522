"""Reading and writing video files with PyAV.

probe / probe_isolated: what a file is, with limits enforced (isolated: in a capped child
process, for untrusted uploads). sample_frames / read_frames: n frames uniformly over the
duration (exact or keyframe mode).
write_mp4: frames to an H.264 MP4, atomically. Every failure is a typed `VideoError`.
"""

from model.video.errors import (
    CorruptVideo,
    NoVideoStream,
    ProbeTimeout,
    ResolutionTooLarge,
    VideoError,
    VideoNotFound,
    VideoTooLong,
    VideoWriteError,
    ZeroFrames,
)
from model.video.isolated import probe_isolated
from model.video.metadata import VideoInfo, VideoLimits
from model.video.probe import probe
from model.video.sampling import SampledFrames, SamplingMode, SamplingOptions, read_frames, sample_frames
from model.video.writer import write_mp4

__all__ = [
    "CorruptVideo",
    "NoVideoStream",
    "ProbeTimeout",
    "ResolutionTooLarge",
    "SampledFrames",
    "SamplingMode",
    "SamplingOptions",
    "VideoError",
    "VideoInfo",
    "VideoLimits",
    "VideoNotFound",
    "VideoTooLong",
    "VideoWriteError",
    "ZeroFrames",
    "probe",
    "probe_isolated",
    "read_frames",
    "sample_frames",
    "write_mp4",
]
