from dagster import Definitions

from .assets import generated_videos, generation_requests, submitted_tasks
from .schedules import daily_generation, daily_generation_schedule
from .sensors import task_poller

defs = Definitions(
    assets=[generation_requests, submitted_tasks, generated_videos],
    jobs=[daily_generation],
    schedules=[daily_generation_schedule],
    sensors=[task_poller],
)
