"""Refusal wording and the refusal conversations generated for model-side training."""

from __future__ import annotations

import json

import pytest

from model.data.schema import Conversation
from model.safety.categories import CATEGORY_IDS, UnknownCategoryError, get_category
from model.safety.data import load_prompts
from model.safety.policy import refusal_message, withheld_notice
from model.safety.refusal_data import main as build_refusal_data


@pytest.mark.parametrize("category", CATEGORY_IDS)
def test_refusal_and_notice_name_the_category_in_plain_words(category: str) -> None:
    plain = get_category(category).plain_name
    message = refusal_message(category)
    assert plain in message and "sorry" in message.lower()
    assert plain in withheld_notice(category) and "withheld" in withheld_notice(category)


def test_self_harm_refusal_points_to_help() -> None:
    assert "crisis line" in refusal_message("self_harm")


def test_unknown_category_is_rejected() -> None:
    with pytest.raises(UnknownCategoryError, match="known:"):
        refusal_message("spam")


def test_refusal_data_is_valid_and_uses_only_train_prompts(tmp_path, capsys) -> None:
    out = tmp_path / "refusal.jsonl"
    assert build_refusal_data(["--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    conversations = [Conversation.model_validate_json(x) for x in out.read_text().splitlines()]
    by_text = {p.text: p for p in load_prompts()}
    users = [c.messages[0].content for c in conversations]
    assert all(by_text[u].split == "train" for u in users)
    assert not {p.text for p in load_prompts(split="test")} & set(users)
    refusals = [c for c in conversations if by_text[c.messages[0].content].kind == "harmful"]
    helpful = [c for c in conversations if by_text[c.messages[0].content].kind != "harmful"]
    assert len(refusals) >= 200 and len(helpful) >= 100
    for c in refusals:
        assert c.messages[1].content == refusal_message(by_text[c.messages[0].content].label)
    assert all("can't help" not in c.messages[1].content for c in helpful)
    videos = [c for c in helpful if "<video>" in c.messages[1].content]
    assert videos and all(c.messages[1].content.endswith("</video>") for c in videos)
    assert all(c.source == "refusal" for c in conversations)
    assert len({json.dumps(c.model_dump()) for c in conversations}) == len(conversations)


def test_every_hand_written_lookalike_answer_belongs_to_a_request_seed_and_only_train_ones_are_taught(
        tmp_path) -> None:
    # lookalike_answers.json is keyed by seed text: a renamed seed would silently lose its answer.
    from model.safety.refusal_data import lookalike_answers

    seeds = {p.text: p for p in load_prompts()}
    for seed, answer in lookalike_answers().items():
        prompt = seeds.get(seed)
        assert prompt is not None, f"{seed!r} is no prompt of the set"
        assert (prompt.kind, prompt.style) == ("benign_lookalike", "request"), seed
        assert "can't help" not in answer
    out = tmp_path / "refusal.jsonl"
    assert build_refusal_data(["--out", str(out)]) == 0
    taught = {Conversation.model_validate_json(x).messages[1].content for x in out.read_text().splitlines()}
    for seed, answer in lookalike_answers().items():  # held-out seeds ("kill a stuck process") stay out
        assert (answer in taught) == (seeds[seed].split == "train"), seed
