"""The ledger on both backends: claims, leases across hosts, settling `unknown`, migrations."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from seedance_pipeline.ledger import AnswerNotRecorded, Ledger, PollUpdate, TaskHeld, database
from seedance_pipeline.ledger.database import safe_url, sql
from seedance_pipeline.ledger.migrations import MIGRATIONS
from seedance_pipeline.polling import MIN_LOCK_WAIT, poll_due
from seedance_pipeline.seedance import Client
from seedance_pipeline.statuses import Status

DAY = "2026-11-20"
REQUEST = {"model": "seedance-2.0-text-to-video", "prompt": "x", "duration": 4}
# Another machine: its kernel differs, so only its lease tells whether it is alive.
OTHER_HOST = "worker-b/ffffffff-0000-0000-0000-000000000000.1/4242/abcdef01"


def poll_once(ledger, transport, **options):
    """One `poll_due` round through the sync client on `transport`, 4 polls at a time."""
    with Client("k", transport=transport) as client, ThreadPoolExecutor(4) as pool:
        return poll_due(ledger, client, pool, **options)


@pytest.fixture
def ledger(ledger_url) -> Ledger:
    """`sent` has task-1; `lost` was sent but its answer never came (`unknown`)."""
    ledger = Ledger(ledger_url)
    for prompt_id in ("sent", "lost"):
        assert ledger.claim(DAY, prompt_id, REQUEST, 10.0)
    ledger.record_submitted(DAY, "sent", "task-1", time.time(), credits_reserved=10.0)
    ledger.record_outcome_unknown(DAY, "lost", "the answer was lost")
    return ledger


def _statuses(ledger: Ledger) -> dict[str, tuple[str, str | None]]:
    return {r.prompt_id: (r.status, r.task_id) for r in ledger.rows(DAY)}


def _claim_as(ledger: Ledger, prompt_id: str, owner: str, lease_expires_at: float) -> None:
    """A claim written by another worker (as its own `claim` would)."""
    assert ledger.claim(DAY, prompt_id, REQUEST, 10.0)
    with ledger.db.transaction() as db:
        db.execute(
            sql("UPDATE tasks SET owner = :o, lease_expires_at = :l WHERE prompt_id = :id"),
            {"o": owner, "l": lease_expires_at, "id": prompt_id},
        )


@pytest.mark.parametrize(
    ("prompt_id", "task_id", "message"),
    [
        ("typo", None, "2026-11-20/typo: no such row in the ledger"),
        ("sent", None, "2026-11-20/sent is pending, not unknown"),
        ("lost", "task-1", "task task-1 is already attached to 2026-11-20/sent"),
    ],
)
def test_resolve_refuses_what_it_cannot_settle_and_changes_nothing(
    ledger, prompt_id, task_id, message
):
    before = _statuses(ledger)
    with pytest.raises(LookupError, match=message):
        ledger.resolve(DAY, prompt_id, task_id)
    assert _statuses(ledger) == before


def test_resolve_refuses_a_task_of_an_earlier_attempt_and_says_so(ledger):
    """The earlier attempt's task was held by no row once archived; attached to the retry it
    would end it failed (and, with resubmission on, pay for another)."""
    ledger.record_polls([PollUpdate("task-1", Status.FAILED, error_code="service_error")])
    assert ledger.claim_resubmission(DAY, "sent", 2)
    ledger.record_outcome_unknown(DAY, "sent", "the retry's answer was lost")
    before = _statuses(ledger)
    with pytest.raises(
        LookupError, match="already attached to an earlier attempt of 2026-11-20/sent"
    ):
        ledger.resolve(DAY, "sent", "task-1")
    assert _statuses(ledger) == before


def test_a_create_answer_recorded_late_neither_undoes_a_settled_row_nor_takes_a_held_task(
    ledger,
):
    """Its write is retried for up to 120 s, past the claim's lease: meanwhile the claim can
    turn `unknown` and a callback attach the task and settle it. The late write set the row back
    to `processing`. A task another row holds is refused, and nothing is written."""
    ledger.resolve(DAY, "lost", "task-2")  # as a callback would attach it
    ledger.record_polls([PollUpdate("task-2", Status.COMPLETED, result_url="https://cdn.x/v")])
    ledger.record_submitted(DAY, "lost", "task-2", time.time(), status="processing")
    assert _statuses(ledger)["lost"] == ("completed", "task-2")

    assert ledger.claim(DAY, "late", REQUEST, 10.0)
    ledger.record_outcome_unknown(DAY, "late", "settled as abandoned while the write was tried")
    ledger.record_submitted(DAY, "late", "task-3", time.time(), status="processing")
    assert _statuses(ledger)["late"] == ("processing", "task-3")  # its id is kept after all

    assert ledger.claim(DAY, "repeat", REQUEST, 10.0)
    with pytest.raises(TaskHeld, match=f"{DAY}/sent"):
        ledger.record_submitted(DAY, "repeat", "task-1", time.time())
    assert _statuses(ledger)["repeat"] == ("submitting", None)
    # The answer for a row gone on without it is said, never written over what it became: a
    # task attached by hand, a row forgotten, another run's claim of it since.
    with pytest.raises(AnswerNotRecorded, match=f"{DAY}/lost was settled meanwhile"):
        ledger.record_submitted(DAY, "lost", "task-4", time.time())
    ledger.record_outcome_unknown(DAY, "repeat", "lost")
    ledger.resolve(DAY, "repeat", None)
    with pytest.raises(AnswerNotRecorded, match=f"{DAY}/repeat was forgotten meanwhile"):
        ledger.record_submitted(DAY, "repeat", "task-5", time.time())
    _claim_as(ledger, "repeat", OTHER_HOST, time.time() + 60)
    with pytest.raises(AnswerNotRecorded, match=r"settled meanwhile \(submitting, no task\)"):
        ledger.record_submitted(DAY, "repeat", "task-5", time.time())
    ledger.record_outcome_unknown(DAY, "repeat", "nor is a late loss written on it")
    ledger.record_outcome_unknown(DAY, "lost", "nor on a row that has ended")
    assert _statuses(ledger)["repeat"] == ("submitting", None)
    assert _statuses(ledger)["lost"] == ("completed", "task-2")


def test_resolve_attaches_the_dashboards_task_or_forgets_the_row(ledger):
    claimed = time.time()
    time.sleep(0.2)
    ledger.resolve(DAY, "lost", "task-2")
    assert _statuses(ledger)["lost"] == ("pending", "task-2")
    (lost,) = [r for r in ledger.rows(DAY) if r.prompt_id == "lost"]
    assert lost.submitted_at < claimed  # when it was sent, not when it was found
    assert ledger.claim(DAY, "other", REQUEST, 10.0)
    ledger.record_outcome_unknown(DAY, "other", "lost too")
    ledger.resolve(DAY, "other", None)
    assert "other" not in _statuses(ledger)
    assert ledger.claim(DAY, "other", REQUEST, 10.0)  # the next run may submit it again


def test_resolve_settles_a_crashed_runs_claim_and_says_what_to_do_for_other_rows(ledger):
    # The crashed run's message said: once the ledger works, resolve with the task it made.
    _claim_as(ledger, "crashed", OTHER_HOST, time.time() - 1)
    ledger.resolve(DAY, "crashed", "task-9")
    assert _statuses(ledger)["crashed"] == ("pending", "task-9")

    _claim_as(ledger, "sending", OTHER_HOST, time.time() + 60)
    with pytest.raises(LookupError, match="is submitting, not unknown: a live run is sending it"):
        ledger.resolve(DAY, "sending", "task-10")
    # A callback found the lost task after `run` ended: the video is what is left to do.
    ledger.record_polls([PollUpdate("task-1", Status.COMPLETED, result_url="https://x/v.mp4")])
    with pytest.raises(LookupError, match=f"not stored yet; `seedance-pipeline run {DAY}`"):
        ledger.resolve(DAY, "sent", None)
    assert _statuses(ledger)["sent"] == ("completed", "task-1")


def test_a_prompt_is_claimed_once_however_many_workers_race(ledger_url):
    workers = [Ledger(ledger_url) for _ in range(8)]
    won: list[str] = []
    start = threading.Barrier(len(workers))

    def race(worker: Ledger) -> None:
        start.wait()
        won.extend(f"p{i}" for i in range(20) if worker.claim(DAY, f"p{i}", REQUEST, 1.0))

    threads = [threading.Thread(target=race, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(won) == sorted(f"p{i}" for i in range(20))


def test_a_prompt_moved_between_days_is_claimed_on_one_day_however_many_runs_race(ledger_url):
    days = [DAY, "2026-11-21"]
    workers = [Ledger(ledger_url) for _ in range(8)]
    won: list[tuple[str, str]] = []
    start = threading.Barrier(len(workers))

    def race(n: int, worker: Ledger) -> None:
        start.wait()
        day = days[n % 2]  # half the runs think the prompts are due on each day
        won.extend((f"p{i}", day) for i in range(20) if worker.claim(day, f"p{i}", REQUEST, 1.0))

    threads = [threading.Thread(target=race, args=(n, w)) for n, w in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p for p, _ in won) == sorted(f"p{i}" for i in range(20))
    for day in days:
        other = days[1 - days.index(day)]
        assert workers[0].sent_on_other_days(other, [f"p{i}" for i in range(20)]) == {
            p: d for p, d in won if d == day
        }


def test_another_hosts_claim_waits_for_its_lease_then_becomes_unknown_never_resent(ledger):
    _claim_as(ledger, "held", OTHER_HOST, time.time() + 60)
    assert ledger.resolve_abandoned_claims(DAY) == 0  # its lease is live: it may answer yet
    assert not ledger.claim(DAY, "held", REQUEST, 10.0)
    assert _statuses(ledger)["held"] == ("submitting", None)
    with ledger.db.transaction() as db:  # ... its owner stops renewing: the lease runs out
        db.execute(sql("UPDATE tasks SET lease_expires_at = :t"), {"t": time.time() - 1})
    assert not ledger.claim(DAY, "held", REQUEST, 10.0)  # settled, not claimed again
    row = next(r for r in ledger.rows(DAY) if r.prompt_id == "held")
    assert row.status == Status.UNKNOWN and "resolve" in row.error_message


def test_a_dead_process_on_this_machine_is_seen_at_once_despite_its_lease(ledger):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    here = ledger.owner.rsplit("/", 2)[0]  # this host and kernel, another pid
    _claim_as(ledger, "orphan", f"{here}/{dead}/00000000", time.time() + 60)
    assert ledger.resolve_abandoned_claims(DAY) == 1
    assert _statuses(ledger)["orphan"] == ("unknown", None)


def test_a_live_owner_renews_its_lease(ledger_url):
    ledger = Ledger(ledger_url, lease=1.5)
    assert ledger.claim(DAY, "slow", REQUEST, 10.0)
    time.sleep(2.5)  # longer than the lease: the keeper renewed it meanwhile
    with ledger.db.read() as db:
        expires = db.execute(sql("SELECT lease_expires_at FROM tasks")).scalar()
    assert expires > time.time()
    assert ledger.resolve_abandoned_claims(DAY) == 0


def test_a_run_that_only_resubmits_renews_its_claims_lease(ledger_url):
    """Its claim would otherwise turn `unknown` (and its task's answer be lost to the row)
    while a create waits out a long Retry-After."""
    first = Ledger(ledger_url)
    assert first.claim(DAY, "p1", REQUEST, 1.0)
    first.record_submitted(DAY, "p1", "task-1", time.time())
    with first.db.transaction() as db:
        db.execute(sql("UPDATE tasks SET status = 'failed', error_code = 'service_error'"))
    resubmitting = Ledger(ledger_url, lease=1.5)  # a new process: no claim() before
    assert resubmitting.claim_resubmission(DAY, "p1", 3)
    time.sleep(2.5)  # longer than the lease
    assert first.resolve_abandoned_claims(DAY) == 0
    assert _statuses(first)["p1"] == ("submitting", None)


def test_a_failed_try_never_undoes_a_video_another_process_stored(ledger):
    ledger.record_polls([PollUpdate("task-1", status=Status.COMPLETED, result_url="https://x/v")])
    ledger.record_video(DAY, "sent", "videos/2026-11-20/sent.mp4", "0" * 64, 10, {"width": 1})
    ledger.record_download_failed(DAY, "sent", Status.DOWNLOAD_FAILED, "download_failed", "x", 0)
    row = next(r for r in ledger.rows(DAY) if r.prompt_id == "sent")
    assert (row.status, row.video_uri) == ("completed", "videos/2026-11-20/sent.mp4")


def test_a_rounds_answers_are_written_together_and_never_undo_a_settled_row(ledger):
    ledger.record_polls(
        [
            PollUpdate(
                "task-1",
                status=Status.COMPLETED,
                vendor_status="completed",
                result_url="https://cdn.example.com/v.mp4",
            ),  # fmt: skip
            PollUpdate("task-1", status=Status.PROCESSING, next_poll_at=time.time()),
        ]
    )
    row = next(r for r in ledger.rows(DAY) if r.prompt_id == "sent")
    assert (row.status, row.result_url, row.polls) == (
        "completed",
        "https://cdn.example.com/v.mp4",
        1,
    )
    assert row.completed_at is not None


def test_a_poll_round_keeps_its_deadline_while_another_writer_holds_the_lock(ledger):
    """The answer waits for the lock only as long as the round has left, then is dropped:
    the task stays due and the next round asks again and records it."""
    task_id = "task-1"  # the fixture's `sent`, due now
    answer = {
        "id": task_id,
        "object": "video.generation.task",
        "created": 1774857405,
        "model": REQUEST["model"],
        "status": "completed",
        "progress": 100,
        "results": ["https://cdn.example.com/v.mp4"],
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=answer))

    def one_round(finish_in: float):
        return poll_once(ledger, transport, finish_by=time.monotonic() + finish_in)

    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:  # another writer: a transaction on the same row, left open
        with ledger.db.transaction() as db:
            db.execute(sql("UPDATE tasks SET polls = polls WHERE task_id = :t"), {"t": task_id})
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        blocked = one_round(finish_in=0.5)
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert (blocked.polled, blocked.errors) == (1, 1)
    assert MIN_LOCK_WAIT <= waited < MIN_LOCK_WAIT + 5, waited
    row = next(r for r in ledger.rows(DAY) if r.prompt_id == "sent")
    assert (row.status, row.polls) == ("pending", 0)

    again = one_round(finish_in=30)
    assert (again.polled, again.errors) == (1, 0)
    row = next(r for r in ledger.rows(DAY) if r.prompt_id == "sent")
    assert (row.status, row.result_url) == ("completed", "https://cdn.example.com/v.mp4")


def test_a_poll_answer_with_a_25_digit_progress_does_not_stop_the_round(ledger):
    """No ledger column holds such a number: written, it failed the whole round's transaction,
    every round, and the day's finished tasks were never recorded."""
    answer = {
        "id": "task-1",
        "status": "completed",
        "progress": 10**25,
        "results": ["https://cdn.example.com/v.mp4"],
        "usage": {"credits_reserved": float("inf")},
    }
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=json.dumps(answer)))

    summary = poll_once(ledger, transport)
    assert (summary.polled, summary.finished, summary.errors) == (1, 1, 0)
    row = next(r for r in ledger.rows(DAY) if r.prompt_id == "sent")
    assert (row.status, row.result_url, row.credits_reserved) == (
        "completed",
        "https://cdn.example.com/v.mp4",
        10.0,  # the create's answer; the poll's `inf` is not recorded
    )


