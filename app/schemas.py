"""Typed request and response bodies. Requests carry their bounds and convert themselves
into the wire/engine parameters.

Bounds have one source each: conversation limits come from `Settings` (`chat_schemas`
builds the bounded message and request models for them), video fields are
`model.t2v_request.VideoParams` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from gpt4video import llm_protocol as wire
from gpt4video.jobs import JobStatus
from gpt4video.settings import Settings
from model.t2v_request import MAX_SEED, VideoParams, json_int

VIDEO_ID_PATTERN = r"^[0-9a-f]{64}$"


MaxNewTokens = json_int(1, 2048)
Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
# 2**53 - 1: exact in every JSON parser (a float past it is not); the engines take 63 bits.
Seed = json_int(0, 2**53 - 1)


class SamplingFields(BaseModel):
    max_new_tokens: MaxNewTokens = 128  # type: ignore[valid-type]
    temperature: Temperature = 0.0
    top_p: TopP = 1.0
    seed: Seed | None = None  # type: ignore[valid-type]
    stop: list[str] = Field(default_factory=list, max_length=4)

    def to_wire(self) -> wire.WireSampling:
        return wire.WireSampling(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                 top_p=self.top_p, seed=self.seed, stop=[s for s in self.stop if s])


class ChatMessageFields(BaseModel):
    """A message without its length bound (see `chat_schemas`)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as the schema says: no "1" for 1
    role: Literal["system", "user", "assistant"]
    content: str
    videos: list[str] = Field(default_factory=list, max_length=8,
                              description="ids returned by POST /v1/videos (user messages only)")
    captions: list[str] = Field(default_factory=list, max_length=8,
                                description="assistant messages only: the captions its [video:N] markers stand "
                                            "for, as the reply's `message` gave them (send it back as it came)")


class ChatRequestFields(SamplingFields):
    """A chat request without its conversation bounds (see `chat_schemas`)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    messages: list[ChatMessageFields]
    stream: bool = False
    video: VideoParams = Field(default_factory=VideoParams,
                               description=f"for the videos made from the reply's captions; seed 0..{MAX_SEED}")


@dataclass(frozen=True)
class ChatSchemas:
    message: type[ChatMessageFields]
    request: type[ChatRequestFields]


def chat_schemas(settings: Settings) -> ChatSchemas:
    """The message and request models bounded by MAX_PROMPT_CHARS, MAX_MESSAGES and
    MAX_NEW_TOKENS_LIMIT."""
    return _chat_schemas(settings.max_prompt_chars, settings.max_messages, settings.max_new_tokens_limit)


@lru_cache(maxsize=8)
def _chat_schemas(max_prompt_chars: int, max_messages: int, max_new_tokens: int) -> ChatSchemas:
    message = create_model(
        "ChatMessage", __base__=ChatMessageFields,
        content=(str, Field(max_length=max_prompt_chars, description="at most MAX_PROMPT_CHARS characters")),
    )
    request = create_model(
        "ChatRequest", __base__=ChatRequestFields,
        messages=(list[message], Field(min_length=1, max_length=max_messages,
                                       description="at most MAX_MESSAGES messages")),
        max_new_tokens=(json_int(1, max_new_tokens), Field(default=min(128, max_new_tokens),
                                                           description="at most MAX_NEW_TOKENS_LIMIT")),
    )
    return ChatSchemas(message=message, request=request)


class VideoJobRef(BaseModel):
    caption: str
    job_id: str
    status: JobStatus
    status_url: str


class SafetyInfo(BaseModel):
    category: str
    score: float


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    captions: list[str] = Field(default_factory=list,
                                description="what the content's [video:N] markers stand for; a later request "
                                            "that sends this message back in its history keeps them")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class ChatResponse(BaseModel):
    id: str
    message: AssistantMessage
    captions: list[str]
    videos: list[VideoJobRef]
    withheld: list[SafetyInfo] = Field(default_factory=list, description="captions blocked by the safety policy")
    refusal: SafetyInfo | None = None
    finish_reason: str
    usage: Usage


class VideoInfoOut(BaseModel):
    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    frame_count: int | None


class VideoUploadResponse(BaseModel):
    id: str
    bytes: int
    info: VideoInfoOut
    created: bool = Field(description="false when the same bytes were already stored")


class JobProgress(BaseModel):
    step: int
    total: int


class JobVideoResult(BaseModel):
    url: str
    caption: str
    frames: int
    fps: float
    duration_s: float
    width: int | None = None
    height: int | None = None
    seed: int | None = None


class JobError(BaseModel):
    type: str
    message: str
    code: str


class JobResponse(BaseModel):
    id: str
    status: JobStatus
    caption: str
    progress: JobProgress
    result: JobVideoResult | None = None
    error: JobError | None = None
    created_at: float
    updated_at: float
