"""model.video: probe, sample_frames, write_mp4, probe_isolated on generated videos."""

from __future__ import annotations

import json
import os
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from model.video import (
    CorruptVideo,
    NoVideoStream,
    ProbeTimeout,
    ResolutionTooLarge,
    VideoError,
    VideoLimits,
    VideoNotFound,
    VideoTooLong,
    ZeroFrames,
    probe,
    probe_isolated,
    sample_frames,
    write_mp4,
)
from model.video.probe import StreamTiming
from model.video.sampling import plan_sampling
from tests.media import (
    coded_frame,
    decode_frame_indices,
    make_audio_only,
    make_empty_file,
    make_empty_video_track,
    make_random_bytes,
    make_truncated_mp4,
    make_video,
    vfr_frame_times_ms,
)

MP4 = "mov,mp4,m4a,3gp,3g2,mj2"
ISOLATION = {"timeout_s": 20.0, "memory_mb": 512}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {
        "h264": make_video(root / "h264.mp4"),
        "vp9": make_video(root / "vp9.webm", codec="vp9"),
        "mjpeg": make_video(root / "mjpeg.avi", codec="mjpeg"),
        "one_frame": make_video(root / "one.mp4", frames=1),
        "three_frames": make_video(root / "three.mp4", frames=3),
        "odd": make_video(root / "odd.mp4", width=65, height=49),
        "vfr": make_video(root / "vfr.mp4", vfr=True),
        "raw": make_video(root / "raw.h264", frames=20),
        # 10 s at 24 fps, a keyframe every second: long enough for seeking to pay.
        "long": make_video(root / "long.mp4", frames=240, fps=24, keyframe_interval=24),
        "audio_only": make_audio_only(root / "audio.mp4"),
        "truncated": make_truncated_mp4(root / "truncated.mp4"),
        "truncated_faststart": make_truncated_mp4(root / "truncated_fs.mp4", faststart=True),
        "random": make_random_bytes(root / "random.mp4"),
        "empty": make_empty_file(root / "empty.mp4"),
        "no_frames": make_empty_video_track(root / "no_frames.avi"),
    }


def centre_indices(frame_count: int, n: int) -> list[int]:
    """The documented choice for a constant-rate clip: floor((i + 1/2) * F / n)."""
    return [int((i + 0.5) * frame_count / n) for i in range(n)]


# --- probe ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "codec", "container", "size", "duration", "frames", "estimated"),
    [
        ("h264", "h264", MP4, (64, 48), 2.0, 16, False),
        ("vp9", "vp9", "matroska,webm", (64, 48), 2.0, 16, True),  # WebM records no count
        ("mjpeg", "mjpeg", "avi", (64, 48), 2.0, 16, False),
        ("one_frame", "h264", MP4, (64, 48), 0.125, 1, False),
        ("odd", "h264", MP4, (65, 49), 2.0, 16, False),
        ("raw", "h264", "h264", (64, 48), 0.8, 20, False),  # no duration: packets counted
    ],
)
def test_probe_reports_container_metadata(videos, name, codec, container, size, duration, frames, estimated):
    info = probe(videos[name])
    assert (info.width, info.height) == size
    assert info.codec == codec
    assert info.container == container
    assert info.duration_s == pytest.approx(duration, abs=1e-3)
    assert info.frame_count == frames
    assert info.frame_count_is_estimate is estimated
    expected_fps = 25.0 if name == "raw" else 8.0  # a raw stream has no clock: FFmpeg's 25
    assert info.fps == pytest.approx(expected_fps)


def test_probe_of_variable_frame_rate_uses_timestamps(videos):
    times = vfr_frame_times_ms(16, 8)
    info = probe(videos["vfr"])
    last_frame_ms = 125  # the encoder's nominal 1/8 s for the final frame
    assert info.duration_s == pytest.approx((times[-1] + last_frame_ms) / 1000, abs=1e-3)
    assert info.frame_count == 16
    assert info.fps == pytest.approx(16 / info.duration_s, rel=1e-3)  # the average rate


# --- sample_frames: which frames ----------------------------------------------------


@pytest.mark.parametrize("name", ["h264", "vp9", "mjpeg", "odd"])
@pytest.mark.parametrize("strategy", ["sequential", "seek", "auto"])
def test_sample_frames_are_uniform_by_content(videos, name, strategy):
    frames = sample_frames(videos[name], 4, strategy=strategy)
    assert frames.dtype == np.uint8
    assert decode_frame_indices(frames) == centre_indices(16, 4) == [2, 6, 10, 14]