@pytest.mark.parametrize(
    "odd",
    [
        {"status": "process\ud800ing"},
        {"status": "completed", "results": ["https://cdn.example.com/v.mp4?x=\u0000"]},
        {"status": "completed", "results": ["https://cdn.example.com/\ud800.mp4"]},
    ],
)
def test_a_poll_answer_holding_text_no_database_stores_does_not_stop_the_round(ledger, odd):
    """A lone surrogate (JSON may escape one) or a NUL in an answer's status or link
    failed the write of the whole round on one backend or the other, every round: the day's
    finished tasks were never recorded, and their videos were lost (helper-70)."""
    assert ledger.claim(DAY, "other", REQUEST, 10.0)
    ledger.record_submitted(DAY, "other", "task-2", time.time(), credits_reserved=10.0)

    def vendor(request: httpx.Request) -> httpx.Response:
        task_id = request.url.path.rsplit("/", 1)[1]
        fine = {"status": "completed", "results": ["https://cdn.example.com/2.mp4"]}
        return httpx.Response(
            200,
            text=json.dumps({"id": task_id, **odd})
            if task_id == "task-1"
            else json.dumps({"id": task_id, **fine}),
        )

    for _ in range(2):  # and the next round too
        summary = poll_once(ledger, httpx.MockTransport(vendor))
        assert summary.errors == 0
    rows = {r.prompt_id: r for r in ledger.rows(DAY)}
    assert rows["other"].status == "completed"
    assert rows["sent"].result_url is None  # a link holding such text is no link


