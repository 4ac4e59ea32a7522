"""`stream=true`: the chat service's events as OpenAI `chat.completion.chunk` objects.

Order: a first chunk with the role; content chunks; a last chunk with `finish_reason`
and the `gpt4video` extra (the jobs exist only once the reply is complete); a usage chunk
(`choices: []`) when `stream_options.include_usage`; then `data: [DONE]`. A failure after
the stream began is one `data: {"error": …}` (OpenAI's shape; the SDK raises it) before
`[DONE]`.

The joined content equals the non-streamed `message.content`. The model's raw text holds
caption tags that the final reply replaces (`[video:N]`, or a notice for a withheld
caption), so text is streamed as it comes only up to the first `<`; from there it is held
back and sent with the final reply. A harmful caption is therefore never streamed before
moderation has seen it (/v1/chat's `delta` events, by contrast, carry the raw text).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from app.openai_api.convert import completion_id, extra_of, finish_reason, usage_of
from app.openai_api.errors import openai_error
from app.openai_api.schemas import ChatCompletionChunk, ChunkChoice, ChunkDelta, CompletionUsage
from app.services.chat import ChatContext, Completed, TextDelta, chat_stream
from gpt4video import llm_protocol as wire
from model.t2v_request import VideoParams

log = logging.getLogger("gpt4video.api")

DONE = "data: [DONE]\n\n"


class _Chunks:
    def __init__(self, request_id: str, model: str) -> None:
        self.id, self.model, self.created = completion_id(request_id), model, int(time.time())

    def sse(self, choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> str:
        chunk = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)
        return f"data: {chunk.model_dump_json(exclude_none=False)}\n\n"

    def delta(self, **fields: object) -> str:
        return self.sse([ChunkChoice(delta=ChunkDelta(**fields))])


class _HoldBack:
    """Streams the raw text up to the first '<' (a caption tag may start there), with its
    whitespace folded and stripped as the final reply's is (`model.tags.parse_reply`), so
    each chunk extends what the final text will say."""

    def __init__(self) -> None:
        self.raw = ""
        self.sent = ""
        self.holding = False

    def feed(self, text: str) -> str:
        if self.holding:
            return ""
        head, lt, _ = text.partition("<")
        self.holding = bool(lt)
        self.raw += head
        folded = " ".join(self.raw.split())
        new, self.sent = folded[len(self.sent):], folded
        return new

    def rest(self, final: str) -> str:
        if not final.startswith(self.sent):  # the engines keep their text; this would be a bug
            log.warning("streamed text %r is not a prefix of the final reply", self.sent[:80])
            return ""
        return final[len(self.sent):]


async def completion_chunks(ctx: ChatContext, request: wire.LLMRequest, video: VideoParams, model: str,
                            include_usage: bool) -> AsyncIterator[str]:
    chunks = _Chunks(request.id, model)
    held = _HoldBack()
    yield chunks.delta(role="assistant", content="")
    async with aclosing(chat_stream(ctx, request, video)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                if text := held.feed(event.text):
                    yield chunks.delta(content=text)
            elif isinstance(event, Completed):
                response = event.response
                if rest := held.rest(response.message.content):
                    yield chunks.delta(content=rest)
                refusal = response.message.content if response.refusal else None
                yield chunks.sse([ChunkChoice(delta=ChunkDelta(refusal=refusal, gpt4video=extra_of(response)),
                                              finish_reason=finish_reason(response))])
                if include_usage:
                    yield chunks.sse([], usage_of(response))
            else:
                yield f"data: {openai_error(event.error).model_dump_json()}\n\n"
    yield DONE
