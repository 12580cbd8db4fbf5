"""Requests, exactly-once submission, and stored videos for each day."""

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    Backoff,
    DagsterExecutionInterruptedError,
    Failure,
    Jitter,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    RetryRequested,
    asset,
)

from ...callbacks import callback_base
from ...catalog import CatalogError, load_media, load_prompts
from ...costs import credits_total, totals
from ...follow import FOLLOWED_TAG, follower_failed, following
from ...ledger import Ledger, LedgerRow
from ...planning import (
    media_fingerprint,
    media_states,
    over_budget_message,
    plan_partition,
    publish,
    request_fingerprint,
    requests_frame,
)
from ...publishing import PublishError
from ...records import (
    LedgerLost,
    adopt_stored_videos,
    check_ledger,
    edited_not_resent,
    few,
    write_record,
)
from ...seedance import PriceTable
from ...statuses import COUNTED, UNDELIVERED, WAITING, RequestStatus, Status
from ...storage import StoreError, StoreRefused, VideoStore
from ...submission import (
    Planned,
    SubmissionStopped,
    hold_stopped_day,
    send_the_rest,
    submit_all,
    through_interrupts,
)
from ...videos import (
    PartitionNotFinished,
    StoredVideos,
    build_videos_table,
    mismatch_text,
    mismatched,
    store_videos,
)
from ..catalog.assets import media_catalog, prompt_catalog
from ..metadata import frame_version, table, written
from ..partitions import daily_partitions
from ..resources import EvoLinkResource, PipelineResource

API_POOL = "evolink_api"
# Steps storing videos retry what failed with nothing recorded (the ledger down a while).
STORING_RETRIES = RetryPolicy(
    max_retries=3, delay=30, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)
log = logging.getLogger(__name__)


@asset(
    partitions_def=daily_partitions,
    deps=[prompt_catalog, media_catalog],
    group_name="generation",
    kinds={"parquet"},
)
def generation_requests(
    context: AssetExecutionContext, pipeline: PipelineResource, evolink: EvoLinkResource
) -> MaterializeResult:
    """Each prompt of the day as the exact request body and its estimate, or its rejection."""
    partition = context.partition_key
    try:
        prompts = load_prompts(pipeline.prompts_file())
        media = load_media(pipeline.media_file(), pipeline.root)
        # Before planning reads the files: one changed meanwhile shows as changed when sent.
        states = media_states(media)
        rows = plan_partition(prompts, media, partition, pipeline.media_facts(), PriceTable.load())
    except CatalogError as exc:
        raise Failure(str(exc), allow_retries=False) from None
    with evolink.client() as client:
        try:
            publish(rows, pipeline.publisher(client).publish)
        except PublishError as exc:
            raise Failure(str(exc)) from None
    frame = requests_frame(rows)
    frame["media_sha256"] = [media_fingerprint(r.prompt, states) for r in rows]
    # A prompt already submitted shows the body that was sent, not one re-planned since.
    sent = {r.prompt_id: r.request for r in pipeline.ledger().rows(partition)}
    frame["request_json"] = [
        json.dumps(sent[p], ensure_ascii=False) if body is not None and p in sent else body
        for p, body in zip(frame.prompt_id, frame.request_json, strict=True)
    ]
    path = pipeline.tables().write(frame, "generation_requests", partition)
    accepted = frame[frame.status == RequestStatus.ACCEPTED]
    rejected = frame[frame.status == RequestStatus.REJECTED].assign(
        errors=lambda f: f.errors.map("; ".join)
    )
    return MaterializeResult(
        data_version=frame_version(frame),
        metadata={
            **written(path, frame),
            "accepted": len(accepted),
            "rejected": len(rejected),
            "estimated_credits": credits_total(accepted.estimated_credits),
            "preview": table(
                frame, ["prompt_id", "model", "quality", "duration", "status", "estimated_credits"]
            ),
            "rejections": table(rejected, ["prompt_id", "errors"]),
        },
    )


