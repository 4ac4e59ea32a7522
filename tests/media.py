"""Test-video factories shared by the whole test-suite (PyAV only, no fixtures on disk).

Every frame made by `make_video(pattern="moving_box")` carries its own frame index as a
binary code: the top two thirds of the frame are a grid of `CODE_COLUMNS x CODE_ROWS`
cells, cell k is white when bit k of the index is set and black otherwise. The code
survives lossy compression, odd sizes and resizing (cells are read at their centres), so
a test can ask `decode_frame_index(image)` WHICH frame it got back. A coloured box in the
bottom third moves left to right with the index, so the clip also looks like motion.

Factories return the path they wrote. The container is inferred from the suffix
(.mp4, .mov, .webm, .mkv, .avi, or .h264 for a raw stream with no container). Odd-sized
H.264 clips are encoded in yuv444p (x264 refuses odd sizes in 4:2:0).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np

CODE_COLUMNS = 4
CODE_ROWS = 3
MAX_CODED_FRAMES = 2 ** (CODE_COLUMNS * CODE_ROWS)  # 4096 distinct indices
CODE_HEIGHT_FRACTION = 2 / 3

Codec = Literal["h264", "h264_bframes", "vp9", "mjpeg"]
Pattern = Literal["moving_box", "noise"]

_ENCODERS: dict[str, tuple[str, str, dict[str, str]]] = {
    # codec -> (encoder name, pixel format, encoder options)
    "h264": ("libx264", "yuv420p", {"crf": "18", "preset": "ultrafast"}),
    # x264's usual output (veryfast and slower presets): 3 B-frames, some of them
    # non-reference (b-pyramid), as phones and most downloaded H.264 carry.
    "h264_bframes": ("libx264", "yuv420p", {"crf": "18", "preset": "veryfast", "bf": "3"}),
    "vp9": ("libvpx-vp9", "yuv420p", {"crf": "20", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
    "mjpeg": ("mjpeg", "yuvj420p", {"qscale": "2"}),
}
_FORMATS = {
    ".mp4": "mp4",
    ".mov": "mov",
    ".webm": "webm",
    ".mkv": "matroska",
    ".avi": "avi",
    ".h264": "h264",  # raw Annex B elementary stream: no container, no duration
}
# Millisecond clock for variable-frame-rate clips, so frame times are exact.
_VFR_TIME_BASE = Fraction(1, 1000)


def container_format_for(path: Path) -> str:
    try:
        return _FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"unknown video suffix {path.suffix!r}; use one of {sorted(_FORMATS)}") from None


def coded_frame(index: int, height: int, width: int) -> np.ndarray:
    """The RGB frame `make_video` draws for `index`: bit-grid code on top, moving box below."""
    if not 0 <= index < MAX_CODED_FRAMES:
        raise ValueError(f"index {index} does not fit the {MAX_CODED_FRAMES}-value code")
    image = np.full((height, width, 3), 64, dtype=np.uint8)  # (H, W, 3)
    code_height = int(height * CODE_HEIGHT_FRACTION)
    for bit in range(CODE_COLUMNS * CODE_ROWS):
        row, column = divmod(bit, CODE_COLUMNS)
        top, bottom = _span(row, CODE_ROWS, code_height)
        left, right = _span(column, CODE_COLUMNS, width)
        image[top:bottom, left:right] = 255 if (index >> bit) & 1 else 0
    box_width = max(1, width // 8)
    box_left = (index * max(1, width // 16)) % max(1, width - box_width + 1)
    box_colour = ((index * 37) % 256, 200, (255 - index * 53) % 256)
    image[code_height:, box_left : box_left + box_width] = box_colour
    return image


def decode_frame_index(image: np.ndarray) -> int:
    """Read back the index `coded_frame` drew, from a decoded (H, W, 3) RGB frame."""
    height, width = image.shape[:2]
    code_height = int(height * CODE_HEIGHT_FRACTION)
    luma = image.astype(np.float32).mean(axis=2)  # (H, W)
    index = 0
    for bit in range(CODE_COLUMNS * CODE_ROWS):
        row, column = divmod(bit, CODE_COLUMNS)
        top, bottom = _span(row, CODE_ROWS, code_height)
        left, right = _span(column, CODE_COLUMNS, width)
        centre = luma[(top + bottom) // 2, (left + right) // 2]
        if centre > 128:
            index |= 1 << bit
    return index


def decode_frame_indices(frames: np.ndarray) -> list[int]:
    """`decode_frame_index` over a (N, H, W, 3) batch."""
    return [decode_frame_index(frame) for frame in frames]


def make_video(
    path: str | Path,
    *,
    frames: int = 16,
    width: int = 64,
    height: int = 48,
    fps: int | float = 8,
    codec: Codec = "h264",
    pattern: Pattern = "moving_box",
    vfr: bool = False,
    frame_times_ms: Sequence[int] | None = None,
    keyframe_interval: int | None = None,
    seed: int = 0,
) -> Path:
    """Encode a synthetic clip with PyAV and return its path.

    vfr=True: frames are NOT evenly spaced: the first half of the frames come every
    `1 / (2 * fps)` s and the second half every `3 / (2 * fps)` s (see `vfr_frame_times_ms`).
    `frame_times_ms` sets each frame's presentation time explicitly (implies VFR).
    `keyframe_interval`: frames between keyframes (the encoder default when None).
    """
    path = Path(path)
    if frames < 1:
        raise ValueError("frames must be >= 1")
    if vfr and frame_times_ms is None:
        frame_times_ms = vfr_frame_times_ms(frames, fps)
    if frame_times_ms is not None and len(frame_times_ms) != frames:
        raise ValueError("frame_times_ms needs one entry per frame")
    encoder, pix_fmt, options = _ENCODERS[codec]
    options = dict(options)
    if codec.startswith("h264") and (width % 2 or height % 2):
        pix_fmt = "yuv444p"  # x264 refuses odd sizes in 4:2:0; 4:4:4 has no such limit
    if keyframe_interval is not None:
        options["g"] = str(keyframe_interval)
        if codec.startswith("h264"):
            options["x264-params"] = f"keyint={keyframe_interval}:min-keyint={keyframe_interval}"
            options["sc_threshold"] = "0"
    rate = Fraction(fps).limit_denominator(1001)
    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w", format=container_format_for(path)) as container:
        stream = container.add_stream(encoder, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.thread_count = 1
        if frame_times_ms is not None:
            stream.codec_context.time_base = _VFR_TIME_BASE
            stream.time_base = _VFR_TIME_BASE
        for index, image in enumerate(_frames(pattern, frames, height, width, rng)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if frame_times_ms is not None:
                frame.pts, frame.time_base = int(frame_times_ms[index]), _VFR_TIME_BASE
            else:
                frame.pts, frame.time_base = index, 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def vfr_frame_times_ms(frames: int, fps: int | float) -> list[int]:
    """Presentation times (ms) of the VFR clip `make_video(vfr=True)` writes."""
    dense_step = round(1000 / (2 * fps))
    sparse_step = 3 * dense_step
    dense = frames // 2
    times = [i * dense_step for i in range(dense)]
    start = dense * dense_step
    times += [start + i * sparse_step for i in range(frames - dense)]
    return times


def make_audio_only(path: str | Path, *, seconds: float = 1.0) -> Path:
    """A file with one AAC audio stream and no video stream (.mp4/.m4a/.mkv...)."""
    path = Path(path)
    sample_rate = 16000
    fmt = "mp4" if path.suffix.lower() in {".mp4", ".m4a"} else container_format_for(path)
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream("aac", rate=sample_rate)
        samples = int(seconds * sample_rate)
        t = np.arange(samples) / sample_rate
        tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]  # (1, S)
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = sample_rate, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def make_truncated_mp4(path: str | Path, *, keep_fraction: float = 0.5, faststart: bool = False) -> Path:
    """An H.264 MP4 cut short, as an interrupted upload leaves it.

    faststart=False (the default): the `moov` index sits after the media and is lost, so
    the file cannot even be opened. faststart=True: the index survives but the media it
    points to is missing past `keep_fraction` of the file.
    """
    path = Path(path)
    full = path.with_name(f"full-{path.name}")
    make_video(full, frames=48, width=64, height=48, fps=8, keyframe_interval=8)
    if faststart:
        remuxed = path.with_name(f"faststart-{path.name}")
        _remux_faststart(full, remuxed)
        full.unlink()
        full = remuxed
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


def make_empty_video_track(path: str | Path) -> Path:
    """A container (suffix picks it; .avi works) that declares a video track with no frame."""
    path = Path(path)
    encoder, pix_fmt, _ = _ENCODERS["mjpeg"]
    with av.open(str(path), mode="w", format=container_format_for(path)) as container:
        stream = container.add_stream(encoder, rate=8)
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        container.start_encoding()  # write the header although no packet follows
    return path


def make_random_bytes(path: str | Path, *, size: int = 64 * 1024, seed: int = 0) -> Path:
    """A file of seeded random bytes with a video suffix."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def make_empty_file(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def _remux_faststart(source: Path, target: Path) -> None:
    with (
        av.open(str(source)) as src,
        av.open(str(target), mode="w", format="mp4", container_options={"movflags": "+faststart"}) as dst,
    ):
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            dst.mux(packet)


def _frames(pattern: Pattern, frames: int, height: int, width: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    for index in range(frames):
        if pattern == "moving_box":
            yield coded_frame(index, height, width)
        elif pattern == "noise":
            yield rng.integers(0, 256, (height, width, 3), dtype=np.uint8)  # (H, W, 3)
        else:
            raise ValueError(f"unknown pattern {pattern!r}; use 'moving_box' or 'noise'")


def _span(cell: int, cells: int, length: int) -> tuple[int, int]:
    return cell * length // cells, (cell + 1) * length // cells
