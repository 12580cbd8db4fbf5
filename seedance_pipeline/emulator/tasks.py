"""The generation API's task routes: create, query, credits; result links; the ledger."""

from __future__ import annotations

import math
import string
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..seedance import (
    DEFAULT_DURATION,
    DEFAULT_QUALITY,
    TASK_ID,
    MediaFacts,
    TaskStatus,
    output_pixels,
    validate_request,
)
from .answers import error, expired
from .context import Emulator
from .faults import create_answer, draw, foreign_link, link_answer, poll_answer
from .files import hosted_file
from .render import Renderer
from .state import DUPLICATE_ID, TaskRecord
from .timing import vendor_seconds

_ALNUM = string.ascii_lowercase + string.digits
_FAILURES = {
    "generation_failed_no_content": "The model produced no content for this request.",
    "service_error": "The generation service failed; retry later.",
}


def task_body(task: TaskRecord, now: float, origin: str) -> dict[str, Any]:
    """The task-query answer at `now`; result links on `origin` (`scheme://host:port`)."""
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
            "can_cancel": status in (TaskStatus.PENDING, TaskStatus.PROCESSING),
            "estimated_time": math.ceil(task.run_seconds),
            "video_duration": task.duration,
        },
        "usage": {
            "billing_rule": "per_second",
            "credits_reserved": task.credits_reserved,
            "user_group": "default",
        },
    }
    if status == TaskStatus.COMPLETED:
        body["results"] = [f"{origin}/results/{task.id}.mp4"]
    elif status == TaskStatus.FAILED:
        body["error"] = {"code": task.error_code, "message": task.error_message}
    return body


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


