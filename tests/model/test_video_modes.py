"""Sampling modes (exact, keyframe) and decoder threads of model.video.read_frames."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from model.video import CorruptVideo, SamplingOptions, VideoLimits, VideoTooLong, read_frames, sample_frames
from model.video.keyframes import snap_to_keyframes, tolerance_ticks
from model.video.nonref_skip import UnneededFrames
from model.video.probe import StreamTiming
from model.video.sampling import _set_decoder_threads, _to_rgb, balanced_shares, plan_runs, plan_sampling, run_costs
from tests.media import decode_frame_indices, make_truncated_mp4, make_video, vfr_frame_times_ms

EXACT = SamplingOptions(mode="exact")
KEYFRAME = SamplingOptions(mode="keyframe")
MODES = {"exact": EXACT, "keyframe": KEYFRAME}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("modes")
    return {
        "h264": make_video(root / "h264.mp4"),
        "vp9": make_video(root / "vp9.webm", codec="vp9"),
        "one_frame": make_video(root / "one.mp4", frames=1),
        "three_frames": make_video(root / "three.mp4", frames=3),
        "vfr": make_video(root / "vfr.mp4", vfr=True),
        "vfr_gop": make_video(root / "vfr_gop.mp4", frames=64, vfr=True, keyframe_interval=8),
        "raw": make_video(root / "raw.h264", frames=20),
        # 10 s at 24 fps, a keyframe every second (frames 0, 24, 48, ...).
        "long": make_video(root / "long.mp4", frames=240, fps=24, keyframe_interval=24),
        # The same with B-frames (x264 veryfast: 3, b-pyramid), about half of them non-reference.
        "long_bframes": make_video(root / "long_b.mp4", frames=240, fps=24, keyframe_interval=24,
                                   codec="h264_bframes"),
        "truncated_faststart": make_truncated_mp4(root / "truncated_fs.mp4", faststart=True),
    }


def test_keyframe_mode_takes_the_nearest_keyframe_and_decodes_one_frame_each(videos):
    # Exact targets are frames 15, 45, ..., 225; each has a keyframe 3 or 9 frames away
    # (at most 0.375 s: inside the 1 s tolerance and half a segment, 15 frames).
    only_eight = VideoLimits(max_decoded_frames=8)
    got = read_frames(videos["long"], 8, limits=only_eight, options=KEYFRAME)
    assert decode_frame_indices(got.frames) == [24, 48, 72, 96, 144, 168, 192, 216]
    assert got.timestamps_s == pytest.approx([k / 24 for k in (24, 48, 72, 96, 144, 168, 192, 216)])
    assert got.mean_error_s() == pytest.approx(6 / 24)  # 9, 3, 3, 9, 9, 3, 3, 9 frames
    with pytest.raises(VideoTooLong):  # the exact frames need whole GOPs decoded
        read_frames(videos["long"], 8, limits=only_eight, options=EXACT)


def test_keyframe_mode_finds_the_keyframes_of_a_file_with_b_frames(videos):
    # MP4's index lists decode timestamps, two frames before these keyframes' pts; taken
    # as pts, no keyframe matched and every target was read exactly (a whole GOP each).
    only_eight = VideoLimits(max_decoded_frames=8)
    got = read_frames(videos["long_bframes"], 8, limits=only_eight, options=KEYFRAME)
    assert decode_frame_indices(got.frames) == [24, 48, 72, 96, 144, 168, 192, 216]
    assert got.timestamps_s == pytest.approx([k / 24 for k in (24, 48, 72, 96, 144, 168, 192, 216)])


def test_targets_without_a_keyframe_near_enough_are_read_exactly(videos):
    exact = decode_frame_indices(sample_frames(videos["long"], 8, options=EXACT))
    assert exact == [15, 45, 75, 105, 135, 165, 195, 225]
    none_near = SamplingOptions(mode="keyframe", keyframe_tolerance_s=0.1)  # 2.4 frames
    assert decode_frame_indices(sample_frames(videos["long"], 8, options=none_near)) == exact
    mixed = SamplingOptions(mode="keyframe", keyframe_tolerance_s=0.2)  # 4.8 frames: the 3-away ones snap
    assert decode_frame_indices(sample_frames(videos["long"], 8, options=mixed)) == (
        [15, 48, 72, 105, 135, 168, 192, 225]
    )


def test_exact_mode_timestamps_are_the_frames_on_screen(videos):
    got = read_frames(videos["long"], 8, options=EXACT)
    indices = decode_frame_indices(got.frames)
    assert got.timestamps_s == pytest.approx([i / 24 for i in indices])
    assert got.targets_s == pytest.approx([(2 * i + 1) * 10 / 16 for i in range(8)])
    assert got.mean_error_s() < 1 / 24


@pytest.fixture(scope="module")
def every_frame_of_long_bframes(videos) -> np.ndarray:
    """(240, H, W, 3): a plain decode of every frame (nothing skipped), converted as reads convert."""
    with av.open(str(videos["long_bframes"])) as container:
        stream = container.streams.video[0]
        frames = [_to_rgb(f, f.height, f.width, "long_b.mp4") for f in container.decode(stream)]
    return np.stack(frames)


@pytest.mark.parametrize("strategy", ["seek", "sequential"])
@pytest.mark.parametrize("threads", [1, 2])
def test_exact_reads_skip_the_non_reference_frames_before_each_target(videos, every_frame_of_long_bframes,
                                                                      strategy, threads):
    # Targets are frames 15, 45, ..., 225. Read forward from each keyframe (or from the
    # start) that is 112 (seek) or 226 (sequential) frames decoded; a non-reference
    # B-frame with a later frame ahead of it before the target is dropped, not decoded.
    # Frame threads (a sequential read with 2) take the setting per packet as well.
    full = {"seek": 112, "sequential": 226}[strategy]
    budget = VideoLimits(max_decoded_frames=full * 3 // 4)
    options = SamplingOptions(threads=threads)
    got = read_frames(videos["long_bframes"], 8, strategy=strategy, limits=budget, options=options)
    shown = [15, 45, 75, 105, 135, 165, 195, 225]
    assert decode_frame_indices(got.frames) == shown
    np.testing.assert_array_equal(got.frames, every_frame_of_long_bframes[shown])  # bit for bit
    assert got.timestamps_s == pytest.approx([i / 24 for i in shown])
    with pytest.raises(VideoTooLong):  # the same read of a file with no non-reference frame
        read_frames(videos["long"], 8, strategy=strategy, limits=budget, options=options)


def test_unneeded_frames_are_those_before_a_later_frame_not_after_the_target():
    unneeded = UnneededFrames()
    unneeded.aim(5)
    # Decode order of a B-pyramid GOP: I0 P4 B2 b1 b3 P8 B6 b5 b7.
    assert [unneeded.skippable(p) for p in (0, 4, 2, 1, 3, 8, 6, 5, 7)] == [
        False, False, True, True, True, False, False, False, False]
    unneeded.aim(7)  # 6 and 7 were demuxed after 5, so 5 is not on screen at 7
    assert [unneeded.skippable(p) for p in (5, 6, 12)] == [True, True, False]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["h264", "vp9", "one_frame", "three_frames", "vfr", "vfr_gop", "raw", "long",
                                  "long_bframes"])
@pytest.mark.parametrize("n", [1, 5, 8])
def test_both_modes_return_n_frames_in_order(videos, mode, name, n):
    got = read_frames(videos[name], n, size=32, options=MODES[mode])
    assert got.frames.shape == (n, 32, 32, 3) and got.frames.dtype == np.uint8
    assert len(got.timestamps_s) == len(got.targets_s) == n
    assert list(got.timestamps_s) == sorted(got.timestamps_s)
    full = sample_frames(videos[name], n, options=MODES[mode])  # native size: indices are readable
    assert decode_frame_indices(full) == sorted(decode_frame_indices(full))


def test_keyframe_mode_on_a_variable_frame_rate_file_snaps_by_time(videos):
    times = vfr_frame_times_ms(64, 8)
    got = read_frames(videos["vfr_gop"], 4, options=KEYFRAME)
    indices = decode_frame_indices(got.frames)
    assert all(i % 8 == 0 for i in indices)  # keyframes only: every 8th frame
    assert got.timestamps_s == pytest.approx([times[i] / 1000 for i in indices], abs=1e-3)
    segment = (got.targets_s[1] - got.targets_s[0])
    assert all(abs(t - s) <= segment / 2 for t, s in zip(got.timestamps_s, got.targets_s, strict=True))


def test_shares_balance_the_frames_to_decode_not_the_number_of_reads():
    # GOP reads of 52, 7, 7 and 7 frames: split by count, one thread decodes 59 frames
    # while the other decodes 14; split by cost, 52 and 21.
    assert balanced_shares(list("abcd"), [52, 7, 7, 7], 2) == [list("a"), list("bcd")]
    assert balanced_shares(list("abcd"), [52, 7, 7, 52], 2) == [list("ab"), list("cd")]
    assert balanced_shares(list("abcd"), [7, 7, 7, 52], 2) == [list("abc"), list("d")]
    assert balanced_shares(list("ab"), [1, 1], 5) == [list("a"), list("b")]


@given(st.lists(st.integers(1, 100), min_size=1, max_size=24), st.integers(1, 8))
def test_shares_are_contiguous_non_empty_and_near_the_mean(costs, workers):
    items = list(range(len(costs)))
    shares = balanced_shares(items, costs, workers)
    assert [i for share in shares for i in share] == items
    assert len(shares) == min(workers, len(items)) and all(shares)
    # Each cut lies within one item of its goal: no share exceeds the mean by more than
    # the two items on its edges.
    mean = sum(costs) / len(shares)
    assert max(sum(costs[i] for i in share) for share in shares) <= mean + 2 * max(costs)


def test_run_costs_count_the_frames_from_each_seeks_keyframe():
    # 10 s at 24 fps (ticks of 1/24 s), a keyframe every 24 frames; 4 targets at 1.25,
    # 3.75, 6.25 and 8.75 s: frames 30, 90, 150 and 210, each 6 or 18 past a keyframe.
    timing = StreamTiming(time_base=Fraction(1, 24), start_pts=0, duration_pts=240, container_consumed=False)
    keyframes = list(range(0, 240, 24))
    plan = plan_sampling(timing, 24.0, keyframes, 4, strategy="seek")
    runs = plan_runs(plan)
    assert plan.targets_pts == (30, 90, 150, 210)
    assert runs == [[0], [1], [2], [3]]
    costs = run_costs(plan, runs, keyframes, timing, 24.0)
    assert costs == [8 + 6 + 1, 8 + 18 + 1, 8 + 6 + 1, 8 + 18 + 1]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("threads", [0, 2, 3])
def test_threads_give_the_same_frames(videos, mode, threads):
    # A seeking read spreads its GOPs (keyframes) over `threads` containers: shares of 8 targets.
    single = SamplingOptions(mode=mode, threads=1)
    threaded = SamplingOptions(mode=mode, threads=threads)
    for name in ("long", "long_bframes", "vfr", "vfr_gop", "h264"):
        for strategy in ("auto", "seek"):
            one = read_frames(videos[name], 8, strategy=strategy, options=single)
            many = read_frames(videos[name], 8, strategy=strategy, options=threaded)
            np.testing.assert_array_equal(one.frames, many.frames)
            assert one.timestamps_s == many.timestamps_s


def test_seeking_reads_take_slice_threads_and_sequential_reads_frame_threads(videos):
    # Frame threads hold a frame per thread, which every seek flushes and refills.
    threaded = SamplingOptions(threads=0)
    for seeking, frame_threads in ((True, False), (False, True)):
        with av.open(str(videos["long"])) as container:
            stream = container.streams.video[0]
            assert _set_decoder_threads(stream, threaded, seeking=seeking) is frame_threads
            next(container.decode(stream))
            # FFmpeg fixes threads when the decoder opens: later calls report, never change.
            assert _set_decoder_threads(stream, threaded, seeking=not seeking) is frame_threads
    with av.open(str(videos["long"])) as container:
        stream = container.streams.video[0]
        assert not _set_decoder_threads(stream, SamplingOptions(threads=1), seeking=False)
        assert stream.thread_count == 1  # asked for: FFmpeg's default is slice threads, one a core


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("threads", [0, 1])
@pytest.mark.parametrize("strategy", ["sequential", "seek"])
def test_a_truncated_file_is_corrupt_with_or_without_threads(videos, mode, threads, strategy):
    # Frame threads make FFmpeg drop a damaged packet silently; the index check catches it.
    with pytest.raises(CorruptVideo, match="re-encode"):
        sample_frames(videos["truncated_faststart"], 8, strategy=strategy,
                      options=SamplingOptions(mode=mode, threads=threads))


def test_snap_to_keyframes_prefers_the_nearest_and_the_earlier_on_a_tie():
    assert snap_to_keyframes([5, 10, 16, 40], [0, 10, 20], 5) == (0, 10, 20, None)
    assert snap_to_keyframes([5], [], 5) == (None,)
    assert tolerance_ticks(1.0, segment_ticks=100, time_base=1 / 1000) == 50  # half a segment
    assert tolerance_ticks(0.01, segment_ticks=100, time_base=1 / 1000) == 10


def test_options_are_checked_and_keyed_by_what_changes_frames():
    with pytest.raises(ValueError, match=r"exact.*keyframe"):
        SamplingOptions(mode="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tolerance"):
        SamplingOptions(keyframe_tolerance_s=-1)
    assert SamplingOptions(threads=4).key() == SamplingOptions(threads=1).key() == "exact"
    assert SamplingOptions(mode="keyframe").key() != SamplingOptions(mode="keyframe", keyframe_tolerance_s=2).key()
