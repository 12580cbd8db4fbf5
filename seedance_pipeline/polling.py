"""When to poll each task, what an answer means, and polling a bounded batch concurrently.

The vendor's `estimated_time` is a weak hint (165 s in every example), so the expected time
is the smaller of it and the typical time the vendor gives for the duration and quality. The
first poll comes at that time; later ones back off. Answers are untrusted: an unknown status
keeps the task waiting (for a bounded time), a 404 is believed only when it repeats over
time, `completed` without a result link is asked again, and every poll error backs that task
off on its own, so nothing floods.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from dataclasses import dataclass

from .ledger import Ledger, LedgerBusy, LedgerRow, PollUpdate
from .seedance import (
    AccessDeniedError,
    AuthenticationError,
    CallCutOff,
    Client,
    NotFoundError,
    SeedanceError,
    Task,
)
from .statuses import WAITING, Status

log = logging.getLogger(__name__)

# Vendor's typical generation times, as seconds of waiting per second of video.
_TYPICAL_SECONDS_PER_VIDEO_SECOND = {"480p": 7.0, "720p": 10.0, "1080p": 15.0}
MIN_DELAY = 1.0
# A callback is overdue this long after the vendor's estimate (×slack): its delivery is
# retried at 1, 2 and 4 s.
CALLBACK_SLACK = 1.25
CALLBACK_GRACE_SECONDS = 20.0
# No first poll is planned further ahead; a poll planned beyond twice this comes from a clock
# that stepped back and is due at once.
MAX_FIRST_DELAY = 600.0
# A poll round (a sensor tick) must end well inside Dagster's 60 s: no poll starts after
# 25 s, and polls still running at 45 s are cut off (their tasks stay due).
START_POLLS_WITHIN_SECONDS = 25
ROUND_BUDGET_SECONDS = 45
CUT_OFF_MARGIN_SECONDS = 3.0
MIN_LOCK_WAIT = 2.0  # a round past its budget still waits this long to record its answers
CONCURRENT_POLLS = 16
BATCH = 400


@dataclass(frozen=True)
class PollPolicy:
    """How long to believe odd answers before recording them."""

    max_delay: float = 60.0
    # A 404 for a task we made is believed after this many answers spread over this long,
    # and only the API's own (a gateway's or CDN's page of an outage is asked again).
    not_found_answers: int = 3
    not_found_seconds: float = 600.0
    # `completed` without a result link: asked this many times, then `download_failed`.
    missing_result_answers: int = 5
    # A status the vendor does not document keeps the task waiting this long, then `unknown`.
    odd_status_seconds: float = 24 * 3600
    # 404 pages not the API's (a gateway's, a CDN's) end a task `unknown` only when this many
    # failed polls in a row (half an hour, at the longest delay) end it, a day after it was sent.
    page_answers: int = 30


def expected_seconds(body: dict, estimated_time: float | None) -> float:
    typical = body.get("duration", 5) * _TYPICAL_SECONDS_PER_VIDEO_SECOND.get(
        body.get("quality", "720p"), 10.0
    )
    return min(typical, estimated_time) if estimated_time else typical


def first_poll_at(
    body: dict, estimated_time: float | None, now: float, *, callback: bool = False
) -> float:
    """At the expected time, not before: an early poll is a wasted query.

    With a callback on its way (`callback`), only once the callback is overdue: past the
    vendor's estimate (or the typical time) plus a margin for its delivery retries.
    """
    if callback:
        wait = (estimated_time or expected_seconds(body, None)) * CALLBACK_SLACK
        return now + min(MAX_FIRST_DELAY, wait + CALLBACK_GRACE_SECONDS)
    return now + min(MAX_FIRST_DELAY, max(MIN_DELAY, expected_seconds(body, estimated_time)))


# Past this many steps a delay is at its longest anyway; beyond about a thousand, the power
# itself overflows a float and fails the poll round (a task answering 502 for 17 hours).
_MAX_DOUBLINGS = 64


def next_poll_delay(row: LedgerRow, policy: PollPolicy) -> float:
    """Delay after a poll that found the task still running: grows with each poll."""
    base = max(MIN_DELAY, 0.25 * expected_seconds(row.request, row.estimated_time))
    return min(policy.max_delay, base * 1.5 ** min(max(0, row.polls), _MAX_DOUBLINGS))


def _backoff(row: LedgerRow, policy: PollPolicy) -> float:
    return min(policy.max_delay, MIN_DELAY * 2 ** min(row.poll_errors, _MAX_DOUBLINGS))


def interpret(row: LedgerRow, task: Task, now: float, policy: PollPolicy) -> PollUpdate:
    """The ledger update a task answer calls for."""
    seen = {
        "task_id": row.task_id,
        "vendor_status": task.status,
        "progress": task.progress,
        "credits_reserved": task.credits_reserved,
    }
    final = task.final_status
    if final == Status.COMPLETED:
        if task.results:
            return PollUpdate(**seen, status=Status.COMPLETED, result_url=task.results[0])
        answers = row.poll_errors + 1
        if answers >= policy.missing_result_answers:
            return PollUpdate(
                **seen,
                status=Status.DOWNLOAD_FAILED,
                error_code="no_result_link",
                error_message="the vendor answered `completed` without a result link (no "
                f"link in {answers} polls in a row); the task is charged: it is asked for one "
                "again while its link would live",
            )
        return PollUpdate(**seen, next_poll_at=now + _backoff(row, policy), poll_errors=answers)
    if final in (Status.FAILED, Status.CANCELLED):
        return PollUpdate(
            **seen,
            status=Status(final),
            error_code=task.error_code,
            error_message=task.error_message,
        )
    next_at = now + next_poll_delay(row, policy)
    if final in WAITING:
        return PollUpdate(**seen, status=Status(final), next_poll_at=next_at)
    log.warning("task %s: undocumented status %r; still waiting", row.task_id, task.status)
    if now - (row.submitted_at or now) > policy.odd_status_seconds:
        return PollUpdate(
            **seen,
            status=Status.UNKNOWN,
            error_code="undocumented_status",
            error_message=f"the vendor kept answering status {task.status!r} for over "
            f"{policy.odd_status_seconds / 3600:g} h; check the dashboard, then "
            "`seedance-pipeline resolve`",
        )
    return PollUpdate(**seen, status=Status.PROCESSING, next_poll_at=next_at)


def interpret_error(
    row: LedgerRow, error: SeedanceError, now: float, policy: PollPolicy
) -> PollUpdate:
    """The ledger update a failed poll calls for: back off, or believe a repeated 404."""
    answers = row.poll_errors + 1
    if not isinstance(error, NotFoundError):
        return _backed_off(row, now, policy)
    if error.code is None:  # not the API's error body: a gateway's or CDN's page
        # It says nothing of the task, and its time is not the API's 404s' (helper-74). A task
        # still answered so a day after it was sent is settled as an undocumented status is.
        if answers >= policy.page_answers and (
            now - (row.submitted_at or now) > policy.odd_status_seconds
        ):
            return PollUpdate(
                task_id=row.task_id,
                status=Status.UNKNOWN,
                error_code="task_not_found",
                error_message=f"404 pages that are not the API's answered for this task "
                f"{policy.odd_status_seconds / 3600:g} h after it was sent ({error.message}); "
                "check the dashboard, then `seedance-pipeline resolve`",
            )
        return _backed_off(row, now, policy, not_found_since=row.not_found_since)
    since = row.not_found_since or now
    if answers >= policy.not_found_answers and now - since >= policy.not_found_seconds:
        return PollUpdate(
            task_id=row.task_id,
            status=Status.FAILED,
            error_code="task_not_found",
            error_message=f"the vendor answered 404 for this task {answers} times over "
            f"{now - since:.0f} s: {error.message}",
        )
    return _backed_off(row, now, policy, not_found_since=since)


def _backed_off(
    row: LedgerRow, now: float, policy: PollPolicy, not_found_since: float | None = None
) -> PollUpdate:
    """Ask again later, each failure in a row waiting twice as long; `not_found_since`: when
    the API's own 404s began, if this one is among them (or follows only pages since)."""
    return PollUpdate(
        task_id=row.task_id,
        next_poll_at=now + _backoff(row, policy),
        poll_errors=row.poll_errors + 1,
        not_found_since=not_found_since,
    )


