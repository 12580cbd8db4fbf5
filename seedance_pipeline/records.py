"""Every submission recorded beside the day's outputs, so a lost ledger is noticed and rebuilt.

The ledger is what stops a second payment. If it is lost (file deleted, data directory moved,
another `SEEDANCE_LEDGER_URL`), the day's `submissions` table still lists what was sent, and
a run refuses to submit that day until the ledger is restored from it.
"""

from __future__ import annotations

import json

import pandas as pd

from .ledger import Ledger, LedgerRow, safe_url
from .statuses import Status
from .tables import TableStore, table_key

ASSET = "submissions"
COLUMNS = [
    "partition",
    "prompt_id",
    "attempt",
    "status",
    "task_id",
    "request_json",
    "request_sha256",
    "estimated_credits",
    "credits_reserved",
    "submitted_at",
    "error_code",
    "error_message",
]


class LedgerLost(RuntimeError):
    """Submissions are recorded for a day that the ledger knows nothing of."""


def write_record(ledger: Ledger, tables: TableStore, partition: str) -> None:
    """Record the day's submissions as the ledger has them (call after every submission step)."""
    rows = [r for r in ledger.rows(partition) if r.status != Status.SUBMITTING]
    frame = pd.DataFrame([_record(r) for r in rows], columns=COLUMNS)
    tables.write(frame, ASSET, partition)


def _record(r: LedgerRow) -> dict:
    return {
        "partition": r.partition,
        "prompt_id": r.prompt_id,
        "attempt": r.attempt,
        "status": r.status.value,
        "task_id": r.task_id,
        "request_json": json.dumps(r.request, ensure_ascii=False),
        "request_sha256": r.request_sha256,
        "estimated_credits": r.estimated_credits,
        "credits_reserved": r.credits_reserved,
        "submitted_at": r.submitted_at,
        "error_code": r.error_code,
        "error_message": r.error_message,
    }


def _recorded(tables: TableStore, partition: str) -> pd.DataFrame | None:
    try:
        return tables.read(ASSET, partition)
    except FileNotFoundError:
        return None


def check_ledger(ledger: Ledger, tables: TableStore, partition: str) -> None:
    """Refuse to go on when the day's record lists submissions the ledger lacks.

    Raises:
        LedgerLost: naming what is missing and how to restore it.
    """
    recorded = _recorded(tables, partition)
    if recorded is None or recorded.empty:
        return
    known = {r.prompt_id for r in ledger.rows(partition)}
    missing = sorted(set(recorded.prompt_id) - known)
    if missing:
        shown = ", ".join(missing[:5]) + ("…" if len(missing) > 5 else "")
        raise LedgerLost(
            f"{partition}: {len(missing)} submission(s) recorded in "
            f"{tables.location}/{table_key(ASSET, partition)} are not in the ledger "
            f"({safe_url(ledger.db.url)}): {shown}. Submitting now would pay for them again. "
            "The ledger was lost or SEEDANCE_DATA_DIR/SEEDANCE_LEDGER_URL points elsewhere: "
            f"restore it with `seedance-pipeline rebuild-ledger {partition}`, then run again"
        )


def rebuild(ledger: Ledger, tables: TableStore, partition: str) -> int:
    """Put the day's recorded submissions back into the ledger; returns how many were missing.

    Rows with a task that did not fail are polled again, so their state (and a fresh result
    link) comes from the vendor.
    """
    recorded = _recorded(tables, partition)
    if recorded is None:
        raise FileNotFoundError(
            f"{tables.location}/{table_key(ASSET, partition)}: no submissions recorded for "
            f"{partition}"
        )
    restored = 0
    for rec in recorded.to_dict("records"):
        status = Status(rec["status"])
        if rec["task_id"] and status not in (Status.FAILED, Status.CANCELLED):
            status = Status.PENDING
        restored += ledger.restore(
            {
                **{k: (None if pd.isna(v) else v) for k, v in rec.items()},
                "status": status.value,
            }
        )
    return restored
