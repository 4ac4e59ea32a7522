"""The pixel judge reads the shapes generator's own videos right (raw frames and H.264)."""

from __future__ import annotations

import numpy as np
import pytest

from model.data.shapes import ShapeObject
from model.t2v.data import sample_clip, world_for
from model.t2v.judge import judge_video, score
from model.video import sample_frames, write_mp4

CLIPS = 120


def _accuracy(size: int, through_mp4: bool, tmp_path) -> dict[int, np.ndarray]:
    world = world_for(size, 8)
    right = {1: [], 2: []}
    for i in range(CLIPS):
        clip = sample_clip("eval", 11, i, world)
        frames = clip.frames  # (T, S, S, 3)
        if through_mp4:
            path = write_mp4(frames, tmp_path / f"{i}.mp4", fps=8)
            frames = sample_frames(path, len(frames))  # every frame of an 8-frame clip
        verdict = score(clip.objects, judge_video(frames))
        right[len(clip.objects)].append([verdict.colour, verdict.shape, verdict.motion])
    return {k: np.mean(v, axis=0) for k, v in right.items()}


@pytest.mark.parametrize(("size", "through_mp4"), [(32, False), (32, True), (64, True)])
def test_pixel_judge_is_right_on_generator_videos(size: int, through_mp4: bool, tmp_path) -> None:
    accuracy = _accuracy(size, through_mp4, tmp_path)
    for objects, (colour, shape, motion) in accuracy.items():
        assert min(colour, shape, motion) >= 0.95, (objects, accuracy)


def test_pixel_judge_sees_a_wrong_video_as_wrong() -> None:
    clip = sample_clip("eval", 11, 0, world_for(32, 8))
    while len(clip.objects) != 1 or clip.objects[0].motion == "still":
        clip = sample_clip("eval", 11, int(np.random.default_rng(len(clip.caption)).integers(1, 10_000)),
                           world_for(32, 8))
    asked = clip.objects[0]
    other_shape = next(s for s in ("circle", "square", "triangle") if s != asked.shape)
    other_colour = next(c for c in ("red", "green", "blue") if c != asked.colour)
    wrong = ShapeObject(**{**asked.model_dump(), "shape": other_shape, "colour": other_colour, "motion": "still"})
    seen = judge_video(clip.frames)
    assert score([asked], seen).as_dict() == {"colour": True, "shape": True, "motion": True}
    assert score([wrong], seen).as_dict() == {"colour": False, "shape": False, "motion": False}
    assert score([asked], judge_video(np.zeros_like(clip.frames))).as_dict() == {
        "colour": False, "shape": False, "motion": False}
