"""A `video_url` content part to a stored video id.

`gpt4video://videos/<id>` names an upload of this caller (ownership is checked with the
other videos, in `resolve_videos`); `data:video/<type>;base64,<bytes>` is decoded and
goes through the upload path itself (size cap, isolated probe, duration and frame-size
limits, content-addressed store), so it is accepted exactly when POST /v1/videos would be.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from contextlib import nullcontext
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from app.errors import PayloadTooLarge, Unprocessable
from app.openai_api.schemas import VIDEO_URL_SCHEME
from app.schemas import VIDEO_ID_PATTERN
from app.services.chat import ChatContext
from app.services.videos import store_upload
from app.uploads import ReceivedForm

_DATA_HEADER = re.compile(r"data:video/[\w.+-]+;base64", re.IGNORECASE)
_HOW = f"send {VIDEO_URL_SCHEME}<id> (an id from POST /v1/videos) or data:video/mp4;base64,<bytes>"


async def video_id_for(url: str, ctx: ChatContext) -> str:
    if url.startswith(VIDEO_URL_SCHEME):
        video_id = url.removeprefix(VIDEO_URL_SCHEME)
        if not re.match(VIDEO_ID_PATTERN, video_id):
            raise Unprocessable(f"{url[:80]!r} names no video: an id is 64 hex characters; {_HOW}", "bad_video_url")
        return video_id
    if url[:5].lower() == "data:":
        return await _store_data_url(url, ctx)
    raise Unprocessable(f"unsupported video URL {url[:80]!r} (the service fetches nothing); {_HOW}",
                        "bad_video_url")


async def _store_data_url(url: str, ctx: ChatContext) -> str:
    header, sep, payload = url.partition(",")
    if not sep or not _DATA_HEADER.fullmatch(header):
        raise Unprocessable(f"a data URL must be data:video/<type>;base64,<bytes>, not {header[:60]!r}",
                            "bad_data_url")
    with ctx.metrics.upload() if ctx.metrics else nullcontext(_NotCounted()) as counted:
        data = _decode(payload, ctx.settings.max_upload_bytes)
        form = await run_in_threadpool(_write_temp, data, ctx.store.tmp)
        stored = await store_upload(form, ctx.settings, ctx.store, ctx.redis, ctx.owner)
        counted.accepted(stored.bytes, stored.created)
    return stored.id


class _NotCounted:
    def accepted(self, size: int, created: bool) -> None:
        pass


def _decode(payload: str, limit: int) -> bytes:
    if len(payload) // 4 * 3 > limit + 2:
        raise PayloadTooLarge(f"the data: video exceeds the limit of {limit} bytes", "upload_too_large")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise Unprocessable("the data: video is not valid base64", "bad_data_url") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"the data: video is {len(data)} bytes; the limit is {limit}", "upload_too_large")
    return data


def _write_temp(data: bytes, tmp_dir: Path) -> ReceivedForm:
    path = tmp_dir / f"upload-{uuid.uuid4().hex}"
    path.write_bytes(data)
    return ReceivedForm(file_path=path, file_size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                        file_name="the data: video")
