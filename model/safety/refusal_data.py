"""`gpt4video build-refusal-data`: refusal conversations in the instruction-data format.

From the TRAIN split of the moderation prompt set only (the test split stays held out for
`eval safety`):
- harmful request -> the assistant refuses with `refusal_message(category)`;
- benign look-alike, caption style ("a chef slices tomatoes with a knife") -> the assistant
  makes the video: a short reply with the tagged caption `<video>...</video>`;
- benign look-alike, request style -> a short helpful answer, for the requests that have a
  hand-written answer in `lookalike_answers.json` (others are skipped: no made-up answers).

Every conversation validates against `model.data.schema.Conversation`; `source="refusal"`.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from model.data.schema import Conversation, Message
from model.safety.data import PROMPTS_PATH, LabelledPrompt, load_prompts
from model.safety.policy import refusal_message

logger = logging.getLogger(__name__)

SOURCE = "refusal"

# Hand-written answers of request-style look-alike seeds: data, beside the prompt set.
LOOKALIKE_ANSWERS_PATH = PROMPTS_PATH.with_name("lookalike_answers.json")


@functools.cache
def lookalike_answers() -> dict[str, str]:
    """{seed request: its answer}, from `lookalike_answers.json`."""
    answers = json.loads(LOOKALIKE_ANSWERS_PATH.read_text(encoding="utf-8"))
    if not isinstance(answers, dict) or not all(isinstance(v, str) and v for v in answers.values()):
        raise ValueError(f"{LOOKALIKE_ANSWERS_PATH} must map each seed request to a non-empty answer")
    return answers


def _caption_seed(group: list[LabelledPrompt]) -> str:
    """The bare caption of a caption-style group: the variant contained in all others."""
    return min((p.text for p in group), key=len)


def _conversation_id(*parts: str) -> str:
    return "refusal-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _pair(id_: str, user: str, assistant: str) -> Conversation:
    return Conversation(
        id=id_, source=SOURCE,
        messages=[Message(role="user", content=user), Message(role="assistant", content=assistant)],
    )


def build_conversations(prompts: Iterable[LabelledPrompt]) -> list[Conversation]:
    groups: dict[str, list[LabelledPrompt]] = defaultdict(list)
    for prompt in prompts:
        if prompt.split != "train":
            continue  # the held-out split never becomes training data
        groups[prompt.group].append(prompt)
    conversations: list[Conversation] = []
    for group in groups.values():
        first = group[0]
        if first.kind == "harmful":
            conversations += [
                _pair(_conversation_id(p.text), p.text, refusal_message(p.label)) for p in group
            ]
        elif first.kind == "benign_lookalike" and first.style == "caption":
            caption = _caption_seed(group)
            reply = f"Sure, here is the video: <video>{caption}</video>"
            conversations += [_pair(_conversation_id(p.text), p.text, reply) for p in group]
        elif first.kind == "benign_lookalike" and _caption_seed(group) in lookalike_answers():
            answer = lookalike_answers()[_caption_seed(group)]
            conversations += [_pair(_conversation_id(p.text), p.text, answer) for p in group]
    return conversations


def write_jsonl(conversations: list[Conversation], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for conversation in conversations:
            f.write(conversation.model_dump_json() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gpt4video build-refusal-data",
        description="Write refusal / look-alike conversations (train split only) as JSONL.",
    )
    parser.add_argument("--prompts", type=Path, default=PROMPTS_PATH)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    conversations = build_conversations(load_prompts(args.prompts))
    write_jsonl(conversations, args.out)
    refusals = sum("can't help" in c.messages[-1].content for c in conversations)
    print(
        f"wrote {len(conversations)} conversations to {args.out} "
        f"({refusals} refusals, {len(conversations) - refusals} helpful look-alike replies)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