@asset(
    partitions_def=daily_partitions,
    deps=[generation_requests],
    group_name="generation",
    pool=API_POOL,
    kinds={"sqlite"},
)
def submitted_tasks(
    context: AssetExecutionContext, pipeline: PipelineResource, evolink: EvoLinkResource
) -> MaterializeResult:
    """Accepted requests submitted to EvoLink exactly once, recorded in the task ledger."""
    try:
        return _submit_day(context, pipeline, evolink)
    except _INTERRUPTS:  # Terminate, or Ctrl-C
        raise _interrupted(context, pipeline) from None
    except Exception as exc:
        if _while_interrupted(exc):  # an error cleaning up after an interrupt: not retried
            raise _interrupted(context, pipeline) from exc
        if isinstance(exc, LedgerLost):  # writing the day's record (checked at the start)
            raise Failure(str(exc), allow_retries=False) from exc
        if isinstance(exc, Failure) and not exc.allow_retries:
            raise
        if context.retry_number < SUBMIT_RETRIES.max_retries:
            _hold_until_retried(pipeline, context.partition_key)
        else:  # no retry left: the sensor sends on, or resubmits, as it would have before
            _note_day(pipeline, context.partition_key)
        raise RetryRequested(
            max_retries=SUBMIT_RETRIES.max_retries,
            seconds_to_wait=SUBMIT_RETRIES.calculate_delay(context.retry_number + 1),
        ) from exc


_INTERRUPTS = (KeyboardInterrupt, DagsterExecutionInterruptedError)


def _while_interrupted(exc: BaseException) -> bool:
    """Whether `exc` was raised while an interrupt was being handled (a `finally` failing)."""
    seen: BaseException | None = exc.__context__
    while seen is not None:
        if isinstance(seen, _INTERRUPTS):
            return True
        seen = seen.__context__
    return False


# submitted_tasks retries what failed with prompts unsent (429s past their retries, the ledger
# down a while) by raising RetryRequested itself, not through a retry policy: with one, Dagster
# also makes a retry of an interrupt (Terminate, Ctrl-C) landing outside the step's own handler
# (or a second one inside it), and the retry sends the rest of the day its user stopped.
SUBMIT_RETRIES = RetryPolicy(
    max_retries=3, delay=10, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS
)


def _hold_until_retried(pipeline: PipelineResource, partition: str) -> None:
    """Leave the day to this step's retry, not to the sensor: an interrupt while Dagster waits
    to retry is raised before the step's handler, and the sensor sent on the day (noted
    incomplete) its user had stopped (helper-62). The retry notes the day again as it ends."""
    with suppress(Exception):  # a ledger down: the sensor cannot read the day's note either
        pipeline.ledger().set_submission_complete(partition, None)


def _note_day(pipeline: PipelineResource, partition: str) -> None:
    """Note whether every accepted prompt of the day is sent, as the step does as it ends: a
    retry held the day, and the last one failed before noting it (helper-64)."""
    with suppress(Exception):  # a ledger down: as for the hold
        ledger = pipeline.ledger()
        complete = not _unsent(pipeline, ledger, partition, ledger.rows(partition))
        ledger.set_submission_complete(partition, complete)


def _unsent(
    pipeline: PipelineResource, ledger: Ledger, partition: str, rows: list[LedgerRow]
) -> set[str]:
    """The day's accepted prompts with no row, and sent on no other day."""
    requests = _requests(pipeline, partition)
    unsent = set(requests.prompt_id[requests.status == RequestStatus.ACCEPTED])
    unsent -= {r.prompt_id for r in rows}
    return unsent - ledger.sent_on_other_days(partition, unsent).keys()


def _interrupted(context: AssetExecutionContext, pipeline: PipelineResource) -> Failure:
    """The step's failure when its run was interrupted, wherever the step was: the day is left
    to its user, as the sensor leaves a stopped day (another run stores its videos; `run`
    stores them itself). Done again through further interrupts: a second Ctrl-C before the day
    was held left it to the sensor (helper-62)."""
    return through_interrupts(lambda: _stopped(context, pipeline), _INTERRUPTS)


