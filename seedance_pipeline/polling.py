"""When to poll each task, and polling a bounded batch of due tasks concurrently.

The vendor's `estimated_time` is a weak hint (165 s in every example), so the expected time
is the smaller of it and the typical time the vendor gives for the duration and quality.
The first poll comes at 90 % of that; later ones back off, so a task costs a few polls.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from .ledger import Ledger, LedgerRow
from .seedance import AsyncClient, NotFoundError, SeedanceError, Task

# Vendor's typical generation times, as seconds of waiting per second of video.
_TYPICAL_SECONDS_PER_VIDEO_SECOND = {"480p": 7.0, "720p": 10.0, "1080p": 15.0}
MIN_DELAY, MAX_DELAY = 1.0, 60.0


def expected_seconds(body: dict[str, Any], estimated_time: float | None) -> float:
    typical = body.get("duration", 5) * _TYPICAL_SECONDS_PER_VIDEO_SECOND.get(
        body.get("quality", "720p"), 10.0
    )
    return min(typical, estimated_time) if estimated_time else typical


def first_poll_at(body: dict[str, Any], task: Task, now: float) -> float:
    return now + max(MIN_DELAY, 0.9 * expected_seconds(body, task.estimated_time))


def next_poll_delay(row: LedgerRow) -> float:
    """Delay after a poll that found the task still running: grows with each poll."""
    base = max(MIN_DELAY, 0.25 * expected_seconds(row.request, row.estimated_time))
    return min(MAX_DELAY, base * 1.5 ** max(0, row.polls))


@dataclass
class PollSummary:
    polled: int = 0
    finished: int = 0
    errors: int = 0


async def poll_due(
    ledger: Ledger,
    client: AsyncClient,
    *,
    limit: int = 200,
    concurrency: int = 16,
    start_by: float | None = None,
    finish_by: float | None = None,
) -> PollSummary:
    """Poll up to `limit` due tasks, `concurrency` at a time, and record what they say.

    No poll starts after `start_by`, and polls still running at `finish_by` are cancelled
    (both `time.monotonic()`); their tasks stay due for the next round. So a slow or paced API
    shortens a round instead of overrunning it.
    """
    rows = ledger.due_tasks(time.time(), limit)
    summary = PollSummary()
    gate = asyncio.Semaphore(concurrency)

    async def poll(row: LedgerRow) -> None:
        async with gate:
            if start_by is not None and time.monotonic() > start_by:
                return
            summary.polled += 1
            try:
                task = await client.get_task(row.task_id)
            except NotFoundError as exc:
                ledger.record_poll_error(row.task_id, 0, "task_not_found", exc.message)
                summary.finished += 1
                return
            except SeedanceError:
                summary.errors += 1
                ledger.record_poll_error(row.task_id, time.time() + next_poll_delay(row), "", "")
                return
        nxt = None if task.is_terminal else time.time() + next_poll_delay(row)
        ledger.record_poll(task, nxt)
        summary.finished += task.is_terminal

    if not rows:
        return summary
    polls = [asyncio.ensure_future(poll(r)) for r in rows]
    timeout = None if finish_by is None else max(0.0, finish_by - time.monotonic())
    _, unfinished = await asyncio.wait(polls, timeout=timeout)
    for job in unfinished:
        job.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    summary.errors += len(unfinished)
    return summary
