"""Earlier attempts of resubmitted prompts, and giving a claim back."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, bindparam

from ..statuses import WAITING, Status
from .database import Database, sql
from .leases import LeaseKeeper
from .tasks import LedgerRow

# Failure codes the vendor calls transient ("retry later"); others mean "fix the input".
RESUBMITTABLE_CODES = (
    "service_error",
    "generation_timeout",
    "resource_exhausted",
    "quota_exceeded",
    "service_unavailable",
)
# A tasks row that failed transiently and has attempts left (params: max_attempts, codes).
DUE_AGAIN = (
    "status = 'failed' AND attempt < :max_attempts AND error_code IN :codes"
    " AND resubmission_stopped = 0"
)
_FIELDS = "task_id, status, error_code, error_message, credits_reserved, submitted_at, completed_at"
_CODES = bindparam("codes", expanding=True)
# What the day's submissions record keeps of an attempt (completed_at it does not).
_RECORDED = (
    "partition",
    "prompt_id",
    "task_id",
    "status",
    "error_code",
    "error_message",
    "credits_reserved",
    "submitted_at",
)
# Tasks whose outcome is still to come: any may yet fail.
_OPEN = (*WAITING, Status.SUBMITTING, Status.UNKNOWN)


_STOPPED = "; not resubmitted: the prompt is no longer among the day's accepted requests"


def _due_again(max_attempts: int) -> dict[str, Any]:
    return {"max_attempts": max_attempts, "codes": list(RESUBMITTABLE_CODES)}


class Attempts:
    """Resubmission of transiently failed tasks, each attempt kept."""

    db: Database
    owner: str
    leases: LeaseKeeper

    def resubmittable(self, partition: str, max_attempts: int) -> list[LedgerRow]:
        """Failed tasks with a transient vendor error and attempts left."""
        with self.db.read() as db:
            found = db.execute(
                sql(
                    f"SELECT * FROM tasks WHERE partition = :p AND {DUE_AGAIN} ORDER BY prompt_id"
                ).bindparams(_CODES),
                {"p": partition, **_due_again(max_attempts)},
            ).mappings()
            return [LedgerRow.from_db(r) for r in found]

    def may_resubmit(self, partition: str, max_attempts: int) -> bool:
        """Whether a task of the day is due again, or may yet be: one still generating, being
        sent or of unknown outcome, with attempts left, may fail with a transient error."""
        with self.db.read() as db:
            found = db.execute(
                sql(
                    f"SELECT 1 FROM tasks WHERE partition = :p AND (({DUE_AGAIN})"
                    " OR (status IN :open AND attempt < :max_attempts)) LIMIT 1"
                ).bindparams(_CODES, bindparam("open", expanding=True)),
                {"p": partition, "open": [s.value for s in _OPEN], **_due_again(max_attempts)},
            )
            return found.first() is not None

    def stop_resubmission(self, partition: str, prompt_ids: list[str]) -> None:
        """Resubmit these failed tasks no more: their prompts left the day's accepted rows."""
        with self.db.transaction() as db:
            db.execute(
                sql(
                    "UPDATE tasks SET resubmission_stopped = 1,"
                    " error_message = COALESCE(error_message, '') || :why"
                    " WHERE partition = :p AND prompt_id IN :ids AND status = 'failed'"
                ).bindparams(bindparam("ids", expanding=True)),
                {"p": partition, "ids": prompt_ids, "why": _STOPPED},
            )

    def claim_resubmission(
        self,
        partition: str,
        prompt_id: str,
        max_attempts: int,
        *,
        callback_token_sha256: str | None = None,
    ) -> bool:
        """Archive a failed attempt and claim the next one, with its own callback token;
        False if another run did."""
        now = time.time()
        key = {"p": partition, "id": prompt_id}
        self.leases.ensure_running()  # a run that only resubmits claims nothing else
        with self.db.transaction() as db:
            moved = db.execute(
                sql(
                    f"INSERT INTO attempts SELECT partition, prompt_id, attempt, {_FIELDS}"
                    f" FROM tasks WHERE partition = :p AND prompt_id = :id AND {DUE_AGAIN}"
                    # PostgreSQL: a racing run read the row before this one's commit and its
                    # archive collides; it moved nothing, so it lost the race.
                    " ON CONFLICT DO NOTHING"
                ).bindparams(_CODES),
                {**key, **_due_again(max_attempts)},
            ).rowcount
            if moved:
                db.execute(
                    sql(
                        "UPDATE tasks SET status = :s, owner = :owner, claimed_at = :now,"
                        " lease_expires_at = :lease, attempt = attempt + 1, task_id = NULL,"
                        " submitted_at = NULL, progress = NULL, estimated_time = NULL,"
                        " error_code = NULL, error_message = NULL, credits_reserved = NULL,"
                        " result_url = NULL, completed_at = NULL, polls = 0, poll_errors = 0,"
                        " vendor_status = NULL, not_found_since = NULL, next_poll_at = NULL,"
                        " callback_token_sha256 = :token, callback_at = NULL,"
                        # An earlier attempt's callback names its own (failed) task.
                        " callback_task_id = NULL, callback_received_at = NULL"
                        " WHERE partition = :p AND prompt_id = :id"
                    ),
                    {
                        **key,
                        "s": Status.SUBMITTING.value,
                        "owner": self.owner,
                        "now": now,
                        "lease": now + self.leases.seconds,
                        "token": callback_token_sha256,
                    },
                )
            return bool(moved)

    def release(self, partition: str, prompt_id: str) -> None:
        """Undo this process's claim whose request provably made no task, so a later run may
        submit it; noted among the day's `released_claims` (another run may have recorded the
        claim open).

        A first attempt's row goes; a resubmission's row returns to the failed attempt.
        """
        key = {"p": partition, "id": prompt_id}
        with self.db.transaction() as db:
            row = db.execute(
                sql(
                    "SELECT attempt, claimed_at FROM tasks WHERE partition = :p"
                    " AND prompt_id = :id AND status = :s AND owner = :owner"  # not another's
                ),
                {**key, "s": Status.SUBMITTING.value, "owner": self.owner},
            ).first()
            if row is None:
                return
            if row.attempt == 1:
                db.execute(sql("DELETE FROM tasks WHERE partition = :p AND prompt_id = :id"), key)
            elif not restore_attempt(db, partition, prompt_id, row.attempt - 1):
                return  # still claimed: not released
            db.execute(
                sql(
                    "INSERT INTO released_claims VALUES (:p, :id, :a, :c)"
                    " ON CONFLICT (partition, prompt_id, attempt, claimed_at) DO NOTHING"
                ),
                {**key, "a": row.attempt, "c": row.claimed_at},
            )

    def released_claims(self, partition: str) -> set[tuple[str, int, float]]:
        """The day's claims released (`release`): (prompt, attempt, claimed_at) each."""
        with self.db.read() as db:
            found = db.execute(
                sql(
                    "SELECT prompt_id, attempt, claimed_at FROM released_claims"
                    " WHERE partition = :p"
                ),
                {"p": partition},
            )
            return {(r.prompt_id, r.attempt, r.claimed_at) for r in found}

    def keep_recorded_attempt(self, record: dict[str, Any]) -> bool:
        """Keep an earlier attempt from the day's submissions record, unless it is kept;
        whether it was missing."""
        with self.db.transaction() as db:
            inserted = db.execute(
                sql(
                    f"INSERT INTO attempts (partition, prompt_id, attempt, {_FIELDS})"
                    " VALUES (:partition, :prompt_id, :attempt, :task_id, :status, :error_code,"
                    " :error_message, :credits_reserved, :submitted_at, NULL)"
                    " ON CONFLICT (partition, prompt_id, attempt) DO NOTHING"
                ),
                {k: record[k] for k in _RECORDED} | {"attempt": int(record["attempt"])},
            )
            return inserted.rowcount > 0

    def attempts(self, partition: str) -> list[dict[str, Any]]:
        """Earlier attempts of resubmitted prompts, oldest first."""
        with self.db.read() as db:
            found = db.execute(
                sql("SELECT * FROM attempts WHERE partition = :p ORDER BY prompt_id, attempt"),
                {"p": partition},
            ).mappings()
            return [dict(r) for r in found]


def restore_attempt(db: Connection, partition: str, prompt_id: str, attempt: int) -> bool:
    """The row becomes its kept `attempt` again; False, changing nothing, when it is not kept
    (a ledger rebuilt from a record written before records kept earlier attempts)."""
    key = {"p": partition, "id": prompt_id, "a": attempt}
    kept = db.execute(
        sql("SELECT 1 FROM attempts WHERE partition = :p AND prompt_id = :id AND attempt = :a"),
        key,
    )
    if kept.first() is None:
        return False
    db.execute(
        sql(
            f"UPDATE tasks SET attempt = :a, owner = NULL, lease_expires_at = NULL,"
            f" ({_FIELDS}) = (SELECT {_FIELDS} FROM attempts WHERE partition = :p"
            f" AND prompt_id = :id AND attempt = :a) WHERE partition = :p AND prompt_id = :id"
        ),
        key,
    )
    db.execute(
        sql("DELETE FROM attempts WHERE partition = :p AND prompt_id = :id AND attempt = :a"), key
    )
    return True
