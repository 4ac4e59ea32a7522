"""The shapes world: deterministic, grammatical captions, and videos that show what they say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.data.questions import parse_caption, triples_of
from model.data.shapes import RGB, WorldConfig, generate_split, grid_position, main, read_records, sample_video
from model.video import sample_frames

CFG = WorldConfig()


def test_same_seed_same_video_and_other_seed_differs() -> None:
    a_rec, a_frames = sample_video(7, "train", 3, CFG)
    b_rec, b_frames = sample_video(7, "train", 3, CFG)
    c_rec, _ = sample_video(8, "train", 3, CFG)
    assert a_rec == b_rec
    assert np.array_equal(a_frames, b_frames)
    assert a_rec.model_dump(exclude={"id", "video"}) != c_rec.model_dump(exclude={"id", "video"})


def test_splits_draw_different_videos() -> None:
    train, _ = sample_video(0, "train", 0, CFG)
    test, _ = sample_video(0, "test", 0, CFG)
    assert train.objects != test.objects


@pytest.mark.parametrize("index", range(60))
def test_caption_follows_grammar_and_objects_stay_in_frame(index: int) -> None:
    record, frames = sample_video(1, "train", index, CFG)
    assert parse_caption(record.caption) == triples_of(record)
    assert frames.shape == (record.num_frames, CFG.size, CFG.size, 3)
    assert CFG.min_frames <= record.num_frames <= CFG.max_frames
    for obj in record.objects:
        for x, y in (obj.start, obj.end):
            assert obj.size <= x <= CFG.size - obj.size and obj.size <= y <= CFG.size - obj.size
        moved = np.subtract(obj.end, obj.start)
        assert (np.abs(moved).sum() == 0) == (obj.motion == "still")
    if len(record.objects) == 2:
        a, b = record.objects
        assert a.shape != b.shape and a.colour != b.colour
        # Named in shape order, whichever object was drawn first.
        named = [word for word in record.caption.split(";")[0].split() if word in ("circle", "square", "triangle")]
        assert named == sorted([a.shape, b.shape])


def _centroid(frame: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    distance = np.abs(frame.astype(int) - np.array(rgb)).sum(axis=-1)  # (H, W)
    ys, xs = np.nonzero(distance < 120)
    assert len(xs) > 5, "the object's colour is not visible in the decoded frame"
    return np.array([xs.mean(), ys.mean()])


def test_written_mp4_shows_the_caption(tmp_path: Path) -> None:
    cfg = WorldConfig(two_object_prob=0.0)
    jsonl = generate_split(tmp_path, "val", 6, seed=3, cfg=cfg, progress=False)
    records = list(read_records(jsonl))
    assert [r.id for r in records] == [f"shapes-val-{i:06d}" for i in range(6)]
    for record in records:
        frames = sample_frames(tmp_path / record.video, 8, size=cfg.size)  # decoded H.264
        obj = record.objects[0]
        first, last = _centroid(frames[0], RGB[obj.colour]), _centroid(frames[-1], RGB[obj.colour])
        dx, dy = last - first
        expected = {"left": dx < -5, "right": dx > 5, "up": dy < -5, "down": dy > 5,
                    "still": abs(dx) < 2 and abs(dy) < 2}
        assert expected[obj.motion], (record.caption, dx, dy)


def test_cli_writes_three_splits(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--train", "2", "--val", "1", "--test", "1", "--size", "32",
                 "--min-frames", "4", "--max-frames", "4"]) == 0
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        records = list(read_records(tmp_path / f"{split}.jsonl"))
        assert len(records) == n
        assert all((tmp_path / r.video).is_file() and r.width == 32 for r in records)


def test_frame_captions_name_objects_and_where_they_are() -> None:
    assert [grid_position(x, y) for x, y in ((0.1, 0.1), (0.5, 0.5), (0.9, 0.5), (0.5, 0.95))] == [
        "top left", "centre", "right", "bottom"]
    for index in range(30):
        record, _ = sample_video(2, "train", index, CFG)
        first, last = record.frame_caption(0, 8), record.frame_caption(7, 8)
        for obj in record.objects:
            assert f"a {obj.colour} {obj.shape} at the " in first
        if all(o.motion == "still" for o in record.objects):
            assert first == last


def test_cli_train_split_can_have_more_two_object_videos_than_held_out_splits(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--train", "6", "--val", "6", "--test", "6", "--size", "32",
                 "--min-frames", "4", "--max-frames", "4", "--two-object-prob", "0",
                 "--train-two-object-prob", "1", "--no-progress"]) == 0
    counts = {split: [len(r.objects) for r in read_records(tmp_path / f"{split}.jsonl")]
              for split in ("train", "val", "test")}
    assert counts["val"] == counts["test"] == [1] * 6
    assert counts["train"].count(2) >= 5  # a crowded draw may shrink to one object
    reference = tmp_path / "ref"
    assert main(["--out", str(reference), "--train", "1", "--val", "6", "--test", "6", "--size", "32",
                 "--min-frames", "4", "--max-frames", "4", "--two-object-prob", "0", "--no-progress"]) == 0
    assert (reference / "test.jsonl").read_text() == (tmp_path / "test.jsonl").read_text()


def test_cli_rejects_a_share_outside_zero_to_one(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--train-two-object-prob", "1.5"])
