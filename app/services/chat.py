"""One conversation turn: validate, ask the model, enqueue the videos its reply asks for."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from functools import cached_property

import redis.asyncio as aioredis
from starlette.concurrency import run_in_threadpool

from app.errors import APIError, Unprocessable
from app.failures import raise_for_reply
from app.llm_client import LLMClient
from app.metrics import Metrics
from app.schemas import (
    AssistantMessage,
    ChatMessageFields,
    ChatResponse,
    SafetyInfo,
    SamplingFields,
    Usage,
    VideoJobRef,
)
from app.services.videos import resolve_videos
from app.uploads import VideoStore
from gpt4video import llm_protocol as wire
from gpt4video.jobs import JobStore, enqueue_video_job
from gpt4video.settings import Settings
from model.t2v_request import VideoParams
from model.tags import restore_tags

log = logging.getLogger("gpt4video.api")


@dataclass
class ChatContext:
    settings: Settings
    redis: aioredis.Redis
    job_store: JobStore
    store: VideoStore
    owner: str
    metrics: Metrics | None = None  # the app's (app.state.metrics): replies are counted

    @cached_property
    def llm(self) -> LLMClient:
        return LLMClient(self.redis, self.settings, self.owner)


def _check_messages(messages: list[ChatMessageFields]) -> None:
    """What the schema cannot say: the order of roles and where videos may be."""
    if not any(m.role == "user" for m in messages):
        raise Unprocessable("the conversation needs at least one user message", "no_user_message")
    for i, m in enumerate(messages):
        if m.videos and m.role != "user":
            raise Unprocessable(f"messages[{i}]: only user messages may carry videos", "videos_on_non_user")
        if m.captions and m.role != "assistant":
            raise Unprocessable(f"messages[{i}]: only assistant messages may carry captions (send back the "
                                "`message` of an earlier reply as it came)", "captions_on_non_assistant")
        if m.role == "system" and i != 0:
            raise Unprocessable(f"messages[{i}]: a system message may only come first", "misplaced_system")


async def build_request(
    ctx: ChatContext, messages: list[ChatMessageFields], sampling: SamplingFields, stream: bool
) -> wire.LLMRequest:
    _check_messages(messages)
    if sampling.max_new_tokens > ctx.settings.max_new_tokens_limit:  # the schemas say so; understand's form too
        raise Unprocessable(f"max_new_tokens is {sampling.max_new_tokens}; this service allows at most "
                            f"{ctx.settings.max_new_tokens_limit} (MAX_NEW_TOKENS_LIMIT)", "max_new_tokens_too_large")
    video_ids = [v for m in messages for v in m.videos]
    video_paths = await resolve_videos(video_ids, ctx.store, ctx.redis, ctx.owner)
    return wire.LLMRequest(
        id=uuid.uuid4().hex,
        turns=[wire.WireTurn(role=m.role, content=restore_tags(m.content, m.captions), videos=m.videos)
               for m in messages],
        sampling=sampling.to_wire(),
        video_paths=video_paths,
        stream=stream,
        deadline=time.time() + ctx.settings.llm_request_timeout_s,
    )


async def finish_reply(ctx: ChatContext, reply: wire.LLMReply, params: VideoParams) -> ChatResponse:
    if ctx.metrics is not None:
        ctx.metrics.observe_reply(reply)
    raise_for_reply(reply)
    jobs = []
    for caption in reply.captions:
        record = await run_in_threadpool(_enqueue, ctx, caption, params)
        jobs.append(VideoJobRef(caption=caption, job_id=record.id, status=record.status,
                                status_url=f"/v1/jobs/{record.id}"))
    return ChatResponse(
        id=reply.id,
        message=AssistantMessage(content=reply.text, captions=list(reply.captions)),
        captions=list(reply.captions),
        videos=jobs,
        withheld=[SafetyInfo(category=w.category, score=w.score) for w in reply.withheld],
        refusal=SafetyInfo(category=reply.refusal.category, score=reply.refusal.score) if reply.refusal else None,
        finish_reason=reply.finish_reason,
        usage=Usage(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens),
    )


def _enqueue(ctx: ChatContext, caption: str, params: VideoParams):
    s = ctx.settings
    return enqueue_video_job(ctx.job_store, caption=caption, owner=ctx.owner, params=params,
                             job_timeout_s=s.t2v_job_timeout_s, retries=s.t2v_job_retries,
                             result_ttl_s=s.t2v_result_ttl_s)


async def chat(ctx: ChatContext, request: wire.LLMRequest, video: VideoParams) -> ChatResponse:
    await ctx.llm.submit(request)
    reply = await ctx.llm.wait(request.id, ctx.settings.llm_request_timeout_s)
    return await finish_reply(ctx, reply, video)


@dataclass(frozen=True)
class TextDelta:
    """More of the reply's text. The deltas join into the final `message.content`: the LLM
    worker streams moderated text (a caption only once judged, as its `[video:N]` marker or
    the withheld notice; `workers.reply_moderation`), and what it still held when decoding
    ended (a caption cut by the token limit, a refusal) comes as one last delta."""

    text: str


@dataclass(frozen=True)
class Completed:
    response: ChatResponse


@dataclass(frozen=True)
class Failed:
    error: APIError


StreamEvent = TextDelta | Completed | Failed


async def chat_stream(ctx: ChatContext, request: wire.LLMRequest, video: VideoParams) -> AsyncIterator[StreamEvent]:
    """A submitted request's events: `TextDelta`s while decoding, then one `Completed` (the
    reply's jobs enqueued) or `Failed`. A consumer that stops early aborts the request, so
    a client that goes away mid-stream frees its engine slot. Each route formats these in
    its own protocol (`chat_events` here, `app.openai_api.stream` for OpenAI chunks)."""
    llm = ctx.llm
    completed = False
    sent = ""
    try:
        async for kind, value in llm.events(request.id, ctx.settings.llm_request_timeout_s):
            if kind == "delta":
                assert isinstance(value, str)
                sent += value
                yield TextDelta(value)
            else:
                assert isinstance(value, wire.LLMReply)
                response = await finish_reply(ctx, value, video)
                completed = True
                if rest := _rest(sent, response.message.content):
                    yield TextDelta(rest)
                yield Completed(response)
    except APIError as exc:
        completed = True
        yield Failed(exc)
    finally:
        if not completed:
            await llm.abort(request.id)


def _rest(sent: str, final: str) -> str:
    if not final.startswith(sent):  # the worker streams a prefix of the final text; this would be a bug
        log.warning("streamed text %r is not a prefix of the final reply", sent[:80])
        return ""
    return final[len(sent):]


def _sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


async def chat_events(ctx: ChatContext, request: wire.LLMRequest, video: VideoParams) -> AsyncIterator[str]:
    """/v1/chat's server-sent events: `delta` ({"text"}: the deltas join into the reply's
    `message.content`) while decoding, then `done` (the ChatResponse) or `error` (the error
    envelope). The request is submitted before streaming
    starts, so submission errors are ordinary HTTP errors."""
    async with aclosing(chat_stream(ctx, request, video)) as events:
        async for event in events:
            if isinstance(event, TextDelta):
                yield _sse("delta", json.dumps({"text": event.text}))
            elif isinstance(event, Completed):
                yield _sse("done", event.response.model_dump_json())
            else:
                exc = event.error
                yield _sse("error", json.dumps({"error": {"type": exc.type, "message": exc.message,
                                                          "code": exc.code}}))