class PollingRefused(RuntimeError):
    """The API refused the key while polling (401/403): nothing can be polled."""


@dataclass
class PollSummary:
    polled: int = 0
    finished: int = 0
    errors: int = 0
    first_error: str | None = None  # what to fix, for the sensor's log


def poll_due(
    ledger: Ledger,
    client: Client,
    pool: Executor,
    *,
    limit: int = BATCH,
    start_by: float | None = None,
    finish_by: float | None = None,
    policy: PollPolicy = PollPolicy(),
) -> PollSummary:
    """Poll up to `limit` due tasks on `pool`'s threads, and record what they say.

    No poll starts after `start_by`, and every poll ends by `finish_by` (both
    `time.monotonic()`): one cut off there learns nothing, and its task stays due for the next
    round. The round's answers are written in one transaction once the polls are over.

    Raises:
        PollingRefused: the key was refused (401/403); the answers before it are recorded.
    """
    rows = ledger.due_tasks(time.time(), limit, max_delay=max(policy.max_delay, MAX_FIRST_DELAY))
    summary = PollSummary()
    updates: list[PollUpdate] = []
    refused: list[SeedanceError] = []
    lock = threading.Lock()  # guards the above and below
    ended = 0  # polls that came back within the round
    over = False  # the round has taken its answers: a poll later than that is asked again

    def poll(row: LedgerRow) -> None:
        nonlocal ended
        if refused or (start_by is not None and time.monotonic() > start_by):
            return
        with lock:
            summary.polled += 1
        error = None
        try:
            task = client.get_task(row.task_id, deadline=finish_by)
            update = interpret(row, task, time.time(), policy)
        except (AuthenticationError, AccessDeniedError) as exc:
            refused.append(exc)
            update = None
        except CallCutOff:
            return  # counted below, with those still under way
        except SeedanceError as exc:
            update, error = interpret_error(row, exc, time.time(), policy), str(exc)
        except Exception:  # a bug, not an answer: this task backs off, the round goes on
            log.exception("task %s: polling it failed unexpectedly; asked again later", row.task_id)
            update = _backed_off(row, time.time(), policy)
            error = f"task {row.task_id}: polling it failed unexpectedly (see the log)"
        with lock:
            if over:
                return
            ended += 1
            if update is None:
                return
            updates.append(update)
            if error is None:
                summary.finished += update.status is not None and update.status not in WAITING
            else:
                summary.errors += 1
                summary.first_error = summary.first_error or error

    if rows:
        polls = [pool.submit(poll, r) for r in rows]
        # Each poll ends by `finish_by` itself; the margin is for a name lookup under way.
        timeout = None if finish_by is None else max(0.0, finish_by - time.monotonic())
        wait(polls, None if timeout is None else timeout + CUT_OFF_MARGIN_SECONDS)
        # Not started by then (the pool's threads all held up): asked next round.
        summary.errors += sum(job.cancel() for job in polls)
    with lock:
        over = True
        summary.errors += summary.polled - ended  # cut off, or still under way
    # The answers wait for the ledger's lock only as long as the round has left: a sensor tick
    # must end in time, and an answer not recorded is asked again next round.
    lock_wait = None if finish_by is None else max(MIN_LOCK_WAIT, finish_by - time.monotonic())
    try:
        ledger.record_polls(updates, lock_wait=lock_wait)
    except LedgerBusy as exc:
        log.warning("%s: %d answers not recorded; they are asked again", exc, len(updates))
        summary.errors += len(updates)
    if refused:
        raise PollingRefused(
            f"polling stopped: {refused[0]}; check EVOLINK_API_KEY (and the key's access to "
            "the model)"
        )
    return summary


