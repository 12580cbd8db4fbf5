"""The prompt and media catalogs, as assets whose data version follows their content."""

from dataclasses import asdict

import pandas as pd
from dagster import (
    AssetExecutionContext,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from ...catalog import CatalogError, file_digest, load_media, load_prompts
from ..metadata import frame_version
from ..partitions import daily_partitions
from ..resources import PipelineResource


@asset(group_name="catalog", kinds={"file"}, partitions_def=daily_partitions)
def prompt_catalog(context: AssetExecutionContext, pipeline: PipelineResource) -> MaterializeResult:
    """The day's rows of the prompt catalog (`data/catalog/prompts.csv` or `.parquet`).

    The whole file is checked for form; the data version covers the day's rows only, so editing
    one prompt marks only its day stale.
    """
    try:
        path = pipeline.prompts_file()
        prompts = load_prompts(path)
    except CatalogError as exc:
        raise Failure(str(exc), allow_retries=False) from None
    days = sorted({p.scheduled_date for p in prompts})
    rows = [asdict(p) for p in prompts if p.scheduled_date == context.partition_key]
    return MaterializeResult(
        data_version=frame_version(pd.DataFrame(rows)),
        metadata={
            "path": MetadataValue.path(str(path)),
            "dagster/row_count": len(rows),
            "catalog_rows": len(prompts),
            "catalog_days": len(days),
            "first_day": days[0] if days else "",
            "last_day": days[-1] if days else "",
        },
    )


@asset(group_name="catalog", kinds={"file"})
def media_catalog(pipeline: PipelineResource) -> MaterializeResult:
    """The media catalog (`data/catalog/media.csv` or `.parquet`), checked for form.

    Any day may use any medium: a change to this file marks every day stale.
    """
    try:
        path = pipeline.media_file()
        media = load_media(path, pipeline.root)
    except CatalogError as exc:
        raise Failure(str(exc), allow_retries=False) from None
    counts = {k: sum(m.kind == k for m in media.values()) for k in ("image", "video", "audio")}
    return MaterializeResult(
        data_version=DataVersion(file_digest(path)),
        metadata={
            "path": MetadataValue.path(str(path)),
            "dagster/row_count": len(media),
            "local_files": sum(m.path is not None for m in media.values()),
            **{f"{k}s": v for k, v in counts.items()},
        },
    )
