"""POST /v1/chat/completions, GET /v1/models: OpenAI's Chat Completions API over the same
chat service as /v1/chat (`app.services.chat`). Errors here are in OpenAI's shape.

Built per app, like the native chat router: the request model carries the conversation
bounds of that app's Settings, and the body cap follows MAX_UPLOAD_BYTES (a request may
carry one data: video of at most that size, base64-encoded, plus the conversation).
"""

# No `from __future__ import annotations`: FastAPI reads the body model from the annotation.

import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.deps import JobStoreDep, OwnerDep, RedisDep, SettingsDep
from app.openai_api.convert import check_model, to_completion, to_messages, to_sampling
from app.openai_api.errors import openai_route
from app.openai_api.schemas import ChatCompletion, ModelCard, ModelList, openai_schemas
from app.openai_api.stream import completion_chunks
from app.services.chat import ChatContext, build_request, chat
from gpt4video.settings import Settings

BODY_OVERHEAD_BYTES = 1024 * 1024  # the conversation beside a data: video


def build_router(bounds_from: Settings) -> APIRouter:
    body_cap = bounds_from.max_upload_bytes * 4 // 3 + 4 + BODY_OVERHEAD_BYTES
    router = APIRouter(prefix="/v1", tags=["openai"], route_class=openai_route(body_cap))
    ChatCompletionRequest = openai_schemas(bounds_from.max_prompt_chars, bounds_from.max_messages,
                                           bounds_from.max_new_tokens_limit, bounds_from.served_model_name)
    started = int(time.time())

    @router.post(
        "/chat/completions", response_model=ChatCompletion,
        responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or chunks when stream=true"}})
    async def create_chat_completion(body: ChatCompletionRequest, request: Request,  # type: ignore[valid-type]
                                     settings: SettingsDep, redis: RedisDep, job_store: JobStoreDep,
                                     owner: OwnerDep):
        check_model(body.model, settings.served_model_name)
        ctx = ChatContext(settings, redis, job_store, request.app.state.video_store, owner,
                          request.app.state.metrics)
        sampling = to_sampling(body, settings.max_new_tokens_limit)
        messages = await to_messages(body, ctx)
        llm_request = await build_request(ctx, messages, sampling, body.stream)
        if not body.stream:
            return to_completion(await chat(ctx, llm_request, body.video), settings.served_model_name)
        await ctx.llm.submit(llm_request)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            completion_chunks(ctx, llm_request, body.video, settings.served_model_name, include_usage),
            media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @router.get("/models", response_model=ModelList)
    async def list_models(settings: SettingsDep, _owner: OwnerDep) -> ModelList:
        return ModelList(data=[ModelCard(id=settings.served_model_name, created=started)])

    @router.get("/models/{model}", response_model=ModelCard)
    async def retrieve_model(model: str, settings: SettingsDep, _owner: OwnerDep) -> ModelCard:
        check_model(model, settings.served_model_name)
        return ModelCard(id=settings.served_model_name, created=started)

    return router