def test_of_two_runs_resubmitting_one_prompt_at_once_one_claims_it_the_other_is_told(
    ledger_url,
):
    """The loser's archive of the failed attempt collided on PostgreSQL (IntegrityError, its
    run failed) instead of saying another run claimed it."""
    from contextlib import contextmanager

    first, second = Ledger(ledger_url), Ledger(ledger_url)
    assert first.claim(DAY, "p1", REQUEST, 1.0)
    first.record_submitted(DAY, "p1", "task-1", time.time())
    with first.db.transaction() as db:
        db.execute(sql("UPDATE tasks SET status = 'failed', error_code = 'service_error'"))
    committing, go_on = threading.Event(), threading.Event()
    real = first.db.transaction

    @contextmanager
    def held_before_commit(*args, **kwargs):  # the interleaving racing runs get by chance
        with real(*args, **kwargs) as db:
            yield db
            committing.set()
            go_on.wait(10)

    first.db.transaction = held_before_commit
    won = []
    racer = threading.Thread(target=lambda: won.append(first.claim_resubmission(DAY, "p1", 3)))
    racer.start()
    assert committing.wait(10)
    threading.Timer(1.0, go_on.set).start()  # while the second waits on the first's row
    assert second.claim_resubmission(DAY, "p1", 3) is False
    racer.join()
    assert won == [True]
    assert [(r.attempt, r.status) for r in second.rows(DAY)] == [(2, "submitting")]