def test_every_frame_when_n_equals_frame_count(videos):
    frames = sample_frames(videos["h264"], 16)
    assert decode_frame_indices(frames) == list(range(16))


@pytest.mark.parametrize("n", [5, 8])
def test_seek_and_sequential_agree_on_a_long_video(videos, n):
    by_seek = sample_frames(videos["long"], n, strategy="seek")
    by_reading = sample_frames(videos["long"], n, strategy="sequential")
    assert decode_frame_indices(by_seek) == centre_indices(240, n)
    assert decode_frame_indices(by_reading) == centre_indices(240, n)
    # Same frames decoded the same way: identical pixels, not just the same index.
    np.testing.assert_array_equal(by_seek, by_reading)


def test_seeking_decodes_only_around_the_targets(videos):
    # 8 targets, 1 s GOPs: seeking decodes at most ~8 * 24 frames of the 240, and
    # fewer than 200; reading up to the last target needs 226.
    tight = VideoLimits(max_decoded_frames=200)
    frames = sample_frames(videos["long"], 8, limits=tight, strategy="seek")
    assert decode_frame_indices(frames) == centre_indices(240, 8)
    with pytest.raises(VideoTooLong, match="max_decoded_frames"):
        sample_frames(videos["long"], 8, limits=tight, strategy="sequential")
    assert decode_frame_indices(sample_frames(videos["long"], 8, limits=tight)) == (
        centre_indices(240, 8)
    )  # auto picks the seeking path here


def test_variable_frame_rate_is_sampled_by_time_not_index(videos):
    times = vfr_frame_times_ms(16, 8)
    duration_ms = probe(videos["vfr"]).duration_s * 1000
    n = 4
    expected = []
    for i in range(n):
        target = (i + 0.5) * duration_ms / n
        expected.append(max(k for k, t in enumerate(times) if t <= target))
    for strategy in ("sequential", "seek"):
        got = decode_frame_indices(sample_frames(videos["vfr"], n, strategy=strategy))
        assert got == expected
    assert expected != centre_indices(16, n)  # index arithmetic would pick other frames


def test_fewer_frames_than_n_repeats_neighbours_in_order(videos):
    frames = sample_frames(videos["three_frames"], 8)
    assert frames.shape[0] == 8
    assert decode_frame_indices(frames) == centre_indices(3, 8) == [0, 0, 0, 1, 1, 2, 2, 2]
    assert decode_frame_indices(sample_frames(videos["one_frame"], 5)) == [0] * 5


def test_raw_stream_without_timestamps_is_sampled(videos):
    assert decode_frame_indices(sample_frames(videos["raw"], 5)) == centre_indices(20, 5)


# --- sample_frames: sizes -----------------------------------------------------------


@pytest.mark.parametrize(("size", "shape"), [(None, (49, 65)), (32, (32, 32)), ((24, 40), (24, 40))])
def test_sample_frames_output_size(videos, size, shape):
    frames = sample_frames(videos["odd"], 3, size=size)
    assert frames.shape == (3, *shape, 3)
    assert frames.dtype == np.uint8
    assert decode_frame_indices(frames) == centre_indices(16, 3)  # content survives


@pytest.mark.parametrize("bad", [0, -1, (4,), (4, 0), 2.5, True])
def test_sample_frames_rejects_bad_size(videos, bad):
    with pytest.raises(ValueError, match="size"):
        sample_frames(videos["h264"], 2, size=bad)


def test_sample_frames_rejects_bad_n(videos):
    with pytest.raises(ValueError, match="n must be"):
        sample_frames(videos["h264"], 0)


# --- the strategy rule --------------------------------------------------------------


def timing(seconds: float, fps: int = 30) -> StreamTiming:
    return StreamTiming(time_base=Fraction(1, fps), start_pts=0, duration_pts=int(seconds * fps))


def test_plan_reads_short_clips_sequentially():
    plan = plan_sampling(timing(2.0), 30.0, keyframes_pts=[0], n=8)
    assert plan.strategy == "sequential"
    assert not any(plan.seek_before)


def test_plan_seeks_in_long_videos_with_frequent_keyframes():
    keyframes = list(range(0, 60 * 30, 2 * 30))  # 60 s, a keyframe every 2 s
    plan = plan_sampling(timing(60.0), 30.0, keyframes, n=8)
    assert plan.strategy == "seek"
    assert all(plan.seek_before)
    assert plan.seek_cost < plan.sequential_cost / 5  # ~8 * (charge + 1 s) vs 56 s


