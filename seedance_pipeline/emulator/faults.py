"""Misbehaviour of real gateways and CDNs: which a new task gets, and the answers it causes.

Choices come from the emulator's seeded random source when a task is created and are stored
with it (the ledger lists them), so a restart keeps misbehaving the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from .answers import error
from .context import Emulator
from .state import Faults

GATEWAY_STATUSES = (502, 503, 504)
_REASONS = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}
_GARBLED = ("non_json", "truncated", "schemaless")
# Hosts a result link must never lead to: another loopback address than the emulator's, the
# cloud metadata address, a private network.
FOREIGN_HOSTS = ("127.0.0.2", "169.254.169.254")
PRIVATE_TARGETS = ("http://169.254.169.254/latest/meta-data/", "http://10.0.0.7/video.mp4")
OVERSIZE_BYTES = 4 * 1024**3
HUGE_BODY_BYTES = 16 * 1024**2
_CHUNK = 64 * 1024


def draw(emu: Emulator) -> Faults:
    """The faults of a task about to be created (at most one per answer kind)."""
    config = emu.config
    create = None
    if emu.chance(config.drop_rate):
        create = "dropped"
    elif emu.chance(config.post_create_error_rate):
        create = f"gateway_{emu.choice(GATEWAY_STATUSES)}_{emu.choice(('html', 'json'))}"
    elif emu.chance(config.garbled_create_rate):
        create = f"garbled_{emu.choice(_GARBLED)}"
    poll = emu.choice(config.poll_faults) if emu.chance(config.poll_fault_rate) else None
    link = emu.choice(config.link_faults) if emu.chance(config.link_fault_rate) else None
    return Faults(create, poll, link)


def _gateway_page(status: int) -> HTMLResponse:
    reason = _REASONS[status]
    return HTMLResponse(
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n",
        status_code=status,
    )


def create_answer(fault: str, answer: dict[str, Any]) -> Response:
    """The answer a create with `fault` gets instead of `answer` (the task exists already)."""
    if fault.startswith("gateway_"):
        _, code, form = fault.split("_")
        status = int(code)
        if form == "html":
            return _gateway_page(status)
        return error(status, f"{_REASONS[status]}: the upstream service did not answer in time")
    if fault == "garbled_non_json":
        return HTMLResponse("<!DOCTYPE html><html><body><p>OK</p></body></html>")
    if fault == "garbled_truncated":
        text = json.dumps(answer)
        return Response(text[: len(text) // 2], media_type="application/json")
    assert fault == "garbled_schemaless", fault
    return Response('{"success": true, "data": {}}', media_type="application/json")


def poll_answer(fault: str, answer: dict[str, Any]) -> Response | dict[str, Any]:
    """A poll's answer altered by `fault`: a Response, or the changed task body."""
    if fault == "queued":
        return {**answer, "status": "queued", "progress": 0}
    if fault == "completed_without_results":
        return {k: v for k, v in answer.items() if k != "results"}
    if fault == "transient_404":
        return error(404, "Task not found or expired")
    if fault == "non_json":
        return HTMLResponse("<html><body>Please wait while we check your browser</body></html>")
    assert fault == "huge_body", fault
    return {**answer, "trace": " " * HUGE_BODY_BYTES}


def foreign_link(link: str, task_id: str) -> str:
    """`link` moved to a host that is not the emulator's origin."""
    host = FOREIGN_HOSTS[sum(task_id.encode()) % len(FOREIGN_HOSTS)]
    scheme, _, rest = link.partition("://")
    return f"{scheme}://{host}/{rest.partition('/')[2]}"


def link_answer(fault: str, task_id: str, video: Path, drip_seconds: float) -> Response:
    """The answer of a result link with `fault` (not foreign_host: that link never reaches us)."""
    if fault == "private_redirect":
        return RedirectResponse(PRIVATE_TARGETS[sum(task_id.encode()) % 2], status_code=302)
    if fault == "html":
        return HTMLResponse("<!DOCTYPE html><html><body><h1>Video</h1></body></html>")
    if fault == "truncated":
        data = video.read_bytes()
        return Response(data[: len(data) // 2], media_type="video/mp4")
    if fault == "slow_drip":
        data = video.read_bytes()
        return StreamingResponse(
            _drip(data, drip_seconds),
            media_type="video/mp4",
            headers={"Content-Length": str(len(data))},
        )
    if fault == "oversize":
        return StreamingResponse(
            _zeros(OVERSIZE_BYTES),
            media_type="video/mp4",
            headers={"Content-Length": str(OVERSIZE_BYTES)},
        )
    assert fault == "endless", fault
    return StreamingResponse(_zeros(None), media_type="video/mp4")


async def _drip(data: bytes, seconds: float) -> AsyncIterator[bytes]:
    for i in range(len(data)):
        yield data[i : i + 1]
        await asyncio.sleep(seconds)


async def _zeros(total: int | None) -> AsyncIterator[bytes]:
    sent = 0
    while total is None or sent < total:
        size = _CHUNK if total is None else min(_CHUNK, total - sent)
        sent += size
        yield bytes(size)
        await asyncio.sleep(0)
