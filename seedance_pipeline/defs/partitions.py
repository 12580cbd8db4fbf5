"""The daily partitions every generation asset shares (one per `scheduled_date`)."""

from dagster import DailyPartitionsDefinition

from ..settings import env_day

# The partition bar and the per-day plots start here, where the data starts, instead of showing
# hundreds of empty days. It shapes the asset graph, so it is read when the assets are defined.
FIRST_DAY = env_day("SEEDANCE_PARTITIONS_START", "2026-11-01")

# end_offset=1: today's batch is a partition as soon as the day starts.
daily_partitions = DailyPartitionsDefinition(start_date=FIRST_DAY, end_offset=1)
