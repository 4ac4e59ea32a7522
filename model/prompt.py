"""Render a conversation with the base LLM's own chat template into text segments and video slots.

A prompt is a list of `Segment`s: text (tokenised separately), a video slot (later
replaced by that video's `Nq` abstractor tokens), or the end-of-turn token. The text
comes from the tokenizer's `apply_chat_template`, so a SmolLM2, LLaMA-3 or any other
instruct base gets exactly the role markers it was tuned on. Each video's slot sits at
the start of its user turn; tokenising segment by segment keeps the slot boundaries
exact and tells the loss which tokens are assistant text.

How: the template is rendered once with sentinels (private-use characters no tokenizer
template alters) in place of each video and of each assistant reply; the rendered text
is split at the sentinels, and the real replies are put back as trainable segments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedTokenizerBase

from model.engine.base import Turn


class ChatTemplateError(ValueError):
    """The tokenizer has no chat template, or its template drops a message; the message says which."""


@dataclass(frozen=True)
class PromptConfig:
    # The checkpoint's system prompt, used when a conversation brings none; short, since
    # every training sequence carries it. Empty: the template's own default (if any).
    system: str = "You are GPT4Video, a video assistant."
    # Shown in `render_text` where a video's tokens go; never tokenised.
    video_placeholder: str = "<video_input>"


@dataclass(frozen=True)
class Segment:
    kind: Literal["text", "video", "eos"]
    text: str = ""
    video_id: str = ""
    trainable: bool = False  # counts towards the loss (assistant text and its end-of-turn token)


_VIDEO = "\ue000{}\ue001"
_REPLY = "\ue002{}\ue003"
_SENTINEL = re.compile("(\ue000\\d+\ue001|\ue002\\d+\ue003)")


def render(
    turns: Sequence[Turn], config: PromptConfig, tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool
) -> list[Segment]:
    """Turns -> segments. A leading system turn replaces the checkpoint's system prompt."""
    turns = list(turns)
    if getattr(tokenizer, "chat_template", None) is None:
        raise ChatTemplateError("the base LLM's tokenizer has no chat template; give it one (tokenizer.chat_template)")
    messages: list[dict[str, str]] = []
    if turns and turns[0].role == "system":
        messages.append({"role": "system", "content": turns.pop(0).content})
    elif config.system:
        messages.append({"role": "system", "content": config.system})
    videos: list[str] = []
    replies: list[str] = []
    for turn in turns:
        if turn.role == "system":
            raise ValueError("a system turn may only come first")
        if turn.role == "user":
            slots = "".join(_VIDEO.format(len(videos) + i) for i in range(len(turn.videos)))
            videos.extend(turn.videos)
            messages.append({"role": "user", "content": slots + turn.content})
        else:
            if turn.videos:
                raise ValueError("only user turns may carry videos")
            messages.append({"role": "assistant", "content": _REPLY.format(len(replies))})
            replies.append(turn.content)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    pieces = _SENTINEL.split(text)
    if len(pieces) != 2 * (len(videos) + len(replies)) + 1:
        raise ChatTemplateError("the chat template dropped or repeated a message; it cannot carry video slots")
    eos = tokenizer.eos_token or ""
    segments: list[Segment] = []
    after_reply = False
    for i, piece in enumerate(pieces):
        if i % 2:  # a sentinel
            index = int(piece[1:-1])
            if piece[0] == "\ue000":
                segments.append(Segment("video", video_id=videos[index]))
            else:
                segments.append(Segment("text", replies[index], trainable=True))
                after_reply = True
            continue
        if after_reply:
            # The reply's end-of-turn token is learnt (it stops decoding); templates that
            # do not close a reply with EOS get one, so training and decoding agree.
            segments.append(Segment("eos", trainable=True))
            if eos and piece.lstrip().startswith(eos):  # LLaMA-2 closes a reply with " </s>"
                piece = piece.lstrip()[len(eos):]
            after_reply = False
        segments.append(Segment("text", piece))
    return [s for s in segments if s.kind != "text" or s.text]


def render_text(segments: Sequence[Segment], config: PromptConfig, eos: str = "</s>") -> str:
    """Human-readable prompt, for logs and debugging."""
    parts = []
    for s in segments:
        parts.append(s.text if s.kind == "text" else eos if s.kind == "eos" else config.video_placeholder)
    return "".join(parts)
