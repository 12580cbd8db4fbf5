"""Every submission recorded beside the day's outputs, so a lost ledger is noticed and rebuilt.

The ledger is what stops a second payment. If it is lost (file deleted, data directory moved,
another `SEEDANCE_LEDGER_URL`), the day's `submissions` table still lists what was sent, and
a run refuses to submit that day until the ledger is restored from it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from .ledger import UNKNOWN_CODE, Ledger, LedgerRow, safe_url
from .statuses import Status
from .storage import StoreError, VideoStore, video_key
from .tables import TableStore


def few(prompt_ids: list[str]) -> str:
    """The first five of `prompt_ids`, for a message (… when there are more)."""
    return ", ".join(prompt_ids[:5]) + ("…" if len(prompt_ids) > 5 else "")


def edited_not_resent(prompt_ids: list[str]) -> str:
    """What became of prompts edited after they were sent, and how to generate the edit."""
    return (
        f"{len(prompt_ids)} prompt(s) edited after they were sent, not sent again "
        f"({few(prompt_ids)}): their videos are of the request sent (request_changed in "
        "generated_videos); give an edited prompt a new prompt_id to generate it"
    )


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
    "expected_width",
    "expected_height",
    "campaign",
    "claimed_at",  # of a claim open when recorded: which claim it was
]


class LedgerLost(RuntimeError):
    """The records list submissions the ledger lacks: it was lost, or put back from an older
    copy (or the settings point at another one)."""


@dataclass
class SpendNotTabled:
    """What `spend_not_tabled` found: by day, the tasks no `generated_videos` table holds
    yet and the credits they reserved (the most they cost); the days whose record of
    submissions cannot be read (with why)."""

    days: dict[str, tuple[int, float]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)


def spend_not_tabled(
    tables: TableStore, videos: pd.DataFrame, since: str, until: str
) -> SpendNotTabled:
    """The tasks of the days from `since` to `until` that their records of submissions list
    and their `generated_videos` tables (rows of `videos`) do not hold: the day has no table
    yet (its submission stopped, or its tasks still run), or they were sent after it was
    written. No cost figure holds them yet. Only a record written after its day's table is
    read."""
    tabled = tables.versions("generated_videos")
    held = {}  # the attempts each (day, prompt) the tables hold (none: a row never sent)
    if len(videos):
        days_prompts = zip(videos.scheduled_date, videos.prompt_id, strict=True)
        attempts = videos.attempts.fillna(1).where(videos.task_id.notna(), 0)
        held = dict(zip(days_prompts, attempts, strict=True))
    found = SpendNotTabled()
    for day, (_, written) in sorted(tables.versions(ASSET).items()):
        # Skipped when written well before its day's table (S3 keeps times to the second).
        if not since <= day <= until or (day in tabled and written < tabled[day][1] - 2):
            continue
        try:
            recorded = _recorded(tables, day)
        except RecordUnreadable as exc:
            found.unreadable[day] = str(exc)
            continue
        if recorded is None:  # deleted since listed
            continue
        made = recorded[recorded.task_id.notna()]
        made = made[made.attempt > [held.get((day, p), 0) for p in made.prompt_id]]
        if len(made):
            credits = round(float(made.credits_reserved.fillna(0).sum()), 4)
            found.days[day] = (len(made), credits)
    return found


def write_record(
    ledger: Ledger,
    tables: TableStore,
    partition: str,
    forgotten: Collection[str] = (),
) -> list[LedgerRow]:
    """Record the day's submissions as the ledger has them now, and return its rows: after
    every submission step, and once the day has ended, when claims a crashed run left are
    settled as well. A claim still open (another run's, sending) is recorded `unknown`: its
    create may have made a task, so a ledger rebuilt from this record must not send it again.
    The earlier attempts of resubmitted prompts are recorded too (rows of lower `attempt`), as
    what the vendor reserved for them counts in the day's costs.

    Never backwards: a record listing submissions the ledger lacks, or has only at an earlier
    attempt (the ledger restored from an older copy), is kept as it is, as the only account
    of them; but for `forgotten`, the prompt `resolve --forget` just took out, and for the
    claims released (their creates provably made no task) that another run recorded while
    they were open.

    Raises:
        LedgerLost: the record is ahead of the ledger; how to restore the ledger from it.
        StoreError: other workers kept writing the record meanwhile (or the store failed).
    """
    for _ in range(_WRITE_TRIES):
        version = tables.version(ASSET, partition)
        rows = ledger.rows(partition)
        recorded = _recorded(tables, partition)
        missing = _missing(rows, recorded, ledger.released_claims(partition), forgotten)
        if missing:  # perhaps another worker sent and recorded meanwhile: the ledger now
            rows = ledger.rows(partition)
            missing = _missing(rows, recorded, ledger.released_claims(partition), forgotten)
        if missing:
            raise _lost(
                ledger,
                [partition],
                f"{_not_in_ledger(tables, partition, missing)}. The record is kept as it is",
            )
        latest = {(r.prompt_id, r.attempt) for r in rows}
        earlier = [  # but for one archived since the rows were read (it is among them)
            {**a, "partition": partition}
            for a in ledger.attempts(partition)
            if (a["prompt_id"], a["attempt"]) not in latest
        ]
        frame = pd.DataFrame([*map(_record, rows), *earlier], columns=COLUMNS)
        # Not over a record another worker wrote since this one read the ledger (from a newer
        # ledger, or without a claim `resolve --forget` took out): read both again.
        if tables.write_if(frame, ASSET, partition, version):
            return rows
    raise StoreError(
        f"{_where(tables, partition)}: other workers wrote the day's record of submissions "
        f"{_WRITE_TRIES} times while this one read the ledger to write it (the ledger keeps "
        "every submission)"
    )


# How often `write_record` reads again a record other workers keep writing, before giving up.
_WRITE_TRIES = 5


_OPEN_CLAIM = (
    "its claim was open when the day's record was written, and the ledger was rebuilt from "
    "that record: check the EvoLink dashboard for its task, then `seedance-pipeline resolve`"
)


def _record(r: LedgerRow) -> dict:
    claimed = r.status == Status.SUBMITTING
    return {
        "partition": r.partition,
        "prompt_id": r.prompt_id,
        "attempt": r.attempt,
        "status": Status.UNKNOWN.value if claimed else r.status.value,
        "task_id": r.task_id,
        "request_json": json.dumps(r.request, ensure_ascii=False),
        "request_sha256": r.request_sha256,
        "estimated_credits": r.estimated_credits,
        "credits_reserved": r.credits_reserved,
        "submitted_at": r.submitted_at,
        "error_code": UNKNOWN_CODE if claimed else r.error_code,
        "error_message": _OPEN_CLAIM if claimed else r.error_message,
        "expected_width": r.expected_width,
        "expected_height": r.expected_height,
        "campaign": r.campaign,
        "claimed_at": r.claimed_at if claimed else None,
    }


def _where(tables: TableStore, partition: str) -> str:
    """The day's record, for messages (`location` is the warehouse itself)."""
    return f"{tables.location}/{ASSET}/{partition}.parquet"


class RecordUnreadable(LedgerLost):
    """A day's record is not a table (truncated, overwritten): nothing can be checked
    against it, nor rebuilt from it."""


def _recorded(tables: TableStore, partition: str) -> pd.DataFrame | None:
    try:
        return tables.read(ASSET, partition)
    except FileNotFoundError:
        return None
    except (pa.ArrowException, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # the disk's, not the file's
            raise
        raise RecordUnreadable(
            f"{_where(tables, partition)}: the day's record of submissions cannot be read "
            f"({exc}): restore it from a backup; or, if the ledger has every task of the day, "
            "move the file away, and the day's next run writes it again from the ledger"
        ) from None


def check_ledger(
    ledger: Ledger,
    tables: TableStore,
    partition: str,
    earlier: TableStore | None = None,
    sending: Iterable[str] = (),
) -> None:
    """Refuse to go on when a record lists submissions the ledger lacks: rows of this day it
    does not have or has at an older attempt (a ledger restored from an old copy), any other
    recorded day it knows nothing of (a prompt moved from there would be sent again), or, of
    `sending` (prompts about to be sent that the ledger has on no day), any that another
    day's record lists. `earlier`: a warehouse the records were kept in before (the data
    directory's, before S3 was set), whose days the ledger must know too.

    Raises:
        LedgerLost: naming what is missing and how to restore it.
    """
    # Each record read before the ledger: written from the ledger as it was then, and the
    # ledger only moves on, a record another worker writes meanwhile is never ahead of it.
    recorded = _recorded(tables, partition)
    if missing := _missing(ledger.rows(partition), recorded, ledger.released_claims(partition)):
        raise _lost(
            ledger,
            [partition],
            f"{_not_in_ledger(tables, partition, missing)}. Submitting now would pay for them "
            "again",
        )
    known_days, sending = ledger.partitions_known(), set(sending)
    unknown_days, sent_there = [], {}
    for day in tables.partitions(ASSET):
        if day == partition or (day in known_days and not sending):
            continue
        recorded = _recorded(tables, day)
        if recorded is None or recorded.empty:
            continue
        if day not in known_days:
            unknown_days.append(day)
        elif found := sorted(sending.intersection(recorded.prompt_id)):
            sent_there[day] = found
    if sent_there or unknown_days:  # as the ledger is now, after the records were read
        known_days = ledger.partitions_known()
        unknown_days = [d for d in unknown_days if d not in known_days]
        now_sent = ledger.sent_on_other_days(partition, set().union(*sent_there.values()))
        sent_there = {
            day: kept
            for day, found in sent_there.items()
            if (kept := [p for p in found if p not in now_sent])
        }
    if sent_there:
        days = list(sent_there)
        raise _lost(
            ledger,
            days,
            f"{few(days)}: recorded as sent there, and "
            f"in the ledger on no day: {few(sorted(set().union(*sent_there.values())))}. "
            f"Moved to {partition} since, they would be paid again",
        )
    if unknown_days:
        raise _lost(
            ledger,
            unknown_days,
            f"{len(unknown_days)} day(s) with recorded submissions ({few(unknown_days)}) are "
            "not in the ledger at all; a prompt "
            f"moved from one of them to {partition} would be paid again",
        )
    if earlier is not None:
        left = [
            d
            for d in earlier.partitions(ASSET)
            if d not in known_days and _any_recorded(earlier, d)
        ]
        if left:
            days = " ".join(left)
            raise LedgerLost(
                f"submissions are recorded in {earlier.location}/{ASSET} (the warehouse before "
                f"SEEDANCE_S3_BUCKET was set) for {len(left)} day(s) the ledger "
                f"({safe_url(ledger.db.url)}) does not know: {few(left)}. "
                f"Submitting now would pay for them again: "
                f"copy that warehouse and the videos beside it to the bucket (for example `aws "
                f"s3 sync {earlier.location} {tables.location}`, the same for videos), then "
                f"`seedance-pipeline rebuild-ledger {days}`; or go back to the earlier settings "
                f"(records of a demo or a test there: move that folder away)"
            )


def _missing(
    rows: list[LedgerRow],
    recorded: pd.DataFrame | None,
    released: Collection[tuple[str, int, float]],
    forgotten: Collection[str] = (),
) -> list[str]:
    """The prompts `recorded` lists that `rows` lack, or have at an earlier attempt; but for
    those `forgotten`, and the open claims `released` (prompt, attempt, claimed_at: that
    claim, not another of the prompt at the same attempt; see `write_record`)."""
    if recorded is None:
        return []
    known = {r.prompt_id: (r.attempt, r.task_id) for r in rows}
    return sorted(
        rec.prompt_id
        for rec in recorded.itertuples()
        if rec.prompt_id not in forgotten
        and not _is_released(
            rec.prompt_id,
            rec.attempt,
            rec.error_message,
            getattr(rec, "claimed_at", None),  # not in records written before it was kept
            released,
        )
        and _behind(known.get(rec.prompt_id), int(rec.attempt), rec.task_id)
    )


def _is_released(
    prompt_id: str,
    attempt: int,
    error_message: str | None,
    claimed_at: float | None,
    released: Collection[tuple[str, int, float]],
) -> bool:
    """Whether a recorded row is an open claim since released: that claim, not another of the
    prompt at the same attempt (its `claimed_at`)."""
    return error_message == _OPEN_CLAIM and (prompt_id, int(attempt), claimed_at) in released


def _not_in_ledger(tables: TableStore, partition: str, missing: list[str]) -> str:
    return (
        f"{partition}: {len(missing)} submission(s) recorded in {_where(tables, partition)} "
        f"are not in the ledger, or only at an earlier attempt: {few(missing)}"
    )


def adopt_stored_videos(
    ledger: Ledger, tables: TableStore, videos: VideoStore, partition: str
) -> list[str]:
    """Record in the ledger each video of its own tasks that the day's table lists as stored
    and the store still has at its recorded size, where the ledger has none (a copy of it put
    back, taken before they were stored: their links may be dead); the prompts whose video it
    recorded."""
    table = _table_videos(tables, partition)
    adopted = []
    for r in ledger.rows(partition):
        video = table.get((r.prompt_id, r.task_id))
        if (
            video
            and r.video_uri is None
            and r.status not in (Status.FAILED, Status.CANCELLED)  # no video to come
            and videos.stored_size(video["uri"]) == video["size"]
        ):
            ledger.record_video(partition, r.prompt_id, **video)
            adopted.append(r.prompt_id)
    return adopted


def record_versions(tables: TableStore, since: float) -> dict[str, str]:
    """The version (another one whenever it holds other rows) of each day's record of
    submissions written since the epoch time `since`."""
    # Each recent day's `version` (a digest of its bytes locally): a listing's inode, time and
    # size come back where times are kept to the second, and a rewritten record went unchecked.
    recent = [day for day, (_, written) in tables.versions(ASSET).items() if written >= since]
    found = {day: tables.version(ASSET, day) for day in recent}
    return {day: v for day, v in found.items() if v is not None}  # but one deleted since


@dataclass
class DaysChecked:
    """What `check_days` found: how many records it read, the days whose submissions the
    ledger lacks (with the prompts), and those whose record cannot be read (with why)."""

    read: int = 0
    lacking: dict[str, list[str]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # or not fetched

    def problems(self, ledger: Ledger) -> list[str]:
        """Each thing found wrong, with what to do."""
        said = list(self.unreadable.values())
        if days := list(self.lacking):
            prompts = few(sorted(set().union(*self.lacking.values())))
            lost = _lost(
                ledger,
                days,
                f"{few(days)}: submissions recorded there are not in the ledger, or only at an "
                f"earlier attempt ({prompts}): their tasks are not polled, and their videos "
                "are lost once their links die, a day after they end",
            )
            said.insert(0, str(lost))
        return said


def check_days(ledger: Ledger, tables: TableStore, days: list[str], until: float) -> DaysChecked:
    """Compare the records of `days` with the ledger (the sensor's check), read in turn until
    `time.monotonic()` passes `until`."""
    checked = DaysChecked()
    for day in days:
        if checked.read and time.monotonic() > until:
            break
        checked.read += 1
        try:
            recorded = _recorded(tables, day)  # first: written from the ledger as it was then
            if missing := _missing(ledger.rows(day), recorded, ledger.released_claims(day)):
                checked.lacking[day] = missing
        except Exception as exc:  # unreadable, or not fetched: the others are still checked
            checked.unreadable[day] = str(exc)
    return checked


def _any_recorded(tables: TableStore, day: str) -> bool:
    recorded = _recorded(tables, day)
    return recorded is not None and not recorded.empty


def _behind(known: tuple[int, str | None] | None, attempt: int, task_id: object) -> bool:
    """Whether the ledger's (attempt, task id) of a prompt lags its recorded submission."""
    if known is None:
        return True
    had_task = isinstance(task_id, str) and bool(task_id)
    return known[0] < attempt or (known[0] == attempt and had_task and known[1] != task_id)


def _lost(ledger: Ledger, days: list[str], what: str) -> LedgerLost:
    return LedgerLost(
        f"{what}. The ledger ({safe_url(ledger.db.url)}) was lost or restored from an older "
        "copy, or SEEDANCE_DATA_DIR/SEEDANCE_LEDGER_URL points elsewhere: restore it with "
        f"`seedance-pipeline rebuild-ledger {' '.join(days)}`, then run again"
    )


def rebuild(ledger: Ledger, tables: TableStore, partition: str, videos: VideoStore) -> int:
    """Put the day's recorded submissions back into the ledger; returns how many were missing
    (or there only at an earlier attempt, or without their stored video).

    Rows with a task that did not fail are polled again, so their state (and a fresh result
    link) comes from the vendor, unless the day's videos table lists the task's video as
    stored and it is still in the store: its record comes back from the table, since after
    24 hours its link is dead and a download would end the row `expired`.
    """
    recorded = _recorded(tables, partition)
    if recorded is None:
        raise FileNotFoundError(
            f"{_where(tables, partition)}: no submissions recorded for {partition}"
        )
    released = ledger.released_claims(partition)
    records = [
        rec
        for rec in map(_known, recorded.to_dict("records"))
        if not _is_released(
            rec["prompt_id"], rec["attempt"], rec["error_message"], rec.get("claimed_at"), released
        )
    ]
    latest: dict[str, int] = {}
    for rec in records:
        latest[rec["prompt_id"]] = max(latest.get(rec["prompt_id"], 0), int(rec["attempt"]))
    restored = set()
    for rec in records:
        if int(rec["attempt"]) < latest[rec["prompt_id"]]:  # a failed attempt, resubmitted
            if ledger.keep_recorded_attempt(rec):
                restored.add(rec["prompt_id"])
            continue
        status = Status(rec["status"])
        if rec["task_id"] and status not in (Status.FAILED, Status.CANCELLED):
            status = Status.PENDING
        if ledger.restore({**rec, "status": status.value}):
            restored.add(rec["prompt_id"])
    # Each stored video keeps its record, as its link may be dead.
    return len(restored.union(adopt_stored_videos(ledger, tables, videos, partition)))


def _table_videos(tables: TableStore, partition: str) -> dict:
    """`record_video`'s arguments for each (prompt, task) whose video the day's table lists
    as stored, under its key in the store (the table's `video_uri` may name a data directory
    since moved)."""
    try:
        table = tables.read("generated_videos", partition)
    except FileNotFoundError:
        return {}
    found = {}
    for row in table[table.status == Status.COMPLETED.value].to_dict("records"):
        known = _known(row)
        key = video_key(partition, known["prompt_id"])
        if known["video_sha256"] is None or known["video_bytes"] is None:
            continue
        found[(known["prompt_id"], known["task_id"])] = {
            "uri": key,
            "sha256": known["video_sha256"],
            "size": int(known["video_bytes"]),
            "measured": {
                "width": known["width"] and int(known["width"]),
                "height": known["height"] and int(known["height"]),
                "duration_s": known["duration_s"] and float(known["duration_s"]),
                "has_audio": None if known["has_audio"] is None else bool(known["has_audio"]),
            },
            "completed_at": known["completed_at"] and known["completed_at"].timestamp(),
        }
    return found


def _known(record: dict) -> dict:
    """A table row's values with NaN and NaT as None (NaN is truthy)."""
    return {k: (None if pd.isna(v) else v) for k, v in record.items()}
