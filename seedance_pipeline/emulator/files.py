"""The files API (/api/v1/files/*) and the links of hosted files (/files/...)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from .answers import error, expired, iso
from .context import Emulator
from .state import FileRecord
from .uploads import UploadRejected, ingest

_FILE_PATH = re.compile(r"^/files/(file_[0-9a-f]+)/[^/]+$")


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
            Route("/files/{file_id}/{name}", self.hosted, methods=["GET"], name="hosted"),
        ]

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
            file_name, upload_path = form.get("file_name"), form.get("upload_path")
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
        return await self._store(request, data, "", body.get("file_name"), body.get("upload_path"))

    async def upload_url(self, request: Request) -> Response:
        try:
            url = (await request.json())["file_url"]
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
        return await self._store(request, response.content, name, None, None)

    async def _store(
        self, request: Request, data: bytes, name: str, file_name: Any, upload_path: Any
    ) -> Response:
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
        return JSONResponse(
            {
                "success": True,
                "code": 200,
                "msg": "success",
                "data": {
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
                },
            }
        )


def _upload_failed(message: str) -> JSONResponse:
    return JSONResponse({"success": False, "code": 400, "msg": message, "data": None})
