"""Submitting accepted requests exactly once, through the ledger."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from sqlalchemy.exc import IntegrityError

from .callbacks import with_callback
from .ledger import (
    OUTAGE_RETRY_SECONDS,
    OUTAGE_SECONDS,
    AnswerNotRecorded,
    ClaimLost,
    Ledger,
    TaskHeld,
)
from .polling import first_poll_at
from .publishing import PublishError, sendable
from .seedance import (
    AccessDeniedError,
    AuthenticationError,
    CallHalted,
    Client,
    InsufficientQuotaError,
    InvalidRequestError,
    OutcomeUnknownError,
    SeedanceError,
)
from .statuses import WAITING, Status

T = TypeVar("T")
log = logging.getLogger(__name__)

# Creates in flight at once: each waits on the vendor's answer and two ledger commits, so one
# at a time would fall short of the key's create limit; the rate itself is the client's pacing.
SUBMIT_WORKERS = 4


class Planned(NamedTuple):
    """An accepted request: the body to send, its estimate, the catalog row's fingerprint and
    the (width, height) the plan expects of its video."""

    prompt_id: str
    body: dict[str, Any]
    estimate: float | None
    request_sha256: str | None = None
    frame: tuple[int, int] | None = None
    campaign: str | None = None


class SubmissionStopped(RuntimeError):
    """Submission cannot go on (bad key, no credits, media not signed); the rest stays
    unsubmitted. Raised by `submit_all` once every create under way was answered, saying what
    this submission sent (`sent`)."""

    def __init__(self, reason: str, then: str, sent: SubmitSummary | None = None):
        self.reason, self.then = reason, then
        after = "" if sent is None else f" after {sent.told()}"
        super().__init__(f"{reason} — submission stopped{after}; {then}")


@dataclass
class SubmitSummary:
    submitted: int = 0
    resubmitted: int = 0
    already_in_ledger: int = 0
    refused: int = 0
    unknown: int = 0
    not_sent: list[str] = field(default_factory=list)
    claims_lost: list[str] = field(default_factory=list)  # settled while this process paused
    sent_on_other_days: dict[str, str] = field(default_factory=dict)
    credits_reserved: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def told(self) -> str:
        """What was sent, for a stop's message."""
        reserved = round(self.credits_reserved, 4)
        said = f"{self.submitted} new task(s), reserving {reserved:.15g} credits"
        if self.unknown:
            lost = f"{self.unknown} request(s) whose answer was lost (each may have made a task)"
            said += f", and {lost}"
        return said


