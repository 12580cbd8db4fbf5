"""One partition end to end without the daemon, as `seedance-pipeline run DATE` does it."""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance, ExecuteInProcessResult, materialize
from sqlalchemy.exc import SQLAlchemyError
from tqdm import tqdm

from .callbacks import callback_base
from .definitions import DOMAINS, resources_from_env
from .defs.generation.sensors import (
    PARTITION_TAG,
    STATE_TAG,
    SUBMITS_TAG,
    ledger_state,
    state_tag,
)
from .follow import FOLLOWED_TAG, following
from .ledger import (
    LEDGER_URL_ENV,
    Ledger,
    LedgerUnreachable,
    ledger_exists,
    ledger_url,
    safe_url,
)
from .polling import PollingRefused
from .seedance import (
    APIError,
    Client,
    MalformedAnswerError,
    PriceTable,
    RetryPolicy,
    TransportError,
)
from .settings import SettingError
from .statuses import SETTLED, WAITING, Status
from .storage import StoreRefused
from .submission import hold_stopped_day, send_the_rest, through_interrupts

# The default instance when DAGSTER_HOME is unset: the one the README's `dagster dev` opens.
DEFAULT_DAGSTER_HOME = "dagster_home"
# Written into a new ./dagster_home, as in the project's own: no usage statistics, no banner.
INSTANCE_SETTINGS = "telemetry:\n  enabled: false\n"
# A refused connection is reported after this long, not after the client's full backoff.
REACHABILITY_RETRY = RetryPolicy(max_attempts=3, base_delay=2.0, max_total_wait=15.0)


class PipelineStopped(RuntimeError):
    """The pipeline itself could not work (bad key, no credits, unreadable catalog, ...)."""

    exit_code = 1


class PipelineInterrupted(PipelineStopped):
    """A run of it was interrupted (Ctrl-C, Terminate) where Dagster caught it."""


class PipelineRefused(PipelineStopped):
    """A day or a setting to fix, found before anything ran: a script should not just retry."""

    exit_code = 2


def dagster_home() -> Path:
    """`$DAGSTER_HOME`, else `./dagster_home`: runs stay visible in the Dagster UI."""
    return Path(os.environ.get("DAGSTER_HOME") or DEFAULT_DAGSTER_HOME).absolute()


def instance() -> DagsterInstance:
    """The instance at `dagster_home()`; a new `./dagster_home` gets the project's settings.

    Opening is serialised by a lock file: Dagster's SQLite storages stamp their schema on first
    open, and two runs started at once on a new home would otherwise both stamp it (one fails,
    and the home can be left with two schema heads that no later open accepts).
    """
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".seedance-open.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        config = home / "dagster.yaml"
        if not os.environ.get("DAGSTER_HOME") and not config.exists():
            config.write_text(
                "# Made by seedance-pipeline, as the project's own dagster_home.\n"
                + INSTANCE_SETTINGS
            )
        return DagsterInstance.from_config(str(home))


def _assets(*names: str) -> list:
    """The code location's assets of these names, to materialise one by one."""
    found = {a.key.to_user_string(): a for a in DOMAINS.assets}
    return [found[name] for name in names]


def _run_config(verbose: bool) -> dict:
    """Step logs stay in the instance (the UI shows them); the shell gets them with --verbose."""
    level = "INFO" if verbose else "CRITICAL"
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def _failure(result) -> str:
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            error = _innermost(data.error)
            if data.user_failure_data and data.user_failure_data.description:
                messages.append(data.user_failure_data.description)
            elif error.cls_name in _INTERRUPTIONS:  # outside the step's handler: no words
                day = result.dagster_run.tags.get(PARTITION_TAG)
                again = f"; what was sent is in the ledger; {send_the_rest(day)}" if day else ""
                messages.append(f"the run was interrupted{again}")
            else:
                messages.append(_said(error))
    return "; ".join(messages) or "a step failed"


# Terminate, SIGTERM or Ctrl-C while Dagster waits to retry a step.
_INTERRUPTIONS = ("DagsterExecutionInterruptedError", "KeyboardInterrupt")


def _interrupted(result: ExecuteInProcessResult) -> bool:
    """Whether the run failed as it was interrupted, not on an error of its own (a failed run
    with no failed step was stopped between steps)."""
    failed = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    return not failed or any(_innermost(e).cls_name in _INTERRUPTIONS for e in failed)


def _innermost(error):
    """The exception that started it: Dagster wraps it (`Error occurred while executing op`,
    `Exceeded max_retries of 3`), and only the cause says what to fix."""
    while error.cause is not None:
        error = error.cause
    return error


def _said(error) -> str:
    """An error's message without its class's module path (`seedance_pipeline.s3.S3Error: `)."""
    message = error.message.strip()
    named, _, rest = message.partition(": ")
    return rest if rest and named.split(".")[-1] == error.cls_name else message