def test_a_days_submissions_digest_changes_with_its_submissions_only(ledger):
    """The sensor reads a day's record again when the digest changes: a row gone (a copy put
    back without it), or a task attached; not when a poll moves a status."""

    def digest() -> str:
        return ledger.submissions_digest([DAY, "2026-11-21"])[DAY]

    first = digest()
    assert ledger.submissions_digest([]) == {}  # no recent record: PostgreSQL refused the IN
    ledger.record_polls([PollUpdate("task-1", Status.COMPLETED, result_url="u")])
    assert digest() == first and "2026-11-21" not in ledger.submissions_digest(["2026-11-21"])
    ledger.resolve(DAY, "lost", "task-2")  # its task found on the dashboard
    attached = digest()
    assert attached != first
    with ledger.db.transaction() as db:  # as a copy from before it was sent, put back
        db.execute(sql("DELETE FROM tasks WHERE prompt_id = 'lost'"))
    assert digest() not in (first, attached)


def test_a_poll_failing_unexpectedly_backs_its_task_off_and_says_why(ledger, monkeypatch, caplog):
    """Such an exception was never retrieved from its coroutine: the round reported no error,
    nothing was logged but asyncio's "never retrieved", and the task was asked every round."""
    from seedance_pipeline import polling

    assert ledger.claim(DAY, "other", REQUEST, 10.0)
    ledger.record_submitted(DAY, "other", "task-2", time.time())

    def answer(request):
        task_id = request.url.path.rsplit("/", 1)[1]
        return httpx.Response(200, json={"id": task_id, "status": "failed"})

    real = polling.interpret

    def interpret(row, task, now, policy):
        if row.task_id == "task-1":
            raise ZeroDivisionError("a bug in interpreting task-1's answer")
        return real(row, task, now, policy)

    monkeypatch.setattr(polling, "interpret", interpret)

    summary = poll_once(ledger, httpx.MockTransport(answer))
    assert (summary.polled, summary.finished, summary.errors) == (2, 1, 1)
    rows = {r.prompt_id: r for r in ledger.rows(DAY)}
    assert rows["other"].status == "failed"
    assert (rows["sent"].status, rows["sent"].poll_errors) == ("pending", 1)
    assert rows["sent"].next_poll_at > time.time()
    assert "task task-1: polling it failed unexpectedly" in caplog.text
    assert "ZeroDivisionError: a bug in interpreting" in caplog.text  # with its traceback