def _stopped(context: AssetExecutionContext, pipeline: PipelineResource) -> Failure:
    partition = context.partition_key
    ledger = pipeline.ledger()
    rows = ledger.rows(partition)
    unstored = (
        0
        if context.run.tags.get(FOLLOWED_TAG)
        else sum(r.status in (Status.COMPLETED, *WAITING) and r.video_uri is None for r in rows)
    )
    paid = (
        f"; its {unstored} task(s) sent and not failed are paid for: the "
        "stopped_day_videos sensor stores their videos once they end (unless it is "
        "stopped: then run the day again or materialise its generated_videos within 24 h "
        "of their completion)"
        if unstored
        else ""
    )
    unsent = _unsent(pipeline, ledger, partition, rows)
    rest = send_the_rest(partition) if unsent else "every prompt of the day was sent"
    rest += hold_stopped_day(ledger, partition, pipeline.max_attempts, bool(unsent))
    return Failure(
        f"{partition}: submission stopped when the run was interrupted; what was sent is "
        f"in the ledger{paid}; {rest}",
        allow_retries=False,
    )


def _submit_day(
    context: AssetExecutionContext, pipeline: PipelineResource, evolink: EvoLinkResource
) -> MaterializeResult:
    partition = context.partition_key
    requests = _requests(pipeline, partition)
    accepted = requests[requests.status == RequestStatus.ACCEPTED]
    ledger = pipeline.ledger()
    in_ledger = ledger.rows(partition)  # before this step sends anything
    budget = pipeline.max_credits_per_partition
    if budget is not None:
        held, ids = _held(in_ledger), set(accepted.prompt_id)
        spent = sum(credits for p, credits in held.items() if p not in ids)
        paid_elsewhere = ledger.sent_on_other_days(partition, accepted.prompt_id)
        to_send = accepted[~accepted.prompt_id.isin(paid_elsewhere)]
        # A prompt already sent counts at what its task holds, not at today's estimate (the
        # price table may have changed since).
        sent = to_send.prompt_id.map(held)
        to_send = to_send.assign(estimated_credits=sent.fillna(to_send.estimated_credits))
        if message := over_budget_message(to_send, budget, spent):
            raise Failure(f"{partition}: not submitted: {message}", allow_retries=False)
    try:
        callbacks = callback_base(evolink.base_url)
    except ValueError as exc:
        raise Failure(str(exc), allow_retries=False) from None
    fresh = set(accepted.prompt_id) - {r.prompt_id for r in in_ledger}  # to send, if new
    again = {r.prompt_id for r in ledger.resubmittable(partition, pipeline.max_attempts)}
    _check_planned_as_catalog_is(pipeline, partition, requests, fresh | again)
    _check_ledger(
        ledger, pipeline, partition, fresh - ledger.sent_on_other_days(partition, fresh).keys()
    )
    items = [
        Planned(
            r.prompt_id,
            json.loads(r.request_json),
            None if pd.isna(r.estimated_credits) else r.estimated_credits,  # no known price
            r.request_sha256,
            None if pd.isna(r.expected_width) else (int(r.expected_width), int(r.expected_height)),
            None if pd.isna(r.campaign) else r.campaign,
        )
        for r in accepted.itertuples()
    ]
    if set(accepted.prompt_id) - {r.prompt_id for r in in_ledger}:
        # Not known until this step ends: a day sent before, with prompts added since, looked
        # settled to the sensor if this step was stopped (its videos runs failed on the prompts
        # never sent); nor incomplete, which the sensor would send on after a user stopped it.
        ledger.set_submission_complete(partition, None)
    refused, ended = None, False  # ended: no exception on its way up (the user's to read)
    stop = follower_failed(partition)  # set if the follower storing the day's videos fails
    try:
        # The sensor polls; tasks it finds completed meanwhile have their videos stored now
        # (unless `seedance-pipeline run` follows the day itself).
        storing = (
            nullcontext(stop)
            if context.run.tags.get(FOLLOWED_TAG)
            else following(partition, ledger, evolink, pipeline.videos(), polls=False)
        )
        with evolink.client() as client, storing as stop:
            summary = submit_all(
                ledger, client, partition, items, pipeline.max_attempts, callbacks, stop
            )
        ended = True
    except SubmissionStopped as exc:
        raise Failure(str(exc), allow_retries=False) from None
    except StoreRefused as exc:  # storing the videos meanwhile; sending stopped at it
        refused = exc
    finally:
        try:
            rows = write_record(ledger, pipeline.tables(), partition)
        except (StoreError, OSError) as exc:  # OSError: the local warehouse
            if ended:
                raise
            # Not in place of why sending stopped (a wrong key, no credits, a store refusing
            # every video: not to retry, and the day held).
            context.log.warning(f"{partition}: the day's record of submissions: {exc}")
            if refused is not None:  # no exception on its way up: the refusal's, below
                rows = ledger.rows(partition)
    # Complete once every accepted prompt has a row (a resubmission not sent keeps its last
    # attempt's row, and the sensor asks for it again as for any failed task due again).
    unsent = set(accepted.prompt_id) - {r.prompt_id for r in rows}
    unsent -= summary.sent_on_other_days.keys()  # another day's: never to be sent here
    complete = not unsent
    # Cut short as no video could be stored: the sensor must not send on until that is fixed.
    ledger.set_submission_complete(partition, None if stop.is_set() and not complete else complete)
    by_prompt = {r.prompt_id: r for r in rows}
    if edited := sorted(
        p
        for p, sha in zip(accepted.prompt_id, accepted.request_sha256, strict=True)
        if p in by_prompt and by_prompt[p].edited_since_sent(sha)
    ):
        context.log.warning(edited_not_resent(edited))
    for prompt_id, day in summary.sent_on_other_days.items():
        context.log.warning(
            f"{prompt_id} was already sent on {day}: not sent again for {partition} (its "
            f"video and charge are in {day}'s tables); give it a new prompt_id to generate again"
        )
    if refused is not None:
        then = (
            f"{len(unsent)} prompt(s) were not sent, as their videos could not be stored: "
            f"fix the settings, then {send_the_rest(partition)}"
            if unsent
            else f"fix the settings, then materialise generated_videos for {partition}"
        )
        raise Failure(f"{refused}; what was sent is recorded; {then}", allow_retries=False)
    if summary.not_sent:
        raise Failure(
            f"{len(summary.not_sent)} prompt(s) could not be sent after retries "
            f"({few(summary.not_sent)}); the step is retried, then the task_poller "
            f"sensor asks for submitted_tasks of the day again (or {send_the_rest(partition)})"
        )
    if lost := summary.claims_lost:
        raise Failure(
            f"{len(lost)} prompt(s) were not sent, as this run was paused past their claims' "
            f"lease ({few(lost)}): each is `unknown` or another run's now, and no request of "
            "this run made a task for it; settle an `unknown` one with `seedance-pipeline "
            "resolve`",
            allow_retries=False,
        )
    # What was sent, not how it is going: a run that sends nothing leaves the day's videos fresh.
    sent = pd.DataFrame(
        sorted((r.prompt_id, r.attempt, r.task_id) for r in rows),
        columns=["prompt_id", "attempt", "task_id"],
    )
    return MaterializeResult(
        data_version=frame_version(sent),
        metadata={
            "submitted": summary.submitted,
            "resubmitted": summary.resubmitted,
            "already_submitted": summary.already_in_ledger,
            "edited_after_sending": len(edited),
            "sent_on_other_days": len(summary.sent_on_other_days),
            "refused_by_api": summary.refused,
            "outcome_unknown": summary.unknown,
            "credits_reserved": round(summary.credits_reserved, 4),
        },
    )


