"""Saving finished videos, and building the `generated_videos` table of a partition.

A result link is untrusted: the download is checked by the client (public https host, size
cap, deadline) and the file is measured before it is kept. A video that cannot be stored
leaves its row `download_failed` (charged, reason kept), tried again while the link may still
work (24 hours), then `expired`. The table is built from the ledger alone, in one pass.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import pandas as pd

from .ledger import Ledger, LedgerRow
from .media import MediaError, measure_video_output
from .planning import REQUEST_COLUMNS
from .records import few
from .seedance import (
    DEFAULT_MAX_VIDEO_BYTES,
    DEFAULT_QUALITY,
    PIXELS,
    Client,
    LinkExpiredError,
    MalformedAnswerError,
    SeedanceError,
    output_pixels,
)
from .settings import SettingError
from .statuses import CHARGED, SENT_ON_OTHER_DAY, SETTLED, WAITING, RequestStatus, Status
from .storage import StoreError, StoreRefused, VideoStore
from .submission import send_the_rest

log = logging.getLogger(__name__)

MAX_VIDEO_BYTES_ENV = "SEEDANCE_MAX_VIDEO_BYTES"
LINK_LIFETIME_SECONDS = 24 * 3600  # the vendor's result links live 24 hours
# A failed download is tried again this long after, not before; each failure after the first
# doubles the wait, up to DOWNLOAD_RETRY_MAX_SECONDS: a link that keeps failing is tried about
# 27 times in its 24 hours, not 288 (each try is a query to the API, and a run of the day).
DOWNLOAD_RETRY_SECONDS = 300
DOWNLOAD_RETRY_MAX_SECONDS = 3600
DOWNLOAD_WORKERS = 4

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
    "credits_reserved_earlier",
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
    "request_json",
    "request_changed",
    "in_catalog",
]


class PartitionNotFinished(RuntimeError):
    """Some accepted prompts of the partition are unsubmitted or still generating."""


def max_video_bytes() -> int:
    """`SEEDANCE_MAX_VIDEO_BYTES`, else the default."""
    value = os.environ.get(MAX_VIDEO_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_VIDEO_BYTES
    if not value.isdigit() or int(value) == 0:
        raise SettingError(
            f"{MAX_VIDEO_BYTES_ENV}={value!r} must be a whole number of bytes above 0"
        )
    return int(value)


def link_alive(row: LedgerRow, now: float, *, surely: bool = False) -> bool:
    """Whether the row's result link lives, counted from `completed_at`; `surely`: from the
    submission, since `completed_at` is when the pipeline learned of the completion, hours
    after it for a row settled late (`resolve`, an outage)."""
    since = row.submitted_at if surely else row.completed_at
    return now - (since or row.completed_at or now) < LINK_LIFETIME_SECONDS


def store_video(
    row: LedgerRow, client: Client, store: VideoStore, ledger: Ledger, max_bytes: int
) -> Status:
    """Download, check and store one task's video; record and return what became of it."""
    scratch = None
    try:
        scratch = store.scratch_path(row.partition, row.prompt_id)
        download = client.download(_result_url(row, client), scratch, max_bytes=max_bytes)
        measured = measure_video_output(scratch)
        key = store.put(scratch, row.partition, row.prompt_id)
    except StoreRefused:  # every video would be: stop, the row stays to store once fixed
        raise
    except (SeedanceError, MediaError, StoreError, OSError) as exc:
        why = str(exc) if not isinstance(exc, OSError) else f"cannot write the video ({exc})"
        # A 403 or 404 from a link that may still live is tried again too (a CDN still copying
        # the file, or throttling, answers so), with a fresh link asked for; given up once the
        # link surely died: its task was sent a day ago.
        refused = isinstance(exc, LinkExpiredError)
        code = (
            "link_expired"
            if refused
            else "no_result_link"
            if row.result_url is None
            else "download_failed"
        )
        alive = link_alive(row, time.time(), surely=refused)
        return _not_stored(
            row, ledger, Status.DOWNLOAD_FAILED if alive else Status.EXPIRED, code, why
        )
    finally:
        if scratch is not None:
            with contextlib.suppress(OSError):  # a read-only or vanished folder
                scratch.unlink(missing_ok=True)
    ledger.record_video(
        row.partition, row.prompt_id, key, download.sha256, download.bytes, measured
    )
    return Status.COMPLETED


