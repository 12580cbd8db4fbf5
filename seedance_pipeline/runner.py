"""One partition end to end without the daemon, as `seedance-pipeline run DATE` does it."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from dagster import DagsterInstance, materialize

from .callbacks import callback_base
from .definitions import resources_from_env
from .defs.catalog.assets import media_catalog, prompt_catalog
from .defs.costs.assets import generation_costs
from .defs.generation.assets import generated_videos, generation_requests, submitted_tasks
from .defs.partitions import daily_partitions
from .follow import follow_day
from .polling import PollingRefused
from .statuses import SETTLED

# Step logs stay in the Dagster instance; the shell shows warnings and the progress bar.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


class PipelineStopped(RuntimeError):
    """The pipeline itself could not work (bad key, no credits, unreadable catalog, ...)."""


def _instance() -> DagsterInstance:
    """The persistent instance when DAGSTER_HOME is set, else a throwaway one."""
    try:
        return DagsterInstance.get()
    except Exception:  # DagsterHomeNotSetError and friends: no DAGSTER_HOME
        return DagsterInstance.ephemeral()


def _failure(result) -> str:
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            messages.append(
                (data.user_failure_data and data.user_failure_data.description)
                or data.error.message.strip()
            )
    return "; ".join(messages) or "a step failed"


def _materialize(assets, resources, instance, partition: str | None = None) -> None:
    result = materialize(
        assets,
        resources=resources,
        instance=instance,
        partition_key=partition,
        raise_on_error=False,
        run_config=QUIET,
    )
    if not result.success:
        raise PipelineStopped(_failure(result))


def run_partition(
    partition: str, prompts: Path | None = None, media: Path | None = None, out=None
) -> None:
    """Requests, submission, polling until every task ended, videos and tables.

    Raises:
        PipelineStopped: with the reason, when the pipeline could not do its work.
    """
    out = out or sys.stderr  # looked up per call: the process may have swapped stderr
    if not daily_partitions.has_partition_key(partition):
        raise PipelineStopped(
            f"{partition!r} is not a day of the pipeline's partitions: give a date YYYY-MM-DD "
            f"from {daily_partitions.start:%Y-%m-%d} to today (UTC)"
        )
    if not os.environ.get("EVOLINK_API_KEY"):
        raise PipelineStopped(
            "EVOLINK_API_KEY is not set: export your EvoLink API key "
            "(or try `seedance-pipeline demo`, which runs on the local emulator)"
        )
    try:
        resources = resources_from_env(prompts, media)
        callback_base(resources["evolink"].base_url)
    except ValueError as exc:  # a malformed setting, named in the message
        raise PipelineStopped(str(exc)) from None
    pipeline = resources["pipeline"]
    instance = _instance()
    print(f"[{partition}] planning and submitting", file=out)
    _materialize([prompt_catalog, media_catalog], resources, instance)
    ledger = pipeline.ledger()
    evolink = resources["evolink"].process_config_and_initialize()
    submission = [generation_requests, submitted_tasks]
    while submission:
        _submit_while_following(submission, resources, instance, partition, ledger, evolink, out)
        submission = (
            [submitted_tasks] if ledger.resubmittable(partition, pipeline.max_attempts) else []
        )
        if submission:
            print(f"[{partition}] resubmitting tasks that failed transiently", file=out)
    print(f"[{partition}] writing tables", file=out)
    _materialize([generated_videos, generation_costs], resources, instance, partition)


def _submit_while_following(assets, resources, instance, partition, ledger, evolink, out):
    """Submit (a Dagster run) while a thread polls and stores videos as tasks complete."""
    submitting, failure = threading.Event(), []
    submitting.set()
    started = time.monotonic()

    def follow() -> None:
        try:
            follow_day(
                partition,
                ledger,
                evolink,
                resources["pipeline"].storage,
                submitting,
                lambda rows: _progress(partition, rows, started, out),
            )
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    follower = threading.Thread(target=follow, name="follow-day", daemon=True)
    follower.start()
    try:
        _materialize(assets, resources, instance, partition)
    finally:
        submitting.clear()
        follower.join()
    print(file=out)
    if failure:
        if isinstance(failure[0], PollingRefused):
            raise PipelineStopped(str(failure[0])) from None
        raise failure[0]


def _progress(partition: str, rows, started: float, out) -> None:
    ended = sum(r.status in SETTLED for r in rows)
    stored = sum(r.video_uri is not None for r in rows)
    width = 30
    filled = width * ended // len(rows) if rows else 0
    print(
        f"\r[{partition}] [{'#' * filled}{'.' * (width - filled)}] {ended}/{len(rows)} "
        f"tasks ended, {stored} videos stored, {time.monotonic() - started:.0f}s",
        end="",
        file=out,
        flush=True,
    )
