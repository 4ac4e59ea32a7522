"""POST /v1/chat"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.deps import JobStoreDep, OwnerDep, RedisDep, SettingsDep
from app.schemas import ChatRequest, ChatResponse
from app.services.chat import ChatContext, build_request, chat, chat_events

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat", response_model=ChatResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream=true"}})
async def post_chat(body: ChatRequest, request: Request, settings: SettingsDep, redis: RedisDep,
                    job_store: JobStoreDep, owner: OwnerDep):
    ctx = ChatContext(settings, redis, job_store, request.app.state.video_store, owner)
    llm_request = await build_request(ctx, body.messages, body, body.stream)
    if not body.stream:
        return await chat(ctx, llm_request, body.video)
    await ctx.llm.submit(llm_request)
    return StreamingResponse(chat_events(ctx, llm_request, body.video), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