@contextmanager
def _failing_if_ledger_lost() -> Iterator[None]:
    """A ledger behind the records fails the step, not retried: a retry would find it so."""
    try:
        yield
    except LedgerLost as exc:
        raise Failure(str(exc), allow_retries=False) from None


def _check_ledger(
    ledger: Ledger, pipeline: PipelineResource, partition: str, sending: set[str] = frozenset()
) -> None:
    """`check_ledger`, in a step."""
    with _failing_if_ledger_lost():
        check_ledger(ledger, pipeline.tables(), partition, pipeline.earlier_tables(), sending)


def store_videos_or_fail(
    ledger: Ledger, evolink: EvoLinkResource, partition: str, store: VideoStore
) -> StoredVideos:
    """`store_videos` of the day, in a step: a store refusing every video fails it, not
    retried (no retry helps until it is fixed)."""
    with evolink.client() as client:
        try:
            return store_videos(ledger, partition, client, store)
        except StoreRefused as exc:
            raise Failure(str(exc), allow_retries=False) from None


def _check_planned_as_catalog_is(
    pipeline: PipelineResource, partition: str, requests: pd.DataFrame, sending: set[str]
) -> None:
    """Refuse to send the day's prompts planned from catalog rows that have since changed (a
    prompt deleted, moved to another day or edited; a media row it names edited): a deleted
    one would be paid for, an edited one sent as it was (helper-73, -74, -76). The runs of
    the sensor and of `run` plan the day first; one materialising submitted_tasks alone may
    not."""
    if not sending:
        return
    try:
        prompts = load_prompts(pipeline.prompts_file())
        media = media_states(load_media(pipeline.media_file(), pipeline.root))
    except (CatalogError, FileNotFoundError) as exc:
        raise Failure(
            f"{partition}: the catalogs cannot be read to check the day's generation_requests "
            f"against them ({exc}); nothing was sent",
            allow_retries=False,
        ) from None
    now = {
        p.prompt_id: (request_fingerprint(p), media_fingerprint(p, media))
        for p in prompts
        if p.scheduled_date == partition
    }
    media_planned = requests.media_sha256 if "media_sha256" in requests else [None] * len(requests)
    shas = zip(requests.request_sha256, media_planned, strict=True)
    planned = dict(zip(requests.prompt_id, shas, strict=True))

    def changed(prompt_id: str) -> bool:
        # In neither (a resubmission whose prompt left the day: not sent), they agree.
        sha, media_sha = now.get(prompt_id, (None, None))
        planned_sha, planned_media = planned.get(prompt_id, (None, None))
        # planned_media None: planned before media rows were fingerprinted; the row alone then
        return sha != planned_sha or (planned_media is not None and media_sha != planned_media)

    if stale := sorted(filter(changed, sending)):
        raise Failure(
            f"{partition}: {len(stale)} prompt(s) of generation_requests were planned from "
            f"catalog rows since deleted, moved or edited ({few(stale)}), or from media rows "
            "(or local files) since changed: materialise generation_requests and "
            f"submitted_tasks together for {partition} (or `seedance-pipeline run "
            f"{partition}`) to send the day as the catalogs say now; nothing was sent",
            allow_retries=False,
        )


