"""One partition end to end without the daemon, as `seedance-pipeline run DATE` does it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from dagster import DagsterInstance, materialize

from .callbacks import awaits_callback, callback_base
from .definitions import resources_from_env
from .defs.catalog.assets import media_catalog, prompt_catalog
from .defs.costs.assets import generation_costs
from .defs.generation.assets import generated_videos, generation_requests, submitted_tasks
from .defs.partitions import daily_partitions
from .polling import PollingRefused, poll_round
from .statuses import WAITING, Status

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
    _materialize([generation_requests, submitted_tasks], resources, instance, partition)
    ledger = pipeline.ledger()
    evolink = resources["evolink"].process_config_and_initialize()
    _wait(partition, ledger, evolink, out)
    while ledger.resubmittable(partition, pipeline.max_attempts):
        print(f"[{partition}] resubmitting tasks that failed transiently", file=out)
        _materialize([submitted_tasks], resources, instance, partition)
        _wait(partition, ledger, evolink, out)
    print(f"[{partition}] saving videos and writing tables", file=out)
    _materialize([generated_videos, generation_costs], resources, instance, partition)


def _wait(partition: str, ledger, evolink, out) -> None:
    """Poll with the sensor's own code until no task of the partition is running.

    A prompt another run is submitting right now counts as running: its answer comes soon,
    or its process died and the claim becomes `unknown`. So does an `unknown` row whose
    callback may still come (until it is overdue): the callback settles it.
    """
    started = time.monotonic()
    while True:
        ledger.resolve_abandoned_claims(partition)
        rows = ledger.rows(partition)
        now = time.time()
        waiting = sum(
            r.status in WAITING or r.status == Status.SUBMITTING or awaits_callback(r, now)
            for r in rows
        )
        done = len(rows) - waiting
        width = 30
        filled = width * done // len(rows) if rows else width
        print(
            f"\r[{partition}] [{'#' * filled}{'.' * (width - filled)}] {done}/{len(rows)} "
            f"tasks ended, {time.monotonic() - started:.0f}s",
            end="",
            file=out,
            flush=True,
        )
        if not waiting:
            print(file=out)
            return
        due = ledger.next_poll_at() or time.time()
        if any(r.status == Status.SUBMITTING for r in rows):
            due = min(due, time.time() + 0.5)
        # Callbacks settle rows in the receiver's process: look again soon.
        nap = 1.0 if any(r.callback_token_sha256 for r in rows) else 5.0
        time.sleep(min(nap, max(0.0, due - time.time())))
        try:
            poll_round(
                ledger,
                evolink.async_client,
                max_requests_per_second=evolink.max_requests_per_second,
            )
        except PollingRefused as exc:
            raise PipelineStopped(str(exc)) from None
