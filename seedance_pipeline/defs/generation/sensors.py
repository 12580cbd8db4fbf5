"""The sensor that polls outstanding tasks and asks for a day's videos once its tasks ended."""

import bisect
import hashlib
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from dagster import (
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)
from sqlalchemy import Row

from ...catalog import CatalogError, file_digest
from ...ledger import RETRY_AHEAD_LIMIT, Ledger, LedgerRow
from ...polling import PollingRefused, poll_round
from ...records import check_days, record_versions
from ...statuses import WAITING, Status
from ..catalog.assets import prompt_catalog
from ..costs.assets import generation_costs
from ..partitions import FIRST_DAY, daily_partitions
from ..resources import EvoLinkResource, PipelineResource
from .assets import generated_videos, generation_requests, submitted_tasks
from .storing import store_videos_of_stopped_day

# Runs of the same ledger state that failed are requested again up to this many times.
MAX_VIDEO_RUNS = 5
STATE_TAG = "seedance/ledger_state"
# The tag of `seedance-pipeline run`'s runs that submit the day.
SUBMITS_TAG = "seedance/submits"
PARTITION_TAG = "dagster/partition"  # the tag Dagster gives every run of a partition
_ENDED = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
_UNFINISHED = [s for s in DagsterRunStatus if s not in (DagsterRunStatus.SUCCESS, *_ENDED)]
# Settled days are read again on every tick: any of them can still change (a `resolve`, a late
# callback, a videos run by hand). The newest days are read each tick; older ones in turn, for
# as long as HISTORY_SECONDS allows (at least one a tick), so years of history cannot push a
# tick past Dagster's timeout after its poll round.
NEWEST_DAYS = 7
HISTORY_SECONDS = 5.0


def ledger_state(rows: list[Row]) -> str:
    """A digest of what the day's rows (`Ledger.state_rows`) are: a new state asks for a new
    run."""
    state = sorted(
        (prompt_id, attempt, task_id or "", status)
        for prompt_id, attempt, task_id, status, *_ in rows
    )
    state += sorted(
        (prompt_id, download_attempts)
        for prompt_id, _, _, status, download_attempts, *_ in rows
        if status == Status.DOWNLOAD_FAILED
    )
    return _digest(state)


def _digest(state: list[tuple]) -> str:
    """A short digest of `state`, for run keys and tags."""
    return hashlib.sha256(repr(state).encode()).hexdigest()[:16]


def run_key(kind: str, partition: str, state: str, tries: int = 0) -> str:
    """`videos:`, `submit:`, `resubmit:` or `store:` + day + ledger state (+ how many runs of it
    failed; a store run's state is its rows to store)."""
    return f"{kind}:{partition}:{state}" + (f":retry{tries}" if tries else "")


def state_tag(partition: str, state: str, kind: str = "videos") -> str:
    """The tag a day's runs carry: what they were asked for, for which ledger state of which
    day (videos runs: day and state alone, as before the other kinds were tagged)."""
    return f"{partition}:{state}" if kind == "videos" else f"{kind}:{partition}:{state}"


def _catalogs_version(pipeline: PipelineResource) -> str:
    """A digest of the prompt and media catalog files (or of their absence)."""
    digest = hashlib.sha256()
    for find in (pipeline.prompts_file, pipeline.media_file):
        try:
            digest.update(file_digest(find()).encode())
        except (CatalogError, OSError) as exc:  # the run asked for says what to fix
            digest.update(str(exc).encode())
    return digest.hexdigest()[:8]


def _days_to_read(settled: list[str], cursor: str | None) -> tuple[list[str], list[str]]:
    """The newest settled days, and the older ones in turn: from the first after `cursor` (the
    older day the last tick read last) onwards, then from the oldest."""
    newest, older = settled[-NEWEST_DAYS:], settled[:-NEWEST_DAYS]
    start = bisect.bisect_right(older, cursor) if cursor else 0
    return newest, older[start:] + older[:start]


