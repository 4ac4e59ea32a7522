"""The everyday chat prompt set (`model/data/everyday_prompts.jsonl`): well-formed, split, and free of video requests.

Train prompts are answered by the frozen base LLM (self-distillation, so fine-tuning keeps plain chat); test
prompts are held out to measure the refusal rate and the rate of unrequested video tags. Every line must
validate, no text may repeat, the test split must not be reworded train prompts, and no prompt may ask the
assistant to make a video: the model should answer them all in words.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

PROMPTS_PATH = Path(__file__).resolve().parents[2] / "model" / "data" / "everyday_prompts.jsonl"

SPLITS = frozenset({"train", "test"})
TOPICS = frozenset(
    {
        "greeting",
        "smalltalk",
        "general_knowledge",
        "how_to",
        "tech",
        "writing",
        "math",
        "advice",
        "definitions",
        "recommendations",
        "video_talk",
    }
)
MAX_WORDS = 40
MIN_TEST = 80

# A request to produce a video: a making verb (its bare, imperative form: "makes" in "what makes a good video
# thumbnail?" is a question) followed closely by a video word, or a video word then a generating verb.
_VERB = r"(?:show|make|generate|create|render|produce|animate|film|draw)"
_MEDIA = r"(?:videos?|clips?|animations?|animated|gifs?|footage|movies?|cartoons?)"
VIDEO_REQUEST = re.compile(
    rf"\b{_VERB}\b(?:\W+\w+){{0,5}}?\W+{_MEDIA}\b|\b{_MEDIA}\b(?:\W+\w+){{0,8}}?\W+(?:generate|render|animate|make|create)\b",
    re.IGNORECASE,
)

_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    re.findall(
        r"\w+",
        "a an the of to in on at for by with from and or but is are was were be it its this that these those what "
        "whats which who how why when where do does did can could should would will i me my you your u we our s "
        "mean means meaning stand any some",
    )
)


def content_words(text: str) -> set[str]:
    """The words that carry a prompt's subject: two prompts sharing most of them are rewordings of one another."""
    return set(_WORD.findall(text.lower())) - _STOP


def problems(line: str) -> list[str]:
    """What is wrong with one JSONL line (empty when it is a valid record)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return [f"not JSON: {exc}"]
    if not isinstance(record, dict):
        return ["not a JSON object"]
    found = []
    if set(record) != {"text", "split", "topic"}:
        found.append(f"keys {sorted(record)} are not exactly text, split, topic")
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        found.append("text is empty or not a string")
    else:
        if text != text.strip():
            found.append("text has leading or trailing whitespace")
        if len(text.split()) > MAX_WORDS:
            found.append(f"text is longer than {MAX_WORDS} words")
        if VIDEO_REQUEST.search(text):
            found.append("text asks for a video")
    if record.get("split") not in SPLITS:
        found.append(f"split {record.get('split')!r} not in {sorted(SPLITS)}")
    if record.get("topic") not in TOPICS:
        found.append(f"topic {record.get('topic')!r} not in the allowed set")
    return found


def load() -> list[dict]:
    lines = PROMPTS_PATH.read_text(encoding="utf-8").splitlines()
    bad = {n: p for n, line in enumerate(lines, 1) if (p := problems(line))}
    assert not bad, f"invalid lines in {PROMPTS_PATH.name}: {bad}"
    return [json.loads(line) for line in lines]


def test_every_line_is_a_valid_record():
    assert load()


def test_no_duplicate_texts():
    counts = Counter(" ".join(r["text"].lower().split()) for r in load())
    dupes = [t for t, n in counts.items() if n > 1]
    assert not dupes, f"duplicate texts (case-insensitive): {dupes}"


def test_both_splits_and_enough_test_prompts():
    splits = Counter(r["split"] for r in load())
    assert splits["train"] > 0
    assert splits["test"] >= MIN_TEST


def test_every_topic_in_train_and_test():
    records = load()
    for split in SPLITS:
        assert {r["topic"] for r in records if r["split"] == split} == TOPICS, split


def test_video_talk_is_represented_in_both_splits():
    topics = Counter((r["split"], r["topic"]) for r in load())
    assert topics["train", "video_talk"] >= 10
    assert topics["test", "video_talk"] >= 8


def test_test_prompts_are_not_reworded_train_prompts():
    records = load()
    train = [content_words(r["text"]) for r in records if r["split"] == "train"]
    close = []
    for r in records:
        if r["split"] != "test":
            continue
        mine = content_words(r["text"])
        for other in train:
            if mine and len(mine & other) / len(mine | other) >= 0.6:
                close.append(r["text"])
                break
    assert not close, f"test prompts too close to train prompts: {close}"


@pytest.mark.parametrize(
    "text",
    [
        "generate a video of a cat surfing",
        "Show me a clip of fireworks over Paris",
        "can you make me a short animation of a bouncing ball",
        "create a 10 second video about the ocean",
        "render an animated logo for my shop",
        "a video of a dog running on the beach, generate it please",
    ],
)
def test_video_requests_are_caught(text):
    line = json.dumps({"text": text, "split": "test", "topic": "smalltalk"})
    assert "text asks for a video" in problems(line)


@pytest.mark.parametrize(
    "line",
    [
        '{"text": "", "split": "train", "topic": "greeting"}',
        '{"text": "hi", "split": "dev", "topic": "greeting"}',
        '{"text": "hi", "split": "train", "topic": "weather"}',
        '{"text": "hi", "split": "train"}',
        '{"text": "hi", "split": "train", "topic": "greeting", "extra": 1}',
        '{"text": 3, "split": "train", "topic": "greeting"}',
        "not json",
        '["hi", "train", "greeting"]',
    ],
)
def test_bad_lines_are_rejected(line):
    assert problems(line)


@pytest.mark.parametrize(
    "text",
    [
        "how do i kill a process in linux",
        "what makes a good video thumbnail?",
        "how do I edit a video on my phone?",
        "make this sentence sound more professional",
    ],
)
def test_benign_prompts_pass(text):
    assert not problems(json.dumps({"text": text, "split": "train", "topic": "tech"}))


BLIND_PATH = Path(__file__).resolve().parents[2] / "model" / "eval" / "everyday_blind.jsonl"


def test_the_blind_everyday_set_is_clean_held_out_and_asks_for_no_video():
    # Written by a session that saw none of the project's files (README: the blind everyday set):
    # `gpt4video eval --everyday-file` reads it. Its topics are free-form; the rest holds as above.
    rows = [json.loads(line) for line in BLIND_PATH.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(rows) >= 100
    assert all(set(r) == {"text", "split", "topic"} and r["split"] == "test" and r["text"].strip() for r in rows)
    assert not [r["text"] for r in rows if VIDEO_REQUEST.search(r["text"])]
    assert len({" ".join(r["text"].lower().split()) for r in rows}) == len(rows)