def _requests(pipeline: PipelineResource, partition: str) -> pd.DataFrame:
    """The day's `generation_requests`; a step without them fails at once (no retry helps)."""
    try:
        return pipeline.tables().read("generation_requests", partition)
    except FileNotFoundError as exc:  # its message names the asset and the day to materialise
        raise Failure(str(exc), allow_retries=False) from None


def _campaigns(pipeline: PipelineResource, prompt_ids: set[str]) -> dict[str, str | None]:
    """The catalog's campaign of prompts sent for a day they have since left (moved to another
    day, most often), claimed before the ledger kept it: their charge stays on the day it was
    sent, under their campaign."""
    if not prompt_ids:
        return {}
    try:
        prompts = load_prompts(pipeline.prompts_file())
    except (CatalogError, FileNotFoundError) as exc:  # the day's table is still written
        log.warning("campaigns of %s not read from the catalog: %s", sorted(prompt_ids), exc)
        return {}
    return {p.prompt_id: p.campaign for p in prompts if p.prompt_id in prompt_ids}


def _held(rows: list[LedgerRow]) -> dict[str, float]:
    """Credits each of the day's tasks holds or may hold, by prompt: its reservation, else its
    estimate (a claim in flight, an unknown outcome). Failed and cancelled tasks cost nothing
    (a resubmission is counted at its new estimate)."""
    return {
        r.prompt_id: (r.credits_reserved if r.credits_reserved is not None else r.estimated_credits)
        or 0.0
        for r in rows
        if r.status not in (Status.FAILED, Status.CANCELLED)
    }


MAX_PROBLEMS_SHOWN = 200  # rows of the check's problems table; the videos table has them all