def _read_settled_days(
    context: SensorEvaluationContext, ledger: Ledger, max_attempts: int, cursor: str | None
) -> tuple[dict[str, tuple[list[Row], str]], str | None]:
    """The settled days this tick reads (the newest, then older ones in turn while time is
    left), each with its rows and their digest; and the older day read last (`cursor`, the
    last tick's). A day whose failed download is not due for another try yet is left out."""
    now = time.time()
    newest, older = _days_to_read(ledger.partitions_settled(max_attempts), cursor)
    until = time.monotonic() + HISTORY_SECONDS
    settled = {}
    for i, partition in enumerate(newest + older):
        if i > len(newest) and time.monotonic() > until:
            context.log.info(
                f"read the {len(newest)} newest and {i - len(newest)} of {len(older)} older "
                "settled days; the others in the next ticks"
            )
            break
        if i >= len(newest):
            cursor = partition
        rows = ledger.state_rows(partition)
        if any(r.status == Status.DOWNLOAD_FAILED and _retry_ahead(r, now) for r in rows):
            continue
        settled[partition] = rows, ledger_state(rows)
    return settled, cursor


def _retry_ahead(row: Row, now: float) -> bool:
    """A failed download planned for later; not one planned beyond `RETRY_AHEAD_LIMIT` (a
    clock that stepped back since), which is due now as the ledger sees it."""
    return now < (row.next_poll_at or 0) <= now + RETRY_AHEAD_LIMIT


def _runs_by_state(context: SensorEvaluationContext, tags: list[str]) -> dict[str, list]:
    """The videos runs asked for with each of these state tags, in one query for all days."""
    found: dict[str, list] = {tag: [] for tag in tags}
    if tags:
        for run in context.instance.get_runs(filters=RunsFilter(tags={STATE_TAG: tags})):
            found[run.tags[STATE_TAG]].append(run)
    return found


# What each kind of run the sensor asks for materialises. A day is sent on as its catalog
# says now, not as it was planned before: a prompt deleted or edited since is not paid for.
_SEND = [prompt_catalog.key, generation_requests.key, submitted_tasks.key]
_ASSETS = {
    "videos": [generated_videos.key, generation_costs.key],
    "submit": _SEND,  # a day whose last submission could not send everything
    "resubmit": _SEND,  # a day with failed tasks due for another attempt
}


def _submission_held(context: SensorEvaluationContext, partition: str) -> bool:
    """Whether a run submitting the day is under way (whoever started it), or the last one was
    terminated: its user stopped the spending, and only they start it again."""
    runs = _runs_that_send(context, partition)
    last = next(runs, None)
    if last is None:
        return False
    return (
        last.status == DagsterRunStatus.CANCELED
        or not last.is_finished
        or any(not r.is_finished for r in itertools.islice(runs, 49))
    )


def _runs_that_send(context: SensorEvaluationContext, partition: str) -> Iterator[DagsterRun]:
    """The day's runs that may submit, newest first: all but store runs, however many of
    those a day had since its last submission (each failed download makes one), and runs of
    assets other than submitted_tasks. A run of `materialize()` names no asset selection (its
    job is made of the assets it runs): `seedance-pipeline run`'s submitting ones are tagged."""
    cursor = None
    while True:
        page = context.instance.get_runs(
            filters=RunsFilter(tags={PARTITION_TAG: partition}), cursor=cursor, limit=50
        )
        yield from (
            r
            for r in page
            if (
                r.asset_selection is None
                or submitted_tasks.key in r.asset_selection
                or SUBMITS_TAG in r.tags
            )
            and r.job_name != store_videos_of_stopped_day.name
        )
        if len(page) < 50:
            return
        cursor = page[-1].run_id


