"""The emulator's persistent state: tasks, uploaded files and the credit ledger, in SQLite."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..seedance import MediaFacts, TaskStatus
from .balance import Balance
from .timing import progress_at

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY, created REAL NOT NULL, model TEXT NOT NULL, duration INTEGER NOT NULL,
    quality TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    audio INTEGER NOT NULL, run_seconds REAL NOT NULL, credits_reserved REAL NOT NULL,
    error_code TEXT, error_message TEXT
);
CREATE TABLE IF NOT EXISTS files (
    file_id TEXT PRIMARY KEY, file_name TEXT NOT NULL, original_name TEXT NOT NULL,
    file_size INTEGER NOT NULL, mime_type TEXT NOT NULL, upload_path TEXT NOT NULL,
    facts TEXT NOT NULL, upload_time REAL NOT NULL, expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS task_requests (
    id TEXT PRIMARY KEY, prompt TEXT, answer_dropped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS task_faults (
    id TEXT PRIMARY KEY, create_fault TEXT, poll_fault TEXT, link_fault TEXT,
    polls INTEGER NOT NULL DEFAULT 0, poll_faults_served INTEGER NOT NULL DEFAULT 0,
    link_fetches INTEGER NOT NULL DEFAULT 0, link_faults_served INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS callbacks (
    task_id TEXT PRIMARY KEY, url TEXT NOT NULL, origin TEXT NOT NULL, due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (state, due_at);
CREATE TABLE IF NOT EXISTS callback_attempts (
    task_id TEXT NOT NULL, n INTEGER NOT NULL, at REAL NOT NULL, outcome TEXT NOT NULL,
    PRIMARY KEY (task_id, n)
);
"""
DUPLICATE_ID = "duplicate task id"


@dataclass(frozen=True)
class TaskRecord:
    """A task as created; its status follows from the wall clock."""

    id: str
    created: float
    model: str
    duration: int
    quality: str
    width: int
    height: int
    audio: bool
    run_seconds: float
    credits_reserved: float
    error_code: str | None = None
    error_message: str | None = None

    @property
    def completed_at(self) -> float:
        return self.created + self.run_seconds

    def status(self, now: float) -> tuple[str, int]:
        """The vendor status and progress at `now`."""
        stage, progress = progress_at(now - self.created, self.run_seconds)
        if stage != TaskStatus.COMPLETED:
            return stage, progress
        return (TaskStatus.FAILED if self.error_code else TaskStatus.COMPLETED), 100

    def charged(self, now: float) -> float:
        """Credits charged at `now`: the reservation once completed, else nothing."""
        return self.credits_reserved if self.status(now)[0] == TaskStatus.COMPLETED else 0.0


@dataclass(frozen=True)
class Faults:
    """What was injected into a task's answers: its create answer, its polls, its link."""

    create: str | None = None
    poll: str | None = None
    link: str | None = None


@dataclass(frozen=True)
class Callback:
    """A callback still to deliver: where, the origin of its result links, attempts made."""

    task_id: str
    url: str
    origin: str
    attempts: int


@dataclass(frozen=True)
class FileRecord:
    """An uploaded file and what was measured of it."""

    file_id: str
    file_name: str
    original_name: str
    file_size: int
    mime_type: str
    upload_path: str
    facts: MediaFacts
    upload_time: float
    expires_at: float


_NO_FAULTS = {
    "create_fault": None,
    "poll_fault": None,
    "link_fault": None,
    "polls": 0,
    "poll_faults_served": 0,
    "link_fetches": 0,
    "link_faults_served": 0,
}


