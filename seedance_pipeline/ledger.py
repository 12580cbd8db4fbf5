"""The durable task ledger: one SQLite row per (partition, prompt) ever sent to the API.

A row is written (`submitting`) in its own transaction before the request leaves, and gets
the task id the moment the answer returns. A `submitting` row whose owner process is gone is
an answer we will never see: it becomes `unknown`, never a second submission.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .seedance import Task

SUBMITTING, UNKNOWN = "submitting", "unknown"
WAITING = ("pending", "processing")
TERMINAL = ("completed", "failed", "cancelled", "expired", UNKNOWN)
# Failure codes the vendor calls transient ("retry later"); others mean "fix the input".
RESUBMITTABLE_CODES = (
    "service_error",
    "generation_timeout",
    "resource_exhausted",
    "quota_exceeded",
    "service_unavailable",
)
# SQL condition on a tasks row: failed transiently, attempts left (params: max_attempts, codes).
_DUE_AGAIN = (
    "status='failed' AND attempt < ? AND error_code IN ("
    + ",".join("?" * len(RESUBMITTABLE_CODES))
    + ")"
)
# A claim by another machine is presumed dead after this long (same machine: pid check).
STALE_CLAIM_SECONDS = 15 * 60

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    partition TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    request_json TEXT NOT NULL,
    estimated_credits REAL,
    status TEXT NOT NULL,
    owner TEXT,
    claimed_at REAL NOT NULL,
    task_id TEXT UNIQUE,
    submitted_at REAL,
    progress INTEGER,
    estimated_time REAL,
    error_code TEXT,
    error_message TEXT,
    credits_reserved REAL,
    result_url TEXT,
    completed_at REAL,
    polls INTEGER NOT NULL DEFAULT 0,
    next_poll_at REAL,
    video_uri TEXT,
    video_sha256 TEXT,
    video_bytes INTEGER,
    attempt INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (partition, prompt_id)
);
CREATE TABLE IF NOT EXISTS attempts (
    partition TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    task_id TEXT,
    status TEXT NOT NULL,
    error_code TEXT,
    error_message TEXT,
    credits_reserved REAL,
    submitted_at REAL,
    completed_at REAL,
    PRIMARY KEY (partition, prompt_id, attempt)
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (status, next_poll_at);
CREATE TABLE IF NOT EXISTS partitions (
    partition TEXT PRIMARY KEY,
    submission_complete INTEGER NOT NULL DEFAULT 0,
    videos_requested_at REAL
);
CREATE TABLE IF NOT EXISTS published_media (
    sha256 TEXT NOT NULL,
    files_url TEXT NOT NULL,
    url TEXT NOT NULL,
    published_at REAL NOT NULL,
    PRIMARY KEY (sha256, files_url)
);
"""


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_is_gone(owner: str | None, claimed_at: float, now: float) -> bool:
    host, _, pid = (owner or ":").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return now - claimed_at > STALE_CLAIM_SECONDS
    return not pid_alive(int(pid))


@dataclass(frozen=True)
class LedgerRow:
    partition: str
    prompt_id: str
    request: dict[str, Any]
    estimated_credits: float | None
    status: str
    task_id: str | None
    submitted_at: float | None
    error_code: str | None
    error_message: str | None
    credits_reserved: float | None
    result_url: str | None
    completed_at: float | None
    polls: int
    estimated_time: float | None
    video_uri: str | None
    video_sha256: str | None
    video_bytes: int | None
    attempt: int


_ATTEMPT_FIELDS = (
    "task_id, status, error_code, error_message, credits_reserved, submitted_at, completed_at"
)