def submit_all(
    ledger: Ledger,
    client: Client,
    partition: str,
    accepted: Iterable[Planned],
    max_attempts: int = 1,
    callback_base: str | None = None,
    stop: threading.Event | None = None,
) -> SubmitSummary:
    """Submit each planned request not yet in the ledger, then resubmit failed tasks with a
    transient vendor error while they have attempts left (`max_attempts`), unless their
    prompt is no longer among `accepted` (those are never resubmitted).

    With `callback_base` (the receiver's URL), each attempt carries its own callback URL
    unless the catalog row set one; the ledger stores the body with the token redacted. Media
    in S3 are presigned for each attempt; the ledger stores their `s3://` URIs.

    A prompt_id already sent on another day is not sent again (the summary names the day).

    Once `stop` is set (the follower storing the day's videos failed), nothing more is sent:
    each task would be paid for a video no one stores.

    Raises:
        SubmissionStopped: the key was refused (401), credits ran out (402) or media in S3
            could not be presigned; what was submitted before stays recorded and the rest can
            be submitted by a later run.
    """
    summary = SubmitSummary()
    ledger.resolve_abandoned_claims(partition)
    accepted = list(accepted)
    not_claimed: list[str] = []
    halted = threading.Event()  # interrupted: no create goes out any more
    stop = stop or threading.Event()

    def first(p: Planned) -> None:
        sent, stored, token = with_callback(p.body, callback_base)
        sent = _presigned(sent, partition)
        # Its clocks start before the claim.
        guard = _claim_guard(ledger, partition, p.prompt_id, stop)
        if ledger.claim(
            partition,
            p.prompt_id,
            stored,
            p.estimate,
            request_sha256=p.request_sha256,
            callback_token_sha256=token,
            expected_frame=p.frame,
            campaign=p.campaign,
        ):
            _submit_claimed(
                ledger, client, partition, p.prompt_id, sent, summary, bool(token), guard, halted
            )
        else:
            with summary.lock:
                not_claimed.append(p.prompt_id)

    def again(row) -> None:
        sent, _, token = with_callback(row.request, callback_base)
        sent = _presigned(sent, partition)
        guard = _claim_guard(ledger, partition, row.prompt_id, stop)
        if ledger.claim_resubmission(
            partition, row.prompt_id, max_attempts, callback_token_sha256=token
        ):
            log.info(
                "%s: resubmitting (attempt %d) after %s",
                row.prompt_id,
                row.attempt + 1,
                row.error_code,
            )
            if _submit_claimed(
                ledger, client, partition, row.prompt_id, sent, summary, bool(token), guard, halted
            ):
                with summary.lock:
                    summary.resubmitted += 1

    try:
        _in_parallel([lambda p=p: first(p) for p in accepted], stop, halted)
        # The claim refuses a prompt another day has (in its own transaction): which were those.
        summary.sent_on_other_days = ledger.sent_on_other_days(partition, not_claimed)
        summary.already_in_ledger = len(not_claimed) - len(summary.sent_on_other_days)
        due = ledger.resubmittable(partition, max_attempts)
        wanted = {p.prompt_id for p in accepted} - summary.sent_on_other_days.keys()
        if gone := [r.prompt_id for r in due if r.prompt_id not in wanted]:
            log.warning("%s: not resubmitted, no longer accepted for the day: %s", partition, gone)
            ledger.stop_resubmission(partition, gone)
        _in_parallel([lambda r=r: again(r) for r in due if r.prompt_id in wanted], stop, halted)
    except SubmissionStopped as exc:  # counted once the creates under way were answered
        raise SubmissionStopped(exc.reason, exc.then, summary) from None
    return summary


def send_the_rest(partition: str) -> str:
    """How to submit a day's remaining prompts, for shell and Dagster users alike."""
    return (
        f"run the day again to send the rest: `seedance-pipeline run {partition}`, or "
        f"materialise generation_requests and submitted_tasks for {partition} in Dagster"
    )


def through_interrupts(work: Callable[[], T], interrupts: tuple[type[BaseException], ...]) -> T:
    """`work()`, done again when one of `interrupts` (the user pressing Ctrl-C again, or
    Terminate) cuts it short: leaving a stopped day to its user must not be left half done."""
    while True:
        try:
            return work()
        except interrupts:
            continue


def hold_stopped_day(ledger: Ledger, partition: str, max_attempts: int, unsent: bool) -> str:
    """After an interrupt: leave the day to its user (not known to be complete) when a prompt
    is `unsent` or a task may be resubmitted, as the sensor would send on, or resubmit, what
    was stopped, or a task failing after it. What waits for the day's next run, for the message
    ('' when nothing does, or the unsent prompts say it)."""
    if not (unsent or ledger.may_resubmit(partition, max_attempts)):
        return ""
    ledger.set_submission_complete(partition, None)
    return (
        ""
        if unsent
        else "; a task that failed (or fails) transiently is resubmitted only by the day's next "
        f"run, and the day's tables wait for it (`seedance-pipeline run {partition}`, or "
        "materialise generation_requests and submitted_tasks)"
    )


def _presigned(body: dict, partition: str) -> dict:
    """`sendable(body)`, signed before its claim: a request that cannot go out is not claimed."""
    try:
        return sendable(body)
    except PublishError as exc:
        raise SubmissionStopped(
            str(exc), f"fix the AWS settings, then {send_the_rest(partition)}"
        ) from None