def test_a_prompt_sent_on_one_day_is_found_from_another(ledger):
    assert ledger.sent_on_other_days("2026-11-21", ["sent", "new"]) == {"sent": DAY}
    assert ledger.sent_on_other_days(DAY, ["sent"]) == {}


def test_a_clock_step_back_does_not_stall_polling(ledger):
    with ledger.db.transaction() as db:  # planned an hour ahead: only a clock step does that
        db.execute(sql("UPDATE tasks SET next_poll_at = :t"), {"t": time.time() + 3600})
    assert [r.task_id for r in ledger.due_tasks(time.time(), 10, max_delay=60)] == ["task-1"]
    with ledger.db.transaction() as db:
        db.execute(sql("UPDATE tasks SET next_poll_at = :t"), {"t": time.time() + 30})
    assert ledger.due_tasks(time.time(), 10, max_delay=60) == []


def test_a_download_retry_planned_before_a_clock_step_back_is_due_now(ledger):
    ledger.record_polls([PollUpdate("task-1", status=Status.COMPLETED, result_url="https://x/v")])
    # A day: only a clock step does that. The longest retry wait (an hour) seen by a reader
    # whose clock is a minute behind the writer's is not one (helper-54).
    for ahead, due in ((86400, ["sent"]), (300, []), (3660, [])):
        ledger.record_download_failed(
            DAY, "sent", Status.DOWNLOAD_FAILED, "http_error", "503", retry_at=time.time() + ahead
        )
        assert [r.prompt_id for r in ledger.rows_to_store(DAY, time.time())] == due
        assert ledger.day_state(DAY, time.time()).to_store == len(due)