class Ledger:
    """The task ledger at `path` (created on first use)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._read() as db:
            db.executescript(_SCHEMA)
            columns = {r["name"] for r in db.execute("PRAGMA table_info(tasks)")}
            if "attempt" not in columns:  # a ledger from before resubmissions
                db.execute("ALTER TABLE tasks ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            yield db
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    # --- submission ---------------------------------------------------------------------

    def claim(self, partition: str, prompt_id: str, request: dict, estimate: float | None) -> bool:
        """Record the intent to submit; False when this prompt was already claimed.

        A dead owner's leftover claim is turned into `unknown` here (and not re-claimed).
        """
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT status, owner, claimed_at FROM tasks WHERE partition=? AND prompt_id=?",
                (partition, prompt_id),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO tasks (partition, prompt_id, request_json, estimated_credits,"
                    " status, owner, claimed_at) VALUES (?,?,?,?,?,?,?)",
                    (
                        partition,
                        prompt_id,
                        json.dumps(request, ensure_ascii=False),
                        estimate,
                        SUBMITTING,
                        this_process(),
                        now,
                    ),
                )
                return True
            if row["status"] == SUBMITTING and _owner_is_gone(row["owner"], row["claimed_at"], now):
                self._mark_unknown(db, partition, prompt_id)
            return False

    def resolve_abandoned_claims(self, partition: str) -> int:
        """Turn claims whose process died into `unknown`; returns how many."""
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT prompt_id, owner, claimed_at FROM tasks WHERE partition=? AND status=?",
                (partition, SUBMITTING),
            ).fetchall()
            dead = [
                r["prompt_id"] for r in rows if _owner_is_gone(r["owner"], r["claimed_at"], now)
            ]
            for prompt_id in dead:
                self._mark_unknown(db, partition, prompt_id)
            return len(dead)

    @staticmethod
    def _mark_unknown(db: sqlite3.Connection, partition: str, prompt_id: str) -> None:
        db.execute(
            "UPDATE tasks SET status=?, error_code='submission_outcome_unknown', error_message=?"
            " WHERE partition=? AND prompt_id=?",
            (
                UNKNOWN,
                "the process submitting this prompt stopped before the answer was "
                "recorded; check the EvoLink dashboard, then `seedance-pipeline resolve`",
                partition,
                prompt_id,
            ),
        )

    def record_submitted(self, partition: str, prompt_id: str, task: Task, first_poll_at: float):
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET status=?, task_id=?, submitted_at=?, credits_reserved=?,"
                " estimated_time=?, progress=?, next_poll_at=?, owner=NULL"
                " WHERE partition=? AND prompt_id=?",
                (
                    task.status,
                    task.id,
                    now,
                    task.credits_reserved,
                    task.estimated_time,
                    task.progress,
                    first_poll_at,
                    partition,
                    prompt_id,
                ),
            )

    def record_outcome_unknown(self, partition: str, prompt_id: str, message: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET status=?, error_code='submission_outcome_unknown',"
                " error_message=?, owner=NULL WHERE partition=? AND prompt_id=?",
                (UNKNOWN, message, partition, prompt_id),
            )

    def record_refused(self, partition: str, prompt_id: str, code: str | None, message: str):
        """The API refused the request outright (no task, no charge)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET status='failed', error_code=?, error_message=?, owner=NULL,"
                " completed_at=?, credits_reserved=0 WHERE partition=? AND prompt_id=?",
                (code, message, time.time(), partition, prompt_id),
            )

    def release(self, partition: str, prompt_id: str) -> None:
        """Undo a claim whose request provably made no task, so a later run may submit it.

        A first attempt's row goes; a resubmission's row returns to the failed attempt.
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT attempt FROM tasks WHERE partition=? AND prompt_id=? AND status=?",
                (partition, prompt_id, SUBMITTING),
            ).fetchone()
            if row is None:
                return
            if row["attempt"] == 1:
                db.execute(
                    "DELETE FROM tasks WHERE partition=? AND prompt_id=?", (partition, prompt_id)
                )
                return
            key = (partition, prompt_id, row["attempt"] - 1)
            db.execute(
                f"UPDATE tasks SET attempt=?, owner=NULL, ({_ATTEMPT_FIELDS}) = (SELECT"
                f" {_ATTEMPT_FIELDS} FROM attempts WHERE partition=? AND prompt_id=?"
                f" AND attempt=?) WHERE partition=? AND prompt_id=?",
                (key[2], *key, partition, prompt_id),
            )
            db.execute("DELETE FROM attempts WHERE partition=? AND prompt_id=? AND attempt=?", key)

    def resubmittable(self, partition: str, max_attempts: int) -> list[LedgerRow]:
        """Failed tasks with a transient vendor error and attempts left."""
        return self._rows(
            f"SELECT * FROM tasks WHERE partition=? AND {_DUE_AGAIN} ORDER BY prompt_id",
            (partition, max_attempts, *RESUBMITTABLE_CODES),
        )

    def claim_resubmission(self, partition: str, prompt_id: str, max_attempts: int) -> bool:
        """Archive a failed attempt and claim the next one; False if another run did."""
        with self._transaction() as db:
            moved = db.execute(
                f"INSERT INTO attempts SELECT partition, prompt_id, attempt, {_ATTEMPT_FIELDS}"
                f" FROM tasks WHERE partition=? AND prompt_id=? AND {_DUE_AGAIN}",
                (partition, prompt_id, max_attempts, *RESUBMITTABLE_CODES),
            ).rowcount
            if moved:
                db.execute(
                    "UPDATE tasks SET status=?, owner=?, claimed_at=?, attempt=attempt+1,"
                    " task_id=NULL, submitted_at=NULL, progress=NULL, estimated_time=NULL,"
                    " error_code=NULL, error_message=NULL, credits_reserved=NULL,"
                    " result_url=NULL, completed_at=NULL, polls=0, next_poll_at=NULL"
                    " WHERE partition=? AND prompt_id=?",
                    (SUBMITTING, this_process(), time.time(), partition, prompt_id),
                )
                db.execute(
                    "UPDATE partitions SET videos_requested_at=NULL WHERE partition=?",
                    (partition,),
                )
            return bool(moved)

    def attempts(self, partition: str) -> list[dict[str, Any]]:
        """Earlier attempts of resubmitted prompts, oldest first."""
        with self._read() as db:
            found = db.execute(
                "SELECT * FROM attempts WHERE partition=? ORDER BY prompt_id, attempt",
                (partition,),
            ).fetchall()
        return [dict(r) for r in found]

    def resolve(self, partition: str, prompt_id: str, task_id: str | None) -> None:
        """Settle an `unknown` row: attach the task found on the dashboard, or forget it.

        Raises:
            LookupError: no such row, the row is not `unknown`, or the task is another row's
                (the message says which).
        """
        with self._transaction() as db:
            row = db.execute(
                "SELECT status FROM tasks WHERE partition=? AND prompt_id=?",
                (partition, prompt_id),
            ).fetchone()
            if row is None:
                raise LookupError(
                    f"{partition}/{prompt_id}: no such row in the ledger; check the day and "
                    "the prompt_id (and SEEDANCE_DATA_DIR)"
                )
            if row["status"] != UNKNOWN:
                raise LookupError(
                    f"{partition}/{prompt_id} is {row['status']}, not {UNKNOWN}; "
                    "only rows whose submission outcome is unknown need resolving"
                )
            if task_id:
                other = db.execute(
                    "SELECT partition, prompt_id FROM tasks WHERE task_id=?", (task_id,)
                ).fetchone()
                if other is not None:
                    raise LookupError(
                        f"task {task_id} is already attached to "
                        f"{other['partition']}/{other['prompt_id']}; check the dashboard again"
                    )
                db.execute(
                    "UPDATE tasks SET status='pending', task_id=?, next_poll_at=?, error_code=NULL,"
                    " error_message=NULL WHERE partition=? AND prompt_id=?",
                    (task_id, time.time(), partition, prompt_id),
                )
            else:
                db.execute(
                    "DELETE FROM tasks WHERE partition=? AND prompt_id=?", (partition, prompt_id)
                )
            db.execute(
                "UPDATE partitions SET videos_requested_at=NULL WHERE partition=?", (partition,)
            )

    def set_submission_complete(self, partition: str, complete: bool, new_tasks: bool) -> None:
        """Note whether every accepted prompt is in the ledger; new tasks re-arm the videos."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO partitions (partition, submission_complete) VALUES (?, ?)"
                " ON CONFLICT(partition) DO UPDATE SET"
                " submission_complete=excluded.submission_complete,"
                " videos_requested_at=CASE WHEN ? THEN NULL ELSE videos_requested_at END",
                (partition, int(complete), int(new_tasks)),
            )

    # --- polling ------------------------------------------------------------------------

    def due_tasks(self, now: float, limit: int) -> list[LedgerRow]:
        """Waiting tasks whose next poll is due, oldest first."""
        return self._rows(
            "SELECT * FROM tasks WHERE status IN (?, ?) AND next_poll_at <= ?"
            " ORDER BY next_poll_at LIMIT ?",
            (*WAITING, now, limit),
        )

    def next_poll_at(self) -> float | None:
        with self._read() as db:
            row = db.execute(
                "SELECT MIN(next_poll_at) FROM tasks WHERE status IN (?, ?)", WAITING
            ).fetchone()
        return row[0]

    def record_poll(self, task: Task, next_poll_at: float | None) -> None:
        terminal = task.is_terminal
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET status=?, progress=?, polls=polls+1, next_poll_at=?,"
                " error_code=?, error_message=?, result_url=COALESCE(?, result_url),"
                " completed_at=CASE WHEN ? THEN ? ELSE completed_at END,"
                " credits_reserved=COALESCE(credits_reserved, ?)"
                " WHERE task_id=? AND status IN (?, ?)",
                (
                    task.final_status,
                    task.progress,
                    next_poll_at,
                    task.error_code,
                    task.error_message,
                    task.results[0] if task.results else None,
                    terminal,
                    time.time(),
                    task.credits_reserved,
                    task.id,
                    *WAITING,
                ),
            )

    def record_poll_error(self, task_id: str, next_poll_at: float, code: str, message: str):
        """A poll failed; keep waiting, unless the vendor says the task does not exist."""
        with self._transaction() as db:
            if code == "task_not_found":
                db.execute(
                    "UPDATE tasks SET status='failed', error_code=?, error_message=?,"
                    " completed_at=?, polls=polls+1 WHERE task_id=?",
                    (code, message, time.time(), task_id),
                )
            else:
                db.execute(
                    "UPDATE tasks SET polls=polls+1, next_poll_at=? WHERE task_id=?",
                    (next_poll_at, task_id),
                )

    def partitions_ready(self, max_attempts: int = 1) -> list[str]:
        """Partitions fully submitted, every task terminal and not due for resubmission,
        videos not yet requested."""
        with self._read() as db:
            rows = db.execute(
                "SELECT p.partition FROM partitions p WHERE p.submission_complete=1"
                " AND p.videos_requested_at IS NULL AND NOT EXISTS (SELECT 1 FROM tasks t"
                f" WHERE t.partition=p.partition AND (t.status IN (?, ?, ?) OR ({_DUE_AGAIN})))"
                " ORDER BY p.partition",
                (*WAITING, SUBMITTING, max_attempts, *RESUBMITTABLE_CODES),
            ).fetchall()
        return [r[0] for r in rows]

    def partitions_to_resubmit(self, max_attempts: int) -> list[str]:
        """Fully submitted partitions with failed tasks due for another attempt."""
        with self._read() as db:
            rows = db.execute(
                "SELECT DISTINCT partition FROM tasks JOIN partitions USING (partition)"
                f" WHERE submission_complete=1 AND {_DUE_AGAIN} ORDER BY partition",
                (max_attempts, *RESUBMITTABLE_CODES),
            ).fetchall()
        return [r[0] for r in rows]

    def mark_videos_requested(self, partition: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE partitions SET videos_requested_at=? WHERE partition=?",
                (time.time(), partition),
            )

    # --- results ------------------------------------------------------------------------

    def record_video(self, task_id: str, uri: str, sha256: str, size: int) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET video_uri=?, video_sha256=?, video_bytes=? WHERE task_id=?",
                (uri, sha256, size, task_id),
            )

    def record_expired(self, task_id: str, message: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE tasks SET status='expired', error_code='link_expired', error_message=?"
                " WHERE task_id=?",
                (message, task_id),
            )

    def rows(self, partition: str | None = None) -> list[LedgerRow]:
        if partition is None:
            return self._rows("SELECT * FROM tasks ORDER BY partition, prompt_id", ())
        return self._rows("SELECT * FROM tasks WHERE partition=? ORDER BY prompt_id", (partition,))

    def _rows(self, sql: str, args: tuple) -> list[LedgerRow]:
        with self._read() as db:
            found = db.execute(sql, args).fetchall()
        fields = LedgerRow.__dataclass_fields__
        return [
            LedgerRow(
                request=json.loads(r["request_json"]),
                **{k: r[k] for k in fields if k != "request"},
            )
            for r in found
        ]

    # --- published media ----------------------------------------------------------------

    def published_url(self, sha256: str, files_url: str, max_age: float) -> str | None:
        with self._read() as db:
            row = db.execute(
                "SELECT url, published_at FROM published_media WHERE sha256=? AND files_url=?",
                (sha256, files_url),
            ).fetchone()
        if row is None or time.time() - row["published_at"] > max_age:
            return None
        return row["url"]

    def record_published(self, sha256: str, files_url: str, url: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO published_media VALUES (?, ?, ?, ?)",
                (sha256, files_url, url, time.time()),
            )