def _request(
    context: SensorEvaluationContext, kind: str, partition: str, state: str, runs: list
) -> RunRequest | None:
    """A run of `kind` for the day unless one for this ledger state ran, runs, or failed
    MAX_VIDEO_RUNS times (each failed run's key differs, so the next one is not skipped); a
    submission also waits while `_submission_held`."""
    if kind != "videos" and _submission_held(context, partition):
        return None
    failed = sum(r.status in _ENDED for r in runs)
    if len(runs) > failed:
        return None  # queued, running, or done for this state
    if failed >= MAX_VIDEO_RUNS:
        assets = ", ".join(k.to_user_string() for k in _ASSETS[kind])
        context.log.error(
            f"{partition}: {assets} failed {failed} times for the same tasks; "
            "see those runs, fix the cause, then materialise the day by hand"
        )
        return None
    return RunRequest(
        run_key=run_key(kind, partition, state, failed),
        partition_key=partition,
        asset_selection=_ASSETS[kind],
        tags={STATE_TAG: state_tag(partition, state, kind)},
    )


@sensor(
    asset_selection=[
        prompt_catalog,
        generation_requests,
        submitted_tasks,
        generated_videos,
        generation_costs,
    ],
    minimum_interval_seconds=15,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every 15 s polls the EvoLink tasks that are due; when all of a day's tasks have "
    "ended, asks once for that day's generated_videos and generation_costs.",
)
def task_poller(
    context: SensorEvaluationContext, pipeline: PipelineResource, evolink: EvoLinkResource
) -> SensorResult:
    """Polls due EvoLink tasks; materialises `generated_videos` once a day's tasks all ended,
    and again after a failed run or a failed download, until every video is stored or lost."""
    ledger = pipeline.ledger()
    try:
        summary = poll_round(
            ledger, evolink.poll_client, max_requests_per_second=evolink.max_requests_per_second
        )
        context.log.info(
            f"polled {summary.polled} task(s), {summary.finished} finished, "
            f"{summary.errors} poll error(s)"
            + (f"; the first: {summary.first_error}" if summary.first_error else "")
        )
    except PollingRefused as exc:
        context.log.error(str(exc))
    if abandoned := ledger.resolve_abandoned_claims():  # a crashed run's; its day can settle
        context.log.warning(f"{abandoned} claim(s) of runs that are gone are now unknown")
    sending = [
        (kind, partition)
        for kind, days in (
            ("submit", ledger.partitions_incomplete()),
            ("resubmit", ledger.partitions_to_resubmit(pipeline.max_attempts)),
        )
        for partition in days
    ]
    # These runs plan the day first: one that failed on a catalog being edited is asked for
    # again once the catalog changes, not given up after MAX_VIDEO_RUNS with the day unsent.
    catalogs = _catalogs_version(pipeline) if sending else ""
    wanted = [
        (kind, partition, f"{ledger_state(ledger.state_rows(partition))}.{catalogs}")
        for kind, partition in sending
    ]
    cursor = _Cursor.read(context.cursor)
    checked = _check_records(context, ledger, pipeline, cursor.checked)
    settled, read_last = _read_settled_days(
        context, ledger, pipeline.max_attempts, cursor.read_last
    )
    wanted += [("videos", partition, state) for partition, (_, state) in settled.items()]
    if outside := _outside_partitions(context, {p for _, p, _ in wanted}):
        wanted = [w for w in wanted if w[1] not in outside]
    runs = _runs_by_state(context, [state_tag(p, state, kind) for kind, p, state in wanted])
    requests = []
    for kind, partition, state in wanted:
        request = _request(context, kind, partition, state, runs[state_tag(partition, state, kind)])
        if request is None:
            continue
        requests.append(request)
        for r in settled[partition][0] if kind == "videos" else ():
            if r.status == Status.UNKNOWN:
                context.log.warning(
                    f"{partition}/{r.prompt_id} is unknown (may have cost "
                    f"{r.estimated_credits} credits): check the EvoLink dashboard, then "
                    f"`seedance-pipeline resolve {partition} {r.prompt_id} "
                    "(--task-id ID | --forget)`"
                )
    context.log.info(f"{len(requests)} run(s) requested")
    return SensorResult(run_requests=requests, cursor=_Cursor(read_last, checked).text())