class TaskRoutes:
    """Creating and querying tasks, the balance, result videos and the emulator's ledger."""

    def __init__(self, emulator: Emulator, on_callback: Callable[[], None]):
        self.emu = emulator
        self.on_callback = on_callback  # a task with a callback URL was made
        self.renderer = Renderer(emulator.config.state_dir / "renders")

    def routes(self) -> list[Route]:
        return [
            Route("/v1/videos/generations", self.create, methods=["POST"]),
            Route("/v1/tasks/{task_id}", self.get_task, methods=["GET"]),
            Route("/v1/credits", self.credits, methods=["GET"]),
            Route("/results/{task_id}.mp4", self.result, methods=["GET"]),
            Route("/emulator/ledger", self.ledger, methods=["GET"]),
        ]

    def _hosted_facts(self, request: Request, body: dict) -> dict[str, MediaFacts]:
        """Facts of the request's media that this emulator hosts, keyed by URL."""
        facts: dict[str, MediaFacts] = {}
        for field in ("image_urls", "video_urls", "audio_urls"):
            urls = body.get(field)
            for url in urls if isinstance(urls, list) else ():
                if not isinstance(url, str):
                    continue
                record = hosted_file(self.emu, request, url)
                if record:
                    facts[url] = record.facts
        return facts

    def _new_task_id(self) -> str:
        suffix = "".join(self.emu.choice(_ALNUM) for _ in range(8))
        return f"task-unified-{int(time.time())}-{suffix}"

    async def create(self, request: Request) -> Response:
        config, state = self.emu.config, self.emu.state
        try:
            body = await request.json()
        except ValueError:
            return error(400, "The request body is not valid JSON")
        if not isinstance(body, dict):
            return error(400, "body: must be a JSON object")
        if body.get("model") in config.denied_models:
            return error(403, "Token does not have access to the specified model")
        facts = self._hosted_facts(request, body)
        violations = validate_request(
            body, facts, allow_loopback_callbacks=config.allow_loopback_callbacks
        )
        if violations:
            return error(400, "; ".join(str(v) for v in violations))
        video_seconds = [
            facts[u].duration_s if u in facts else None for u in body.get("video_urls") or ()
        ]
        width, height = output_pixels(body, facts)
        duration = body.get("duration", DEFAULT_DURATION)
        quality = body.get("quality", DEFAULT_QUALITY)
        fails = self.emu.chance(config.task_failure_rate)
        code = self.emu.choice(sorted(_FAILURES)) if fails else None
        task = TaskRecord(
            id=self._new_task_id(),
            created=time.time(),
            model=body["model"],
            duration=duration,
            quality=quality,
            width=width,
            height=height,
            audio=body.get("generate_audio", True),
            run_seconds=vendor_seconds(body["model"], duration, quality) * config.time_scale,
            credits_reserved=config.price_table.estimate_credits(body, video_seconds),
            error_code=code,
            error_message=_FAILURES.get(code),
        )
        faults = draw(self.emu)
        callback = (body["callback_url"], _origin(request)) if body.get("callback_url") else None
        for _ in range(5):  # a restarted emulator replays its seeded ids: draw again
            refused = state.reserve_task(task, body.get("prompt"), faults, callback)
            if refused != DUPLICATE_ID:
                break
            task = replace(task, id=self._new_task_id())
        if refused:
            return error(402, refused)
        if callback:
            self.on_callback()
        answer = task_body(task, task.created, _origin(request))
        if faults.create == "dropped":
            return _CutConnection()
        if faults.create:
            return create_answer(faults.create, answer)
        return JSONResponse(answer)

    async def get_task(self, request: Request) -> Response:
        task_id = request.path_params["task_id"]
        if not TASK_ID.match(task_id):
            return error(400, f"Invalid task id {task_id!r}", code="invalid_task_id")
        state, config = self.emu.state, self.emu.config
        task = state.task(task_id)
        if task is None:
            return error(404, "Task not found or expired")
        faults = state.count(task_id, "polls")
        answer = task_body(task, time.time(), _origin(request))
        if (
            faults.poll
            and (faults.poll != "completed_without_results" or "results" in answer)
            and state.serve_fault(task_id, "poll", config.poll_fault_polls)
        ):
            altered = poll_answer(faults.poll, answer)
            if isinstance(altered, Response):
                return altered
            answer = altered
        if (
            "results" in answer
            and faults.link == "foreign_host"
            and state.serve_fault(task_id, "link", config.link_fault_heal_after)
        ):
            answer["results"] = [foreign_link(link, task_id) for link in answer["results"]]
        return JSONResponse(answer)

    async def credits(self, request: Request) -> Response:
        state = self.emu.state
        remaining, used = state.credits_remaining(), state.charged_total()
        balance = {"remaining_credits": remaining, "used_credits": used}
        return JSONResponse(
            {
                "success": True,
                "message": "success",
                "data": {"user": balance, "token": {**balance, "unlimited_credits": False}},
            }
        )

    async def ledger(self, request: Request) -> Response:
        return JSONResponse(self.emu.state.ledger())

    async def result(self, request: Request) -> Response:
        state, config = self.emu.state, self.emu.config
        task = state.task(request.path_params["task_id"])
        now = time.time()
        if task is None or task.status(now)[0] != TaskStatus.COMPLETED:
            return error(404, "No such result")
        if now > task.completed_at + config.link_ttl:
            return expired(task.completed_at + config.link_ttl)
        faults = state.count(task.id, "link_fetches")
        path = await run_in_threadpool(
            self.renderer.video, task.width, task.height, task.duration, task.audio
        )
        if faults.link not in (None, "foreign_host") and state.serve_fault(
            task.id, "link", config.link_fault_heal_after
        ):
            if faults.link == "wrong_video":  # a real video, just not the one asked for
                path = await run_in_threadpool(
                    self.renderer.video, task.height, task.width, task.duration, not task.audio
                )
                return FileResponse(path, media_type="video/mp4", filename=f"{task.id}.mp4")
            return link_answer(faults.link, task.id, path, config.link_drip_seconds)
        return FileResponse(path, media_type="video/mp4", filename=f"{task.id}.mp4")


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
