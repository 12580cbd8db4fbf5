"""The emulator's persistent state: tasks, uploaded files and the credit ledger, in SQLite."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

from ..seedance import MediaFacts
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
        if stage != "done":
            return stage, progress
        return ("failed", 100) if self.error_code else ("completed", 100)

    def held(self, now: float) -> float:
        """Credits this task keeps from the balance at `now` (reserved or charged)."""
        return 0.0 if self.status(now)[0] == "failed" else self.credits_reserved

    def charged(self, now: float) -> float:
        """Credits charged at `now`: the reservation once completed, else nothing."""
        return self.credits_reserved if self.status(now)[0] == "completed" else 0.0


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


def _sum(values) -> float:
    return float(sum((Decimal(str(v)) for v in values), Decimal(0)).quantize(Decimal("0.0001")))


class EmulatorState:
    """SQLite-backed store under `state_dir`; safe to share between threads."""

    def __init__(self, state_dir: Path, credits: float):
        self.state_dir = Path(state_dir)
        self.files_dir = self.state_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.credits = credits
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.state_dir / "emulator.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def reserve_task(
        self, task: TaskRecord, prompt: str | None = None, dropped: bool = False
    ) -> str | None:
        """Store `task` if the balance covers it; else the reason it was refused.

        `prompt` and whether its answer was `dropped` are kept for the emulator's ledger
        (what a user would find on the vendor's dashboard).
        """
        with self._lock:
            remaining = self._remaining(time.time())
            if task.credits_reserved > remaining:
                return (
                    f"Insufficient quota. Please top up your account: the task needs "
                    f"{task.credits_reserved:g} credits, {remaining:g} remain."
                )
            try:
                self._db.execute(
                    f"INSERT INTO tasks VALUES ({','.join('?' * 12)})", tuple(asdict(task).values())
                )
            except sqlite3.IntegrityError:
                return DUPLICATE_ID
            self._db.execute(
                "INSERT OR REPLACE INTO task_requests VALUES (?, ?, ?)",
                (task.id, prompt, int(dropped)),
            )
            return None

    def task(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else _task(row)

    def tasks(self) -> list[TaskRecord]:
        with self._lock:
            return [_task(r) for r in self._db.execute("SELECT * FROM tasks ORDER BY created")]

    def _remaining(self, now: float) -> float:
        rows = self._db.execute("SELECT * FROM tasks").fetchall()
        return _sum([self.credits] + [-_task(r).held(now) for r in rows])

    def credits_remaining(self, now: float | None = None) -> float:
        """The balance: credits minus what tasks not failed hold."""
        with self._lock:
            return self._remaining(time.time() if now is None else now)

    def charged_total(self, now: float | None = None) -> float:
        """Credits charged for completed tasks."""
        now = time.time() if now is None else now
        return _sum(t.charged(now) for t in self.tasks())

    def ledger(self, now: float | None = None) -> dict:
        """Every task with its reservation and charge, and the totals."""
        now = time.time() if now is None else now
        tasks = self.tasks()
        with self._lock:
            notes = {
                r[0]: (r[1], bool(r[2]))
                for r in self._db.execute("SELECT id, prompt, answer_dropped FROM task_requests")
            }
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
                }
                for t in tasks
            ],
            "credits_charged_total": _sum(t.charged(now) for t in tasks),
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
