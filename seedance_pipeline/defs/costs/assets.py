"""Cost analytics per day: the `generated_videos` table rolled up for finance."""

import tempfile
from pathlib import Path

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from ...costs import ROLLUP_KEYS, chart, credits_total, known_total, rollup
from ...seedance import PriceTable
from ..generation.assets import generated_videos
from ..metadata import frame_version, table, written
from ..partitions import daily_partitions
from ..resources import PipelineResource


@asset(
    partitions_def=daily_partitions, deps=[generated_videos], group_name="costs", kinds={"parquet"}
)
def generation_costs(
    context: AssetExecutionContext, pipeline: PipelineResource
) -> MaterializeResult:
    """The day's tasks, outcomes, seconds and credits by model x quality x campaign."""
    partition = context.partition_key
    tables = pipeline.tables()
    try:
        videos = tables.read("generated_videos", partition)
    except FileNotFoundError as exc:  # its message names the asset and the day to materialise
        raise Failure(str(exc), allow_retries=False) from None
    day = rollup(videos, ROLLUP_KEYS)
    prices = PriceTable.load()
    for currency in prices.money_per_credit:
        day[f"cost_{currency.lower()}"] = [prices.money(c, currency) for c in day.credits_charged]
    path = tables.write(day, "generation_costs", partition)
    with tempfile.TemporaryDirectory(prefix="seedance-chart-") as tmp:
        png = chart(tables.read_all("generation_costs"), Path(tmp) / "chart.png").read_bytes()
    chart_uri = tables.write_file("generation_costs_by_day.png", png)
    return MaterializeResult(
        data_version=frame_version(day),
        metadata={
            **written(path, day),
            # None: a task was billed at a price nobody knows (the table names its group)
            "credits_charged": MetadataValue.float(known_total(day.credits_charged)),
            "credits_reserved": credits_total(day.credits_reserved),
            "credits_estimated": credits_total(day.credits_estimated),
            "seconds_delivered": float(day.seconds_delivered.sum()),
            "table": table(day),
            # A path, not the image: every materialisation's metadata stays in the event log.
            "chart": MetadataValue.path(chart_uri),
        },
    )
