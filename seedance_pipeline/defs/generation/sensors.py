"""The sensor that polls outstanding tasks and asks for finished days' videos."""

import asyncio
import hashlib
import json
import time

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult, sensor

from ...ledger import Ledger
from ...polling import PollSummary, poll_due
from ..costs.assets import generation_costs
from ..resources import EvoLinkResource, PipelineResource
from .assets import generated_videos, submitted_tasks

BATCH = 400  # tasks per tick, at most
# Dagster stops a tick at 60 s: no poll starts after 25 s, and polls still running at 45 s
# are cancelled (their tasks stay due).
START_POLLS_WITHIN_SECONDS = 25
TICK_BUDGET_SECONDS = 45
CONCURRENT_POLLS = 16


def poll_round(ledger: Ledger, evolink: EvoLinkResource, limit: int = BATCH) -> PollSummary:
    """Poll the due tasks once (the sensor's own step, also used by `seedance-pipeline run`)."""
    rate = evolink.max_requests_per_second
    # Paced, a poll waits for its slot: keep no more than ~5 s of slots booked ahead.
    concurrency = max(1, min(CONCURRENT_POLLS, int(rate * 5))) if rate else CONCURRENT_POLLS

    async def go() -> PollSummary:
        now = time.monotonic()
        async with evolink.async_client() as client:
            return await poll_due(
                ledger,
                client,
                limit=limit,
                concurrency=concurrency,
                start_by=now + START_POLLS_WITHIN_SECONDS,
                finish_by=now + TICK_BUDGET_SECONDS,
            )

    return asyncio.run(go())


def videos_run_key(ledger: Ledger, partition: str) -> str:
    """Same ledger state, same key: Dagster drops a duplicate request."""
    state = sorted((r.prompt_id, r.task_id or "", r.status) for r in ledger.rows(partition))
    return f"generated_videos:{partition}:{hashlib.sha256(repr(state).encode()).hexdigest()[:16]}"


@sensor(
    asset_selection=[submitted_tasks, generated_videos, generation_costs],
    minimum_interval_seconds=15,
    default_status=DefaultSensorStatus.RUNNING,
    description="Every 15 s polls the EvoLink tasks that are due; when all of a day's tasks have "
    "ended, asks once for that day's generated_videos and generation_costs.",
)
def task_poller(
    context: SensorEvaluationContext, pipeline: PipelineResource, evolink: EvoLinkResource
) -> SensorResult:
    """Polls due EvoLink tasks; materialises `generated_videos` once a day's tasks all ended."""
    ledger = pipeline.ledger()
    summary = poll_round(ledger, evolink)
    requests = []
    for partition in ledger.partitions_to_resubmit(pipeline.max_attempts):
        requests.append(
            RunRequest(
                run_key=videos_run_key(ledger, partition).replace("generated_videos", "resubmit"),
                partition_key=partition,
                asset_selection=[submitted_tasks.key],
            )
        )
    for partition in ledger.partitions_ready(pipeline.max_attempts):
        requests.append(
            RunRequest(
                run_key=videos_run_key(ledger, partition),
                partition_key=partition,
                asset_selection=[generated_videos.key, generation_costs.key],
            )
        )
        ledger.mark_videos_requested(partition)
    context.log.info(
        "polled %d task(s), %d finished, %d poll error(s), %d day(s) ready",
        summary.polled,
        summary.finished,
        summary.errors,
        len(requests),
    )
    return SensorResult(
        run_requests=requests,
        cursor=json.dumps({"last_tick": time.time(), "polled": summary.polled}),
    )