def test_plan_reads_when_targets_are_dense_relative_to_the_gop():
    # 20 s with a single keyframe: every seek would land on frame 0 again.
    plan = plan_sampling(timing(20.0), 30.0, keyframes_pts=[0], n=8)
    assert plan.strategy == "sequential"


def test_plan_assumes_sparse_keyframes_when_the_index_lists_none():
    # No index: keyframes assumed every 10 s. A 5 s clip reads, a 5 min video seeks.
    assert plan_sampling(timing(5.0), 30.0, None, n=8).strategy == "sequential"
    assert plan_sampling(timing(300.0), 30.0, None, n=8).strategy == "seek"


# --- limits and bad inputs ------------------------------------------------------------


def test_limits_are_enforced_by_probe_and_sample_frames(videos):
    short = VideoLimits(max_duration_s=1.5)
    small = VideoLimits(max_pixels=64 * 48 - 1)
    for read in (probe, lambda p, limits: sample_frames(p, 2, limits=limits)):
        with pytest.raises(VideoTooLong, match=r"lasts 2\.0 s"):
            read(videos["h264"], limits=short)
        with pytest.raises(ResolutionTooLarge, match="64x48"):
            read(videos["h264"], limits=small)
    assert probe(videos["h264"], VideoLimits(max_duration_s=2.0, max_pixels=64 * 48)).width == 64


BAD_INPUTS = [
    ("random", CorruptVideo),
    ("truncated", CorruptVideo),
    ("empty", CorruptVideo),
    ("audio_only", NoVideoStream),
    ("no_frames", ZeroFrames),
]


@pytest.mark.parametrize(("name", "error"), BAD_INPUTS)
def test_bad_inputs_raise_typed_errors_in_process(videos, name, error):
    with pytest.raises(error) as probed:
        probe(videos[name])
    with pytest.raises(error):
        sample_frames(videos[name], 4)
    assert probed.value.code == error.code
    assert str(videos[name].parent) not in str(probed.value)  # no server paths leak


@pytest.mark.parametrize(("name", "error"), BAD_INPUTS)
def test_bad_inputs_raise_typed_errors_from_isolated_probe(videos, name, error):
    with pytest.raises(error) as caught:
        probe_isolated(videos[name], VideoLimits(), **ISOLATION)
    assert caught.value.code == error.code


def test_truncated_media_behind_an_intact_index_fails_when_decoded(videos):
    path = videos["truncated_faststart"]
    assert probe(path).frame_count == 48  # the index is intact: metadata reads fine
    for strategy in ("sequential", "seek"):
        with pytest.raises(CorruptVideo):
            sample_frames(path, 8, strategy=strategy)


def test_missing_file_is_video_not_found(tmp_path):
    for read in (probe, lambda p: sample_frames(p, 2)):
        with pytest.raises(VideoNotFound):
            read(tmp_path / "missing.mp4")
        with pytest.raises(VideoNotFound):
            read(tmp_path)  # a directory
    with pytest.raises(VideoNotFound):
        probe_isolated(tmp_path / "missing.mp4", VideoLimits(), **ISOLATION)


def test_every_error_is_a_video_error_with_a_distinct_code():
    classes = [CorruptVideo, NoVideoStream, ProbeTimeout, ResolutionTooLarge, VideoNotFound, VideoTooLong, ZeroFrames]
    assert all(issubclass(cls, VideoError) for cls in classes)
    assert len({cls.code for cls in classes}) == len(classes)


# --- probe_isolated -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["h264", "vp9", "vfr", "raw"])
def test_isolated_probe_returns_what_probe_returns(videos, name):
    assert probe_isolated(videos[name], VideoLimits(), **ISOLATION) == probe(videos[name])


def test_isolated_probe_passes_limits_to_the_child(videos):
    with pytest.raises(VideoTooLong):
        probe_isolated(videos["h264"], VideoLimits(max_duration_s=1.0), **ISOLATION)


def test_isolated_probe_kills_a_child_that_blocks(tmp_path):
    # Opening a FIFO with no writer blocks forever: probe() in-process would hang.
    fifo = tmp_path / "stuck.mp4"
    os.mkfifo(fifo)
    with pytest.raises(ProbeTimeout, match="longer than 1 s"):
        probe_isolated(fifo, VideoLimits(), timeout_s=1.0, memory_mb=512)