def mismatched(videos: pd.DataFrame) -> pd.DataFrame:
    """The completed rows whose stored video is not what was asked: its frame, length or
    sound, or not measured (a ledger from before measurements were kept)."""
    done = videos[videos.status == Status.COMPLETED]
    return done[
        (
            ((done.width != done.expected_width) | (done.height != done.expected_height))
            & ~_picked(done)
        )
        | ((done.duration_s - done.duration).abs() > 0.1)
        | (done.has_audio != done.generate_audio)
        | done[["width", "height"]].isna().any(axis=1)
    ]


def mismatch_text(row: NamedTuple) -> str:
    return (
        f"got {row.width}x{row.height} {row.duration_s}s audio={row.has_audio}, asked "
        f"{row.expected_width}x{row.expected_height} {row.duration}s audio={row.generate_audio}"
    )


def _picked(done: pd.DataFrame) -> pd.Series:
    """Rows whose frame the vendor picked, and did: `adaptive` text-to-video takes its ratio
    from the prompt, so the asked quality's frame of any ratio is right."""
    qualities = done.quality.fillna(DEFAULT_QUALITY)
    frames = [
        (w, h) in {by_quality.get(q) for by_quality in PIXELS.values()}
        for w, h, q in zip(done.width, done.height, qualities, strict=True)
    ]
    adaptive_text = (done.aspect_ratio == "adaptive") & done.model.str.endswith("text-to-video")
    return adaptive_text & pd.Series(frames, index=done.index, dtype=bool)


def _charged(lr: LedgerRow) -> float | None:
    """The vendor charges the reservation for a delivered task, or what the price table says
    when no answer reported `usage` (it is on "some answers" only), and nothing for a failed
    task; an unknown submission's cost cannot be known."""
    if lr.status not in CHARGED:
        return None if lr.status == Status.UNKNOWN else 0.0
    return lr.estimated_credits if lr.credits_reserved is None else lr.credits_reserved


def _result_url(row: LedgerRow, client: Client) -> str:
    """The link to fetch; after a failed try, the vendor is asked for a fresh one first (and
    for one at all when it answered `completed` without any).

    Raises:
        SeedanceError: there is no link: the vendor still gives none, or could not be asked.
    """
    if row.status == Status.DOWNLOAD_FAILED:
        try:
            fresh = client.get_task(row.task_id)
        except SeedanceError as exc:
            if row.result_url is None:
                raise
            log.warning("%s: no fresh result link (%s); trying the last one", row.prompt_id, exc)
        else:
            if fresh.results:
                return fresh.results[0]
    if row.result_url is None:
        raise MalformedAnswerError(
            f"the vendor still answers task {row.task_id} `completed` without a result link; "
            "the task is charged, check the EvoLink dashboard"
        )
    return row.result_url


def _download_retry_seconds(failures: int) -> int:
    """How long after its `failures`-th failed try (1 for the first) a download is tried again."""
    return min(DOWNLOAD_RETRY_SECONDS << min(max(failures - 1, 0), 16), DOWNLOAD_RETRY_MAX_SECONDS)


def _not_stored(row: LedgerRow, ledger: Ledger, status: Status, code: str, why: str) -> Status:
    wait = _download_retry_seconds(row.download_attempts + 1)
    later = (
        ""
        if status == Status.EXPIRED
        else f"; a run from {wait // 60} minutes on tries again while the link lives"
    )
    log.error("%s/%s: video not stored: %s%s", row.partition, row.prompt_id, why, later)
    ledger.record_download_failed(
        row.partition,
        row.prompt_id,
        status,
        code,
        f"{why}{later}",
        retry_at=time.time() + wait,
    )
    return status


