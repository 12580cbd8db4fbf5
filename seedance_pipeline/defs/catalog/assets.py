"""The prompt and media catalogs, as assets whose data version follows the files."""

from dagster import DataVersion, Failure, MaterializeResult, MetadataValue, asset

from ...catalog import CatalogError, file_digest, load_media, load_prompts
from ..resources import PipelineResource


@asset(group_name="catalog", kinds={"file"})
def prompt_catalog(pipeline: PipelineResource) -> MaterializeResult:
    """The prompt catalog (`data/catalog/prompts.csv` or `.parquet`), checked for form."""
    path = pipeline.prompts_file()
    try:
        prompts = load_prompts(path)
    except CatalogError as exc:
        raise Failure(str(exc), allow_retries=False) from None
    days = sorted({p.scheduled_date for p in prompts})
    return MaterializeResult(
        data_version=DataVersion(file_digest(path)),
        metadata={
            "path": MetadataValue.path(str(path)),
            "dagster/row_count": len(prompts),
            "days": len(days),
            "first_day": days[0] if days else "",
            "last_day": days[-1] if days else "",
        },
    )


@asset(group_name="catalog", kinds={"file"})
def media_catalog(pipeline: PipelineResource) -> MaterializeResult:
    """The media catalog (`data/catalog/media.csv` or `.parquet`), checked for form."""
    path = pipeline.media_file()
    try:
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
