"""`gpt4video eval`: the scoring rules, and a run through the hf engine on a tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.data.phrasings import phrasings
from model.data.questions import AttributeQuestion, ObjectTriple, answer_is_correct, parse_caption
from model.data.shapes import WorldConfig, generate_split, read_records
from model.eval import shapes as shapes_eval
from model.tags import parse_reply


def held_out_families() -> set[str]:
    """Every held-out paraphrase family's name, questions and requests."""
    p = phrasings()
    groups = [*(g for by_count in p.questions.values() for g in by_count.values()), *p.requests.values()]
    return {f.family for group in groups for f in group if f.split == "test"}


def test_an_answer_must_name_only_the_expected_value() -> None:
    q = AttributeQuestion("colour", "What colour is the object?", "It is red.", "red")
    assert answer_is_correct("It is red.", q)
    assert not answer_is_correct("It is red or blue.", q)
    assert not answer_is_correct("It is a circle.", q)
    motion = AttributeQuestion("motion", "How does it move?", "It stays still.", "still")
    assert answer_is_correct("The circle stays still.", motion)
    assert not answer_is_correct("It moves up.", motion)


def test_caption_parser_reads_the_grammar_in_any_object_order() -> None:
    a = parse_caption("a blue square and a yellow triangle; the square moves up")
    b = parse_caption("A yellow triangle and a blue square; the square moves up.")
    assert a == b == frozenset({ObjectTriple("blue", "square", "up"), ObjectTriple("yellow", "triangle", "still")})
    assert parse_caption("a red circle moves to the left") == frozenset({ObjectTriple("red", "circle", "left")})
    for bad in ("a red circle", "a purple circle moves up", "a red circle and a blue circle; both stay still",
                "a red circle and a blue square; the triangle moves up", ""):
        assert parse_caption(bad) is None, bad


def test_generation_check_reads_the_tag() -> None:
    record_free = shapes_eval.build_requests([], Path("."), seed=0)
    assert record_free == []
    reply = parse_reply("Here is the video: <video>a green circle moves down</video>")
    assert parse_caption(reply.captions[0]) == frozenset({ObjectTriple("green", "circle", "down")})


@pytest.fixture(scope="module")
def test_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval-world")
    generate_split(root, "test", 3, seed=0, cfg=WorldConfig(size=32, min_frames=4, max_frames=4), progress=False)
    return root


def test_requests_cover_every_metric(test_split: Path) -> None:
    records = list(read_records(test_split / "test.jsonl"))
    scored = shapes_eval.build_requests(records, test_split, seed=0)
    assert [s.metric for s in scored].count("generation") == 3
    assert {s.metric for s in scored} == set(shapes_eval.METRICS)
    for s in scored:
        has_video = bool(s.request.turns[0].videos)
        assert has_video == (s.metric != "generation")
        for path in s.request.video_paths.values():
            assert Path(path).is_file()


def test_eval_runs_through_the_hf_engine(tiny_checkpoint_dir: Path, test_split: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    assert shapes_eval.main(["--checkpoint", str(tiny_checkpoint_dir), "--data", str(test_split),
                             "--limit", "2", "--json", str(out), "--no-progress", "--chat-limit", "3",
                             "--multi-turn", "2"]) == 0
    table = capsys.readouterr().out
    for metric in shapes_eval.METRICS:
        assert metric in table
    assert "held-out wording" in table and "seen wording" in table and "multi-turn" in table
    full = json.loads(out.read_text())
    # Text-only figures for the served model and for the base (adapter disabled).
    for who in ("model", "base"):
        for group in ("everyday", "harmful"):
            figures = full["chat"][who][group]
            assert figures["prompts"] == 3 and 0.0 <= figures["refused"] <= 1.0
    assert full["multi_turn"]["conversations"] == 2 and len(full["multi_turn"]["example"]["turns"]) == 6
    assert set(full["wording"]) == {"test", "train"}
    report = full["wording"]["test"]
    assert report["counts"] == {m: 2 for m in shapes_eval.METRICS}
    assert all(0.0 <= v <= 1.0 for v in report["accuracy"].values())
    # The per-object-count split adds up to the totals, and generation (no video) has none.
    records = list(read_records(test_split / "test.jsonl"))[:2]
    for metric in ("shape", "colour", "motion", "count", "caption"):
        split = report["by_objects"][metric]
        assert set(split) == {str(len(r.objects)) for r in records}
        assert sum(asked for _, asked in split.values()) == 2
        assert sum(correct for correct, _ in split.values()) == report["correct"][metric]
    assert "generation" not in report["by_objects"]
    # The per-family split adds up too, and held-out wording asks only held-out families.
    held_out = held_out_families()
    for metric in shapes_eval.METRICS:
        families = report["by_family"][metric]
        assert set(families) <= held_out
        assert sum(asked for _, asked in families.values()) == 2
        assert sum(correct for correct, _ in families.values()) == report["correct"][metric]
    assert "by paraphrase family" in table
    # An untrained model does not get everything right; the examples show its replies.
    assert report["examples"] and all("reply" in e for e in report["examples"])


def test_eval_measures_a_users_own_everyday_prompts_text_only(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text('{"text": "how do I boil an egg", "topic": "cooking"}\n\n{"text": "hi there"}\n')
    out = tmp_path / "report.json"
    assert shapes_eval.main(["--checkpoint", str(tiny_checkpoint_dir), "--limit", "0", "--everyday-file", str(prompts),
                             "--chat-limit", "5", "--no-base", "--json", str(out), "--no-progress"]) == 0
    full = json.loads(out.read_text())
    assert full["wording"] == {} and full["multi_turn"] == {}  # --limit 0: no videos made or asked about
    assert full["chat"]["model"]["everyday"]["prompts"] == 2  # the file's two prompts, not the held-out set
    assert full["chat"]["model"]["harmful"]["prompts"] == 5
    assert "base" not in full["chat"]


def test_a_malformed_prompt_file_names_its_line(tiny_checkpoint_dir: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "mine.jsonl"
    prompts.write_text('{"text": "fine"}\n{"prompt": "wrong key"}\n')
    with pytest.raises(ValueError, match=r"mine\.jsonl:2: expected a JSON object with a \"text\""):
        shapes_eval.main(["--checkpoint", str(tiny_checkpoint_dir), "--limit", "0", "--everyday-file", str(prompts),
                          "--no-base", "--no-progress"])
