"""Binding dialogues: both objects of every two-object video asked about by their other attributes."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from model.data.binding import BindingDataError, binding_dialogues, main
from model.data.instructions import read_caption_items, read_conversations
from model.data.shapes import COLOURS, MOTION_PHRASE, SHAPES, WorldConfig, generate_split, read_records

WORLD = WorldConfig(size=32, min_frames=4, max_frames=6, two_object_prob=0.6)


@pytest.fixture(scope="module")
def captions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("binding")
    return generate_split(root / "shapes", "train", 12, seed=2, cfg=WORLD, progress=False)


def _named(text: str, vocabulary: tuple[str, ...]) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower())) & set(vocabulary)


def test_cli_asks_every_two_object_video_about_both_bindings(captions: Path, tmp_path: Path) -> None:
    out = tmp_path / "binding.jsonl"
    assert main(["--captions", str(captions), "--out", str(out), "--per-video", "3", "--seed", "0"]) == 0
    convs = read_conversations(out)  # every line validates against the schema
    records = {(captions.parent / r.video).resolve(): r for r in read_records(captions)}
    two_object = {p for p, r in records.items() if len(r.objects) == 2}
    assert 0 < len(two_object) < len(records), "fixture: both kinds of video drawn"
    shown = Counter((out.parent / c.videos[0]).resolve() for c in convs)
    assert set(shown) == two_object and set(shown.values()) == {3}

    asked = Counter()
    for conv in convs:
        record = records[(out.parent / conv.videos[0]).resolve()]
        assert conv.source == "binding" and len(conv.videos) == 1
        assert conv.messages[0].videos == [0] and all(m.videos == [] for m in conv.messages[1:])
        assert 2 <= len(conv.messages) // 2 <= 4
        for question, answer in zip(conv.messages[::2], conv.messages[1::2], strict=True):
            assert question.role == "user" and answer.role == "assistant"
            colours = _named(question.content, COLOURS)
            if len(colours) == 1:  # "Which shape is red?": the red object's shape, nothing else
                (colour,) = colours
                (obj,) = [o for o in record.objects if o.colour == colour]
                assert _named(answer.content, SHAPES) == {obj.shape}, (question.content, answer.content)
                asked["shape"] += 1
                continue
            # "What colour is the triangle?", "Is the triangle red, green, blue or yellow?": by its shape
            (shape,) = _named(question.content, SHAPES)
            (obj,) = [o for o in record.objects if o.shape == shape]
            if _named(answer.content, COLOURS):  # "What colour is the triangle?": that object's colour
                assert _named(answer.content, COLOURS) == {obj.colour}, (question.content, answer.content)
                asked["colour"] += 1
            else:  # "How does the triangle move?": that object's motion, not the other's
                assert answer.content == f"The {obj.shape} {MOTION_PHRASE[obj.motion]}.", (question.content,
                                                                                          answer.content)
                asked["motion"] += 1
    assert asked["shape"] > 0 and asked["colour"] > 0 and asked["motion"] > 0


def test_same_seed_same_dialogues(captions: Path) -> None:
    items = read_caption_items(captions, captions.parent)
    first = [c.model_dump() for c in binding_dialogues(items, 2, seed=5)]
    assert first == [c.model_dump() for c in binding_dialogues(items, 2, seed=5)]
    assert first != [c.model_dump() for c in binding_dialogues(items, 2, seed=6)]


def test_captions_without_attributes_are_refused_with_what_to_pass(tmp_path: Path) -> None:
    csv = tmp_path / "webvid.csv"
    csv.write_text("videoid,name\n1,a dog runs\n")
    (tmp_path / "1.mp4").write_bytes(b"")
    with pytest.raises(BindingDataError, match=r"shapes \.jsonl"):
        list(binding_dialogues(read_caption_items(csv, tmp_path, tmp_path), 2, seed=0))
    with pytest.raises(SystemExit):
        main(["--captions", str(csv), "--out", str(tmp_path / "b.jsonl")])
