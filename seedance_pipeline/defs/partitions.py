"""The daily partitions every generation asset shares (one per `scheduled_date`)."""

from dagster import DailyPartitionsDefinition

# end_offset=1: today's batch is a partition as soon as the day starts.
daily_partitions = DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)
