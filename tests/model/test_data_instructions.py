"""The instruction-data builder: schema-valid conversations whose answers match the videos."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from model.data.grouping import GroupingConfig
from model.data.instructions import (
    BuilderConfig,
    CaptionFileError,
    build_conversations,
    build_file,
    read_caption_items,
    read_conversations,
)
from model.data.phrasings import phrasings
from model.data.questions import answer_is_correct, attribute_question, parse_caption
from model.data.schema import Conversation
from model.data.shapes import COLOURS, SHAPES, WorldConfig, generate_split, read_records
from model.data.writers import TemplateWriter, WriterError, parse_dialogue
from model.tags import parse_reply


class CaptionHashEncoder:
    """Deterministic stand-in for MiniLM where the test is not about similarity:
    identical captions get identical unit vectors, others near-orthogonal ones."""

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for t in texts:
            v = np.random.default_rng(abs(hash(t)) % 2**32).normal(size=64)
            out.append(v / np.linalg.norm(v))
        return np.array(out, dtype=np.float32)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    generate_split(root, "train", 24, seed=0, cfg=WorldConfig(size=32, min_frames=4, max_frames=6), progress=False)
    return root


def test_output_validates_and_covers_every_kind(shapes_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "conversations.jsonl"
    cfg = BuilderConfig(seed=0, group_threshold=-1.0, include_refusals=False)
    counts = build_file(shapes_dir / "train.jsonl", out, cfg, encoder=CaptionHashEncoder())
    lines = out.read_text().splitlines()
    assert len(lines) == sum(counts.values())
    convs = [Conversation.model_validate_json(line) for line in lines]  # the schema
    assert {c.source for c in convs} == {"understanding", "generation", "multi_video"}
    assert counts["understanding"] == 24 and counts["generation"] == 24
    assert len({c.id for c in convs}) == len(convs)
    for conv in convs:
        for video in conv.videos:  # relative to the output file
            assert (out.parent / video).resolve().is_file()


def test_answers_are_right_and_tags_only_where_asked(shapes_dir: Path) -> None:
    clips = phrasings().vocabulary["clip"].train
    describe_requests = {t.format(clip=c) for f in phrasings().questions["describe"]["any"] if f.split == "train"
                         for t in f.templates for c in clips}
    items = read_caption_items(shapes_dir / "train.jsonl", shapes_dir)
    by_video = {it.video: it.record for it in items}
    convs = list(build_conversations(items, BuilderConfig(include_refusals=False), TemplateWriter(), None))
    for conv in convs:
        for i, msg in enumerate(conv.messages):
            if msg.role != "assistant":
                continue
            request = conv.messages[i - 1].content
            tags = parse_reply(msg.content).captions
            if conv.source == "generation" or request.startswith("Now show me") or _names_all(request, tags):
                assert len(tags) == 1 and parse_caption(tags[0]) is not None
            else:
                assert tags == ()
            if conv.source == "understanding" and msg.content == by_video[conv.videos[0]].caption:
                asked = next((request[len(p):] for p in phrasings().follow_ups.train if p and request.startswith(p)),
                             request)
                assert asked in describe_requests  # a caption answers only a describe request
    # The answers a record gets are the ones the scorer accepts.
    rng = np.random.default_rng(0)
    for record in by_video.values():
        for attribute in ("shape", "colour", "motion", "count"):
            q = attribute_question(record, attribute, rng)
            assert answer_is_correct(q.answer, q)


def test_generation_reply_names_what_was_requested(shapes_dir: Path) -> None:
    items = read_caption_items(shapes_dir / "train.jsonl", shapes_dir)
    convs = [c for c in build_conversations(items, BuilderConfig(include_refusals=False), TemplateWriter(), None)
             if c.source == "generation"]
    for conv in convs:
        request, reply = conv.messages[0].content, conv.messages[1].content
        caption = parse_reply(reply).captions[0]
        for triple in parse_caption(caption):
            assert triple.colour in request and triple.shape in request
        # The tag copies the request's object order (a video's own caption uses shape order).
        assert _shapes_named(caption) == _shapes_named(request)
    orders = [_shapes_named(c.messages[0].content) for c in convs]
    assert any(len(o) == 2 and o != sorted(o) for o in orders), "grow the fixture: no out-of-order request"


def _names_all(request: str, tags: tuple[str, ...]) -> bool:
    """A request for a new video names every object of the one tag it gets."""
    triples = parse_caption(tags[0]) if len(tags) == 1 else None
    return bool(triples) and all(f"{t.colour} {t.shape}" in request for t in triples)


def test_a_new_video_request_inside_a_video_dialogue_comes_back_to_the_upload(shapes_dir: Path) -> None:
    items = read_caption_items(shapes_dir / "train.jsonl", shapes_dir)
    writer = TemplateWriter(min_rounds=1, max_rounds=3, interleaved_generation_prob=1.0, follow_up_generation_prob=0)
    rng = np.random.default_rng(0)
    prefixes = [p for p in phrasings().follow_ups.train if p]
    prefixed = 0
    for item in items:
        messages = writer.single_video(item, rng)
        assert [m.role for m in messages] == ["user", "assistant"] * (len(messages) // 2)
        request, reply = messages[2].content, messages[3].content
        tags = parse_reply(reply).captions
        assert messages[2].videos == [] and _names_all(request, tags)  # the new video is what was asked
        assert len(messages) >= 6  # at least one question about the upload comes after it
        after = messages[4].content
        assert not any(p in request for p in prefixes)
        prefixed += any(after.startswith(p) for p in prefixes)
        for answer in messages[5::2]:
            assert parse_reply(answer.content).captions == ()  # answered about the upload, not a new tag
    assert prefixed > 0


def _shapes_named(text: str) -> list[str]:
    """The objects a text introduces ("a red circle"), in order; "the circle" refers back to one."""
    return re.findall(rf"\ba (?:{'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b", text)


def test_same_seed_same_file(shapes_dir: Path, tmp_path: Path) -> None:
    cfg = BuilderConfig(seed=5, include_refusals=False)
    build_file(shapes_dir / "train.jsonl", tmp_path / "a.jsonl", cfg, encoder=CaptionHashEncoder())
    build_file(shapes_dir / "train.jsonl", tmp_path / "b.jsonl", cfg, encoder=CaptionHashEncoder())
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_multi_video_groups_identical_captions(tmp_path: Path) -> None:
    csv = tmp_path / "webvid.csv"
    csv.write_text("videoid,name,page_dir\n1,a dog runs on a beach,x\n2,a city street at night,x\n"
                   "3,a dog runs on a beach,x\n4,pasta boiling in a pot,x\n")
    items = read_caption_items(csv, tmp_path, video_dir=tmp_path / "clips")
    assert [it.video for it in items] == [f"clips/{i}.mp4" for i in range(1, 5)]
    cfg = BuilderConfig(include_refusals=False, generation_per_video=0.5, group_threshold=0.9)
    convs = list(build_conversations(items, cfg, TemplateWriter(), CaptionHashEncoder()))
    multi = [c for c in convs if c.source == "multi_video"]
    assert [c.videos for c in multi] == [["clips/1.mp4", "clips/3.mp4"]]
    assert multi[0].messages[0].videos == [0, 1]
    understanding = [c for c in convs if c.source == "understanding"]
    assert [c.messages[1].content for c in understanding] == [it.caption for it in items]
    assert len([c for c in convs if c.source == "generation"]) == 2


def test_bad_caption_files_fail_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("id,text\n1,hello\n")
    with pytest.raises(CaptionFileError, match="videoid"):
        read_caption_items(bad, tmp_path)
    with pytest.raises(CaptionFileError, match=r"\.jsonl"):
        read_caption_items(tmp_path / "x.txt", tmp_path)


def test_chat_endpoint_replies_are_parsed_and_checked() -> None:
    reply = '```json\n{"messages": [{"role": "user", "content": "What is it?"}, ' \
            '{"role": "assistant", "content": "A dog."}]}\n```'
    messages = parse_dialogue(reply, num_videos=2)
    assert [m.role for m in messages] == ["user", "assistant"] and messages[0].videos == [0, 1]
    for broken in ("not json", json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}),
                   json.dumps({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})):
        with pytest.raises(WriterError):
            parse_dialogue(broken, num_videos=1)


def test_grouping_config_reaches_the_grouper(shapes_dir: Path) -> None:
    items = read_caption_items(shapes_dir / "train.jsonl", shapes_dir)[:6]
    cfg = BuilderConfig(include_refusals=False, generation_per_video=0, group_top_k=2, group_threshold=-1.0)
    multi = [c for c in build_conversations(items, cfg, TemplateWriter(), CaptionHashEncoder())
             if c.source == "multi_video"]
    assert [len(c.videos) for c in multi] == [3, 3]
    assert GroupingConfig().top_k == BuilderConfig().group_top_k


def test_read_back(shapes_dir: Path, tmp_path: Path) -> None:
    build_file(shapes_dir / "train.jsonl", tmp_path / "c.jsonl", BuilderConfig(include_refusals=False))
    assert all(isinstance(c, Conversation) for c in read_conversations(tmp_path / "c.jsonl"))
    assert len(list(read_records(shapes_dir / "train.jsonl"))) == 24


def test_refusal_conversations_from_the_safety_helper_are_included(shapes_dir: Path) -> None:
    pytest.importorskip("model.safety.refusal_data")
    items = read_caption_items(shapes_dir / "train.jsonl", shapes_dir)[:2]
    cfg = BuilderConfig(generation_per_video=0, multi_video_max_groups=0, include_refusals=True)
    refusals = [c for c in build_conversations(items, cfg, TemplateWriter(), None) if c.source == "refusal"]
    assert refusals
    assert all(Conversation.model_validate(c.model_dump()) for c in refusals)
    assert any("can't help" in c.messages[-1].content for c in refusals)
