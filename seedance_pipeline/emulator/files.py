"""The files API (/api/v1/files/*) and the links of hosted files (/files/...).

Answers follow the vendor's client: optional fields in snake_case or camelCase, every answer
`{success, code, msg, data}`. Our assumptions where the vendor is silent: the list is newest
first and skips expired files, `pageSize` is 1..100; a delete answers `data: {file_id}`; an
upload past the 100-file quota is refused like any refused upload (HTTP 200, code 403).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import shutil
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .answers import error, expired, files_error, iso
from .context import Emulator
from .state import FileRecord
from .uploads import MAX_FILES, UploadRejected, ingest

_FILE_PATH = re.compile(r"^/files/(file_[0-9a-f]+)/[^/]+$")
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 100


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def hosted_file(emu: Emulator, request: Request, url: str) -> FileRecord | None:
    """The record of a file this emulator hosts at `url`, if it is one."""
    parts = urlsplit(url)
    match = _FILE_PATH.match(parts.path)
    if not match or not (is_loopback(parts.hostname or "") or parts.netloc == request.url.netloc):
        return None
    return emu.state.file(match.group(1))


class FileRoutes:
    """Uploads (stream, base64, url) and serving what was uploaded."""

    def __init__(self, emulator: Emulator):
        self.emu = emulator

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/files/upload/stream", self.upload_stream, methods=["POST"]),
            Route("/api/v1/files/upload/base64", self.upload_base64, methods=["POST"]),
            Route("/api/v1/files/upload/url", self.upload_url, methods=["POST"]),
            Route("/api/v1/files/list", self.list_files, methods=["GET"]),
            Route("/api/v1/files/quota", self.quota, methods=["GET"]),
            Route("/api/v1/files/{file_id}", self.delete, methods=["DELETE"]),
            Route("/files/{file_id}/{name}", self.hosted, methods=["GET"], name="hosted"),
        ]

    async def list_files(self, request: Request) -> Response:
        try:
            page = int(_field(request.query_params, "page") or 1)
            size = int(_field(request.query_params, "page_size") or DEFAULT_PAGE_SIZE)
            if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
                raise ValueError
        except ValueError:
            return files_error(
                400, f"page must be 1 or more and pageSize 1..{MAX_PAGE_SIZE} (whole numbers)"
            )
        files = self.emu.state.files(time.time())
        shown = files[(page - 1) * size : page * size]
        return _ok(
            {
                "total": len(files),
                "files": [
                    {
                        "file_id": f.file_id,
                        "file_name": f.file_name,
                        "file_size": f.file_size,
                        "upload_time": iso(f.upload_time),
                    }
                    for f in shown
                ],
            }
        )

    async def quota(self, request: Request) -> Response:
        used = len(self.emu.state.files(time.time()))
        return _ok(
            {
                "user_group": "default",
                "used_files": used,
                "max_files": MAX_FILES,
                "remain_files": max(0, MAX_FILES - used),
            }
        )

    async def delete(self, request: Request) -> Response:
        record = self.emu.state.file(request.path_params["file_id"])
        if record is None or not self.emu.state.delete_file(record.file_id):
            return files_error(404, f"No file {request.path_params['file_id']!r}")
        shutil.rmtree(self.emu.state.file_path(record).parent, ignore_errors=True)
        return _ok({"file_id": record.file_id})

    async def hosted(self, request: Request) -> Response:
        record = self.emu.state.file(request.path_params["file_id"])
        if record is None or record.file_name != request.path_params["name"]:
            return error(404, "No such file")
        if time.time() > record.expires_at:
            return expired(record.expires_at)
        return FileResponse(self.emu.state.file_path(record), media_type=record.mime_type)

    async def upload_stream(self, request: Request) -> Response:
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return _upload_failed("multipart field 'file' is required")
            data = await upload.read()
            name = upload.filename or ""
            file_name, upload_path = _field(form, "file_name"), _field(form, "upload_path")
        return await self._store(request, data, name, file_name, upload_path)

    async def upload_base64(self, request: Request) -> Response:
        try:
            body = await request.json()
            encoded = body["base64_data"]
            if encoded.startswith("data:"):
                encoded = encoded.partition(",")[2]
            data = base64.b64decode(encoded, validate=True)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            return _upload_failed("JSON field 'base64_data' must hold base64 data")
        file_name, upload_path = _field(body, "file_name"), _field(body, "upload_path")
        return await self._store(request, data, "", file_name, upload_path)

    async def upload_url(self, request: Request) -> Response:
        try:
            body = await request.json()
            url = body["file_url"]
            parts = urlsplit(url)
        except (ValueError, KeyError, TypeError, AttributeError):
            return _upload_failed("JSON field 'file_url' is required")
        if parts.scheme not in ("http", "https") or not is_loopback(parts.hostname or ""):
            return _upload_failed(
                f"cannot fetch {url!r}: the emulator has no network and fetches loopback URLs only"
            )
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.get(url)
        except httpx.HTTPError as exc:
            return _upload_failed(f"cannot fetch {url!r}: {type(exc).__name__}")
        if response.status_code != 200:
            return _upload_failed(f"fetching {url!r} answered HTTP {response.status_code}")
        name = parts.path.rsplit("/", 1)[-1]
        file_name, upload_path = _field(body, "file_name"), _field(body, "upload_path")
        return await self._store(request, response.content, name, file_name, upload_path)

    async def _store(
        self, request: Request, data: bytes, name: str, file_name: Any, upload_path: Any
    ) -> Response:
        if len(self.emu.state.files(time.time())) >= MAX_FILES:
            return _upload_failed(
                f"file quota reached ({MAX_FILES} files); delete files "
                f"(DELETE /api/v1/files/{{file_id}}) or wait for them to expire",
                code=403,
            )
        try:
            record = await run_in_threadpool(
                ingest,
                self.emu.state,
                data,
                name,
                file_name if isinstance(file_name, str) else None,
                upload_path if isinstance(upload_path, str) else "",
            )
        except UploadRejected as exc:
            return _upload_failed(str(exc))
        url = str(request.url_for("hosted", file_id=record.file_id, name=record.file_name))
        return _ok(
            {
                "file_id": record.file_id,
                "file_name": record.file_name,
                "original_name": record.original_name,
                "file_size": record.file_size,
                "mime_type": record.mime_type,
                "upload_path": record.upload_path,
                "file_url": url,
                "download_url": f"{url}?download=1",
                "upload_time": iso(record.upload_time),
                "expires_at": iso(record.expires_at),
            }
        )


def _field(fields: Mapping, snake: str) -> Any:
    """An optional field by its documented snake_case name or the vendor client's camelCase."""
    head, *rest = snake.split("_")
    return fields.get(snake, fields.get(head + "".join(w.title() for w in rest)))


def _ok(data: dict) -> JSONResponse:
    return JSONResponse({"success": True, "code": 200, "msg": "success", "data": data})


def _upload_failed(message: str, code: int = 400) -> JSONResponse:
    """A refused upload: HTTP 200 with `success: false`, as the files API also answers."""
    return JSONResponse({"success": False, "code": code, "msg": message, "data": None})
