"""The emulator's HTTP routes: tasks, credits, files and results, as EvoLink documents them."""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
import math
import random
import re
import string
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..seedance import MediaFacts, output_pixels, validate_request
from ..seedance._rules import DEFAULT_DURATION, DEFAULT_QUALITY
from .config import EmulatorConfig
from .render import Renderer
from .state import DUPLICATE_ID, EmulatorState, FileRecord, TaskRecord
from .timing import vendor_seconds
from .uploads import UploadRejected, ingest

TASK_ID = re.compile(r"^task-unified-\d+-[a-z0-9]{8}$")
_FILE_PATH = re.compile(r"^/files/(file_[0-9a-f]+)/[^/]+$")
_ALNUM = string.ascii_lowercase + string.digits
_FAILURES = {
    "generation_failed_no_content": "The model produced no content for this request.",
    "service_error": "The generation service failed; retry later.",
}
_ERRORS = {
    400: ("invalid_request", "invalid_request_error"),
    401: ("unauthorized", "authentication_error"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("model_access_denied", "invalid_request_error"),
    404: ("resource_not_found", "not_found_error"),
    429: ("rate_limit_exceeded", "rate_limit_error"),
    500: ("internal_error", "api_error"),
}


def error(status: int, message: str, code: str | None = None, **headers: str) -> JSONResponse:
    """The vendor's `{"error": {code, message, type}}` answer."""
    default_code, kind = _ERRORS[status]
    body = {"error": {"code": code or default_code, "message": message, "type": kind}}
    return JSONResponse(body, status_code=status, headers=headers or None)


class TokenBucket:
    """Requests per second with a burst of one second's worth."""

    def __init__(self, rate: float):
        self.rate, self.capacity = rate, max(1.0, rate)
        self.tokens, self.stamp = self.capacity, time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 when a request may go now, else seconds until one may."""
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Emulator:
    """Request handlers sharing one state store, renderer and random source."""

    def __init__(self, config: EmulatorConfig):
        self.config = config
        self.state: EmulatorState | None = None
        self.renderer = Renderer(config.state_dir / "renders")
        self.bucket = TokenBucket(config.rate_limit) if config.rate_limit else None
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()

    def _chance(self, p: float) -> bool:
        with self._rng_lock:
            return p > 0 and self._rng.random() < p

    def _guard(self, request: Request) -> Response | None:
        """Auth, rate limit and injected errors, before anything else happens."""
        if request.headers.get("authorization") != f"Bearer {self.config.api_key}":
            return error(401, "Invalid or expired token")
        if self.bucket and (wait := self.bucket.take()):
            return error(
                429,
                "Too many requests, please try again later",
                **{"Retry-After": str(max(1, math.ceil(wait)))},
            )
        if self._chance(self.config.error_rate):
            return error(500, "Internal server error")
        return None

    def _hosted_facts(self, request: Request, body: dict) -> dict[str, MediaFacts]:
        """Facts of the request's media that this emulator hosts, keyed by URL."""
        facts: dict[str, MediaFacts] = {}
        for field in ("image_urls", "video_urls", "audio_urls"):
            urls = body.get(field)
            for url in urls if isinstance(urls, list) else ():
                if not isinstance(url, str):
                    continue
                record = self._hosted_file(request, url)
                if record:
                    facts[url] = record.facts
        return facts

    def _hosted_file(self, request: Request, url: str) -> FileRecord | None:
        parts = urlsplit(url)
        match = _FILE_PATH.match(parts.path)
        if not match or not (
            _is_loopback(parts.hostname or "") or parts.netloc == request.url.netloc
        ):
            return None
        return self.state.file(match.group(1))

    def _new_task_id(self) -> str:
        with self._rng_lock:
            suffix = "".join(self._rng.choice(_ALNUM) for _ in range(8))
        return f"task-unified-{int(time.time())}-{suffix}"

    def task_json(self, request: Request, task: TaskRecord, now: float) -> dict[str, Any]:
        status, progress = task.status(now)
        body: dict[str, Any] = {
            "id": task.id,
            "object": "video.generation.task",
            "created": int(task.created),
            "model": task.model,
            "status": status,
            "progress": progress,
            "type": "video",
            "task_info": {
                "can_cancel": status in ("pending", "processing"),
                "estimated_time": math.ceil(task.run_seconds),
                "video_duration": task.duration,
            },
            "usage": {
                "billing_rule": "per_second",
                "credits_reserved": task.credits_reserved,
                "user_group": "default",
            },
        }
        if status == "completed":
            body["results"] = [str(request.url_for("result", task_id=task.id))]
        elif status == "failed":
            body["error"] = {"code": task.error_code, "message": task.error_message}
        return body

    async def create(self, request: Request) -> Response:
        if denied := self._guard(request):
            return denied
        try:
            body = await request.json()
        except ValueError:
            return error(400, "The request body is not valid JSON")
        if not isinstance(body, dict):
            return error(400, "body: must be a JSON object")
        if body.get("model") in self.config.denied_models:
            return error(403, "Token does not have access to the specified model")
        facts = self._hosted_facts(request, body)
        violations = validate_request(body, facts)
        if violations:
            return error(400, "; ".join(str(v) for v in violations))
        video_seconds = [
            facts[u].duration_s if u in facts else None for u in body.get("video_urls") or ()
        ]
        width, height = output_pixels(body, facts)
        duration = body.get("duration", DEFAULT_DURATION)
        quality = body.get("quality", DEFAULT_QUALITY)
        fails = self._chance(self.config.task_failure_rate)
        with self._rng_lock:
            code = self._rng.choice(sorted(_FAILURES)) if fails else None
        task = TaskRecord(
            id=self._new_task_id(),
            created=time.time(),
            model=body["model"],
            duration=duration,
            quality=quality,
            width=width,
            height=height,
            audio=body.get("generate_audio", True),
            run_seconds=vendor_seconds(body["model"], duration, quality) * self.config.time_scale,
            credits_reserved=self.config.price_table.estimate_credits(body, video_seconds),
            error_code=code,
            error_message=_FAILURES.get(code),
        )
        drop = self._chance(self.config.drop_rate)
        for _ in range(5):  # a restarted emulator replays its seeded ids: draw again
            refused = self.state.reserve_task(task, prompt=body.get("prompt"), dropped=drop)
            if refused != DUPLICATE_ID:
                break
            task = replace(task, id=self._new_task_id())
        if refused:
            return error(402, refused)
        if drop:
            return _CutConnection()
        return JSONResponse(self.task_json(request, task, task.created))

    async def get_task(self, request: Request) -> Response:
        if denied := self._guard(request):
            return denied
        task_id = request.path_params["task_id"]
        if not TASK_ID.match(task_id):
            return error(400, f"Invalid task id {task_id!r}", code="invalid_task_id")
        task = self.state.task(task_id)
        if task is None:
            return error(404, "Task not found or expired")
        return JSONResponse(self.task_json(request, task, time.time()))

    async def credits(self, request: Request) -> Response:
        if denied := self._guard(request):
            return denied
        remaining, used = self.state.credits_remaining(), self.state.charged_total()
        balance = {"remaining_credits": remaining, "used_credits": used}
        return JSONResponse(
            {
                "success": True,
                "message": "success",
                "data": {"user": balance, "token": {**balance, "unlimited_credits": False}},
            }
        )

    async def ledger(self, request: Request) -> Response:
        return JSONResponse(self.state.ledger())

    async def result(self, request: Request) -> Response:
        task = self.state.task(request.path_params["task_id"])
        now = time.time()
        if task is None or task.status(now)[0] != "completed":
            return error(404, "No such result")
        if now > task.completed_at + self.config.link_ttl:
            return _expired(task.completed_at + self.config.link_ttl)
        path = await run_in_threadpool(
            self.renderer.video, task.width, task.height, task.duration, task.audio
        )
        return FileResponse(path, media_type="video/mp4", filename=f"{task.id}.mp4")

    async def hosted(self, request: Request) -> Response:
        record = self.state.file(request.path_params["file_id"])
        if record is None or record.file_name != request.path_params["name"]:
            return error(404, "No such file")
        if time.time() > record.expires_at:
            return _expired(record.expires_at)
        return FileResponse(self.state.file_path(record), media_type=record.mime_type)

    async def upload_stream(self, request: Request) -> Response:
        if denied := self._guard(request):
            return denied
        async with request.form() as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                return _upload_failed("multipart field 'file' is required")
            data = await upload.read()
            name = upload.filename or ""
            file_name, upload_path = form.get("file_name"), form.get("upload_path")
        return await self._store(request, data, name, file_name, upload_path)

    async def upload_base64(self, request: Request) -> Response:
        if denied := self._guard(request):
            return denied
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
        if denied := self._guard(request):
            return denied
        try:
            url = (await request.json())["file_url"]
            parts = urlsplit(url)
        except (ValueError, KeyError, TypeError, AttributeError):
            return _upload_failed("JSON field 'file_url' is required")
        if parts.scheme not in ("http", "https") or not _is_loopback(parts.hostname or ""):
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
                self.state,
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
                    "upload_time": _iso(record.upload_time),
                    "expires_at": _iso(record.expires_at),
                },
            }
        )


