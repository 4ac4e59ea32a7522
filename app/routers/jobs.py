"""GET /v1/jobs/{id}, GET /v1/jobs/{id}/video and DELETE /v1/jobs/{id} (cancel)"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from app.deps import JobStoreDep, OwnerDep, SettingsDep, SyncRedisDep
from app.schemas import JobResponse
from app.services.jobs import cancel_job, get_job, to_response, video_path

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobResponse)
async def job_status(job_id: str, store: JobStoreDep, connection: SyncRedisDep, owner: OwnerDep):
    record = await run_in_threadpool(get_job, store, connection, job_id, owner)
    return to_response(record)


@router.get("/{job_id}/video", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}, "description": "the MP4; byte ranges supported"}})
async def job_video(job_id: str, store: JobStoreDep, connection: SyncRedisDep, owner: OwnerDep,
                    settings: SettingsDep):
    record = await run_in_threadpool(get_job, store, connection, job_id, owner)
    path = video_path(record, settings)
    return FileResponse(path, media_type="video/mp4", filename=f"{job_id}.mp4", content_disposition_type="inline")


@router.delete("/{job_id}", response_model=JobResponse)
async def job_cancel(job_id: str, store: JobStoreDep, connection: SyncRedisDep, owner: OwnerDep,
                     settings: SettingsDep):
    """Cancel a queued or running job (it stops at its next denoising step) or discard a finished
    job's video; the job ends `canceled`. Idempotent."""
    record = await run_in_threadpool(cancel_job, store, connection, job_id, owner, settings)
    return to_response(record)