class StoredVideos(NamedTuple):
    """What `store_videos` did: each download's outcome, and the prompts whose stored video
    is gone past its link's life."""

    outcomes: Counter[Status]
    missing: list[str]


def store_videos(
    ledger: Ledger,
    partition: str,
    client: Client,
    store: VideoStore,
    *,
    workers: int = DOWNLOAD_WORKERS,
) -> StoredVideos:
    """Store every video the day still needs, `workers` at a time.

    A video recorded as stored but gone from the store (deleted, a bucket emptied, another
    store configured) or there at another size (a copy put back cut short) is stored again
    from its link while the link lives; past that its record stays (the file may be restored)
    and it is listed as missing.
    """
    cap = max_video_bytes()
    missing = []
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="download") as pool:
        now = time.time()
        stored = [r for r in ledger.rows(partition) if r.video_uri]
        sizes = list(pool.map(lambda r: store.stored_size(r.video_uri), stored))
        for row, size in zip(stored, sizes, strict=True):
            if size is not None and row.video_bytes in (None, size):
                continue
            where = f"{partition}/{row.prompt_id}: its stored video {store.uri(row.video_uri)}"
            state = "is gone" if size is None else f"is {size} bytes, not {row.video_bytes}"
            if not link_alive(row, now, surely=True):
                log.error("%s %s, and its link has expired: restore the file", where, state)
                missing.append(row.prompt_id)
                continue
            log.warning("%s %s; storing it again from its link", where, state)
            ledger.forget_video(partition, row.prompt_id, row.video_sha256)
        due = ledger.rows_to_store(partition, now)
        outcomes = Counter(pool.map(lambda r: store_video(r, client, store, ledger, cap), due))
    return StoredVideos(outcomes, missing)


def _timestamp(epoch: float | None) -> pd.Timestamp | None:
    return None if epoch is None else pd.Timestamp(dt.datetime.fromtimestamp(epoch, dt.UTC))


