"""Partition progress: which days are fully submitted and which have settled."""

from __future__ import annotations

import hashlib

from sqlalchemy import Row, bindparam

from ..statuses import WAITING, Status
from .attempts import DUE_AGAIN, RESUBMITTABLE_CODES
from .database import Database, sql
from .tasks import DOWNLOAD_DUE, RETRY_AHEAD_LIMIT

_BUSY = bindparam("busy", expanding=True)
_CODES = bindparam("codes", expanding=True)


class PartitionProgress:
    """Whether every accepted prompt of a day is in the ledger, and what a day waits for."""

    db: Database

    def set_submission_complete(self, partition: str, complete: bool | None) -> None:
        """Note whether every accepted prompt of `partition` is in the ledger; None: not known
        (a submission under way, or one that was stopped), so the sensor neither submits the
        day nor writes its tables."""
        with self.db.transaction() as db:
            if complete is None:
                db.execute(sql("DELETE FROM partitions WHERE partition = :p"), {"p": partition})
                return
            db.execute(
                sql(
                    "INSERT INTO partitions (partition, submission_complete) VALUES (:p, :c)"
                    " ON CONFLICT (partition) DO UPDATE SET"
                    " submission_complete = excluded.submission_complete"
                ),
                {"p": partition, "c": int(complete)},
            )

    def submissions_digest(self, partitions: list[str]) -> dict[str, str]:
        """A digest of each of these days' submissions (prompt, attempt and task of its rows
        and kept attempts): a new one whenever any comes, goes or gets its task."""
        found: dict = {}
        if not partitions:  # an empty IN is typed integer on PostgreSQL: refused (helper-69)
            return found
        with self.db.read() as db:
            rows = db.execute(
                sql(
                    "SELECT partition, prompt_id, attempt, task_id FROM tasks"
                    " WHERE partition IN :days UNION ALL"
                    " SELECT partition, prompt_id, attempt, task_id FROM attempts"
                    " WHERE partition IN :days ORDER BY 1, 2, 3"
                ).bindparams(bindparam("days", expanding=True)),
                {"days": partitions},
            )
            for day, prompt_id, attempt, task_id in rows:
                key = f"{prompt_id}\t{attempt}\t{task_id or ''}\n".encode()
                found.setdefault(day, hashlib.sha256()).update(key)
        return {day: digest.hexdigest()[:16] for day, digest in found.items()}

    def partitions_known(self) -> set[str]:
        """Every partition the ledger has a row of."""
        with self.db.read() as db:
            return set(db.execute(sql("SELECT DISTINCT partition FROM tasks")).scalars())

    def partitions_settled(self, max_attempts: int = 1) -> list[str]:
        """Fully submitted partitions whose every task has ended and is not due again."""
        with self.db.read() as db:
            found = db.execute(
                sql(
                    "SELECT p.partition FROM partitions p WHERE p.submission_complete = 1"
                    " AND NOT EXISTS (SELECT 1 FROM tasks WHERE tasks.partition = p.partition"
                    f" AND (status IN :busy OR ({DUE_AGAIN}))) ORDER BY p.partition"
                ).bindparams(_BUSY, _CODES),
                {
                    "busy": [*(s.value for s in WAITING), Status.SUBMITTING.value],
                    "max_attempts": max_attempts,
                    "codes": list(RESUBMITTABLE_CODES),
                },
            )
            return [r.partition for r in found]

    def partitions_incomplete(self) -> list[str]:
        """Partitions whose last submission step could not send every accepted prompt."""
        with self.db.read() as db:
            found = db.execute(
                sql(
                    "SELECT partition FROM partitions WHERE submission_complete = 0"
                    " ORDER BY partition"
                )
            )
            return [r.partition for r in found]

    def partitions_unstored(self, now: float) -> dict[str, float]:
        """Days with videos to store now (completed and not stored, or a failed download due
        again), each with when the first of them was found completed.

        The days are walked one index lookup each (a loose index scan), and each day's videos
        to store are looked up in its index, not read from every row of a history of years.
        """
        first = "SELECT MIN(COALESCE(completed_at, :now)) FROM tasks WHERE tasks.partition = day"
        with self.db.read() as db:
            found = db.execute(
                sql(
                    "WITH RECURSIVE days (day) AS (SELECT MIN(partition) FROM tasks UNION ALL"
                    " SELECT (SELECT MIN(partition) FROM tasks WHERE tasks.partition > day)"
                    " FROM days WHERE day IS NOT NULL)"
                    f" SELECT day, ({first} AND status = 'completed' AND video_uri IS NULL)"
                    f" AS unstored, ({first} AND {DOWNLOAD_DUE}) AS retry"
                    " FROM days WHERE day IS NOT NULL"
                ),
                {"now": now, "retry_ahead": RETRY_AHEAD_LIMIT},
            )
            return {
                r.day: min(t for t in (r.unstored, r.retry) if t is not None)
                for r in found
                if r.unstored is not None or r.retry is not None
            }

    def partitions_to_resubmit(self, max_attempts: int) -> list[str]:
        """Fully submitted partitions with failed tasks due for another attempt."""
        with self.db.read() as db:
            found = db.execute(
                sql(
                    "SELECT DISTINCT tasks.partition FROM tasks JOIN partitions"
                    " ON partitions.partition = tasks.partition WHERE submission_complete = 1"
                    f" AND {DUE_AGAIN} ORDER BY tasks.partition"
                ).bindparams(_CODES),
                {"max_attempts": max_attempts, "codes": list(RESUBMITTABLE_CODES)},
            )
            return [r.partition for r in found]

    def state_rows(self, partition: str) -> list[Row]:
        """The day's rows, only the fields that say where each task stands (prompt id,
        attempt, task id, status, download attempts, next poll, estimated credits).

        The sensor reads every settled day on each tick, history included: whole rows (their
        request bodies parsed) cost about 20 times as much.
        """
        with self.db.read() as db:
            return db.execute(
                sql(
                    "SELECT prompt_id, attempt, task_id, status, download_attempts,"
                    " next_poll_at, estimated_credits FROM tasks WHERE partition = :p"
                    " ORDER BY prompt_id"
                ),
                {"p": partition},
            ).all()
