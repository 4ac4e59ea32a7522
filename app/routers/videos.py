"""POST /v1/videos (upload), POST /v1/videos/understand (upload or id + a prompt) and
DELETE /v1/videos/{id}."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from app.deps import JobStoreDep, OwnerDep, RedisDep, SettingsDep
from app.errors import Unprocessable
from app.openapi import understand_form_schema
from app.schemas import VIDEO_ID_PATTERN, ChatResponse, SamplingFields, VideoUploadResponse, chat_schemas
from app.services.chat import ChatContext, build_request, chat
from app.services.videos import delete_video, receive_upload, store_upload
from model.t2v_request import VideoParams

router = APIRouter(prefix="/v1/videos", tags=["videos"])

_MULTIPART_DOC = understand_form_schema(SamplingFields, VIDEO_ID_PATTERN)


@router.post("", response_model=VideoUploadResponse, status_code=201,
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                 "type": "object", "properties": {"file": {"type": "string", "format": "binary",
                                                           "contentMediaType": "video/*"}},
                 "required": ["file"]}}}, "required": True}})
async def upload_video(request: Request, settings: SettingsDep, redis: RedisDep, owner: OwnerDep):
    store = request.app.state.video_store
    with request.app.state.metrics.upload() as counted:
        form = await receive_upload(request, settings, redis, owner)
        stored = await store_upload(form, settings, store, redis, owner)
        counted.accepted(stored.bytes, stored.created)
    return stored


@router.post("/understand", response_model=ChatResponse, openapi_extra=_MULTIPART_DOC)
async def understand_video(request: Request, settings: SettingsDep, redis: RedisDep, job_store: JobStoreDep,
                           owner: OwnerDep):
    store = request.app.state.video_store
    with request.app.state.metrics.upload():
        form = await receive_upload(request, settings, redis, owner)
    prompt = form.fields.get("prompt", "").strip()
    video_id = form.fields.get("video_id", "").strip()
    try:
        fields = {k: v for k, v in form.fields.items() if k in SamplingFields.model_fields}
        sampling = SamplingFields(**{"max_new_tokens": min(128, settings.max_new_tokens_limit)} | fields)
        if not prompt:
            raise Unprocessable("the 'prompt' field is required", "missing_prompt")
        if form.file_path is not None and video_id:
            raise Unprocessable("send either a file or a video_id, not both", "file_and_video_id")
        if ("video_id" in form.fields or form.file_path is None) and not re.match(VIDEO_ID_PATTERN, video_id):
            raise Unprocessable("send a 'file' part or a valid 'video_id' (64 hex characters)", "missing_video")
        message = chat_schemas(settings).message(role="user", content=prompt, videos=[])
    except ValidationError as exc:
        if form.file_path is not None:
            form.file_path.unlink(missing_ok=True)
        err = exc.errors()[0]
        raise Unprocessable(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", "validation_error") from None
    except Unprocessable:
        if form.file_path is not None:
            form.file_path.unlink(missing_ok=True)
        raise
    if form.file_path is not None:
        with request.app.state.metrics.upload() as counted:
            stored = await store_upload(form, settings, store, redis, owner)
            counted.accepted(stored.bytes, stored.created)
        video_id = stored.id
    ctx = ChatContext(settings, redis, job_store, store, owner, request.app.state.metrics)
    message = message.model_copy(update={"videos": [video_id]})
    llm_request = await build_request(ctx, [message], sampling, stream=False)
    return await chat(ctx, llm_request, VideoParams())


@router.delete("/{video_id}", status_code=204, response_class=Response)
async def remove_video(video_id: str, request: Request, redis: RedisDep, owner: OwnerDep) -> Response:
    """Delete your upload. Another key holding the same bytes keeps its copy; the file goes
    when its last owner deletes it. Idempotent."""
    await delete_video(video_id, request.app.state.video_store, redis, owner)
    return Response(status_code=204)
