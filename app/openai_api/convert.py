"""OpenAI request -> the native chat service's messages and sampling; its ChatResponse ->
an OpenAI ChatCompletion. Nothing here talks to Redis except through `video_id_for`."""

from __future__ import annotations

import time

from pydantic import ValidationError

from app.errors import BadRequest, NotFound
from app.openai_api.schemas import (
    ChatCompletion,
    ChatCompletionFields,
    Choice,
    CompletionMessage,
    CompletionUsage,
    FinishReason,
    Gpt4VideoExtra,
    MessageFields,
    TextPart,
)
from app.openai_api.video_parts import video_id_for
from app.schemas import ChatMessageFields, ChatResponse, SamplingFields, chat_schemas
from app.services.chat import ChatContext


class InvalidParam(BadRequest):
    """A 400 that names the request field at fault (OpenAI's `param`)."""

    def __init__(self, message: str, param: str, code: str = "invalid_value") -> None:
        super().__init__(message, code)
        self.param = param


def check_model(model: str, served: str) -> None:
    if model != served:
        raise NotFound(f"the model {model!r} is not served here; use {served!r} (GET /v1/models)",
                       "model_not_found")


def to_sampling(body: ChatCompletionFields, max_new_tokens_limit: int) -> SamplingFields:
    """OpenAI's sampling fields; without max_tokens a reply may have 128 tokens (or the limit)."""
    try:
        return body.to_sampling(min(128, max_new_tokens_limit))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidParam(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", "stop") from None


async def to_messages(body: ChatCompletionFields, ctx: ChatContext) -> list[ChatMessageFields]:
    """Each message as the native service takes it: text parts joined by newlines, video
    parts stored or resolved into video ids (the model sees them at the turn's start), an
    earlier reply's captions from its `gpt4video` field."""
    message_model = chat_schemas(ctx.settings).message
    out = []
    for i, m in enumerate(body.messages):
        text, videos = await _flatten(m, ctx)
        captions = [v.caption for v in m.gpt4video.videos] if m.gpt4video else []
        try:
            out.append(message_model(role="system" if m.role == "developer" else m.role, content=text,
                                      videos=videos, captions=captions))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidParam(f"messages[{i}].{'.'.join(map(str, err['loc']))}: {err['msg']}",
                               f"messages.{i}.content") from None
    return out


async def _flatten(message: MessageFields, ctx: ChatContext) -> tuple[str, list[str]]:
    if isinstance(message.content, str):
        return message.content, []
    texts = [p.text for p in message.content if isinstance(p, TextPart)]
    videos = [await video_id_for(p.video_url.url, ctx) for p in message.content if not isinstance(p, TextPart)]
    return "\n".join(texts), videos


def extra_of(response: ChatResponse) -> Gpt4VideoExtra:
    return Gpt4VideoExtra(videos=response.videos, withheld=response.withheld, refusal=response.refusal)


def finish_reason(response: ChatResponse) -> FinishReason:
    """A refused user turn is OpenAI's `content_filter`; an engine's other reasons are
    `stop` or `length` already."""
    if response.refusal is not None:
        return "content_filter"
    return "length" if response.finish_reason == "length" else "stop"


def usage_of(response: ChatResponse) -> CompletionUsage:
    u = response.usage
    return CompletionUsage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                           total_tokens=u.prompt_tokens + u.completion_tokens)


def to_completion(response: ChatResponse, model: str) -> ChatCompletion:
    content = response.message.content
    message = CompletionMessage(content=content, refusal=content if response.refusal else None,
                                gpt4video=extra_of(response))
    return ChatCompletion(id=completion_id(response.id), created=int(time.time()), model=model,
                          choices=[Choice(message=message, finish_reason=finish_reason(response))],
                          usage=usage_of(response))


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"
