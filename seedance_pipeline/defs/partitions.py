"""The daily partitions every generation asset shares (one per `scheduled_date`)."""

from dagster import DailyPartitionsDefinition

from ..settings import first_day

# The partition bar and the per-day plots start here, where the data starts, instead of showing
# hundreds of empty days. It shapes the asset graph, so it is read when the assets are defined.
FIRST_DAY = first_day()

# end_offset=1: today's batch is a partition as soon as the day starts.
daily_partitions = DailyPartitionsDefinition(start_date=FIRST_DAY, end_offset=1)