class PollRounds:
    """Poll rounds on one client and one pool of threads, which keep their connections: a day
    followed by `run` polls every few seconds, and new ones each round would cost more CPU
    than the polls themselves. (Blocking calls on threads: httpx's asyncio stack costs twice
    the CPU a poll.)"""

    def __init__(self, client: Callable[[], Client], max_requests_per_second: float | None = None):
        rate = max_requests_per_second
        # Paced, a poll waits for its slot: keep no more than ~5 s of slots booked ahead.
        concurrency = max(1, min(CONCURRENT_POLLS, int(rate * 5))) if rate else CONCURRENT_POLLS
        self._api = client()
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="poll")

    def __enter__(self) -> PollRounds:
        return self

    def __exit__(self, *exc: object) -> None:
        # A poll past its round (a name lookup, which no timeout bounds) is not waited for.
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._api.close()

    def __call__(
        self, ledger: Ledger, *, limit: int = BATCH, policy: PollPolicy = PollPolicy()
    ) -> PollSummary:
        """Poll the due tasks once."""
        now = time.monotonic()
        return poll_due(
            ledger,
            self._api,
            self._pool,
            limit=limit,
            start_by=now + START_POLLS_WITHIN_SECONDS,
            finish_by=now + ROUND_BUDGET_SECONDS,
            policy=policy,
        )


def poll_round(
    ledger: Ledger,
    client: Callable[[], Client],
    *,
    max_requests_per_second: float | None = None,
    limit: int = BATCH,
    policy: PollPolicy = PollPolicy(),
) -> PollSummary:
    """Poll the due tasks once: a sensor tick's work."""
    with PollRounds(client, max_requests_per_second) as rounds:
        return rounds(ledger, limit=limit, policy=policy)
