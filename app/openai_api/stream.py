"""`stream=true`: the chat service's events as OpenAI `chat.completion.chunk` objects.

Order: a first chunk with the role; content chunks; a last chunk with `finish_reason`
and the `gpt4video` extra (the jobs exist only once the reply is complete); a usage chunk
(`choices: []`) when `stream_options.include_usage`; then `data: [DONE]`. A failure after
the stream began is one `data: {"error": …}` (OpenAI's shape; the SDK raises it) before
`[DONE]`.

The joined content equals the non-streamed `message.content`: the chat service's deltas
are the moderated text (`app.services.chat.TextDelta`: a caption goes out only once the
moderator has judged it, as its `[video:N]` marker or the withheld notice), so a harmful
caption is never streamed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing

from app.openai_api.convert import completion_id, extra_of, finish_reason, usage_of
from app.openai_api.errors import openai_error
from app.openai_api.schemas import ChatCompletionChunk, ChunkChoice, ChunkDelta, CompletionUsage
from app.services.chat import ChatContext, Completed, TextDelta, chat_stream
from gpt4video import llm_protocol as wire
from model.t2v_request import VideoParams

DONE = "data: [DONE]\n\n"


class _Chunks:
    def __init__(self, request_id: str, model: str) -> None:
        self.id, self.model, self.created = completion_id(request_id), model, int(time.time())

    def sse(self, choices: list[ChunkChoice], usage: CompletionUsage | None = None) -> str:
        chunk = ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)
        return f"data: {chunk.model_dump_json(exclude_none=False)}\n\n"

    def delta(self, **fields: object) -> str:
        return self.sse([ChunkChoice(delta=ChunkDelta(**fields))])


async def completion_chunks(ctx: ChatContext, request: wire.LLMRequest, video: VideoParams, model: str,
                            include_usage: bool) -> AsyncIterator[str]:
    chunks = _Chunks(request.id, model)
    yield chunks.delta(role="assistant", content="")
    async with aclosing(chat_stream(ctx, request, video)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                yield chunks.delta(content=event.text)
            elif isinstance(event, Completed):
                response = event.response
                refusal = response.message.content if response.refusal else None
                yield chunks.sse([ChunkChoice(delta=ChunkDelta(refusal=refusal, gpt4video=extra_of(response)),
                                              finish_reason=finish_reason(response))])
                if include_usage:
                    yield chunks.sse([], usage_of(response))
            else:
                yield f"data: {openai_error(event.error).model_dump_json()}\n\n"
    yield DONE
