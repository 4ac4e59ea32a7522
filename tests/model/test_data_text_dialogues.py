"""Text-only dialogues for stage 0: each video given as its caption, answers that match it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from model.data.instructions import read_conversations
from model.data.questions import parse_caption
from model.data.shapes import WorldConfig
from model.data.text_dialogues import main, shown_as_text, text_dialogues

WORLD = WorldConfig()


def test_each_dialogue_shows_its_caption_once_and_answers_from_it() -> None:
    convs = list(text_dialogues(200, seed=3, world=WORLD))
    assert len(convs) == 200 and len({c.id for c in convs}) == 200
    two_object = 0
    for conv in convs:
        assert conv.videos == [] and all(m.videos == [] for m in conv.messages)
        first = conv.messages[0].content
        assert first.startswith("[")
        caption = first[1:first.index("]")]
        objects = parse_caption(caption)
        assert objects is not None, caption
        assert first.startswith(shown_as_text(caption))
        assert sum(m.content.startswith("[") for m in conv.messages) == 1
        two_object += len(objects) == 2
        words = {w for o in objects for w in (o.colour, o.shape)}
        for answer in (m.content for m in conv.messages if m.role == "assistant"):
            named = {w.strip(".;") for w in answer.lower().split()} & {
                "red", "green", "blue", "yellow", "white", "circle", "square", "triangle"}
            assert named <= words, (caption, answer)  # never an attribute the video lacks
    assert 50 < two_object < 150  # the world's 0.3 share, give or take


def test_same_seed_same_dialogues_and_share_is_honoured() -> None:
    a = [c.model_dump() for c in text_dialogues(20, seed=1, world=WORLD)]
    b = [c.model_dump() for c in text_dialogues(20, seed=1, world=WORLD)]
    assert a == b
    only_two = list(text_dialogues(30, seed=1, world=dataclasses.replace(WORLD, two_object_prob=1.0)))
    assert all(" and a " in c.messages[0].content.split("]")[0] for c in only_two)


def test_cli_writes_schema_valid_jsonl(tmp_path: Path) -> None:
    out = tmp_path / "text.jsonl"
    assert main(["--out", str(out), "--count", "12", "--seed", "0"]) == 0
    convs = read_conversations(out)  # validates every line against the schema
    assert len(convs) == 12 and {c.source for c in convs} == {"text_understanding"}