def _in_parallel(
    jobs: list[Callable[[], None]], stop: threading.Event, halted: threading.Event
) -> None:
    """Run `jobs` on SUBMIT_WORKERS threads; after a SubmissionStopped no further job starts,
    those under way finish, and it is raised. So after an interrupt (the run terminated,
    Ctrl-C) or an unexpected error, once `halted` is set: no job waiting for a thread starts,
    creates waiting for their turn or a retry give up at once, and those already sent are
    answered and recorded before it is raised. Nor does a job start after `stop` is set."""
    stopped: list[SubmissionStopped] = []

    def guarded(job: Callable[[], None]) -> None:
        if not stopped and not stop.is_set():
            try:
                job()
            except SubmissionStopped as exc:
                stopped.append(exc)

    futures: list[Future] = []
    with ThreadPoolExecutor(SUBMIT_WORKERS, thread_name_prefix="submit") as pool:
        try:
            futures.extend(pool.submit(guarded, job) for job in jobs)
            for done in futures:
                done.result()  # an unexpected error surfaces here
        except BaseException:
            halted.set()
            pool.shutdown(wait=False, cancel_futures=True)
            _await_under_way(futures)
            raise
    if stopped:
        raise stopped[0]


def _await_under_way(futures: list[Future]) -> None:
    """Wait for the jobs under way to end, through any further interrupt: a create on the wire
    may make a paid task, which only its thread can record; and a claim its thread is releasing
    would be left open, to become `unknown`."""
    while under_way := [future for future in futures if not future.done()]:
        log.warning(
            "submission stopped; waiting for the %d create(s) under way to be answered (within "
            "a minute) and recorded (up to %.0f s more while the ledger does not answer)",
            len(under_way),
            RECORD_FOR_SECONDS,
        )
        try:
            wait(under_way)
        except BaseException:  # another Ctrl-C or Terminate: their tasks are still to record
            continue


# A ledger write after the vendor answered (the answer cannot be asked for twice) is tried
# again every RECORD_RETRY_SECONDS for as long as the follower waits out an outage: a lock held
# past its wait, a database restarting or failing over.
RECORD_RETRY_SECONDS = OUTAGE_RETRY_SECONDS
RECORD_FOR_SECONDS = OUTAGE_SECONDS


def _recorded(write: Callable[[], None]) -> None:
    started = time.monotonic()
    while True:
        try:
            return write()
        except (AnswerNotRecorded, IntegrityError):  # the same write fails the same way
            raise
        except Exception as exc:
            if time.monotonic() - started + RECORD_RETRY_SECONDS > RECORD_FOR_SECONDS:
                raise
            log.warning(
                "recording the vendor's answer failed (%s); again in %.0f s",
                exc,
                RECORD_RETRY_SECONDS,
            )
            time.sleep(RECORD_RETRY_SECONDS)


def _claim_guard(
    ledger: Ledger, partition: str, prompt_id: str, stop: threading.Event
) -> Callable[[], None]:
    """To be called before each try of the create of a claim about to be made: none goes out
    once `stop` is set (a try after the first follows refusals that made no task). A
    process paused past its lease must not send a claim settled meanwhile, so unless the claim
    is a moment old by both clocks (a pause moves them on), the ledger is asked whether it is
    still this process's. That read would cost about as much CPU as the create, on every
    create."""
    monotonic, wall = time.monotonic(), time.time()
    fresh = min(FRESH_CLAIM_SECONDS, ledger.leases.seconds / 4)

    def guard() -> None:
        if stop.is_set():
            raise CallHalted("the submission was stopped")
        if time.monotonic() - monotonic > fresh or time.time() - wall > fresh:
            ledger.hold_claim(partition, prompt_id)

    return guard


# A claim younger than this by both clocks (and than a quarter of its lease) is sent without
# asking the ledger whether it is still this process's: its lease, taken with it, has most of
# its time left.
FRESH_CLAIM_SECONDS = 1.0