@dataclass(frozen=True)
class _Cursor:
    """task_poller's: the older settled day it read last; and for each day whose record was
    found to agree with the ledger, that record's version and the digest of the ledger's
    submissions of the day then."""

    read_last: str | None = None
    checked: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def read(cls, text: str | None) -> "_Cursor":
        if not text or not text.startswith("{"):  # a day alone: a cursor from before `checked`
            return cls(text or None)
        kept = json.loads(text)
        checked = kept.get("checked", {}).items()  # of earlier forms: none
        return cls(kept.get("read_last"), {d: tuple(c) for d, c in checked if len(c) == 2})

    def text(self) -> str:
        return json.dumps(asdict(self))


# A record written longer ago than this is not checked by the sensor: its videos' links have
# died (a day after their tasks ended), and the day's next run checks it.
RECORDS_CHECKED_SECONDS = 2 * 86400


def _check_records(
    context: SensorEvaluationContext,
    ledger: Ledger,
    pipeline: PipelineResource,
    checked: dict[str, tuple[str, str]],
) -> dict[str, tuple[str, str]]:
    """Compare with the ledger each recent day's record that changed since it was last found
    to agree, or whose submissions in the ledger changed since (sent, or a copy put back, or
    another ledger configured), the newest first, as long as a tick allows; what the cursor
    keeps of them. The days whose submissions the ledger lacks are logged as an error naming
    the fix, each tick until they are restored: nothing else would notice, as their tasks are
    not polled, no run is asked for, and their videos are lost once the links die (helper-62,
    -65, -66, -67)."""
    tables = pipeline.tables()
    try:
        versions = record_versions(tables, since=time.time() - RECORDS_CHECKED_SECONDS)
        digests = ledger.submissions_digest(list(versions))
    except Exception as exc:  # the warehouse or the ledger not answering: next tick
        context.log.error(f"the records of submissions could not be checked: {exc}")
        return checked

    def now(day: str) -> tuple[str, str]:
        return versions[day], digests.get(day, "")

    kept = {day: now(day) for day in versions if checked.get(day) == now(day)}
    due = sorted((d for d in versions if d not in kept), reverse=True)
    found = check_days(ledger, tables, due, time.monotonic() + HISTORY_SECONDS)
    for problem in found.problems(ledger):
        context.log.error(f"checking the records of submissions against the ledger: {problem}")
    if found.read < len(due):
        context.log.info(f"checked {found.read} of {len(due)} days' records; the rest next tick")
    wanting = {*found.lacking, *found.unreadable}
    return kept | {day: now(day) for day in due[: found.read] if day not in wanting}


def _outside_partitions(context: SensorEvaluationContext, days: set[str]) -> set[str]:
    """The days no run can be asked for, as they are not partitions: logged with the fix."""
    if outside := sorted(d for d in days if not daily_partitions.has_partition_key(d)):
        fix = (
            f"SEEDANCE_PARTITIONS_START is {FIRST_DAY}: set it to {outside[0]} or before"
            if outside[0] < FIRST_DAY
            else "they are after today (UTC): check this machine's clock"
        )
        context.log.error(
            f"the ledger has days outside the partitions, whose runs cannot be asked for: "
            f"{', '.join(outside[:5])}; {fix}"
        )
    return set(outside)


# A day's videos wait for its tasks to end, for the runs that would store them and for the
# runs task_poller asks for, at most this long (their links die a day after their completion):
# then they are stored whatever holds the day up (a crashed run that still shows as running).
STORE_AFTER_SECONDS = 3600.0