class EmulatorState:
    """SQLite-backed store under `state_dir`; safe to share between threads."""

    def __init__(self, state_dir: Path, credits: float):
        self.state_dir = Path(state_dir)
        self.files_dir = self.state_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.state_dir / "emulator.sqlite3", check_same_thread=False, isolation_level=None
        )
        # WAL with NORMAL sync: a commit survives a crash of the emulator (not of the machine)
        # without an fsync per request, so the store is never the bottleneck.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._balance = Balance(credits)
        for task in self.tasks():
            self._balance.add(task)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def reserve_task(
        self,
        task: TaskRecord,
        prompt: str | None = None,
        faults: Faults = Faults(),
        callback: tuple[str, str] | None = None,
    ) -> str | None:
        """Store `task` if the balance covers it; else the reason it was refused.

        `prompt` and the `faults` injected are kept for the emulator's ledger (the prompt is
        what a user would find on the vendor's dashboard). `callback` (its URL and the origin
        of result links) is due when the task ends.
        """
        with self._lock:
            remaining = self._balance.remaining(time.time())
            if task.credits_reserved > remaining:
                return (
                    f"Insufficient quota. Please top up your account: the task needs "
                    f"{task.credits_reserved:g} credits, {remaining:g} remain."
                )
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    f"INSERT INTO tasks VALUES ({','.join('?' * 12)})", tuple(asdict(task).values())
                )
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                return DUPLICATE_ID
            self._db.execute(
                "INSERT OR REPLACE INTO task_requests VALUES (?, ?, ?)",
                (task.id, prompt, int(faults.create == "dropped")),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO task_faults (id, create_fault, poll_fault, link_fault)"
                " VALUES (?, ?, ?, ?)",
                (task.id, faults.create, faults.poll, faults.link),
            )
            if callback:
                self._db.execute(
                    "INSERT INTO callbacks (task_id, url, origin, due_at) VALUES (?, ?, ?, ?)",
                    (task.id, *callback, task.completed_at),
                )
            self._db.execute("COMMIT")
            self._balance.add(task)
            return None

    def count(self, task_id: str, what: str) -> Faults:
        """Count one more `polls` or `link_fetches` of the task; its faults."""
        assert what in ("polls", "link_fetches")
        with self._lock:
            row = self._db.execute(
                f"UPDATE task_faults SET {what} = {what} + 1 WHERE id = ?"
                " RETURNING create_fault, poll_fault, link_fault",
                (task_id,),
            ).fetchone()
        return Faults(*row) if row else Faults()

    def serve_fault(self, task_id: str, what: str, limit: int | None) -> bool:
        """Whether the task's `poll` or `link` fault alters this answer (counting it if so):
        yes for its first `limit` answers, or always when `limit` is None."""
        served = f"{what}_faults_served"
        assert served in ("poll_faults_served", "link_faults_served")
        with self._lock:
            row = self._db.execute(
                f"UPDATE task_faults SET {served} = {served} + 1 WHERE id = ?"
                f" AND ({served} < ? OR ? IS NULL) RETURNING {served}",
                (task_id, limit, limit),
            ).fetchone()
        return row is not None

    def due_callbacks(self, now: float, busy: set[str]) -> list[Callback]:
        """Pending callbacks due by `now`, except those of `busy` tasks."""
        with self._lock:
            rows = self._db.execute(
                "SELECT task_id, url, origin, attempts FROM callbacks"
                " WHERE state = 'pending' AND due_at <= ? ORDER BY due_at",
                (now,),
            ).fetchall()
        return [Callback(*r) for r in rows if r[0] not in busy]

    def next_callback_due(self, busy: set[str]) -> float | None:
        """When the next pending callback not of a `busy` task is due."""
        with self._lock:
            rows = self._db.execute(
                "SELECT task_id, due_at FROM callbacks WHERE state = 'pending' ORDER BY due_at"
            )
            return next((due for task_id, due in rows if task_id not in busy), None)

    def record_attempt(
        self, task_id: str, at: float, outcome: str, state: str, due_at: float | None = None
    ) -> None:
        """Log a delivery attempt; the callback becomes `state` (pending again at `due_at`)."""
        with self._lock:
            self._db.execute("BEGIN")
            (n,) = self._db.execute(
                "UPDATE callbacks SET attempts = attempts + 1, state = ?,"
                " due_at = coalesce(?, due_at) WHERE task_id = ? RETURNING attempts",
                (state, due_at, task_id),
            ).fetchone()
            self._db.execute(
                "INSERT INTO callback_attempts VALUES (?, ?, ?, ?)", (task_id, n, at, outcome)
            )
            self._db.execute("COMMIT")

    def task(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else _task(row)

    def tasks(self) -> list[TaskRecord]:
        with self._lock:
            return [_task(r) for r in self._db.execute("SELECT * FROM tasks ORDER BY created")]

    def credits_remaining(self, now: float | None = None) -> float:
        """The balance: credits minus what tasks not failed hold."""
        with self._lock:
            return self._balance.remaining(time.time() if now is None else now)

    def charged_total(self, now: float | None = None) -> float:
        """Credits charged for completed tasks."""
        with self._lock:
            return self._balance.charged(time.time() if now is None else now)

    def ledger(self, now: float | None = None) -> dict:
        """Every task with its reservation and charge, and the totals."""
        now = time.time() if now is None else now
        tasks = self.tasks()
        with self._lock:
            notes = {
                r[0]: (r[1], bool(r[2]))
                for r in self._db.execute("SELECT id, prompt, answer_dropped FROM task_requests")
            }
            cursor = self._db.execute("SELECT * FROM task_faults")
            names = [c[0] for c in cursor.description[1:]]
            injected = {r[0]: dict(zip(names, r[1:], strict=True)) for r in cursor}
            callbacks = {
                task_id: {"url": url, "state": state, "attempts": []}
                for task_id, url, state in self._db.execute(
                    "SELECT task_id, url, state FROM callbacks"
                )
            }
            for task_id, n, at, outcome in self._db.execute(
                "SELECT * FROM callback_attempts ORDER BY task_id, n"
            ):
                callbacks[task_id]["attempts"].append({"n": n, "at": at, "outcome": outcome})
        return {
            "tasks": [
                {
                    "id": t.id,
                    "model": t.model,
                    "status": t.status(now)[0],
                    "credits_reserved": t.credits_reserved,
                    "credits_charged": t.charged(now),
                    "prompt": notes.get(t.id, (None, False))[0],
                    "answer_dropped": notes.get(t.id, (None, False))[1],
                    **injected.get(t.id, _NO_FAULTS),
                    "callback": callbacks.get(t.id),
                }
                for t in tasks
            ],
            "credits_charged_total": self.charged_total(now),
            "credits_remaining": self.credits_remaining(now),
        }

    def add_file(self, record: FileRecord) -> None:
        row = asdict(record)
        row["facts"] = json.dumps(row["facts"])
        with self._lock:
            self._db.execute(f"INSERT INTO files VALUES ({','.join('?' * 9)})", tuple(row.values()))

    def file(self, file_id: str) -> FileRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM files WHERE file_id = ?", (file_id,)).fetchone()
        if row is None:
            return None
        values = list(row)
        values[6] = MediaFacts(**json.loads(values[6]))
        return FileRecord(*values)

    def file_path(self, record: FileRecord) -> Path:
        return self.files_dir / record.file_id / record.file_name

    def files(self, now: float) -> list[FileRecord]:
        """Files not expired at `now`, newest first."""
        with self._lock:
            ids = self._db.execute(
                "SELECT file_id FROM files WHERE expires_at > ? ORDER BY upload_time DESC, file_id",
                (now,),
            ).fetchall()
        return [r for r in (self.file(i) for (i,) in ids) if r is not None]

    def delete_file(self, file_id: str) -> bool:
        """Forget the file; False when there was no such file."""
        with self._lock:
            return self._db.execute("DELETE FROM files WHERE file_id = ?", (file_id,)).rowcount > 0


def _task(row: tuple) -> TaskRecord:
    values = list(row)
    values[7] = bool(values[7])
    return TaskRecord(*values)