# The SQLite ledger as it was before migrations: its schema and one row.
_LEGACY = [
    *MIGRATIONS[0],
    "INSERT INTO tasks (partition, prompt_id, request_json, status, claimed_at, task_id,"
    " credits_reserved) VALUES ('2026-11-20', 'old', '{\"prompt\": \"x\"}', 'completed', 1, "
    "'task-unified-1-abcdefgh', 12.5)",
]


def test_an_old_sqlite_ledger_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        for statement in _LEGACY:
            db.execute(statement)
    ledger = Ledger(path)
    (row,) = ledger.rows(DAY)
    assert (row.prompt_id, row.status, row.task_id, row.credits_reserved) == (
        "old",
        "completed",
        "task-unified-1-abcdefgh",
        12.5,
    )
    assert row.poll_errors == 0 and row.download_attempts == 0
    with sqlite3.connect(path) as db:
        versions = [v for (v,) in db.execute("SELECT version FROM schema_migrations")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    Ledger(path)  # opening again applies nothing twice


def test_a_ledger_a_newer_release_migrated_is_refused_by_an_older_one(tmp_path, monkeypatch):
    """A worker not yet upgraded went on using a ledger a newer release had migrated, without
    keeping what that release relies on (helper-77: a released claim it did not note brought
    back a false alarm of a lost ledger on every run)."""
    from seedance_pipeline.ledger import database
    from seedance_pipeline.settings import SettingError

    path = tmp_path / "ledger.sqlite3"
    Ledger(path)
    with sqlite3.connect(path) as db:  # as a newer release's migration leaves it
        db.execute("INSERT INTO schema_migrations VALUES (?, 0)", (len(MIGRATIONS) + 1,))
    monkeypatch.setattr(database, "_MIGRATED", set())  # another process, started since
    with pytest.raises(SettingError, match=f"version {len(MIGRATIONS) + 1}, newer than"):
        Ledger(path)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ledger:s3cret@db.internal:5432/seedance",
        "postgresql://ledger@db.internal:5432/seedance?password=s3cret&sslmode=require",
    ],
)
def test_a_ledger_password_is_hidden_in_messages_wherever_the_url_holds_it(url):
    """libpq takes the password as a query parameter too; it was shown as given."""
    shown = safe_url(url)
    assert "s3cret" not in shown and "db.internal:5432/seedance" in shown, shown