def _expired(since: float) -> JSONResponse:
    message = f"This link expired at {_iso(since)}; links are valid for a limited time."
    return JSONResponse(
        {"error": {"code": "link_expired", "message": message, "type": "invalid_request_error"}},
        status_code=403,
    )


def _upload_failed(message: str) -> JSONResponse:
    return JSONResponse({"success": False, "code": 400, "msg": message, "data": None})


class _CutConnection(Response):
    """The answer's head goes out, then the connection dies: the task exists, its id is lost.

    The server closes the connection because the response never completes (uvicorn logs
    one line about it), exactly what a client sees when a proxy or the network drops it.
    """

    def __init__(self) -> None:
        super().__init__(status_code=200, media_type="application/json")

    async def __call__(self, scope, receive, send) -> None:
        self.headers["content-length"] = "1024"
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})


def create_app(config: EmulatorConfig) -> Starlette:
    """The emulator as an ASGI app; its state opens and closes with the app's lifespan."""
    emu = Emulator(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        emu.state = EmulatorState(config.state_dir, config.credits)
        try:
            yield
        finally:
            emu.state.close()

    routes = [
        Route("/v1/videos/generations", emu.create, methods=["POST"]),
        Route("/v1/tasks/{task_id}", emu.get_task, methods=["GET"]),
        Route("/v1/credits", emu.credits, methods=["GET"]),
        Route("/api/v1/files/upload/stream", emu.upload_stream, methods=["POST"]),
        Route("/api/v1/files/upload/base64", emu.upload_base64, methods=["POST"]),
        Route("/api/v1/files/upload/url", emu.upload_url, methods=["POST"]),
        Route("/files/{file_id}/{name}", emu.hosted, methods=["GET"], name="hosted"),
        Route("/results/{task_id}.mp4", emu.result, methods=["GET"], name="result"),
        Route("/emulator/ledger", emu.ledger, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.emulator = emu
    return app
