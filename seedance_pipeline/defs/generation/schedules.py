"""The daily job and its schedule (shipped STOPPED: turning on spending is the user's call)."""

from dagster import AssetSelection, build_schedule_from_partitioned_job, define_asset_job

from .assets import generation_requests, submitted_tasks

daily_generation = define_asset_job(
    "daily_generation", selection=AssetSelection.assets(generation_requests, submitted_tasks)
)
daily_generation_schedule = build_schedule_from_partitioned_job(daily_generation, hour_of_day=6)
