from dagster import Definitions

from .assets import generated_videos, generation_requests, submitted_tasks
from .schedules import daily_generation, daily_generation_schedule
from .sensors import stopped_day_videos, task_poller
from .storing import store_videos_of_stopped_day

defs = Definitions(
    assets=[generation_requests, submitted_tasks, generated_videos],
    jobs=[daily_generation, store_videos_of_stopped_day],
    schedules=[daily_generation_schedule],
    sensors=[task_poller, stopped_day_videos],
)
