"""Task rows: one per (partition, prompt) ever sent, from the claim to the stored video.

A row is written (`submitting`, with a lease) in its own transaction before the request
leaves, and gets the task id the moment the answer returns. A `submitting` row whose owner is
gone is an answer we will never see: it becomes `unknown`, never a second submission.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, bindparam

from ..statuses import WAITING, Status
from .database import Database, sql
from .leases import LEASE_ENV, LeaseKeeper, owner_is_gone

UNKNOWN_CODE = "submission_outcome_unknown"
_ABANDONED = (
    "the process submitting this prompt stopped before the answer was recorded; check the "
    "EvoLink dashboard, then `seedance-pipeline resolve`"
)
_UNRECORDED = (
    "the submission ended before what the create of this prompt answered was recorded (a "
    "ledger write failed, or the run was stopped); the submitting process's log names the "
    "task, if one was made, and the `seedance-pipeline resolve` command that attaches it"
)


@dataclass(frozen=True)
class LedgerRow:
    """A task row as stored."""

    partition: str
    prompt_id: str
    request: dict[str, Any]
    request_sha256: str | None
    estimated_credits: float | None
    status: Status
    vendor_status: str | None
    task_id: str | None
    submitted_at: float | None
    error_code: str | None
    error_message: str | None
    credits_reserved: float | None
    result_url: str | None
    completed_at: float | None
    polls: int
    poll_errors: int
    not_found_since: float | None
    estimated_time: float | None
    next_poll_at: float | None
    video_uri: str | None
    video_sha256: str | None
    video_bytes: int | None
    width: int | None
    height: int | None
    duration_s: float | None
    has_audio: bool | None
    download_attempts: int
    attempt: int
    callback_token_sha256: str | None = None
    callback_at: float | None = None  # when a confirmed callback was recorded
    callback_task_id: str | None = None  # the task a callback named, confirmed or not
    callback_received_at: float | None = None
    expected_width: int | None = None  # the plan's frame for the request as sent
    expected_height: int | None = None
    claimed_at: float | None = None  # when this attempt was claimed, before it was sent
    campaign: str | None = None  # the catalog's when the prompt was claimed

    def edited_since_sent(self, request_sha256: str | None) -> bool | None:
        """Whether the catalog row, fingerprinted `request_sha256` now, asks for other than
        was sent; None when the row was sent without a fingerprint (before they were kept)."""
        return None if self.request_sha256 is None else request_sha256 != self.request_sha256

    @classmethod
    def from_db(cls, r: Mapping[str, Any]) -> LedgerRow:
        values = {name: r.get(name) for name in _COLUMNS}
        values["status"] = Status(values["status"])
        if values["has_audio"] is not None:
            values["has_audio"] = bool(values["has_audio"])
        return cls(request=json.loads(r["request_json"]), **values)


_COLUMNS = tuple(f.name for f in fields(LedgerRow) if f.name != "request")


@dataclass(frozen=True)
class PollUpdate:
    """What one poll found out about a task, ready to be written."""

    task_id: str
    status: Status | None = None  # None: the row keeps its status
    vendor_status: str | None = None
    progress: int | None = None
    next_poll_at: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    result_url: str | None = None
    credits_reserved: float | None = None
    poll_errors: int = 0
    not_found_since: float | None = None


def _holder(db: Connection, task_id: str) -> str | None:
    """Which row holds `task_id` (`<day>/<prompt_id>`, or an earlier attempt of it), or None."""
    found = db.execute(
        sql(
            "SELECT partition, prompt_id, 0 AS earlier FROM tasks WHERE task_id = :tid"
            " UNION ALL SELECT partition, prompt_id, 1 FROM attempts WHERE task_id = :tid"
        ),
        {"tid": task_id},
    ).first()
    if found is None:
        return None
    where = f"{found.partition}/{found.prompt_id}"
    return f"an earlier attempt of {where}" if found.earlier else where


def _check_answered(db: Connection, partition: str, prompt_id: str, task_id: str) -> None:
    """After a create's answer went on no row: fine if its row holds that task already."""
    row = db.execute(
        sql("SELECT status, task_id FROM tasks WHERE partition = :p AND prompt_id = :id"),
        {"p": partition, "id": prompt_id},
    ).first()
    if row is None:
        raise AnswerNotRecorded(f"{partition}/{prompt_id} was forgotten meanwhile")
    if row.task_id != task_id:
        held = f"task {row.task_id}" if row.task_id else "no task"
        raise AnswerNotRecorded(
            f"{partition}/{prompt_id} was settled meanwhile ({row.status}, {held})"
        )


