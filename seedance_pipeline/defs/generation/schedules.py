"""The daily job and its schedule (shipped STOPPED: turning on spending is the user's call)."""

from dagster import AssetSelection, build_schedule_from_partitioned_job, define_asset_job

from ..catalog.assets import prompt_catalog
from .assets import generation_requests, submitted_tasks

daily_generation = define_asset_job(
    "daily_generation",
    selection=AssetSelection.assets(prompt_catalog, generation_requests, submitted_tasks),
    description="Reads a day's prompts, plans them into requests and submits the accepted ones, "
    "each once; the task_poller sensor then saves the videos and costs.",
)
daily_generation_schedule = build_schedule_from_partitioned_job(
    daily_generation,
    hour_of_day=6,
    description="Runs daily_generation for the day at 06:00 UTC. Ships stopped: starting it "
    "spends credits every day.",
)
