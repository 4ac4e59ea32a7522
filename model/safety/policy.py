"""What the workers call: screen a turn, screen captions, and the words to answer with.

- `screen_user_turn`: before the LLM is asked (llm-worker). Flagged -> answer
  `refusal_message(category)` as the assistant reply and generate no video.
- `screen_captions`: on the captions extracted from a reply (llm-worker). Flagged -> do not
  enqueue that caption; put `withheld_notice(category)` in the reply instead.
- `screen_frames`: on an uploaded video's decoded frames (llm-worker), and before an MP4 is
  published (t2v-worker). An inactive checker (`verdict.active is False`) judged nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from model.safety.base import FrameChecker, SafetyVerdict
from model.safety.categories import get_category
from model.safety.decision import log_decision


class TextChecker(Protocol):
    """What screening needs of a text moderator (`model.safety.text.TextModerator`)."""

    def check(self, text: str, source: str = "text") -> SafetyVerdict: ...

    def check_many(self, texts: Sequence[str], source: str = "text") -> list[SafetyVerdict]: ...

_SUGGESTIONS: dict[str, str] = {
    "violence_gore": "I'm happy to help with something that doesn't depict harm to people or "
    "animals, for example an action scene without injuries or a historical overview.",
    "sexual": "I can help with romantic or non-explicit content instead.",
    "sexual_minors": "If you are worried about a child's safety, please contact local "
    "authorities or a child-protection hotline.",
    "self_harm": "If you are thinking about hurting yourself, please reach out to someone you "
    "trust or a crisis line (in the US you can call or text 988; elsewhere, your local "
    "emergency number). I'm glad to talk about ways to cope or to find support.",
    "hate_harassment": "I can help you write something respectful, or explain the history and "
    "harm of hateful content.",
    "weapons_illegal": "I can help with legal alternatives, safety information, or the history "
    "of the topic.",
}


def screen_user_turn(moderator: TextChecker, text: str) -> SafetyVerdict:
    return moderator.check(text, source="user_turn")


def screen_captions(moderator: TextChecker, captions: Sequence[str]) -> list[SafetyVerdict]:
    return moderator.check_many(list(captions), source="caption")


def screen_frames(checker: FrameChecker, frames: np.ndarray, source: str = "frames") -> SafetyVerdict:
    verdict = checker.check(frames)
    if not verdict.active:
        log_decision(source, verdict)  # active checkers log their own decisions
    return verdict


# The refusal's first word. The model's refusal dialogues teach this message, so whether a
# reply refuses is decided on its first token: "Sorry" is one token of SmolLM2's vocabulary,
# and none of the base's 1188 self-distilled chat answers opens with it. The older "I'm
# sorry, but I can't ..." shared "I'm sorry" with 48 of them ("I'm sorry to hear that"),
# which spread the decision over five tokens.
REFUSAL_OPENING = "Sorry, I can't help with this request"


def refusal_message(category: str) -> str:
    """A polite refusal naming the category in plain words, with what the user can do."""
    cat = get_category(category)
    return (
        f"{REFUSAL_OPENING} because it involves {cat.plain_name}. "
        f"{_SUGGESTIONS[cat.id]}"
    )


def withheld_notice(category: str) -> str:
    cat = get_category(category)
    return (
        f"(A video was withheld: its description was flagged for {cat.plain_name}, "
        "so it was not generated.)"
    )
