"""Storing the videos of a day that nothing else stores (its submission stopped, or its
generated_videos runs gave up): they are paid for, and their links die a day after."""

from dagster import OpExecutionContext, job, op

from ...statuses import Status
from ...videos import DOWNLOAD_RETRY_SECONDS
from ..partitions import daily_partitions
from ..resources import EvoLinkResource, PipelineResource
from .assets import API_POOL, STORING_RETRIES, store_videos_or_fail


@op(pool=API_POOL, retry_policy=STORING_RETRIES)
def store_day_videos(
    context: OpExecutionContext, pipeline: PipelineResource, evolink: EvoLinkResource
) -> None:
    """Download, check and store every video of the day that is not stored yet."""
    partition = context.partition_key
    stored = store_videos_or_fail(pipeline.ledger(), evolink, partition, pipeline.videos())
    outcomes = {status.value: n for status, n in stored.outcomes.items()}
    context.add_output_metadata({**outcomes, "missing": len(stored.missing)})
    context.log.info(
        f"{partition}: videos stored or tried: {outcomes or 'none due'}; the day's tables are "
        "written by generated_videos once every prompt of the day was sent and its tasks ended"
    )
    if failed := stored.outcomes.get(Status.DOWNLOAD_FAILED):
        context.log.warning(
            f"{failed} video(s) could not be stored; the stopped_day_videos sensor tries them "
            f"again from {DOWNLOAD_RETRY_SECONDS // 60} minutes on (waiting longer after each "
            "failure, an hour at most), while their links live"
        )


@job(
    partitions_def=daily_partitions,
    description="Stores the videos of a day that nothing else stores (its submission stopped, "
    "or its generated_videos runs gave up): the stopped_day_videos sensor asks for it. Sends "
    "nothing.",
)
def store_videos_of_stopped_day() -> None:
    store_day_videos()