def test_isolated_probe_enforces_its_memory_cap(tmp_path):
    path = make_video(tmp_path / "hd.mp4", frames=2, width=1920, height=1080, pattern="noise")
    with pytest.raises(ProbeTimeout, match="memory"):
        probe_isolated(path, VideoLimits(), timeout_s=20.0, memory_mb=2)
    assert probe_isolated(path, VideoLimits(), timeout_s=20.0, memory_mb=256).width == 1920


# --- write_mp4 ------------------------------------------------------------------------


def coded_clip(frames: int, height: int, width: int) -> np.ndarray:
    return np.stack([coded_frame(i, height, width) for i in range(frames)])  # (T, H, W, 3)


def top_level_boxes(path: Path) -> list[str]:
    names, data, offset = [], path.read_bytes(), 0
    while offset + 8 <= len(data):
        size, name = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        names.append(name.decode("latin-1"))
        if size == 0:
            break
        offset += size
    return names


def test_write_mp4_round_trip(tmp_path):
    clip = coded_clip(12, 48, 64)
    target = write_mp4(clip, tmp_path / "out.mp4", fps=12, crf=18)
    assert target == tmp_path / "out.mp4"
    info = probe(target)
    assert (info.codec, info.width, info.height, info.frame_count) == ("h264", 64, 48, 12)
    assert info.fps == pytest.approx(12.0)
    assert info.duration_s == pytest.approx(1.0, abs=1e-3)
    with av.open(str(target)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert decode_frame_indices(sample_frames(target, 12)) == list(range(12))
    boxes = top_level_boxes(target)
    assert boxes.index("moov") < boxes.index("mdat")  # faststart
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temp file left


def test_write_mp4_pads_odd_sizes_to_even(tmp_path):
    clip = coded_clip(4, 49, 65)
    info = probe(write_mp4(clip, tmp_path / "odd.mp4", fps=4.0))
    assert (info.width, info.height) == (66, 50)
    frames = sample_frames(tmp_path / "odd.mp4", 4)
    assert decode_frame_indices(frames[:, :49, :65]) == [0, 1, 2, 3]
    # The added column repeats the last one (edge padding), it is not black.
    np.testing.assert_allclose(frames[:, :49, 65].astype(int), frames[:, :49, 64].astype(int), atol=24)


class ExplodingFrames(np.ndarray):
    """Frames whose fourth frame cannot be read: a failure halfway through encoding."""

    def __getitem__(self, key):
        if isinstance(key, int) and key == 3:
            raise RuntimeError("frame source failed")
        return super().__getitem__(key)


def test_a_failing_write_leaves_no_file(tmp_path):
    frames = coded_clip(8, 48, 64).view(ExplodingFrames)
    with pytest.raises(RuntimeError, match="frame source failed"):
        write_mp4(frames, tmp_path / "out.mp4", fps=8)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_write_keeps_the_previous_file(tmp_path):
    target = write_mp4(coded_clip(2, 48, 64), tmp_path / "out.mp4", fps=8)
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        write_mp4(coded_clip(8, 48, 64).view(ExplodingFrames), target, fps=8)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


@pytest.mark.parametrize(
    ("frames", "fps", "crf", "match"),
    [
        (np.zeros((2, 8, 8, 3), np.float32), 8, 23, "uint8"),
        (np.zeros((8, 8, 3), np.uint8), 8, 23, "shape"),
        (np.zeros((0, 8, 8, 3), np.uint8), 8, 23, "at least one"),
        (np.zeros((2, 8, 8, 3), np.uint8), 0, 23, "fps"),
        (np.zeros((2, 8, 8, 3), np.uint8), 8, 60, "crf"),
    ],
)
def test_write_mp4_rejects_bad_arguments(tmp_path, frames, fps, crf, match):
    with pytest.raises(ValueError, match=match):
        write_mp4(frames, tmp_path / "out.mp4", fps=fps, crf=crf)
    assert list(tmp_path.iterdir()) == []


# --- CLI ------------------------------------------------------------------------------


def test_cli_prints_info_and_refuses_bad_files(videos, capsys):
    from model.video.cli import main

    assert main([str(videos["h264"]), "--sample", "4", "--size", "32"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["info"]["frame_count"] == 16
    assert report["sampled"] == [4, 32, 32, 3]
    assert main([str(videos["audio_only"])]) == 2
    assert json.loads(capsys.readouterr().out)["code"] == "no_video_stream"
