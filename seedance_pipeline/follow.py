"""Following a day's tasks while they run: polls, and each video stored as soon as its task
completes, so downloads hide under the rate-limited waiting instead of adding to it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

from sqlalchemy.exc import InterfaceError, OperationalError

from .ledger import OUTAGE_RETRY_SECONDS, OUTAGE_SECONDS, Ledger, LedgerUnreachable, safe_url
from .polling import PollRounds
from .statuses import WAITING, Status
from .storage import StoreRefused, VideoStore
from .videos import DOWNLOAD_WORKERS, max_video_bytes, store_video

# A Dagster run's tag saying its process follows the day itself (`seedance-pipeline run`).
FOLLOWED_TAG = "seedance/followed"
# Tasks fall due one by one as they were submitted: a round for each would cost each task a
# ledger transaction, two reads and an event loop's run. Rounds are this far apart at least,
# and each polls what fell due meanwhile.
ROUND_GAP_SECONDS = 0.5
_DOWN = (OperationalError, InterfaceError)  # the connection failed, not a statement
log = logging.getLogger(__name__)
# The days followed in this process, each with an event set once its follower failed: the
# Dagster run submitting that day in the same process stops sending what none would store.
_FAILED: dict[str, threading.Event] = {}


def follower_failed(partition: str) -> threading.Event:
    """Set once the follower of `partition` in this process failed (a store refusing every
    video, a refused key, the ledger gone); never set when no follower runs."""
    return _FAILED.get(partition, threading.Event())


def follow_day(
    partition: str,
    ledger: Ledger,
    evolink,
    store: VideoStore,
    submitting: threading.Event,
    progress: Callable[[dict[Status, int], int], None] = lambda counts, stored: None,
    *,
    polls: bool = True,
    refused: threading.Event | None = None,
) -> None:
    """Poll the day's tasks and store their videos until submission is over (`submitting`
    cleared) and no task runs, no claim is open, no download is under way and no callback
    that could settle an `unknown` row is still to come.

    Without `polls` (the sensor polls), only store the videos of tasks found completed, and
    stop once submission is over and the downloads under way have finished.

    A prompt another run is submitting right now counts as running: its answer comes soon, or
    its process died and the claim becomes `unknown`.

    `refused` is set the moment the store refuses a video (`StoreRefused`): each create sent
    after it pays for a video none would store.

    Raises:
        PollingRefused: the API refused the key while polling.
        StoreRefused: the store refuses every video.
    """
    cap = max_video_bytes()
    with (
        evolink.client() as client,
        (
            PollRounds(evolink.poll_client, evolink.max_requests_per_second)
            if polls
            else nullcontext()
        ) as poll_round,
        ThreadPoolExecutor(DOWNLOAD_WORKERS, thread_name_prefix="store") as pool,
    ):
        downloads: dict[str, Future] = {}
        woken = threading.Event()  # a download raised: stop at once, not after the sleep

        def ended(job: Future) -> None:
            if not job.cancelled() and (error := job.exception()) is not None:
                woken.set()
                if refused is not None and isinstance(error, StoreRefused):
                    refused.set()

        last_round = 0.0
        submitted = False
        while True:
            # Read once a pass: cleared between the give-up and the end-of-pass test, it
            # ended the follower without giving up this process's claims (helper-79).
            sending = submitting.is_set()
            if not submitted and not sending:
                submitted = True
                ledger.give_up_own_claims(partition)  # left by a write that failed
            now = time.time()
            day = ledger.day_state(partition, now)
            if day.claims_to_check:
                ledger.resolve_abandoned_claims(partition)
            # Rows to store beyond those downloading now: the day has new videos.
            if day.to_store > sum(not job.done() for job in downloads.values()):
                for row in ledger.rows_to_store(partition, now):
                    if row.prompt_id not in downloads:
                        job = pool.submit(store_video, row, client, store, ledger, cap)
                        job.add_done_callback(ended)
                        downloads[row.prompt_id] = job
            for prompt_id, job in list(downloads.items()):
                if job.done():
                    job.result()  # an unexpected error surfaces here
                    del downloads[prompt_id]
            progress(day.counts, day.stored)
            claims = day.counts.get(Status.SUBMITTING, 0)
            running = sum(day.counts.get(s, 0) for s in WAITING)
            # An `unknown` row whose callback may still come: the receiver settles it.
            callbacks = day.awaiting_callbacks
            busy = sending or bool(downloads)
            if polls:
                busy = busy or bool(claims or running or callbacks)
            if not busy:
                return
            due = day.next_poll_at or now + 5.0
            if claims or downloads or sending:
                due = min(due, now + 0.5)
            elif callbacks:
                due = min(due, now + 1.0)  # the receiver, not a poll, settles these rows
            due = max(due, last_round + ROUND_GAP_SECONDS)
            woken.wait(min(5.0, max(0.0, due - time.time())))
            if running and polls:
                last_round = time.time()
                poll_round(ledger)


@contextmanager
def following(
    partition: str,
    ledger: Ledger,
    evolink,
    store: VideoStore,
    *,
    polls: bool = True,
    progress: Callable[[dict[Status, int], int], None] = lambda counts, stored: None,
) -> Iterator[threading.Event]:
    """`follow_day` on a thread while the block submits; after the block, wait for it.

    The block gets an event set as soon as the follower fails (also `follower_failed`), to
    stop sending. A ledger that stops answering for a while is waited for
    (`_outlasting_outages`).

    Raises:
        PollingRefused: (after a block that succeeded) the API refused the key while polling.
        LedgerUnreachable: (after the block) the ledger did not answer for too long.
    """
    submitting, failure, failed = threading.Event(), [], threading.Event()
    submitting.set()

    def follow() -> None:
        try:
            _outlasting_outages(
                ledger,
                lambda: follow_day(
                    partition,
                    ledger,
                    evolink,
                    store,
                    submitting,
                    progress,
                    polls=polls,
                    refused=failed,
                ),
            )
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)
            failed.set()

    follower = threading.Thread(target=follow, name=f"follow-{partition}", daemon=True)
    _FAILED[partition] = failed
    follower.start()
    try:
        yield failed
    finally:
        submitting.clear()
        follower.join()
        if _FAILED.get(partition) is failed:
            del _FAILED[partition]
    if failure:
        raise failure[0]


def _outlasting_outages(ledger: Ledger, follow: Callable[[], None]) -> None:
    """`follow()`, started again once the ledger's database answers a ping after failing (its
    state is all in the ledger); an outage is timed from its first failure, across restarts
    that fail again, until a restart works for OUTAGE_SECONDS.

    Raises:
        LedgerUnreachable: the database kept failing for OUTAGE_SECONDS.
    """
    failed = None
    while True:
        started = time.monotonic()
        try:
            return follow()
        except _DOWN as exc:
            why = _reason(exc)
            # The same outage unless the follower had worked as long as an outage may last:
            # a ping only reads (a full disk answers reads), and a poll round works up to 45 s
            # before its one write.
            if failed is None or time.monotonic() - started > OUTAGE_SECONDS:
                failed = time.monotonic()
        while True:
            if time.monotonic() - failed > OUTAGE_SECONDS:
                raise LedgerUnreachable(
                    f"the ledger ({safe_url(ledger.db.url)}) has failed for "
                    f"{OUTAGE_SECONDS:.0f} s ({why}); once it works, run the day "
                    "again: what was sent is recorded, and nothing is sent twice"
                )
            log.warning(
                "the ledger did not answer (%s); trying again in %.0f s", why, OUTAGE_RETRY_SECONDS
            )
            time.sleep(OUTAGE_RETRY_SECONDS)
            try:
                ledger.db.ping()
                break
            except _DOWN as exc:
                why = _reason(exc)


def _reason(exc: Exception) -> str:
    """The driver's own words (`database or disk is full`), without SQLAlchemy's SQL and link."""
    said = str(getattr(exc, "orig", None) or type(exc).__name__).strip().splitlines()
    return said[0][:200] if said else type(exc).__name__