def _ledger_reachable(data_dir: Path) -> None:
    """Stop at once, naming the ledger, when its PostgreSQL does not answer (a wrong
    SEEDANCE_LEDGER_URL, a database down): the first step failing on it said only
    `connection failed`, and Dagster's storage may be a PostgreSQL too."""
    url = ledger_url(data_dir)
    if not url.startswith("postgres"):
        return  # a SQLite file, made when first written: a run stopped sooner leaves none
    try:
        Ledger(url).db.ping()
    except SQLAlchemyError as exc:
        why = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise PipelineStopped(
            f"cannot reach the ledger, {safe_url(url)} ({why}): check {LEDGER_URL_ENV}, or "
            "start its database"
        ) from None


def _reachable(evolink) -> None:
    """Stop at once when the API does not answer, instead of after minutes of retries."""
    try:
        client = Client(
            evolink.api_key,
            base_url=evolink.base_url,
            files_url=evolink.files_url,
            retry=REACHABILITY_RETRY,
        )
    except ValueError as exc:  # the key or a URL cannot be used; the message says which
        raise PipelineRefused(str(exc)) from None
    with client:
        try:
            client.get_credits()
        except TransportError as exc:
            raise PipelineStopped(
                f"cannot reach the EvoLink API ({exc}): check EVOLINK_BASE_URL, or start "
                "the emulator (`seedance-pipeline emulator`)"
            ) from None
        except MalformedAnswerError as exc:  # a captive portal, a proxy's page, another API
            raise PipelineStopped(
                f"EVOLINK_BASE_URL does not answer as the EvoLink API does ({exc}): check it"
            ) from None
        except APIError as exc:
            # An answer, even a refusal, proves the API is there (submission reports it); a
            # redirect does not, and every create it answered would be `unknown`.
            if 300 <= exc.status < 400:
                raise PipelineStopped(
                    f"EVOLINK_BASE_URL answered {exc.status}, a redirect: set it to the "
                    "address the API answers at"
                ) from None


def run_partition(
    partition: str,
    prompts: Path | None = None,
    media: Path | None = None,
    out=None,
    verbose: bool = False,
) -> pd.DataFrame:
    """Requests, submission, polling until every task ended, videos and tables.

    Returns:
        The partition's `generated_videos` table.

    Raises:
        PipelineStopped: with the reason, when the pipeline could not do its work
            (`PipelineRefused` when it found a day or setting to fix before anything ran).
    """
    out = out or sys.stderr  # looked up per call: the process may have swapped stderr
    daily_partitions = _assets("generated_videos")[0].partitions_def
    if not daily_partitions.has_partition_key(partition):
        raise PipelineRefused(
            f"{partition!r} is not a day of the pipeline's partitions: give a date YYYY-MM-DD "
            f"from {daily_partitions.start:%Y-%m-%d} (SEEDANCE_PARTITIONS_START) to today (UTC)"
        )
    if not os.environ.get("EVOLINK_API_KEY"):
        raise PipelineRefused(
            "EVOLINK_API_KEY is not set: export your EvoLink API key "
            "(or try `seedance-pipeline demo`, which runs on the local emulator)"
        )
    try:
        resources = resources_from_env(prompts, media)
        callback_base(resources["evolink"].base_url)
        PriceTable.load()  # an unreadable SEEDANCE_PRICE_TABLE: a setting to fix, nothing run
    except (SettingError, ValueError) as exc:
        raise PipelineRefused(str(exc)) from None
    pipeline = resources["pipeline"]
    evolink = resources["evolink"].process_config_and_initialize()
    _reachable(evolink)
    _ledger_reachable(pipeline.root)
    dagster = instance()

    def run(assets, day: str | None = partition, **tags: str) -> ExecuteInProcessResult:
        result = materialize(
            assets,
            resources=resources,
            instance=dagster,
            partition_key=day,
            raise_on_error=False,
            run_config=_run_config(verbose),
            tags={FOLLOWED_TAG: "true", **tags},  # this process polls and stores: assets need not
        )
        if not result.success:
            stopped = PipelineInterrupted if _interrupted(result) else PipelineStopped
            raise stopped(_failure(result))
        return result

    # Cut short before, so the sensor would send the rest: this run sends it, and
    # submitted_tasks notes the day again as it ends. Stopped before then (Ctrl-C while
    # planning), the day is its user's (helper-62); failing, the sensor's again (helper-64).
    # (With no ledger yet, none is made: a catalog refused writes nothing.)
    ledger = pipeline.ledger() if ledger_exists(ledger_url(pipeline.root)) else None
    cut_short = ledger is not None and partition in ledger.partitions_incomplete()
    if cut_short:
        ledger.set_submission_complete(partition, None)
    print(f"[{partition}] planning and submitting", file=out)
    try:
        run(_assets("media_catalog"), None)
        run(_assets("prompt_catalog", "generation_requests"))  # a bad catalog stops here
    except PipelineStopped as exc:
        if cut_short and not isinstance(exc, PipelineInterrupted):
            ledger.set_submission_complete(partition, False)
        raise
    ledger = pipeline.ledger()

    def submit(assets) -> None:
        """Submit (a Dagster run) while a thread polls and stores videos as tasks complete."""
        progress = _Progress(partition, out)
        try:
            with following(partition, ledger, evolink, pipeline.videos(), progress=progress):
                sent = _sent(partition, run(assets, **{SUBMITS_TAG: "true"}))
                tqdm.write(sent, file=out)  # above the bar
        except StoreRefused as exc:
            raise PipelineStopped(
                f"{exc}; no video can be stored, so nothing more was sent: fix it, then run "
                "the day again (what was sent is recorded; the rest is sent then, and every "
                "video stored)"
            ) from None
        except (PollingRefused, LedgerUnreachable) as exc:
            raise PipelineStopped(str(exc)) from None
        finally:
            progress.close()

    try:
        submit(_assets("submitted_tasks"))
        while ledger.resubmittable(partition, pipeline.max_attempts):
            print(f"[{partition}] resubmitting tasks that failed transiently", file=out)
            # As the sensor's runs: a prompt deleted or edited meanwhile is not sent as it was.
            run(_assets("prompt_catalog", "generation_requests"))
            submit(_assets("submitted_tasks"))
    except KeyboardInterrupt:  # while following, outside the step's own handler
        said = through_interrupts(
            lambda: _stopped_following(ledger, partition, pipeline.max_attempts),
            (KeyboardInterrupt,),
        )
        raise PipelineStopped(said) from None
    print(f"[{partition}] writing tables", file=out)
    # Tagged as the sensor tags the videos run of the day's ledger state: it finds this one and
    # does not run the day's tables again (`dagster dev` on the same Dagster home). Unless a
    # download failed: its retry, once due, is the sensor's videos run of this same state.
    rows = ledger.state_rows(partition)
    tags = (
        {}
        if any(r.status == Status.DOWNLOAD_FAILED for r in rows)
        else {STATE_TAG: state_tag(partition, ledger_state(rows))}
    )
    run(_assets("generated_videos", "generation_costs"), **tags)
    return pipeline.tables().read("generated_videos", partition)