def _sql_list(statuses) -> str:
    """Statuses as a SQL list, written into the statements: they are fixed values, and a bound
    list would stop a poll round's updates from going to the database as one batch."""
    return "(" + ", ".join(f"'{s.value}'" for s in sorted(statuses)) + ")"


_WAITING = _sql_list(WAITING)
# Rows of :p whose video is to be stored: completed without one, and failed downloads due again
# at :now. Two conditions, each looked up in the partition's index (joined by OR, SQLite would
# read every row of the day).
_UNSTORED = "partition = :p AND status = 'completed' AND video_uri IS NULL"
# A download retry planned further ahead than any retry delay (an hour at most, in `videos`)
# can only come from a clock that stepped back after it was planned: it is due now, or the
# video's link dies first. Twice that longest delay, so a reader whose clock is behind the
# writer's does not take a retry planned an hour ahead for one.
RETRY_AHEAD_LIMIT = 7200.0
DOWNLOAD_DUE = (
    "status = 'download_failed'"
    " AND (COALESCE(next_poll_at, 0) <= :now OR next_poll_at > :now + :retry_ahead)"
)
_RETRY_DUE = f"partition = :p AND {DOWNLOAD_DUE}"
# Rows still in play: claimed, running, or waiting for a callback.
_ACTIVE = _sql_list({*WAITING, Status.SUBMITTING, Status.UNKNOWN})
# A poll's answer, on the task's row while it still waits (an answer never undoes a settled row).
_POLL_UPDATE = sql(
    "UPDATE tasks SET status = COALESCE(:status, status),"
    " vendor_status = COALESCE(:vendor, vendor_status),"
    " progress = COALESCE(:progress, progress), polls = polls + 1,"
    " next_poll_at = :next, error_code = :code, error_message = :msg,"
    " result_url = COALESCE(:url, result_url),"
    " credits_reserved = COALESCE(credits_reserved, :reserved),"
    " poll_errors = :errors, not_found_since = :nf,"
    f" completed_at = CASE WHEN COALESCE(:status, status) IN {_WAITING}"
    " THEN completed_at ELSE :now END"
    f" WHERE task_id = :tid AND status IN {_WAITING}"
)


def _poll_params(u: PollUpdate, now: float) -> dict:
    return {
        "tid": u.task_id,
        "status": None if u.status is None else u.status.value,
        "vendor": u.vendor_status,
        "progress": u.progress,
        "next": u.next_poll_at,
        "code": u.error_code,
        "msg": u.error_message,
        "url": u.result_url,
        "reserved": u.credits_reserved,
        "errors": u.poll_errors,
        "nf": u.not_found_since,
        "now": now,
    }


@dataclass(frozen=True)
class DayState:
    """A day's rows by status, and what a follower waits for."""

    counts: dict[Status, int]
    stored: int  # rows with a stored video
    awaiting_callbacks: int  # `unknown` rows whose callback may still come and settle them
    to_store: int  # rows whose video is to be stored now
    claims_to_check: int  # claims other than this process's live ones: their owner may be gone
    next_poll_at: float | None  # the earliest planned poll of a waiting task


def _claims_to_unknown(
    db: Connection,
    partition: str,
    owner: str,
    prompt_id: str | None = None,
    message: str = _ABANDONED,
) -> int:
    """Turn `owner`'s claims of `partition` (or of one prompt) into `unknown`; how many."""
    return db.execute(
        sql(
            "UPDATE tasks SET status = :u, error_code = :code, error_message = :msg,"
            " owner = NULL WHERE partition = :p AND status = :s AND owner = :owner"
            " AND (CAST(:id AS TEXT) IS NULL OR prompt_id = :id)"
        ),
        {
            "u": Status.UNKNOWN.value,
            "code": UNKNOWN_CODE,
            "msg": message,
            "p": partition,
            "id": prompt_id,
            "s": Status.SUBMITTING.value,
            "owner": owner,
        },
    ).rowcount


# Appended to a SELECT of rows a transaction goes on to change: on PostgreSQL they are locked
# until it ends (SQLite's write transactions hold the whole ledger already).
_FOR_UPDATE = {True: " FOR UPDATE", False: ""}


class AnswerNotRecorded(RuntimeError):
    """What a create answered could not go on its row (the message says why and names the
    task): the caller must say so, for the task may be charged."""


class TaskHeld(AnswerNotRecorded):
    """The task a create answered with is held by another row or an earlier attempt (named)."""


