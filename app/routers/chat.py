"""POST /v1/chat

The router is built per app: its request model carries the conversation bounds of that
app's Settings (MAX_PROMPT_CHARS, MAX_MESSAGES), so raising a setting raises the bound.
"""

# No `from __future__ import annotations`: FastAPI reads the body model from the
# annotation, which names a model built in `build_router`.

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.deps import JobStoreDep, OwnerDep, RedisDep, SettingsDep
from app.schemas import ChatResponse, chat_schemas
from app.services.chat import ChatContext, build_request, chat, chat_events
from gpt4video.settings import Settings


def build_router(bounds_from: Settings) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["chat"])
    ChatRequest = chat_schemas(bounds_from).request

    @router.post("/chat", response_model=ChatResponse, responses={
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"}})
    async def post_chat(body: ChatRequest, request: Request, settings: SettingsDep,  # type: ignore[valid-type]
                        redis: RedisDep, job_store: JobStoreDep, owner: OwnerDep):
        ctx = ChatContext(settings, redis, job_store, request.app.state.video_store, owner,
                          request.app.state.metrics)
        llm_request = await build_request(ctx, body.messages, body, body.stream)
        if not body.stream:
            return await chat(ctx, llm_request, body.video)
        await ctx.llm.submit(llm_request)
        return StreamingResponse(chat_events(ctx, llm_request, body.video), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    return router
