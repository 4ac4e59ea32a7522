"""Render a conversation into text segments and video slots.

A prompt is a list of `Segment`s: text (tokenised separately) or a video slot (later
replaced by that video's `Nq` abstractor tokens). Tokenising segment by segment keeps
the placeholder boundaries exact and tells the loss which tokens are assistant text.
The template is data (`PromptConfig`, stored in the checkpoint), so a real LLaMA
checkpoint can use its own role markers without code changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from model.engine.base import Turn


@dataclass(frozen=True)
class PromptConfig:
    # The system prompt used when a conversation brings none.
    system: str = (
        "You are GPT4Video, a helpful assistant that understands videos and can create "
        "them. To show a video, write its caption inside <video></video> tags."
    )
    system_suffix: str = "\n\n"
    user_prefix: str = "USER: "
    user_suffix: str = "\n"
    assistant_prefix: str = "ASSISTANT: "
    # After the assistant text the tokenizer's EOS closes the turn (and stops decoding).
    assistant_suffix: str = "\n"
    # Shown in `render_text` where a video's tokens go; never tokenised.
    video_placeholder: str = "<video_input>"


@dataclass(frozen=True)
class Segment:
    kind: Literal["text", "video", "eos"]
    text: str = ""
    video_id: str = ""
    trainable: bool = False  # counts towards the loss (assistant text and its EOS)


def render(
    turns: Sequence[Turn], config: PromptConfig, add_generation_prompt: bool
) -> list[Segment]:
    """Turns -> segments. A leading system turn replaces the default system prompt."""
    segments: list[Segment] = []
    turns = list(turns)
    system = config.system
    if turns and turns[0].role == "system":
        system = turns.pop(0).content
    if system:
        segments.append(Segment("text", system + config.system_suffix))
    for turn in turns:
        if turn.role == "system":
            raise ValueError("a system turn may only come first")
        if turn.role == "user":
            segments.append(Segment("text", config.user_prefix))
            segments.extend(Segment("video", video_id=v) for v in turn.videos)
            segments.append(Segment("text", turn.content + config.user_suffix))
        else:
            if turn.videos:
                raise ValueError("only user turns may carry videos")
            segments.append(Segment("text", config.assistant_prefix))
            segments.append(Segment("text", turn.content, trainable=True))
            segments.append(Segment("eos", trainable=True))
            segments.append(Segment("text", config.assistant_suffix))
    if add_generation_prompt:
        segments.append(Segment("text", config.assistant_prefix))
    return [s for s in segments if s.kind != "text" or s.text]


def render_text(segments: Sequence[Segment], config: PromptConfig, eos: str = "</s>") -> str:
    """Human-readable prompt, for logs and debugging."""
    parts = []
    for s in segments:
        parts.append(s.text if s.kind == "text" else eos if s.kind == "eos" else config.video_placeholder)
    return "".join(parts)