def test_a_write_failing_for_another_reason_than_a_lock_is_not_called_a_lock(tmp_path):
    """A full disk was reported as `the ledger stayed locked for 45.0 s`, 118 times in a run,
    without any wait: every error of a timed transaction was taken for a lock."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.claim(DAY, "p1", REQUEST, 1.0)
    ledger.db.engine.dispose()  # connections from now on refuse every write
    event.listen(ledger.db.engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA query_only=1"))
    with (
        pytest.raises(OperationalError, match="readonly database"),
        ledger.db.transaction(lock_wait=5) as db,
    ):
        db.execute(sql("UPDATE tasks SET polls = 1"))


def test_a_postgresql_ledger_that_takes_the_connection_and_never_answers_is_given_up(
    monkeypatch,
):
    """libpq waited as long as the kernel did: `run`, its lease keeper and the sensor hung on
    a database host gone silent (helper-45)."""
    monkeypatch.setattr(database, "CONNECT_TIMEOUT_SECONDS", 1)
    failed: list[Exception] = []

    def connect(port: int) -> None:
        try:
            Ledger(f"postgresql://seedance:pw@127.0.0.1:{port}/ledger")
        except OperationalError as exc:
            failed.append(exc)

    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel answers, no server
        attempt = threading.Thread(target=connect, args=(silent.getsockname()[1],), daemon=True)
        started = time.monotonic()
        attempt.start()
        attempt.join(20)
        took = time.monotonic() - started
    assert not attempt.is_alive() and failed, "still waiting after 20 s"
    assert took < 10, took
    assert "timeout" in str(failed[0]).lower()


def test_polls_a_held_up_pool_never_started_count_as_the_rounds_errors(ledger, monkeypatch):
    """Every thread held (a name lookup that hangs, which no timeout bounds): the round said
    `polled 0, errors 0` while its tasks waited."""
    from seedance_pipeline import polling

    for n in range(2, 5):
        assert ledger.claim(DAY, f"more-{n}", REQUEST, 10.0)
        ledger.record_submitted(DAY, f"more-{n}", f"task-{n}", time.time())
    monkeypatch.setattr(polling, "CUT_OFF_MARGIN_SECONDS", 0.2)
    release = threading.Event()

    def held(request):
        release.wait(10)  # not a socket: the round's deadline cannot cut it
        return httpx.Response(503)

    pool = ThreadPoolExecutor(1)
    try:
        with Client("k", transport=httpx.MockTransport(held)) as client:
            started = time.monotonic()
            summary = poll_due(ledger, client, pool, finish_by=started + 0.3)
            took = time.monotonic() - started
    finally:
        release.set()
        pool.shutdown()
    assert (summary.polled, summary.errors) == (1, 4), summary  # 1 held, 3 never started
    assert took < 2, took
    assert len(ledger.due_tasks(time.time(), 10)) == 4  # all asked again next round


def test_forgetting_an_unknown_resubmission_leaves_its_failed_attempt_to_resubmit(ledger):
    """Forgotten, the resubmission's row went: the prompt was sent again as a first attempt,
    and the earlier attempt kept under that number stopped every resubmission of it after
    (helper-55)."""
    ledger.record_polls([PollUpdate("task-1", status=Status.FAILED, error_code="service_error")])
    assert ledger.claim_resubmission(DAY, "sent", 3)
    ledger.record_outcome_unknown(DAY, "sent", "the answer was lost")
    ledger.resolve(DAY, "sent", None)
    [row] = [r for r in ledger.rows(DAY) if r.prompt_id == "sent"]
    assert (row.attempt, row.task_id, row.status) == (1, "task-1", Status.FAILED)
    assert [r.prompt_id for r in ledger.resubmittable(DAY, 3)] == ["sent"]
    assert ledger.claim_resubmission(DAY, "sent", 3)  # resubmitted as any failed task


def test_a_day_may_resubmit_while_a_task_may_yet_fail_with_attempts_left(ledger):
    """`sent` is generating and `lost` of unknown outcome: either may yet fail transiently."""
    assert ledger.may_resubmit(DAY, 2) and not ledger.may_resubmit(DAY, 1)
    ledger.resolve(DAY, "lost", None)  # forgotten: no task
    ledger.record_polls([PollUpdate("task-1", status=Status.COMPLETED, result_url="https://x/v")])
    assert not ledger.may_resubmit(DAY, 2)  # every task ended, none failed
    assert ledger.claim(DAY, "next", REQUEST, 10.0)
    ledger.record_submitted(DAY, "next", "task-2", time.time(), credits_reserved=10.0)
    ledger.record_polls([PollUpdate("task-2", status=Status.FAILED, error_code="service_error")])
    assert ledger.may_resubmit(DAY, 2) and not ledger.may_resubmit(DAY, 1)  # due again
    ledger.stop_resubmission(DAY, ["next"])
    assert not ledger.may_resubmit(DAY, 2)


def test_forgetting_an_unknown_row_waits_for_an_answer_being_recorded_onto_it(ledger):
    """On PostgreSQL, `resolve --forget` read the row `unknown`, then deleted it once a late
    answer being written meanwhile had given it its task: the paid task was forgotten
    (helper-57)."""
    written, commit = threading.Event(), threading.Event()

    def late_answer() -> None:
        with ledger.db.transaction() as db:
            db.execute(
                sql(
                    "UPDATE tasks SET status = 'pending', task_id = 'task-9'"
                    " WHERE partition = :p AND prompt_id = 'lost'"
                ),
                {"p": DAY},
            )
            written.set()
            commit.wait(5)

    answering = threading.Thread(target=late_answer)
    answering.start()
    assert written.wait(5)
    threading.Timer(0.5, commit.set).start()  # while the resolve below waits or reads
    with pytest.raises(LookupError, match="is pending, not unknown"):
        ledger.resolve(DAY, "lost", None)
    answering.join()
    assert _statuses(ledger)["lost"] == (Status.PENDING, "task-9")


def test_a_callback_and_a_forget_of_one_unknown_row_do_not_lose_its_task(ledger, monkeypatch):
    """On PostgreSQL a callback read the row `unknown` unlocked, `resolve --forget` deleted it
    meanwhile, and the callback's task went nowhere while it said it was attached: the paid
    task was lost, and the prompt sent again (helper-58)."""
    from seedance_pipeline.ledger import tasks

    holder, forgot = tasks._holder, []

    def forget() -> None:
        try:
            ledger.resolve(DAY, "lost", None)
            forgot.append(True)
        except LookupError:  # the callback came first: the row is no longer unknown
            forgot.append(False)

    def forgetting_meanwhile(db, task_id):
        forgetting = threading.Thread(target=forget)
        forgetting.start()
        forgetting.join(1)  # it waits for the callback's transaction, or it ends first
        return holder(db, task_id)

    monkeypatch.setattr(tasks, "_holder", forgetting_meanwhile)
    attached = ledger.attach_from_callback(DAY, "lost", "task-9")
    monkeypatch.setattr(tasks, "_holder", holder)
    deadline = time.monotonic() + 10
    while not forgot and time.monotonic() < deadline:
        time.sleep(0.05)
    row = _statuses(ledger).get("lost")
    assert forgot == [not attached]  # one of them took the row, not both
    assert row == ((Status.PENDING, "task-9") if attached else None)


@pytest.mark.parametrize("kept", [True, False], ids=["record_kept_it", "older_record"])
def test_forgetting_a_resubmission_whose_failed_attempt_was_not_kept_sends_it_afresh(
    tmp_path, kept
):
    """Attempt 1 failed transiently; its resubmission's run died with the create in flight
    (`unknown`); the ledger lost and rebuilt from the day's record. `resolve --forget` gives
    the row back to its failed attempt, to be resubmitted; a record written before records
    kept earlier attempts has none, and the forget failed on a NOT NULL status, a traceback
    leaving the row `unknown` for good (helper-65). It is now sent as a first attempt."""
    from seedance_pipeline.records import ASSET, rebuild, write_record
    from seedance_pipeline.storage import LocalVideoStore
    from seedance_pipeline.tables import LocalTableStore

    tables = LocalTableStore(tmp_path)
    lost = Ledger(tmp_path / "lost.sqlite3")
    assert lost.claim(DAY, "p", REQUEST, 25.004)
    lost.record_submitted(DAY, "p", "task-1", time.time(), credits_reserved=25.004)
    lost.record_polls([PollUpdate("task-1", status=Status.FAILED, error_code="service_error")])
    assert lost.claim_resubmission(DAY, "p", 3)
    lost.record_outcome_unknown(DAY, "p", "the run died with the create in flight")
    lost.set_submission_complete(DAY, True)
    write_record(lost, tables, DAY)
    if not kept:  # as written before: the latest attempt alone
        record = tables.read(ASSET, DAY)
        tables.write(record[record.attempt == 2], ASSET, DAY)
    rebuilt = Ledger(tmp_path / "rebuilt.sqlite3")
    rebuild(rebuilt, tables, DAY, LocalVideoStore(tmp_path / "videos"))
    rebuilt.set_submission_complete(DAY, True)

    rebuilt.resolve(DAY, "p", None)

    rows = [(r.attempt, r.status, r.task_id) for r in rebuilt.rows(DAY)]
    assert rows == ([(1, Status.FAILED, "task-1")] if kept else [])
    assert (DAY in rebuilt.partitions_incomplete()) is not kept  # then sent again


def test_a_claim_that_could_not_be_given_back_is_not_noted_released(ledger_url):
    """A resubmission's claim whose failed attempt the ledger does not keep (rebuilt from an
    old record) stays claimed; noted released anyway, a record listing it open would have been
    taken for a claim given back (helper-78)."""
    ledger = Ledger(ledger_url)
    assert ledger.claim(DAY, "p", REQUEST, 1.0)
    ledger.record_submitted(DAY, "p", "task-1", time.time() + 3600)
    ledger.record_polls([PollUpdate("task-1", status=Status.FAILED, error_code="service_error")])
    assert ledger.claim_resubmission(DAY, "p", 3)
    with ledger.db.transaction() as db:
        db.execute(sql("DELETE FROM attempts"))
    ledger.release(DAY, "p")
    (row,) = ledger.rows(DAY)
    assert (row.status, row.attempt) == (Status.SUBMITTING, 2)
    assert ledger.released_claims(DAY) == set()