def build_videos_table(
    requests: pd.DataFrame,
    rows: list[LedgerRow],
    store: VideoStore,
    partition: str,
    sent_on_other_days: dict[str, str],
    attempts: Iterable[Mapping] = (),
    campaigns: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """One row per prompt of the partition's requests, plus any task sent for this day whose
    prompt has since left the catalog or moved (its charge stays in this day's table).

    `attempts` (`Ledger.attempts`): the earlier attempts of resubmitted prompts, each a task
    that failed; what the vendor reserved for them is kept in `credits_reserved_earlier`.
    `campaigns`: the catalog's campaign of prompts no longer among the day's requests, for
    rows claimed before the ledger kept it.

    Raises:
        PartitionNotFinished: an accepted prompt has no ledger row or a running task.
    """
    by_prompt = {r.prompt_id: r for r in rows}
    accepted = [
        pid
        for pid, status in zip(requests.prompt_id, requests.status, strict=True)
        if status == RequestStatus.ACCEPTED and pid not in sent_on_other_days
    ]
    if unsent := [pid for pid in accepted if pid not in by_prompt]:
        raise PartitionNotFinished(
            f"{len(unsent)} accepted prompt(s) of {partition} were never sent ({few(unsent)}): "
            f"{send_the_rest(partition)}, or take them out of the catalog and materialise "
            f"generation_requests for {partition} again; what was sent and paid is in the "
            "ledger meanwhile"
        )
    if waiting := [p for p in accepted if by_prompt[p].status in (*WAITING, Status.SUBMITTING)]:
        raise PartitionNotFinished(
            f"{len(waiting)} accepted prompt(s) of {partition} are not finished yet "
            f"({few(waiting)}); the task_poller sensor materialises this partition once they are"
        )
    earlier: dict[str, float] = {}
    for a in attempts:
        earlier[a["prompt_id"]] = earlier.get(a["prompt_id"], 0.0) + (a["credits_reserved"] or 0)
    table = []
    for req in requests.to_dict("records"):
        lr = by_prompt.pop(req["prompt_id"], None)
        if lr is None:
            table.append(_unsent_row(req, sent_on_other_days.get(req["prompt_id"])))
        else:
            table.append(_task_row(lr, store, req, earlier))
    campaigns = campaigns or {}
    table += [
        _task_row(lr, store, None, earlier, campaigns.get(lr.prompt_id))
        for lr in by_prompt.values()
        if lr.status in SETTLED
    ]
    return pd.DataFrame(table, columns=VIDEO_COLUMNS).astype(
        {
            "duration": "int64",
            "video_bytes": "Int64",
            "attempts": "Int64",
            "width": "Int64",
            "height": "Int64",
            "expected_width": "Int64",
            "expected_height": "Int64",
            "has_audio": "boolean",
            "request_changed": "boolean",
            "in_catalog": "bool",
        }
    )


def _unsent_row(req: dict, sent_on: str | None) -> dict:
    """A prompt not sent for this day: refused by the rules, or already sent on another day."""
    row = {c: req[c] for c in REQUEST_COLUMNS}
    row.update(
        status=Status.REJECTED.value,
        error_code="rejected_before_submission" if sent_on is None else SENT_ON_OTHER_DAY,
        error_message="; ".join(req["errors"])
        if sent_on is None
        else f"already sent on {sent_on}; its video and charge are in {sent_on}'s tables",
        credits_estimated=req["estimated_credits"] if sent_on is None else 0.0,
        credits_reserved=0.0,
        credits_charged=0.0,
        credits_reserved_earlier=0.0,
        expected_width=req["expected_width"],
        expected_height=req["expected_height"],
        in_catalog=True,
    )
    return row


def _task_row(
    lr: LedgerRow,
    store: VideoStore,
    req: dict | None,
    earlier: dict[str, float],
    campaign: str | None = None,
) -> dict:
    """A submitted prompt as it was sent (the ledger's body), flagged if the catalog changed;
    `campaign`: the catalog's now, for a prompt no longer among the day's requests (`req`
    None) claimed before the ledger kept its campaign."""
    body = lr.request
    changed = None if req is None else lr.edited_since_sent(req.get("request_sha256"))
    # The frame the sent request makes: the plan's when it was sent (recorded since ledger
    # version 6). Older rows: today's plan (which knows the media) unless the catalog row was
    # edited after submission and the sent body alone says it (an `adaptive` ratio takes its
    # media's, which only the plan measured).
    width, height = (
        (lr.expected_width, lr.expected_height)
        if lr.expected_width
        else (req["expected_width"], req["expected_height"])
        if req and (not changed or body.get("aspect_ratio") == "adaptive")
        else output_pixels(body)
    )
    return {
        "prompt_id": lr.prompt_id,
        "scheduled_date": req["scheduled_date"] if req else lr.partition,
        "campaign": req["campaign"] if req else lr.campaign or campaign,
        "model": body.get("model"),
        "prompt": body.get("prompt"),
        "duration": body.get("duration", 5),
        "quality": body.get("quality"),
        "aspect_ratio": body.get("aspect_ratio"),
        "generate_audio": body.get("generate_audio", True),
        "web_search": bool((body.get("model_params") or {}).get("web_search")),
        "task_id": lr.task_id,
        "status": lr.status.value,
        "error_code": lr.error_code,
        "error_message": lr.error_message,
        "submitted_at": _timestamp(lr.submitted_at),
        "completed_at": _timestamp(lr.completed_at),
        "credits_estimated": lr.estimated_credits,
        "credits_reserved": lr.credits_reserved,
        "credits_charged": _charged(lr),
        "credits_reserved_earlier": earlier.get(lr.prompt_id, 0.0),
        "video_uri": store.uri(lr.video_uri) if lr.video_uri else None,
        "video_sha256": lr.video_sha256,
        "video_bytes": lr.video_bytes,
        "width": lr.width,
        "height": lr.height,
        "duration_s": lr.duration_s,
        "has_audio": lr.has_audio,
        "attempts": lr.attempt,
        "expected_width": width,
        "expected_height": height,
        "request_json": json.dumps(body, ensure_ascii=False),
        "request_changed": changed,
        "in_catalog": req is not None,
    }
