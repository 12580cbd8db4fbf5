"""Callback delivery: after a task ends, POST its task-query body to its `callback_url`.

As the vendor documents it: a 10 s timeout, retries 1, 2 and 4 s after a failed attempt
(times `callback_retry_scale`), and any 2xx ends it. The emulator has no network, so it
delivers to loopback URLs only (accepted with `allow_loopback_callbacks`); a public https
callback is accepted and recorded as not sent. Deliveries live in the state store, so a
restarted emulator goes on with the ones still pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from ..seedance._rules import _is_loopback_url
from .context import Emulator
from .state import Callback
from .tasks import task_body

RETRY_DELAYS = (1.0, 2.0, 4.0)
TIMEOUT = 10.0


class Callbacks:
    """Runs in the app's event loop between `start` and `stop`."""

    def __init__(self, emulator: Emulator):
        self.emu = emulator
        self._busy: set[str] = set()
        self._deliveries: set[asyncio.Task] = set()
        self._wake: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None

    def wake(self) -> None:
        """Look again for due callbacks (a new one may be due before the one awaited)."""
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=TIMEOUT)
        self._runner = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for task in (self._runner, *self._deliveries):
            task.cancel()
        for task in (self._runner, *self._deliveries):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    async def _run(self) -> None:
        state = self.emu.state
        while True:
            self._wake.clear()
            for callback in state.due_callbacks(time.time(), self._busy):
                self._busy.add(callback.task_id)
                delivery = asyncio.create_task(self._deliver(callback))
                self._deliveries.add(delivery)
                delivery.add_done_callback(self._deliveries.discard)
            due = state.next_callback_due(self._busy)
            wait = None if due is None else max(0.0, due - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _deliver(self, callback: Callback) -> None:
        config, state = self.emu.config, self.emu.state
        attempt = callback.attempts + 1
        try:
            body = task_body(state.task(callback.task_id), time.time(), callback.origin)
            if not _is_loopback_url(callback.url):
                outcome, delivered = "not sent: the emulator delivers to loopback only", None
            elif attempt <= config.callback_fail_first:
                outcome, delivered = "failed on purpose (callback_fail_first)", False
            else:
                try:
                    response = await self._client.post(callback.url, json=body)
                    outcome, delivered = f"HTTP {response.status_code}", response.is_success
                except httpx.HTTPError as exc:
                    outcome, delivered = f"{type(exc).__name__}: {exc}", False
            now = time.time()
            if delivered is None or delivered or attempt > len(RETRY_DELAYS):
                final = {None: "not_sent", True: "delivered", False: "failed"}[delivered]
                state.record_attempt(callback.task_id, now, outcome, final)
            else:
                retry_at = now + RETRY_DELAYS[attempt - 1] * config.callback_retry_scale
                state.record_attempt(callback.task_id, now, outcome, "pending", retry_at)
        finally:
            self._busy.discard(callback.task_id)
            self.wake()
