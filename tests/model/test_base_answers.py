"""The store of the base's answers (`model.data.base_answers`) and `data chat`'s use of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.data.base_answers import BaseAnswer, BaseAnswerStore, answers_key
from model.data.chat import ChatPrompt, distill

KEY_INPUTS = {"base": "smollm2-135m-instruct", "base_sha256": "ab" * 32, "system_prompt": "Be brief.",
              "max_new_tokens": 80}


@pytest.mark.parametrize("changed", [
    {"base": "other-base"}, {"base_sha256": "cd" * 32}, {"system_prompt": "Be verbose."}, {"max_new_tokens": 96},
])
def test_every_input_of_an_answer_names_a_different_file(changed: dict) -> None:
    assert answers_key(**KEY_INPUTS) == answers_key(**KEY_INPUTS)
    assert answers_key(**{**KEY_INPUTS, **changed}) != answers_key(**KEY_INPUTS)


def test_answers_survive_a_reopen_and_are_appended_once(tmp_path: Path) -> None:
    path = tmp_path / "answers" / "k.jsonl"
    store = BaseAnswerStore(path)
    assert len(store) == 0 and store.get("hi") is None
    store.add({"hi": BaseAnswer("Hello! How can I help?", "stop"), "tell me a story": BaseAnswer("Once", "length")})
    store.add({"hi": BaseAnswer("something else", "stop")})  # known already: neither kept nor written
    reopened = BaseAnswerStore(path)
    assert len(reopened) == 2
    assert reopened.get("hi") == BaseAnswer("Hello! How can I help?", "stop")
    assert reopened.get("tell me a story") == BaseAnswer("Once", "length")
    assert len(path.read_text().splitlines()) == 2


def test_a_damaged_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "k.jsonl"
    path.write_text('{"prompt": "hi", "text": "Hello there, friend.", "finish_reason": "stop"}\n{"prompt": "x"}\n')
    with pytest.raises(ValueError, match=r"k\.jsonl:2: .*delete the file"):
        BaseAnswerStore(path)


def test_distill_asks_the_base_only_what_the_store_lacks(tiny_model, tmp_path: Path) -> None:
    store = BaseAnswerStore(tmp_path / "k.jsonl")
    stored = "A stored answer that the tiny model would never write."
    store.add({"first prompt": BaseAnswer(stored, "stop")})
    prompts = [ChatPrompt("first prompt", "everyday:test"), ChatPrompt("second prompt", "everyday:test")]
    conversations, counts = distill(tiny_model, prompts, max_new_tokens=4, batch=2, progress=False, store=store)

    assert len(store) == 2  # the second prompt's answer was generated and kept
    generated = store.get("second prompt")
    assert generated is not None and generated.text != stored
    replies = {c.messages[0].content: c.messages[1].content for c in conversations}
    assert replies.get("first prompt") == stored  # from the store, not from the model
    assert sum(counts.values()) == 2

    again, _ = distill(tiny_model, prompts, max_new_tokens=4, batch=2, progress=False,
                       store=BaseAnswerStore(store.path))
    assert [c.model_dump() for c in again] == [c.model_dump() for c in conversations]


def test_a_store_that_cannot_be_written_keeps_answers_for_the_run(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the answers directory should be")
    store = BaseAnswerStore(blocker / "k.jsonl")
    store.add({"hi": BaseAnswer("Hello! How can I help?", "stop")})
    assert store.get("hi") == BaseAnswer("Hello! How can I help?", "stop")
    assert "--answers-dir" in caplog.text and not store.writable