@sensor(
    job_name=store_videos_of_stopped_day.name,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Asks for store_videos_of_stopped_day for a day whose completed tasks' videos "
    "nothing else stores: its submission stopped (terminated, cut short, crashed), or its "
    "videos runs gave up. Their videos are paid for and their links die a day after. Sends "
    "nothing.",
)
def stopped_day_videos(context: SensorEvaluationContext, pipeline: PipelineResource):
    """A store run for each day with videos to store that task_poller's videos runs do not
    store (the day has not settled, or they failed MAX_VIDEO_RUNS times), once nothing else may
    store them soon: its tasks have ended, no run of the day is under way, and task_poller does
    not send it on; or once a video has waited STORE_AFTER_SECONDS."""
    ledger = pipeline.ledger()
    now = time.time()
    unstored = ledger.partitions_unstored(now)
    if not unstored:
        return SensorResult(run_requests=[])
    settled = set(ledger.partitions_settled(pipeline.max_attempts))
    incomplete = set(ledger.partitions_incomplete())
    requests = []
    for partition, since in unstored.items():
        if partition in settled and not _videos_runs_gave_up(context, ledger, partition):
            continue
        if now - since < STORE_AFTER_SECONDS:
            counts = ledger.day_state(partition, now).counts
            if (
                any(counts.get(s) for s in (*WAITING, Status.SUBMITTING))
                or _day_run_under_way(context, partition)
                or (partition in incomplete and not _submission_held(context, partition))
            ):
                continue
        if partition in _outside_partitions(context, {partition}):
            continue
        if request := _store_request(context, partition, ledger.rows_to_store(partition, now)):
            requests.append(request)
    return SensorResult(run_requests=requests)


def _videos_runs_gave_up(context: SensorEvaluationContext, ledger: Ledger, partition: str) -> bool:
    """Whether task_poller's videos runs of the settled day failed MAX_VIDEO_RUNS times for its
    rows as they are (one failing before storing anything: a table missing)."""
    tag = state_tag(partition, ledger_state(ledger.state_rows(partition)))
    runs = _runs_by_state(context, [tag])[tag]
    return sum(r.status in _ENDED for r in runs) >= MAX_VIDEO_RUNS


def _store_request(
    context: SensorEvaluationContext, partition: str, rows: list[LedgerRow]
) -> RunRequest | None:
    """A store run for the day's `rows` to store, unless a store run of the day is under way
    (for less than STORE_AFTER_SECONDS: a killed run shows as running for ever), one stored
    these rows as they are, or MAX_VIDEO_RUNS failed to."""
    state = _digest(sorted((r.prompt_id, r.download_attempts) for r in rows))
    tag = state_tag(partition, state, "store")
    records = context.instance.get_run_records(
        RunsFilter(job_name=store_videos_of_stopped_day.name, tags={PARTITION_TAG: partition}),
        limit=100,
    )
    started_since = time.time() - STORE_AFTER_SECONDS
    if any(
        not r.dagster_run.is_finished and r.create_timestamp.timestamp() > started_since
        for r in records
    ):
        return None
    tries = [r.dagster_run for r in records if r.dagster_run.tags.get(STATE_TAG) == tag]
    if any(r.status == DagsterRunStatus.SUCCESS for r in tries):
        return None
    if len(tries) >= MAX_VIDEO_RUNS:
        context.log.error(
            f"{partition}: {store_videos_of_stopped_day.name} failed {len(tries)} times for the "
            "same videos; see those runs, fix the cause, then launch that job for the day by "
            "hand (materialising the day would send the rest of it)"
        )
        return None
    return RunRequest(
        run_key=run_key("store", partition, state, len(tries)),
        partition_key=partition,
        tags={STATE_TAG: tag},
    )


def _day_run_under_way(context: SensorEvaluationContext, partition: str) -> bool:
    """Whether any run of the day is queued or running: it may be storing the videos too."""
    return bool(
        context.instance.get_runs(
            filters=RunsFilter(tags={PARTITION_TAG: partition}, statuses=_UNFINISHED), limit=1
        )
    )
