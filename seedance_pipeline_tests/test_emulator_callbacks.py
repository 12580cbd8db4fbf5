"""The emulator's callbacks, delivered over loopback HTTP to a real Starlette receiver."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from seedance_pipeline.emulator import DEFAULT_API_KEY, EmulatorConfig, running_emulator

AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
BODY = {"model": "seedance-2.0-text-to-video", "prompt": "a kite", "duration": 4, "quality": "480p"}


class Receiver:
    """Records every POST (arrival time, JSON body) and answers the next scripted status."""

    def __init__(self, statuses: list[int]):
        self.statuses = statuses
        self.calls: list[tuple[float, dict]] = []

    async def hook(self, request: Request) -> JSONResponse:
        self.calls.append((time.monotonic(), await request.json()))
        status = self.statuses.pop(0) if self.statuses else 200
        return JSONResponse({"ok": status < 300}, status_code=status)

    def wait_for(self, count: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"{len(self.calls)} of {count} callbacks came"
            time.sleep(0.02)


@contextlib.contextmanager
def receiving(statuses: list[int]) -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver(statuses)
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield receiver, f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def create(url: str, callback_url: str) -> httpx.Response:
    body = {**BODY, "callback_url": callback_url}
    return httpx.post(f"{url}/v1/videos/generations", json=body, headers=AUTH)


def callback_entry(url: str, task_id: str, state: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = next(t for t in httpx.get(f"{url}/emulator/ledger").json()["tasks"])
        assert task["id"] == task_id
        if task["callback"]["state"] == state:
            return task["callback"]
        assert time.monotonic() < deadline, task["callback"]
        time.sleep(0.02)


def test_callback_retries_until_a_2xx_with_the_task_query_body(start_emulator):
    with receiving([500, 503]) as (receiver, hook):
        url = start_emulator(allow_loopback_callbacks=True, callback_retry_scale=0.2)
        task_id = create(url, hook).json()["id"]
        receiver.wait_for(3)
        entry = callback_entry(url, task_id, "delivered")
        queried = httpx.get(f"{url}/v1/tasks/{task_id}", headers=AUTH).json()
    times = [at for at, _ in receiver.calls]
    first, second = times[1] - times[0], times[2] - times[1]
    assert 0.2 <= first < 1 and 0.4 <= second < 2  # 1 s, then 2 s, times 0.2
    assert [body for _, body in receiver.calls] == [queried] * 3
    assert queried["status"] == "completed" and queried["results"][0].startswith(url)
    assert [a["outcome"] for a in entry["attempts"]] == ["HTTP 500", "HTTP 503", "HTTP 200"]
    assert entry["url"] == hook
    time.sleep(0.5)
    assert len(receiver.calls) == 3  # a 2xx ends it


def test_callback_gives_up_after_three_retries_and_failed_tasks_call_back_too(start_emulator):
    with receiving([500] * 10) as (receiver, hook):
        url = start_emulator(
            allow_loopback_callbacks=True, callback_retry_scale=0.05, task_failure_rate=1.0
        )
        task_id = create(url, hook).json()["id"]
        entry = callback_entry(url, task_id, "failed")
        time.sleep(0.5)
    assert len(receiver.calls) == len(entry["attempts"]) == 4
    assert {body["status"] for _, body in receiver.calls} == {"failed"}
    assert receiver.calls[0][1]["error"]["code"]


def test_fail_first_loses_attempts_without_sending_them(start_emulator):
    with receiving([]) as (receiver, hook):
        url = start_emulator(
            allow_loopback_callbacks=True, callback_retry_scale=0.05, callback_fail_first=2
        )
        task_id = create(url, hook).json()["id"]
        entry = callback_entry(url, task_id, "delivered")
    assert len(receiver.calls) == 1
    assert [a["outcome"] for a in entry["attempts"]] == [
        "failed on purpose (callback_fail_first)",
        "failed on purpose (callback_fail_first)",
        "HTTP 200",
    ]


def test_loopback_callbacks_need_the_flag_and_public_ones_are_never_sent(start_emulator):
    url = start_emulator()
    refused = create(url, "http://127.0.0.1:9/hook")
    assert refused.status_code == 400 and "callback_url" in refused.json()["error"]["message"]
    task_id = create(url, "https://hooks.example.com/seedance").json()["id"]
    entry = callback_entry(url, task_id, "not_sent")
    assert entry["attempts"][0]["outcome"].startswith("not sent")


def test_a_restarted_emulator_delivers_what_is_still_pending(tmp_path):
    config = EmulatorConfig(
        port=0,
        seed=3,
        # 4 s at 480p: 3 s, so the task ends after the emulator stopped even when a busy
        # machine takes its stop a second or two (at 0.6 s, a stop 0.45 s late delivered it)
        time_scale=0.1,
        state_dir=tmp_path / "state",
        allow_loopback_callbacks=True,
        callback_retry_scale=0.05,
    )
    with receiving([]) as (receiver, hook):
        with running_emulator(config) as url:
            task_id = create(url, hook).json()["id"]
            ends = time.monotonic() + 3.0
        time.sleep(max(0.0, ends - time.monotonic()) + 0.5)
        assert receiver.calls == []  # it ended while the emulator was down
        with running_emulator(config) as url:
            entry = callback_entry(url, task_id, "delivered")
    assert [body["id"] for _, body in receiver.calls] == [task_id]
    assert len(entry["attempts"]) == 1
