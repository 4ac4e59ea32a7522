"""Output moderation of a reply's captions: the whole reply (`moderate_reply`) and a reply
while it streams (`StreamModerator`).

A flagged caption is dropped (never queued, never shown): its `[video:N]` marker becomes
`withheld_notice(category)` and the markers after it are renumbered. A streamed reply is
held to the same rule before it leaves the worker: its deltas are the moderated text, so
no caption reaches a client before the moderator has judged it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence

from gpt4video import llm_protocol as wire
from model.engine.base import FailureCode, GenerationResult
from model.safety.base import SafetyVerdict
from model.safety.policy import TextChecker, screen_captions, withheld_notice
from model.tags import parse_reply

log = logging.getLogger("gpt4video.llm_worker")

_ALLOWED = SafetyVerdict(flagged=False)
_TAG = re.compile(r"<(/?)video(\d*)\s*>", re.IGNORECASE)  # as model.tags reads them
# The start of a caption tag whose end has not been decoded yet ("<", "<vi", "</video1 ").
_TAG_PREFIX = re.compile(r"</?(?:v(?:i(?:d(?:e(?:o\d*\s*)?)?)?)?)?", re.IGNORECASE)


def apply_verdicts(text: str, captions: Sequence[str], verdicts: Sequence[SafetyVerdict]
                   ) -> tuple[str, list[str], list[wire.SafetyHit]]:
    """The parsed text with each flagged caption's marker replaced by the withheld notice
    and the others renumbered; the kept captions; what was withheld."""
    kept: list[str] = []
    withheld: list[wire.SafetyHit] = []
    for index, (caption, verdict) in enumerate(zip(captions, verdicts, strict=True)):
        marker = f"[video:{index}]"
        if verdict.flagged and verdict.category:
            withheld.append(wire.SafetyHit(category=verdict.category, score=verdict.score))
            text = text.replace(marker, withheld_notice(verdict.category))
        else:
            text = text.replace(marker, f"[video:{len(kept)}]")
            kept.append(caption)
    return text, kept, withheld


def moderate_reply(
    req: wire.LLMRequest, result: GenerationResult, moderator: TextChecker | None, worker: str,
    known: Mapping[str, SafetyVerdict] | None = None,
) -> wire.LLMReply:
    """Drop captions the moderator flags; the text says which video was withheld and why.
    `known`: verdicts already given (a `StreamModerator`'s), so a streamed caption is judged
    once and the reply says what the stream said."""
    if result.finish_reason == "error":
        return wire.LLMReply.failure(req.id, result.error_code or FailureCode.ENGINE_ERROR,
                                     result.error or "generation failed", worker)
    verdicts = _judge(moderator, result.captions, dict(known or {}))
    text, captions, withheld = apply_verdicts(result.text, result.captions, verdicts)
    return wire.LLMReply(
        id=req.id, status="ok", text=text, raw_text=result.raw_text, captions=captions,
        withheld=withheld, finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens, worker=worker,
    )


def _judge(moderator: TextChecker | None, captions: Sequence[str], known: dict[str, SafetyVerdict]
           ) -> list[SafetyVerdict]:
    if moderator is None:
        return [_ALLOWED] * len(captions)
    new = [c for c in dict.fromkeys(captions) if c not in known]
    if new:
        known.update(zip(new, screen_captions(moderator, new), strict=True))
    return [known[c] for c in captions]


def settled_length(raw: str) -> int:
    """How much of the raw reply can be shown now: all of it, except an open caption (up to
    its end, which has not been decoded yet) or a trailing '<' that may start a tag."""
    depth, opened, end = 0, 0, 0
    for match in _TAG.finditer(raw):
        if match.group(1) != "/":
            if depth == 0:
                opened = match.start()
            depth += 1
        elif depth:
            depth -= 1
        end = match.end()
    if depth:
        return opened
    lt = raw.rfind("<", end)
    if lt >= 0 and _TAG_PREFIX.fullmatch(raw, lt):
        return lt
    return len(raw)


class StreamModerator:
    """Raw deltas in, deltas of the moderated reply out.

    Text outside caption tags goes out as it comes (tidied as
    `model.tags.parse_reply` does, so each delta extends what the final reply says); a
    caption is held until its tag closes, judged, and goes out as its `[video:N]` marker or
    the withheld notice. What is still held when decoding ends (a caption cut by the token
    limit) comes with the final reply. `verdicts` are reused by `moderate_reply`."""

    def __init__(self, moderator: TextChecker | None) -> None:
        self.moderator = moderator
        self.raw = ""
        self.sent = ""
        self.verdicts: dict[str, SafetyVerdict] = {}

    def feed(self, delta: str) -> str:
        self.raw += delta
        parsed = parse_reply(self.raw[:settled_length(self.raw)])
        verdicts = _judge(self.moderator, parsed.captions, self.verdicts)
        text, _, _ = apply_verdicts(parsed.text, parsed.captions, verdicts)
        if not text.startswith(self.sent):  # parse_reply only extends a settled prefix; this would be a bug
            log.warning("moderated stream text %r no longer extends %r; holding it", text[:80], self.sent[:80])
            return ""
        new, self.sent = text[len(self.sent):], text
        return new