class ClaimLost(RuntimeError):
    """This process no longer holds the claim whose create it was about to send: nothing was
    sent (the process was paused past its lease, and the claim settled since)."""


# A row a create's answer may still be written on: this process's claim, or the `unknown` row it
# became (its lease ran out while the write was retried), with no task attached since.
_ANSWERABLE = (
    "task_id IS NULL AND (status = 'unknown' OR (status = 'submitting' AND owner = :owner))"
)


class TaskRows:
    """Claims, submissions, polls and stored videos of task rows."""

    db: Database
    owner: str
    leases: LeaseKeeper

    # --- claims ---------------------------------------------------------------------------

    def claim(
        self,
        partition: str,
        prompt_id: str,
        request: dict,
        estimate: float | None,
        *,
        request_sha256: str | None = None,
        callback_token_sha256: str | None = None,
        expected_frame: tuple[int, int] | None = None,
        campaign: str | None = None,
    ) -> bool:
        """Record the intent to submit; False when this prompt was already claimed, on this
        day or on another (`sent_on_other_days` tells which). `expected_frame`: the plan's
        (width, height) for `request`; `campaign`: the catalog row's.

        A claim whose owner is gone is turned into `unknown` here (and not re-claimed).
        """
        now = time.time()
        self.leases.ensure_running()
        with self.db.transaction() as db:
            if self.db.is_postgres:  # claims of one prompt for two days wait for each other
                db.execute(sql("SELECT pg_advisory_xact_lock(hashtext(:id))"), {"id": prompt_id})
            made = db.execute(
                sql(
                    "INSERT INTO tasks (partition, prompt_id, request_json, request_sha256,"
                    " estimated_credits, status, owner, claimed_at, lease_expires_at,"
                    " callback_token_sha256, expected_width, expected_height, campaign)"
                    " SELECT :partition, :prompt_id, :request, :sha, :estimate, :status,"
                    " :owner, :now, :lease, :token, :width, :height, :campaign"
                    " WHERE NOT EXISTS (SELECT 1 FROM tasks"
                    " WHERE prompt_id = :prompt_id AND partition <> :partition)"
                    " ON CONFLICT (partition, prompt_id) DO NOTHING"
                ),
                {
                    "partition": partition,
                    "prompt_id": prompt_id,
                    "request": json.dumps(request, ensure_ascii=False),
                    "sha": request_sha256,
                    "estimate": estimate,
                    "status": Status.SUBMITTING.value,
                    "owner": self.owner,
                    "now": now,
                    "lease": now + self.leases.seconds,
                    "token": callback_token_sha256,
                    "width": expected_frame and expected_frame[0],
                    "height": expected_frame and expected_frame[1],
                    "campaign": campaign,
                },
            ).rowcount
            if not made:
                self._settle_abandoned(db, partition, prompt_id, now)
            return bool(made)

    def hold_claim(self, partition: str, prompt_id: str) -> None:
        """Make sure, just before its create is sent, that this process still holds the claim,
        with at least half a lease left (renewed if less): a process paused past its lease (a
        stopped process, a frozen VM) may have had it settled `unknown`, and then forgotten
        and claimed by another run, which sends it too.

        Raises:
            ClaimLost: the claim is another's, or gone; the create must not be sent.
        """
        now, lease = time.time(), self.leases.seconds
        mine = {"p": partition, "id": prompt_id, "s": Status.SUBMITTING.value, "me": self.owner}
        held = " WHERE partition = :p AND prompt_id = :id AND status = :s AND owner = :me"
        with self.db.read() as db:
            expires = db.execute(sql(f"SELECT lease_expires_at FROM tasks{held}"), mine).scalar()
        if expires is not None and expires - now > lease / 2:
            return
        with self.db.transaction() as db:
            renewed = db.execute(
                sql(
                    f"UPDATE tasks SET lease_expires_at = :until{held} AND lease_expires_at > :now"
                ),
                {**mine, "until": now + lease, "now": now},
            ).rowcount
        if not renewed:
            raise ClaimLost(
                f"{partition}/{prompt_id}: not sent: this process no longer holds its claim (it "
                f"was paused past its {lease:g} s lease, {LEASE_ENV}); if the row is `unknown`, "
                f"no request of this process made a task for it"
            )

    def resolve_abandoned_claims(self, partition: str | None = None) -> int:
        """Turn claims whose owner is gone into `unknown`; returns how many.

        Looked for in a read first: followers ask twice a second, and a write transaction
        each time would queue behind (and delay) the claims of runs submitting.
        """
        with self.db.read() as db:
            if not self._abandoned(db, partition, None, time.time()):
                return 0
        with self.db.transaction() as db:
            return self._settle_abandoned(db, partition, None, time.time())

    def _abandoned(
        self, db: Connection, partition: str | None, prompt_id: str | None, now: float
    ) -> list:
        """Claims (of `partition`, or of one prompt) whose owner is gone."""
        found = db.execute(
            sql(
                "SELECT partition, prompt_id, owner, lease_expires_at FROM tasks"
                " WHERE status = :s AND (CAST(:p AS TEXT) IS NULL OR partition = :p)"
                " AND (CAST(:id AS TEXT) IS NULL OR prompt_id = :id)"
            ),
            {"s": Status.SUBMITTING.value, "p": partition, "id": prompt_id},
        ).mappings()
        return [r for r in found if owner_is_gone(r["owner"], r["lease_expires_at"], now)]

    def _settle_abandoned(
        self, db: Connection, partition: str | None, prompt_id: str | None, now: float
    ) -> int:
        dead = self._abandoned(db, partition, prompt_id, now)
        for r in dead:
            _claims_to_unknown(db, r["partition"], r["owner"], r["prompt_id"])
        return len(dead)

    def give_up_own_claims(self, partition: str) -> int:
        """Turn this process's claims of `partition` into `unknown`; returns how many.

        For when its submission has ended: a ledger write failed after the vendor answered, or
        the run was stopped with creates in flight (a late answer is still recorded over the
        `unknown` row), and its lease keeper would keep them claimed, and the day waiting, for
        as long as the process lives.
        """
        with self.db.transaction() as db:
            return _claims_to_unknown(db, partition, self.owner, message=_UNRECORDED)

    def renew_leases(self, until: float) -> None:
        """Extend this process's claims (called by the lease keeper)."""
        with self.db.transaction() as db:
            db.execute(
                sql(
                    "UPDATE tasks SET lease_expires_at = :until"
                    " WHERE owner = :owner AND status = :s"
                ),
                {"until": until, "owner": self.owner, "s": Status.SUBMITTING.value},
            )

    def sent_on_other_days(self, partition: str, prompt_ids: Iterable[str]) -> dict[str, str]:
        """Prompt ids of `partition` already sent on another day, with that day."""
        ids = list(prompt_ids)
        if not ids:
            return {}
        with self.db.read() as db:
            found = db.execute(
                sql(
                    "SELECT prompt_id, partition FROM tasks WHERE partition <> :p"
                    " AND prompt_id IN :ids"
                ).bindparams(bindparam("ids", expanding=True)),
                {"p": partition, "ids": ids},
            )
            return {r.prompt_id: r.partition for r in found}

    # --- answers to creates ---------------------------------------------------------------

    def record_submitted(
        self, partition: str, prompt_id: str, task_id: str, first_poll_at: float, **answer: Any
    ) -> None:
        """The create answered with a task: `answer` holds status, progress, credits_reserved
        and estimated_time as the vendor gave them.

        Written on this process's claim, or on the `unknown` row it became while this write
        was retried (a ledger outage past the lease): never over a task attached meanwhile, a
        row forgotten, or another run's claim.

        Raises:
            TaskHeld: another row, or an earlier attempt, holds `task_id` (an answer repeated
                by the vendor or a gateway); nothing is written.
            AnswerNotRecorded: the row was settled otherwise, or forgotten, meanwhile.
        """
        with self.db.transaction() as db:
            holder = _holder(db, task_id)
            if holder is not None and holder != f"{partition}/{prompt_id}":
                raise TaskHeld(holder)
            written = db.execute(
                sql(
                    "UPDATE tasks SET status = :status, vendor_status = :vendor, task_id = :tid,"
                    " submitted_at = :now, credits_reserved = :reserved, estimated_time = :eta,"
                    " progress = :progress, next_poll_at = :next, owner = NULL,"
                    " lease_expires_at = NULL, error_code = NULL, error_message = NULL"
                    f" WHERE partition = :p AND prompt_id = :id AND {_ANSWERABLE}"
                ),
                {
                    "status": answer.get("status", Status.PENDING.value),
                    "vendor": answer.get("vendor_status"),
                    "tid": task_id,
                    "now": time.time(),
                    "reserved": answer.get("credits_reserved"),
                    "eta": answer.get("estimated_time"),
                    "progress": answer.get("progress"),
                    "next": first_poll_at,
                    "p": partition,
                    "id": prompt_id,
                    "owner": self.owner,
                },
            )
            if not written.rowcount:
                _check_answered(db, partition, prompt_id, task_id)

    def record_outcome_unknown(
        self, partition: str, prompt_id: str, message: str, callback_due: float | None = None
    ) -> None:
        """The create's answer was lost. `callback_due`: with a callback URL sent, when its
        callback is overdue (kept in `next_poll_at`; an `unknown` row is never polled)."""
        self._finish_claim(partition, prompt_id, Status.UNKNOWN, UNKNOWN_CODE, message, None)
        if callback_due is not None:
            with self.db.transaction() as db:
                db.execute(
                    sql(
                        "UPDATE tasks SET next_poll_at = :due"
                        " WHERE partition = :p AND prompt_id = :id"
                    ),
                    {"due": callback_due, "p": partition, "id": prompt_id},
                )

    def record_refused(self, partition: str, prompt_id: str, code: str | None, message: str):
        """The API refused the request outright (no task, no charge)."""
        self._finish_claim(partition, prompt_id, Status.FAILED, code, message, 0.0)

    def _finish_claim(
        self,
        partition: str,
        prompt_id: str,
        status: Status,
        code: str | None,
        message: str,
        reserved: float | None,
    ) -> None:
        with self.db.transaction() as db:
            db.execute(
                sql(
                    "UPDATE tasks SET status = :s, error_code = :code, error_message = :msg,"
                    " owner = NULL, lease_expires_at = NULL, credits_reserved = :reserved,"
                    " completed_at = CASE WHEN CAST(:reserved AS DOUBLE PRECISION) IS NULL"
                    " THEN NULL ELSE :now END"
                    f" WHERE partition = :p AND prompt_id = :id AND {_ANSWERABLE}"
                ),
                {
                    "owner": self.owner,
                    "s": status.value,
                    "code": code,
                    "msg": message,
                    "reserved": reserved,
                    "now": time.time(),
                    "p": partition,
                    "id": prompt_id,
                },
            )

    # --- settling by hand -----------------------------------------------------------------

    def resolve(self, partition: str, prompt_id: str, task_id: str | None) -> None:
        """Settle an `unknown` row: attach the task found on the dashboard, or forget it.

        Raises:
            LookupError: no such row, the row is not `unknown`, or the task is another row's
                (the message says which).
        """
        with self.db.transaction() as db:
            # A claim its crashed run left is `unknown` (what the crash message told the user).
            self._settle_abandoned(db, partition, prompt_id, time.time())
            row = db.execute(
                sql(
                    "SELECT status, video_uri, attempt FROM tasks"
                    " WHERE partition = :p AND prompt_id = :id" + _FOR_UPDATE[self.db.is_postgres]
                    # Held to the end: a late answer or callback giving the row its task
                    # meanwhile is not forgotten with it.
                ),
                {"p": partition, "id": prompt_id},
            ).first()
            if row is None:
                raise LookupError(
                    f"{partition}/{prompt_id}: no such row in the ledger; check the day and "
                    "the prompt_id (and SEEDANCE_DATA_DIR or SEEDANCE_LEDGER_URL)"
                )
            if row.status != Status.UNKNOWN:
                raise LookupError(_not_unknown(partition, prompt_id, row.status, row.video_uri))
            if task_id is None and row.attempt > 1:
                # A resubmission: the prompt is its failed attempt again, resubmitted as any
                # (deleted, it was sent as a first attempt, and the earlier attempt kept under
                # that number stopped every resubmission of it). With no attempt kept (a
                # ledger rebuilt from an older record), it is deleted: sent as a first attempt.
                from .attempts import restore_attempt  # attempts builds on this module

                if restore_attempt(db, partition, prompt_id, row.attempt - 1):
                    return
            if task_id is None:
                db.execute(
                    sql("DELETE FROM tasks WHERE partition = :p AND prompt_id = :id"),
                    {"p": partition, "id": prompt_id},
                )
                # The day has a prompt to send again: the sensor asks for its submission (a
                # day noted complete would wait for it for ever, its videos runs failing).
                db.execute(
                    sql("UPDATE partitions SET submission_complete = 0 WHERE partition = :p"),
                    {"p": partition},
                )
                return
            if holder := _holder(db, task_id):
                raise LookupError(
                    f"task {task_id} is already attached to {holder}; check the dashboard again"
                )
            self._attach(db, partition, prompt_id, task_id)

    def attach_from_callback(self, partition: str, prompt_id: str, task_id: str) -> bool:
        """Give an `unknown` row the task a confirmed callback named; False (and no change)
        when the row is no longer `unknown` or another row holds the task."""
        with self.db.transaction() as db:
            status = db.execute(
                sql(
                    "SELECT status FROM tasks WHERE partition = :p AND prompt_id = :id"
                    + _FOR_UPDATE[self.db.is_postgres]  # as `resolve` holds it
                ),
                {"p": partition, "id": prompt_id},
            ).scalar()
            if status != Status.UNKNOWN or _holder(db, task_id) is not None:
                return False
            return self._attach(db, partition, prompt_id, task_id)

    def note_callback(
        self,
        token_sha256: str,
        task_id: str | None,
        at: float | None,
        lock_wait: float | None = None,
    ) -> None:
        """Keep the task a callback named on its token's row, before the callback is
        acknowledged: if confirming it fails, the receiver tries again from here (None: drop
        it, the API's task did not match; a task without `at`: no longer asked about, kept
        for the record).

        Raises:
            LedgerBusy: with `lock_wait`, another writer held the lock longer than that.
        """
        with self.db.transaction(lock_wait) as db:
            db.execute(
                sql(
                    "UPDATE tasks SET callback_task_id = :tid, callback_received_at = :at"
                    " WHERE callback_token_sha256 = :t"
                ),
                {"tid": task_id, "at": at, "t": token_sha256},
            )

    def unconfirmed_callbacks(self) -> list[LedgerRow]:
        """Rows a callback named a task for, not confirmed yet and still waiting for an
        answer (submitting, unknown, pending or processing)."""
        return self._rows(
            "SELECT * FROM tasks WHERE callback_task_id IS NOT NULL AND callback_at IS NULL"
            f" AND callback_received_at IS NOT NULL AND status IN {_ACTIVE}",
            {},
        )

    def record_callback(self, partition: str, prompt_id: str, update: PollUpdate) -> None:
        """A confirmed callback: the API's answer, written as a poll's, and the time it came
        (`callback_at`), in one transaction (a row never shows one without the other)."""
        now = time.time()
        with self.db.transaction() as db:
            db.execute(_POLL_UPDATE, [_poll_params(update, now)])
            db.execute(
                sql("UPDATE tasks SET callback_at = :at WHERE partition = :p AND prompt_id = :id"),
                {"at": now, "p": partition, "id": prompt_id},
            )

    @staticmethod
    def _attach(db: Connection, partition: str, prompt_id: str, task_id: str) -> bool:
        """Give an `unknown` row its task, due for a poll now; submitted when it was claimed
        (its create went out right after), not when the task was found. False: the row is
        no longer `unknown`."""
        return (
            db.execute(
                sql(
                    "UPDATE tasks SET status = :pending, task_id = :tid, next_poll_at = :now,"
                    " submitted_at = COALESCE(submitted_at, claimed_at, :now), error_code = NULL,"
                    " error_message = NULL WHERE partition = :p AND prompt_id = :id"
                    " AND status = :unknown"
                ),
                {
                    "pending": Status.PENDING.value,
                    "unknown": Status.UNKNOWN.value,
                    "tid": task_id,
                    "now": time.time(),
                    "p": partition,
                    "id": prompt_id,
                },
            ).rowcount
            == 1
        )

    def restore(self, record: dict[str, Any]) -> bool:
        """Insert a row from the day's submissions record, or bring the ledger's row up to it
        when the ledger has only an earlier attempt of it or lacks its task (a ledger restored
        from an old copy); a task still running is due for a poll now. Records written before
        the expected frame was kept restore it as unknown."""
        now = time.time()
        frame = {k: record.get(k) and int(record[k]) for k in ("expected_width", "expected_height")}
        with self.db.transaction() as db:
            return bool(
                db.execute(
                    sql(
                        "INSERT INTO tasks (partition, prompt_id, attempt, status, task_id,"
                        " request_json, request_sha256, estimated_credits, credits_reserved,"
                        " submitted_at, error_code, error_message, claimed_at, next_poll_at,"
                        " expected_width, expected_height, campaign)"
                        " VALUES (:partition, :prompt_id, :attempt, :status, :task_id,"
                        " :request_json, :request_sha256, :estimated_credits,"
                        " :credits_reserved, :submitted_at, :error_code, :error_message,"
                        " :now, :now, :expected_width, :expected_height, :campaign)"
                        " ON CONFLICT (partition, prompt_id) DO UPDATE SET"
                        " attempt = excluded.attempt, status = excluded.status,"
                        " task_id = excluded.task_id, request_json = excluded.request_json,"
                        " request_sha256 = excluded.request_sha256,"
                        " estimated_credits = excluded.estimated_credits,"
                        " credits_reserved = excluded.credits_reserved,"
                        " submitted_at = excluded.submitted_at, error_code = excluded.error_code,"
                        " error_message = excluded.error_message,"
                        " expected_width = excluded.expected_width,"
                        " expected_height = excluded.expected_height,"
                        " campaign = excluded.campaign, next_poll_at = excluded.next_poll_at,"
                        " owner = NULL,"
                        " lease_expires_at = NULL, vendor_status = NULL, progress = NULL,"
                        " result_url = NULL, completed_at = NULL, polls = 0, poll_errors = 0"
                        " WHERE tasks.attempt < excluded.attempt OR (tasks.attempt ="
                        " excluded.attempt AND excluded.task_id IS NOT NULL"
                        " AND (tasks.task_id IS NULL OR tasks.task_id <> excluded.task_id))"
                    ),
                    {
                        **record,
                        **frame,
                        "attempt": int(record["attempt"]),
                        "campaign": record.get("campaign"),  # recorded since ledger version 8
                        "now": now,
                    },
                ).rowcount
            )

    # --- polling --------------------------------------------------------------------------

    def due_tasks(self, now: float, limit: int, *, max_delay: float = 60.0) -> list[LedgerRow]:
        """Waiting tasks whose next poll is due, oldest first.

        A poll planned more than `max_delay` ahead can only come from a clock that stepped
        back: it is due now, so a clock step never stalls polling.
        """
        return self._rows(
            f"SELECT * FROM tasks WHERE status IN {_WAITING} AND task_id IS NOT NULL"
            " AND (next_poll_at <= :now OR next_poll_at > :far)"
            " ORDER BY next_poll_at LIMIT :limit",
            {"now": now, "far": now + 2 * max_delay, "limit": limit},
        )

    def record_polls(self, updates: Iterable[PollUpdate], lock_wait: float | None = None) -> None:
        """Write a poll round's findings in one transaction.

        Only rows still waiting change: an answer never undoes a settled row.

        Raises:
            LedgerBusy: another writer held the lock longer than `lock_wait` seconds.
        """
        now = time.time()
        params = [_poll_params(u, now) for u in updates]
        if not params:
            return
        with self.db.transaction(lock_wait) as db:
            db.execute(_POLL_UPDATE, params)

    # --- results --------------------------------------------------------------------------

    def record_video(
        self,
        partition: str,
        prompt_id: str,
        uri: str,
        sha256: str,
        size: int,
        measured: dict,
        completed_at: float | None = None,
    ) -> None:
        """The video is stored at `uri` (a key under the storage root) and was measured;
        `completed_at` when the row has no completion time (a ledger being rebuilt)."""
        with self.db.transaction() as db:
            db.execute(
                sql(
                    "UPDATE tasks SET status = :done, video_uri = :uri, video_sha256 = :sha,"
                    " video_bytes = :size, width = :w, height = :h, duration_s = :d,"
                    " has_audio = :a, download_attempts = download_attempts + 1,"
                    " error_code = NULL, error_message = NULL,"
                    " completed_at = COALESCE(completed_at, :completed)"
                    " WHERE partition = :p AND prompt_id = :id"
                ),
                {
                    "completed": completed_at,
                    "done": Status.COMPLETED.value,
                    "uri": uri,
                    "sha": sha256,
                    "size": size,
                    "w": measured.get("width"),
                    "h": measured.get("height"),
                    "d": measured.get("duration_s"),
                    "a": None if measured.get("has_audio") is None else int(measured["has_audio"]),
                    "p": partition,
                    "id": prompt_id,
                },
            )

    def forget_video(self, partition: str, prompt_id: str, sha256: str) -> None:
        """The video recorded (with `sha256`) is gone from the store: the row needs storing
        again. A video another process stored meanwhile (another hash) stays."""
        with self.db.transaction() as db:
            db.execute(
                sql(
                    "UPDATE tasks SET video_uri = NULL, video_sha256 = NULL, video_bytes = NULL,"
                    " width = NULL, height = NULL, duration_s = NULL, has_audio = NULL"
                    " WHERE partition = :p AND prompt_id = :id AND video_sha256 = :sha"
                ),
                {"p": partition, "id": prompt_id, "sha": sha256},
            )

    def record_download_failed(
        self,
        partition: str,
        prompt_id: str,
        status: Status,
        code: str,
        message: str,
        retry_at: float,
    ) -> None:
        """No valid video could be stored: `download_failed` (tried again from `retry_at`,
        kept in `next_poll_at`) or `expired`. A video another process stored meanwhile stays."""
        with self.db.transaction() as db:
            db.execute(
                sql(
                    "UPDATE tasks SET status = :s, error_code = :code, error_message = :msg,"
                    " download_attempts = download_attempts + 1, next_poll_at = :retry"
                    " WHERE partition = :p AND prompt_id = :id AND video_uri IS NULL"
                ),
                {
                    "s": status.value,
                    "code": code,
                    "msg": message,
                    "retry": retry_at,
                    "p": partition,
                    "id": prompt_id,
                },
            )

    def rows(self, partition: str | None = None) -> list[LedgerRow]:
        if partition is None:
            return self._rows("SELECT * FROM tasks ORDER BY partition, prompt_id", {})
        return self._rows(
            "SELECT * FROM tasks WHERE partition = :p ORDER BY prompt_id", {"p": partition}
        )

    def day_state(self, partition: str, now: float) -> DayState:
        """What a follower of `partition` needs to know: read from the partition's index and
        its few rows still in play, not from every row (followers ask twice a second)."""
        params = {"p": partition, "now": now, "me": self.owner, "retry_ahead": RETRY_AHEAD_LIMIT}
        with self.db.read() as db:
            counts = db.execute(
                sql(
                    "SELECT status, COUNT(*) AS n, COUNT(video_uri) AS stored FROM tasks"
                    " WHERE partition = :p GROUP BY status"
                ),
                params,
            ).all()
            active = db.execute(
                sql(
                    "SELECT SUM(CASE WHEN status = 'unknown' AND task_id IS NULL"
                    " AND callback_token_sha256 IS NOT NULL AND next_poll_at > :now"
                    " THEN 1 ELSE 0 END) AS callbacks,"
                    " SUM(CASE WHEN status = 'submitting' AND (owner IS NULL OR owner <> :me"
                    " OR lease_expires_at IS NULL OR lease_expires_at < :now)"
                    " THEN 1 ELSE 0 END) AS claims_to_check,"
                    f" MIN(CASE WHEN status IN {_WAITING} THEN next_poll_at END) AS next_poll_at"
                    f" FROM tasks WHERE partition = :p AND status IN {_ACTIVE}"
                ),
                params,
            ).one()
            to_store = db.execute(
                sql(
                    f"SELECT (SELECT COUNT(*) FROM tasks WHERE {_UNSTORED})"
                    f" + (SELECT COUNT(*) FROM tasks WHERE {_RETRY_DUE})"
                ),
                params,
            ).scalar()
        return DayState(
            counts={Status(r.status): r.n for r in counts},
            stored=sum(r.stored for r in counts),
            awaiting_callbacks=active.callbacks or 0,
            to_store=to_store,
            claims_to_check=active.claims_to_check or 0,
            next_poll_at=active.next_poll_at,
        )

    def rows_to_store(self, partition: str, now: float) -> list[LedgerRow]:
        """Completed tasks without a stored video, and failed downloads due for another try."""
        return self._rows(
            f"SELECT * FROM tasks WHERE {_UNSTORED}"
            f" UNION ALL SELECT * FROM tasks WHERE {_RETRY_DUE}",
            {"p": partition, "now": now, "retry_ahead": RETRY_AHEAD_LIMIT},
        )

    def row_for_callback(self, token_sha256: str) -> LedgerRow | None:
        found = self._rows(
            "SELECT * FROM tasks WHERE callback_token_sha256 = :t", {"t": token_sha256}
        )
        return found[0] if found else None

    def _rows(self, statement: str, params: dict) -> list[LedgerRow]:
        with self.db.read() as db:
            return [LedgerRow.from_db(r) for r in db.execute(sql(statement), params).mappings()]


def _not_unknown(partition: str, prompt_id: str, status: str, video_uri: str | None) -> str:
    """Why a row cannot be resolved, and what, if anything, the user should do instead."""
    said = f"{partition}/{prompt_id} is {status}, not {Status.UNKNOWN}"
    if status == Status.SUBMITTING:
        return f"{said}: a live run is sending it and will record the answer; wait for it"
    if status == Status.COMPLETED and not video_uri:
        return (
            f"{said}: its task was found and its video is not stored yet; "
            f"`seedance-pipeline run {partition}` (or the sensor) stores it"
        )
    return f"{said}; only rows whose submission outcome is unknown need resolving"