def _submit_claimed(
    ledger: Ledger,
    client: Client,
    partition: str,
    prompt_id: str,
    body: dict,
    summary: SubmitSummary,
    callback: bool,
    guard: Callable[[], None],
    halted: threading.Event,
) -> bool:
    """Send one claimed request and record what became of it; True if a task was made.

    `callback`: the body carries our callback URL, so polls wait for the callback.
    `guard` (`_claim_guard`): called before each try is sent. Once `halted` is set, no try is.
    """
    try:
        task = client.create_task(body, before_send=guard, halt=halted)
    except ClaimLost as exc:
        log.error("%s", exc)
        with summary.lock:
            summary.claims_lost.append(prompt_id)
    except CallHalted:  # like the prompts not yet started: left for a later run
        try:
            ledger.release(partition, prompt_id)
        except Exception as failed:  # the claim becomes `unknown` once its lease runs out
            log.error(
                "%s/%s: not sent, and no task was made for it, but the ledger could not release "
                "its claim (%s): once it is `unknown`, `seedance-pipeline resolve %s %s "
                "--forget`",
                partition,
                prompt_id,
                failed,
                partition,
                prompt_id,
            )
            return False
        log.info("%s: not sent, as the submission was stopped", prompt_id)
    except OutcomeUnknownError as exc:
        due = first_poll_at(body, None, time.time(), callback=True) if callback else None
        ledger.record_outcome_unknown(partition, prompt_id, str(exc), callback_due=due)
        with summary.lock:
            summary.unknown += 1
    except (InvalidRequestError, AccessDeniedError) as exc:
        ledger.record_refused(partition, prompt_id, exc.code, exc.message)
        with summary.lock:
            summary.refused += 1
    except (AuthenticationError, InsufficientQuotaError) as exc:
        ledger.release(partition, prompt_id)
        hint = (
            "check EVOLINK_API_KEY"
            if isinstance(exc, AuthenticationError)
            else "top up the EvoLink account"
        )
        raise SubmissionStopped(str(exc), f"{hint}, then {send_the_rest(partition)}") from None
    except SeedanceError as exc:  # retries exhausted: refused connections or 429s, no task
        ledger.release(partition, prompt_id)
        with summary.lock:
            summary.not_sent.append(prompt_id)
        log.warning("%s: not submitted (%s); a later run will try again", prompt_id, exc)
    else:
        try:
            _recorded(
                lambda: ledger.record_submitted(
                    partition,
                    prompt_id,
                    task.id,
                    first_poll_at(body, task.estimated_time, time.time(), callback=callback),
                    status=task.status if task.status in WAITING else Status.PROCESSING,
                    vendor_status=task.status,
                    credits_reserved=task.credits_reserved,
                    estimated_time=task.estimated_time,
                    progress=task.progress,
                )
            )
        except (TaskHeld, IntegrityError) as exc:  # IntegrityError: two at once, on PostgreSQL
            holder = str(exc) if isinstance(exc, TaskHeld) else "another row of the ledger"
            ledger.record_outcome_unknown(
                partition,
                prompt_id,
                f"the create answered with task {task.id}, which {holder} already holds (an "
                "answer repeated by the vendor or a gateway): look the prompt up on the EvoLink "
                "dashboard, then `seedance-pipeline resolve`",
            )
            with summary.lock:
                summary.unknown += 1
            return False
        except AnswerNotRecorded as exc:  # its row went on without it: the task is an orphan
            log.error(
                "%s/%s: task %s was made (and is charged) but %s; look it up on the EvoLink "
                "dashboard",
                partition,
                prompt_id,
                task.id,
                exc,
            )
            return False
        except Exception:
            attach = f"seedance-pipeline resolve {partition} {prompt_id} --task-id {task.id}"
            log.error(
                "%s/%s: task %s was made (and is charged) but the ledger could not record it; "
                "once the ledger works: %s",
                partition,
                prompt_id,
                task.id,
                attach,
            )
            raise
        with summary.lock:
            summary.submitted += 1
            summary.credits_reserved += task.credits_reserved or 0.0
        return True
    return False
