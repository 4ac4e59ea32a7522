"""The instruction-data format: one JSON object a line, validated by `Conversation`.

A conversation references its videos by position in `videos` (paths relative to the
data file, or video ids). A user message lists the indices of the videos it shows; the
prompt builder places one video placeholder per index before the message text.
Assistant messages may contain tagged captions (`<video>…</video>`) that ask the
service to generate a video.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    role: Role
    content: str
    videos: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _only_users_show_videos(self) -> Message:
        if self.videos and self.role != "user":
            raise ValueError("only user messages may reference videos")
        return self


class Conversation(BaseModel):
    id: str
    source: str = Field(description="which builder wrote it: understanding, generation, multi_video, refusal, ...")
    videos: list[str] = Field(default_factory=list)
    messages: list[Message] = Field(min_length=2)

    @model_validator(mode="after")
    def _check(self) -> Conversation:
        for message in self.messages:
            for index in message.videos:
                if not 0 <= index < len(self.videos):
                    raise ValueError(f"message references video {index}, only {len(self.videos)} listed")
        if not any(m.role == "assistant" for m in self.messages):
            raise ValueError("a conversation needs at least one assistant turn to train on")
        return self