def _check_videos(frame: pd.DataFrame, missing: list[str], day: str) -> AssetCheckResult:
    """`missing`: prompts whose stored video is gone from the store (or cut short) past its
    link's life."""
    done = frame[frame.status == Status.COMPLETED]
    wrong = mismatched(frame)
    expired = frame[frame.status.isin(UNDELIVERED)]
    problems = [(r.prompt_id, mismatch_text(r)) for r in wrong.itertuples()]
    problems += [(r.prompt_id, f"{r.status}: {r.error_message}") for r in expired.itertuples()]
    gone = "its stored video is gone from the store or cut short: restore it"
    problems += [(p, gone) for p in missing]
    # A table, not Markdown: a vendor's error message is shown as text, never rendered.
    listed = pd.DataFrame(problems, columns=["prompt_id", "problem"])
    return AssetCheckResult(
        check_name="videos_match_requests",
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "day": day,
            "checked": len(done),
            "mismatched": len(wrong),
            "expired": len(expired),
            "missing": len(missing),
            "problems": table(listed, rows=MAX_PROBLEMS_SHOWN),
        },
    )


@asset(
    partitions_def=daily_partitions,
    deps=[submitted_tasks],
    group_name="generation",
    pool=API_POOL,
    kinds={"parquet", "mp4"},
    retry_policy=STORING_RETRIES,
    check_specs=[
        AssetCheckSpec(
            "videos_match_requests",
            asset="generated_videos",
            description="every completed video of the day has the requested pixels, duration "
            "and audio; none was lost. The check is not partitioned: its latest result is the "
            "last day's run, and each result's `day` says which day it judged",
        )
    ],
)
def generated_videos(
    context: AssetExecutionContext, pipeline: PipelineResource, evolink: EvoLinkResource
) -> MaterializeResult:
    """Every prompt of the day with its task's outcome and its video saved and measured."""
    partition = context.partition_key
    requests = _requests(pipeline, partition)
    ledger = pipeline.ledger()
    _check_ledger(ledger, pipeline, partition)  # an older ledger would rewrite the day backwards
    store = pipeline.videos()
    if adopted := adopt_stored_videos(ledger, pipeline.tables(), store, partition):
        context.log.warning(
            f"{len(adopted)} video(s) stored and listed in the day's table were not in the "
            f"ledger (an older copy of it put back?): recorded again ({few(adopted)})"
        )
    stored = store_videos_or_fail(ledger, evolink, partition, store)
    rows = ledger.rows(partition)
    try:
        accepted = requests.prompt_id[requests.status == RequestStatus.ACCEPTED]
        frame = build_videos_table(
            requests,
            rows,
            store,
            partition,
            ledger.sent_on_other_days(partition, accepted),
            ledger.attempts(partition),
            _campaigns(
                pipeline,
                {r.prompt_id for r in rows if r.campaign is None} - set(requests.prompt_id),
            ),
        )
    except PartitionNotFinished as exc:
        raise Failure(str(exc), allow_retries=False) from None
    # With the claims a crashed run left; another run may have written it meanwhile, from a
    # ledger put back since.
    with _failing_if_ledger_lost():
        write_record(ledger, pipeline.tables(), partition)
    if stored.outcomes:
        context.log.info(f"videos stored or tried: {dict(stored.outcomes)}")
    path = pipeline.tables().write(frame, "generated_videos", partition)
    count = frame.status.value_counts()
    submitted = len(frame) - count.get(Status.REJECTED, 0)
    check = _check_videos(frame, stored.missing, partition)
    day = totals(frame)
    return MaterializeResult(
        data_version=frame_version(frame),
        metadata={
            **written(path, frame),
            **{f"videos_{s}": int(count.get(s, 0)) for s in COUNTED},
            # As generation_costs sums the day; None: a sum nobody knows (a price unknown)
            **{
                m: MetadataValue.float(day[m])
                for m in (
                    "seconds_delivered",
                    "credits_estimated",
                    "credits_reserved",  # earlier attempts too
                    "credits_charged",
                    "credits_drift",
                )
            },
            "failure_rate": float(count.get(Status.FAILED, 0) / submitted) if submitted else 0.0,
            # The day's check problems, kept with the day's materialisation (the check's latest
            # result is whichever day ran last).
            "check_problems": sum(
                check.metadata[k].value for k in ("mismatched", "expired", "missing")
            ),
            "preview": table(
                frame,
                [
                    "prompt_id",
                    "model",
                    "status",
                    "width",
                    "height",
                    "duration_s",
                    "has_audio",
                    "credits_charged",
                ],
            ),
        },
        check_results=[check],
    )
