"""The durable ledger of everything sent to the API, shared by every worker.

One interface over two backends (`database.py`): a SQLite file under the data directory, or
PostgreSQL named by `SEEDANCE_LEDGER_URL`. Split by job: task rows (`tasks.py`), earlier
attempts (`attempts.py`), partition progress (`progress.py`) and published media (`media.py`).
"""

from __future__ import annotations

import os

from .attempts import RESUBMITTABLE_CODES, Attempts
from .database import (
    LEDGER_URL_ENV,
    OUTAGE_RETRY_SECONDS,
    OUTAGE_SECONDS,
    Database,
    LedgerBusy,
    LedgerUnreachable,
    ledger_exists,
    ledger_url,
    safe_url,
)
from .leases import LeaseKeeper, lease_seconds, owner_id, pid_alive
from .media import PublishedMedia
from .progress import PartitionProgress
from .tasks import (
    RETRY_AHEAD_LIMIT,
    UNKNOWN_CODE,
    AnswerNotRecorded,
    ClaimLost,
    LedgerRow,
    PollUpdate,
    TaskHeld,
    TaskRows,
)

__all__ = [
    "AnswerNotRecorded",
    "ClaimLost",
    "LEDGER_URL_ENV",
    "OUTAGE_RETRY_SECONDS",
    "OUTAGE_SECONDS",
    "RESUBMITTABLE_CODES",
    "RETRY_AHEAD_LIMIT",
    "UNKNOWN_CODE",
    "Ledger",
    "LedgerBusy",
    "LedgerRow",
    "LedgerUnreachable",
    "PollUpdate",
    "TaskHeld",
    "ledger_exists",
    "ledger_url",
    "pid_alive",
    "safe_url",
]

_KEEPERS: dict[tuple[str, int], LeaseKeeper] = {}


class Ledger(TaskRows, Attempts, PartitionProgress, PublishedMedia):
    """The ledger at `url` (a `postgresql://` URL, a `sqlite:///` URL or a SQLite file path)."""

    def __init__(self, url: str | os.PathLike, *, lease: float | None = None):
        self.db = Database(os.fspath(url))
        self.owner = owner_id()
        seconds = lease_seconds() if lease is None else lease
        key = (self.db.url, os.getpid())
        if key not in _KEEPERS or _KEEPERS[key].seconds != seconds:
            _KEEPERS[key] = LeaseKeeper(self.renew_leases, seconds)
        self.leases = _KEEPERS[key]

    def __repr__(self) -> str:
        return f"Ledger({safe_url(self.db.url)!r})"
