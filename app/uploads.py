"""Streaming multipart uploads into the content-addressed video store.

The body is parsed as it arrives (python-multipart's push parser): the file part goes
to a temporary file under DATA_DIR/tmp while its sha256 is computed, and reading stops
with 413 the moment the size cap is passed, removing the temporary file. The client's
filename is never used: a stored video is named by its sha256 alone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from app.errors import APIError, BadRequest, InsufficientStorage, PayloadTooLarge, UnsupportedMedia

MAX_FIELD_BYTES = 64 * 1024
FORM_OVERHEAD_BYTES = 64 * 1024  # room for boundaries, part headers and small fields


@dataclass(frozen=True)
class Budget:
    """Bytes an upload may still bring (free disk, a key's daily quota) and the error past them."""

    bytes: int
    error: Callable[[], APIError]


def disk_full() -> InsufficientStorage:
    return InsufficientStorage("the server's storage is full; nothing was stored. Delete videos you no longer "
                               "need (DELETE /v1/videos/{id}) or retry later", "storage_full", {"Retry-After": "60"})


def _is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    file_path: Path | None = None
    file_size: int = 0
    sha256: str = ""
    # The file's name as the client sent it (for messages; the server's copy is file_path).
    file_name: str = "the upload"


class VideoStore:
    """Videos live at `<root>/<id[:2]>/<id>.video` with `<id>.json` beside (probed info)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "videos"
        self.tmp = data_dir / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, video_id: str) -> Path:
        return self.root / video_id[:2] / f"{video_id}.video"

    def info_for(self, video_id: str) -> dict | None:
        meta = self.path_for(video_id).with_suffix(".json")
        return json.loads(meta.read_text()) if meta.is_file() else None

    def exists(self, video_id: str) -> bool:
        return self.path_for(video_id).is_file()

    def remove(self, video_id: str) -> bool:
        """Delete a stored video and its info; False when there was nothing to delete."""
        path = self.path_for(video_id)
        path.with_suffix(".json").unlink(missing_ok=True)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def commit(self, temp: Path, video_id: str, info: dict) -> bool:
        """Move a probed upload into place; False when those bytes were already stored (their
        modification time is then renewed: retention counts from the last upload)."""
        final = self.path_for(video_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file():
            temp.unlink(missing_ok=True)
            os.utime(final)
            return False
        meta = final.with_suffix(".json")
        meta_tmp = meta.with_suffix(f".json.{uuid.uuid4().hex}.tmp")
        try:
            meta_tmp.write_text(json.dumps(info))
        except OSError as exc:
            meta_tmp.unlink(missing_ok=True)
            temp.unlink(missing_ok=True)
            if _is_disk_full(exc):
                raise disk_full() from None
            raise
        os.replace(meta_tmp, meta)
        os.replace(temp, final)
        return True

    async def receive(self, request: Request, max_file_bytes: int, file_field: str = "file",
                      budgets: Sequence[Budget] = ()) -> ReceivedForm:
        """Parse the form, the file part streamed to a temporary file. Past `max_file_bytes`: 413;
        past a budget: that budget's error; either way nothing is left on disk."""
        ctype, params = parse_options_header(request.headers.get("content-type", ""))
        if ctype == b"application/x-www-form-urlencoded":  # fields only (e.g. a video_id)
            return await self._parse_urlencoded(request)
        if ctype != b"multipart/form-data" or b"boundary" not in params:
            raise UnsupportedMedia("send the video as multipart/form-data with a 'file' part",
                                   "expected_multipart")
        limit = max_file_bytes + FORM_OVERHEAD_BYTES
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                raise PayloadTooLarge(f"upload is {int(declared)} bytes; the limit is {max_file_bytes}",
                                      "upload_too_large")
            for budget in budgets:
                if int(declared) > budget.bytes + FORM_OVERHEAD_BYTES:
                    raise budget.error()
        return await self._parse(request, params[b"boundary"], max_file_bytes, limit, file_field, budgets)

    async def _parse_urlencoded(self, request: Request) -> ReceivedForm:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FIELD_BYTES:
                raise PayloadTooLarge("form body is too large", "field_too_large")
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return ReceivedForm(fields={k: v[-1] for k, v in fields.items()})

    async def _parse(self, request: Request, boundary: bytes, max_file_bytes: int, limit: int,
                     file_field: str, budgets: Sequence[Budget]) -> ReceivedForm:
        form = ReceivedForm()
        state: dict = {"name": None, "is_file": False, "buf": bytearray(), "header": b"", "headers": {}}
        temp = self.tmp / f"upload-{uuid.uuid4().hex}"
        digest = hashlib.sha256()
        handle = None
        errors: list[Exception] = []

        def on_header_field(data: bytes, start: int, end: int) -> None:
            state["header"] += data[start:end]

        def on_header_value(data: bytes, start: int, end: int) -> None:
            key = state["header"].lower()
            state["headers"][key] = state["headers"].get(key, b"") + data[start:end]

        def on_header_end() -> None:
            state["header"] = b""

        def on_headers_finished() -> None:
            nonlocal handle
            _, disp = parse_options_header(state["headers"].get(b"content-disposition", b""))
            state["name"] = disp.get(b"name", b"").decode("utf-8", "replace")
            state["is_file"] = b"filename" in disp
            state["buf"] = bytearray()
            if state["is_file"]:
                if state["name"] != file_field or form.file_path is not None:
                    errors.append(BadRequest(f"unexpected file part {state['name']!r}; send one '{file_field}'",
                                             "unexpected_file"))
                    return
                handle = open(temp, "wb")  # noqa: SIM115 - closed in on_part_end / finally
                form.file_path = temp
                form.file_name = Path(disp[b"filename"].decode("utf-8", "replace")).name or form.file_name

        def on_part_data(data: bytes, start: int, end: int) -> None:
            chunk = data[start:end]
            if state["is_file"] and handle is not None:
                form.file_size += len(chunk)
                if form.file_size > max_file_bytes:
                    errors.append(PayloadTooLarge(f"upload exceeds the limit of {max_file_bytes} bytes",
                                                  "upload_too_large"))
                    return
                over = [b for b in budgets if form.file_size > b.bytes]
                if over:
                    errors.append(over[0].error())
                    return
                digest.update(chunk)
                handle.write(chunk)
            elif not state["is_file"]:
                state["buf"] += chunk
                if len(state["buf"]) > MAX_FIELD_BYTES:
                    errors.append(PayloadTooLarge(f"form field {state['name']!r} is too large", "field_too_large"))

        def on_part_end() -> None:
            nonlocal handle
            if state["is_file"] and handle is not None:
                handle.close()
                handle = None
            elif not state["is_file"] and state["name"]:
                form.fields[state["name"]] = state["buf"].decode("utf-8", "replace")
            state["headers"] = {}

        parser = MultipartParser(boundary, {
            "on_header_field": on_header_field, "on_header_value": on_header_value,
            "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data, "on_part_end": on_part_end,
        })
        received = 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise PayloadTooLarge(f"upload exceeds the limit of {max_file_bytes} bytes", "upload_too_large")
                parser.write(chunk)
                if errors:
                    raise errors[0]
            parser.finalize()
            if errors:
                raise errors[0]
        except Exception as exc:
            if handle is not None:
                handle.close()
            temp.unlink(missing_ok=True)
            if isinstance(exc, APIError):
                raise
            if _is_disk_full(exc):
                raise disk_full() from None
            raise BadRequest(f"malformed multipart body: {exc}", "malformed_multipart") from exc
        form.sha256 = digest.hexdigest()
        return form
