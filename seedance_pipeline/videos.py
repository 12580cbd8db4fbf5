"""Saving finished videos and building the `generated_videos` table of a partition."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import pandas as pd

from .ledger import SUBMITTING, WAITING, Ledger, LedgerRow
from .media import measure_video_output
from .planning import REQUEST_COLUMNS
from .seedance import Client, LinkExpiredError, SeedanceError
from .storage import VideoStore

log = logging.getLogger(__name__)

VIDEO_COLUMNS = REQUEST_COLUMNS + [
    "task_id",
    "status",
    "error_code",
    "error_message",
    "submitted_at",
    "completed_at",
    "credits_estimated",
    "credits_reserved",
    "credits_charged",
    "video_uri",
    "video_sha256",
    "video_bytes",
    "width",
    "height",
    "duration_s",
    "has_audio",
    "attempts",
    "expected_width",
    "expected_height",
]


class PartitionNotFinished(RuntimeError):
    """Some accepted prompts of the partition are unsubmitted or still generating."""


def _timestamp(epoch: float | None) -> pd.Timestamp | None:
    return None if epoch is None else pd.Timestamp(dt.datetime.fromtimestamp(epoch, dt.UTC))


def build_videos_table(
    requests: pd.DataFrame, ledger: Ledger, client: Client, store: VideoStore, partition: str
) -> pd.DataFrame:
    """One row per prompt of the partition; downloads completed videos not yet stored.

    Raises:
        PartitionNotFinished: an accepted prompt has no ledger row or a running task.
    """
    by_prompt = {r.prompt_id: r for r in ledger.rows(partition)}
    waiting = [
        pid
        for pid, status in zip(requests.prompt_id, requests.status, strict=True)
        if status == "accepted"
        and (pid not in by_prompt or by_prompt[pid].status in (*WAITING, SUBMITTING))
    ]
    if waiting:
        raise PartitionNotFinished(
            f"{len(waiting)} accepted prompt(s) of {partition} are not finished yet "
            f"({', '.join(waiting[:5])}{'…' if len(waiting) > 5 else ''}); the task_poller "
            "sensor materialises this partition once they are"
        )
    rows = []
    for req in requests.to_dict("records"):
        row = {c: req[c] for c in REQUEST_COLUMNS}
        row.update(
            credits_estimated=req["estimated_credits"],
            expected_width=req["expected_width"],
            expected_height=req["expected_height"],
        )
        if req["status"] == "rejected":
            row.update(
                status="rejected",
                error_code="rejected_before_submission",
                error_message="; ".join(req["errors"]),
                credits_reserved=0.0,
                credits_charged=0.0,
            )
        else:
            row.update(_task_columns(by_prompt[req["prompt_id"]], ledger, client, store))
        rows.append(row)
    return pd.DataFrame(rows, columns=VIDEO_COLUMNS).astype(
        {
            "duration": "int64",
            "video_bytes": "Int64",
            "attempts": "Int64",
            "width": "Int64",
            "height": "Int64",
            "expected_width": "Int64",
            "expected_height": "Int64",
            "has_audio": "boolean",
        }
    )


def _task_columns(lr: LedgerRow, ledger: Ledger, client: Client, store: VideoStore) -> dict:
    measured = None
    if lr.status == "completed" and not (lr.video_uri and store.exists(lr.video_uri)):
        lr, measured = _save(lr, ledger, client, store)
    out = {
        "task_id": lr.task_id,
        "status": lr.status,
        "error_code": lr.error_code,
        "error_message": lr.error_message,
        "submitted_at": _timestamp(lr.submitted_at),
        "completed_at": _timestamp(lr.completed_at),
        "credits_reserved": lr.credits_reserved,
        # The vendor charges the reservation for a completed task and nothing for a failed
        # one; an unknown submission's cost cannot be known.
        "credits_charged": None
        if lr.status == "unknown"
        else (lr.credits_reserved if lr.status in ("completed", "expired") else 0.0),
        "video_uri": store.uri(lr.video_uri) if lr.video_uri else None,
        "video_sha256": lr.video_sha256,
        "video_bytes": lr.video_bytes,
        "attempts": lr.attempt,
    }
    if lr.status == "completed" and measured is None and Path(out["video_uri"]).is_file():
        measured = measure_video_output(out["video_uri"])  # stored earlier, on this disk
    out.update(measured or {})
    return out


def _save(
    lr: LedgerRow, ledger: Ledger, client: Client, store: VideoStore
) -> tuple[LedgerRow, dict | None]:
    """Download to scratch, measure, keep; the new ledger row and the measurements."""
    scratch = store.scratch_path(lr.partition, lr.prompt_id)
    measured = None
    try:
        download = client.download(lr.result_url, scratch)
        measured = measure_video_output(scratch)
        key = store.put(scratch, lr.partition, lr.prompt_id)
    except LinkExpiredError as exc:
        ledger.record_expired(lr.task_id, str(exc))
        log.error("%s: video lost, %s", lr.prompt_id, exc)
    except SeedanceError as exc:
        raise RuntimeError(f"{lr.prompt_id}: download failed ({exc}); rerun to try again") from None
    else:
        ledger.record_video(lr.task_id, key, download.sha256, download.bytes)
    finally:
        scratch.unlink(missing_ok=True)
    return next(r for r in ledger.rows(lr.partition) if r.prompt_id == lr.prompt_id), measured