def _stopped_following(ledger: Ledger, partition: str, max_attempts: int) -> str:
    """What `run` says when its user stopped it while it followed the day, once the day is left
    to them."""
    said = f"{partition}: stopped while following the day; what was sent is in the ledger"
    if any(r.status in WAITING for r in ledger.state_rows(partition)):
        said += (
            "; its tasks still generating are paid for: run the day again to store their "
            "videos, within 24 h of their completion (or leave them to the sensors of "
            "`dagster dev`)"
        )
    # Every prompt was sent (or the step's handler said so): only resubmissions may wait.
    return said + hold_stopped_day(ledger, partition, max_attempts, unsent=False)


def _sent(partition: str, result: ExecuteInProcessResult) -> str:
    """What this run's submission sent: the day's progress counts every task the ledger holds,
    so a run that sent nothing would read like the first."""
    (done,) = result.asset_materializations_for_node("submitted_tasks")
    sent, resent, held, lost, refused = (
        done.metadata[key].value
        for key in (
            "submitted",
            "resubmitted",
            "already_submitted",
            "outcome_unknown",
            "refused_by_api",
        )
    )
    said = f"[{partition}] {sent} task(s) sent"
    if lost:  # sent all the same: each may have made a task
        said = (
            f"[{partition}] {sent + lost} request(s) sent: {sent} made a task, {lost} whose "
            "answer was lost (unknown)"
        )
    if resent:
        said += f" ({resent} of them resubmissions)"
    if refused:
        said += f"; {refused} refused by the API"
    held -= resent  # a resubmitted prompt was in the ledger too
    if held:
        said += f"; {held} already in the ledger, not sent again"
    return said


class _Progress:
    """A tqdm bar of the day's tasks (a TTY only), and one closing line for logs."""

    def __init__(self, partition: str, out):
        self.partition, self.out = partition, out
        self.total = self.ended = self.stored = 0
        self.started = time.monotonic()
        self.bar = tqdm(
            total=0, desc=f"[{partition}] tasks ended", unit="task", file=out, disable=None
        )

    def __call__(self, counts: dict, stored: int) -> None:
        self.total, self.stored = sum(counts.values()), stored
        self.ended = sum(n for status, n in counts.items() if status in SETTLED)
        self.bar.total, self.bar.n = self.total, self.ended
        self.bar.set_postfix(videos=stored, refresh=True)

    def close(self) -> None:
        self.bar.close()
        if not self.total:
            return  # nothing was submitted
        print(
            f"[{self.partition}] {self.ended}/{self.total} tasks ended, {self.stored} videos "
            f"stored, {time.monotonic() - self.started:.0f} s",
            file=self.out,
        )
