"""OpenAI Chat Completions bodies (the subset this service serves), typed and bounded.

Requests follow OpenAI's field names; what the service cannot honour is rejected by name
(`extra="forbid"`, `n` only 1) rather than silently ignored. Two extras, both optional:
a `video_url` content part (vLLM's convention) and a top-level `video` object, the
parameters of the videos made from the reply's captions (the SDK's `extra_body`).

Responses carry OpenAI's fields plus one namespaced extra on the message (and on the last
stream chunk's delta), `gpt4video`: the generated videos' jobs with their status URLs,
withheld captions and a refusal's category. The plain SDK keeps it in `model_extra`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from app.schemas import MaxNewTokens, SafetyInfo, SamplingFields, Seed, Temperature, TopP, Usage, VideoJobRef
from model.t2v_request import VideoParams, json_int

VIDEO_URL_SCHEME = "gpt4video://videos/"
VIDEO_URL_PATTERN = r"^(gpt4video://videos/[0-9a-f]{64}|data:video/[\w.+-]+;base64,[A-Za-z0-9+/]*={0,2})$"
FinishReason = Literal["stop", "length", "content_filter"]


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class VideoURL(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    # The pattern is documentation; `app.openai_api.video_parts` checks it and says what to send.
    url: str = Field(description=f"`{VIDEO_URL_SCHEME}<id>` (an id from POST /v1/videos) or "
                                 "`data:video/mp4;base64,...` (checked and stored like an upload)",
                     json_schema_extra={"pattern": VIDEO_URL_PATTERN})


class VideoPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["video_url"]
    video_url: VideoURL


ContentPart = Annotated[TextPart | VideoPart, Field(discriminator="type")]


class EarlierVideo(BaseModel):
    """One video of an earlier reply, as its `gpt4video.videos` listed it; only the caption
    is read (its job fields may come along)."""

    model_config = ConfigDict(extra="allow", strict=True)
    caption: str


class EarlierReply(BaseModel):
    """An earlier reply's `gpt4video` field, sent back with its message (as the SDK does
    with `messages.append(choice.message)`): its captions put the caption tags back where
    the message's `[video:N]` markers stand, so the model reads its own turn."""

    model_config = ConfigDict(extra="allow", strict=True)
    videos: list[EarlierVideo] = Field(default_factory=list, max_length=8)


class MessageFields(BaseModel):
    """A message without its length bounds (see `openai_schemas`)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = Field(default=None, description="accepted, not used")
    refusal: str | None = Field(default=None, description="an earlier reply's; accepted, not used")
    gpt4video: EarlierReply | None = Field(default=None, description="an earlier reply's (assistant messages)")

    @field_validator("content", mode="before")
    @classmethod
    def _known_parts(cls, value: object) -> object:
        """Name an unsupported part type plainly (pydantic would list both union branches)."""
        if isinstance(value, list):
            for part in value:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in ("text", "video_url"):
                    raise ValueError(f"content part type {kind!r} is not supported; send 'text' or 'video_url' parts")
        return value


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class ChatCompletionFields(BaseModel):
    """A request without its conversation bounds (see `openai_schemas`)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str = Field(description="the id GET /v1/models lists (SERVED_MODEL_NAME)")
    messages: list[MessageFields]
    max_completion_tokens: MaxNewTokens | None = None  # type: ignore[valid-type]
    max_tokens: MaxNewTokens | None = None  # type: ignore[valid-type]
    temperature: Temperature = 1.0  # type: ignore[valid-type]
    top_p: TopP = 1.0  # type: ignore[valid-type]
    seed: Seed | None = None  # type: ignore[valid-type]
    stop: str | list[str] | None = Field(default=None, description="at most 4 sequences")
    n: json_int(1, 1) = Field(default=1, description="only 1")  # type: ignore[valid-type]
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, description="accepted, not used")
    video: VideoParams = Field(default_factory=VideoParams,
                               description="gpt4video extra: parameters of the videos made from the reply")

    def stop_list(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def to_sampling(self, default_max_tokens: int) -> SamplingFields:
        """The native sampling fields (a ValidationError names a bad `stop`)."""
        return SamplingFields(max_new_tokens=self.max_completion_tokens or self.max_tokens or default_max_tokens,
                              temperature=self.temperature, top_p=self.top_p, seed=self.seed, stop=self.stop_list())


@lru_cache(maxsize=8)
def openai_schemas(max_prompt_chars: int, max_messages: int, max_new_tokens: int,
                   served_model: str) -> type[ChatCompletionFields]:
    """The request model bounded by MAX_PROMPT_CHARS (a string content or text part),
    MAX_MESSAGES and MAX_NEW_TOKENS_LIMIT, naming the served model; a message's joined text
    parts are checked again on conversion."""
    text_part = create_model("ChatCompletionTextPart", __base__=TextPart,
                             text=(str, Field(max_length=max_prompt_chars)))
    part = Annotated[text_part | VideoPart, Field(discriminator="type")]
    message = create_model(
        "ChatCompletionMessageParam", __base__=MessageFields,
        content=(Annotated[str, Field(max_length=max_prompt_chars)] | list[part],
                 Field(description="a string, or text and video_url parts")),
    )
    return create_model(
        "ChatCompletionRequest", __base__=ChatCompletionFields,
        messages=(list[message], Field(min_length=1, max_length=max_messages)),
        # the one id served; another is answered 404 model_not_found, as OpenAI does
        model=(str, Field(description="the id GET /v1/models lists (SERVED_MODEL_NAME)",
                          json_schema_extra={"enum": [served_model]})),
        max_completion_tokens=(json_int(1, max_new_tokens) | None, None),
        max_tokens=(json_int(1, max_new_tokens) | None, Field(default=None, description="used when "
                                                                                       "max_completion_tokens is not")),
    )


# --- responses -----------------------------------------------------------------------


class Gpt4VideoExtra(BaseModel):
    """The message's `gpt4video` field: what OpenAI's schema has no place for."""

    videos: list[VideoJobRef] = Field(default_factory=list,
                                      description="a job per caption in the reply; poll status_url")
    withheld: list[SafetyInfo] = Field(default_factory=list, description="captions blocked by the safety policy")
    refusal: SafetyInfo | None = Field(default=None, description="the user turn was refused (finish_reason "
                                                                 "content_filter)")


class CompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None
    gpt4video: Gpt4VideoExtra


class Choice(BaseModel):
    index: int = 0
    message: CompletionMessage
    finish_reason: FinishReason
    logprobs: None = None


class CompletionUsage(Usage):
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: str | None = None


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    gpt4video: Gpt4VideoExtra | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gpt4video"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error shape, on the OpenAI-compatible routes only."""

    error: OpenAIErrorBody
