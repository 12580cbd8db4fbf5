"""Helpers for the client's unit tests: a scripted `MockTransport` handler and a fake clock."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from seedance_pipeline.seedance import _client

KEY = "sk-evo-UNIT-TEST-SECRET-0123456789abcdef"


class Recorder:
    """A handler that answers from a script of responses/exceptions and keeps every request."""

    def __init__(self, *script: httpx.Response | Exception | Callable[[httpx.Request], object]):
        self.script = list(script)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if callable(step) and not isinstance(step, httpx.Response):
            step = step(request)
        if isinstance(step, Exception):
            raise step
        return step

    def __len__(self) -> int:
        return len(self.requests)


class FakeTime:
    """The client module's `time`: sleeping records the wait and moves a fake monotonic clock."""

    def __init__(self):
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.time = time.time

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    """A fake clock for the clients (sync and async); nothing really sleeps."""
    fake = FakeTime()

    async def fake_async_sleep(seconds: float) -> None:
        fake.sleep(seconds)

    monkeypatch.setattr(_client, "time", fake)
    monkeypatch.setattr(_client.asyncio, "sleep", fake_async_sleep)
    return fake


@pytest.fixture
def sleeps(clock) -> list[float]:
    """Every sleep the clients ask for."""
    return clock.sleeps


@pytest.fixture(autouse=True)
def fresh_pacing(monkeypatch):
    """Each test starts with no learned rate (the buckets are shared per process)."""
    monkeypatch.setattr(_client, "_BUCKETS", {})


@contextlib.contextmanager
def loopback_server(
    handler: type[http.server.BaseHTTPRequestHandler], **state: object
) -> Iterator[http.server.ThreadingHTTPServer]:
    """A threaded HTTP server on 127.0.0.1 with `handler`; `state` becomes its attributes
    (what the handler answers, what it saw)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    for name, value in state.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
