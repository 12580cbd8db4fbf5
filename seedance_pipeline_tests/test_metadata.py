"""What the asset pages show: typed tables, no `nan`, and staleness per day."""

from __future__ import annotations

from dagster import (
    AssetKey,
    Definitions,
    TableMetadataValue,
    instance_for_test,
    materialize,
)
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.loader import LoadingContextForTest

from seedance_pipeline.defs.catalog.assets import media_catalog, prompt_catalog
from seedance_pipeline.defs.generation.assets import (
    generated_videos,
    generation_requests,
    submitted_tasks,
)

from .pipeline_support import (
    DAY,
    copy_sample_data,
    make_resources,
    plan_requests,
    save_videos,
    wait_for_tasks,
)

OTHER_DAY = "2026-11-21"


def test_requests_preview_is_a_typed_table_without_nan(tmp_path, emulator, api_key):
    data = copy_sample_data(tmp_path / "data")
    result = plan_requests(make_resources(data, emulator, api_key))
    assert result.success
    metadata = result.asset_materializations_for_node("generation_requests")[0].metadata
    preview = metadata["preview"]
    assert isinstance(preview, TableMetadataValue)
    types = {c.name: c.type for c in preview.schema.columns}
    assert types["estimated_credits"] == "float" and types["duration"] == "int"
    rows = {r.data["prompt_id"]: r.data for r in preview.records}
    rejected = rows["d1-fast-i2v-hero-1080p"]
    assert rejected["status"] == "rejected" and rejected["estimated_credits"] is None
    assert rows["d1-t2v-city-launch"]["estimated_credits"] == 67.5
    reasons = metadata["rejections"].records[0].data
    assert "1080p is not available on fast models" in reasons["errors"]
    columns = {c.name for c in metadata["dagster/column_schema"].schema.columns}
    assert {"prompt_id", "request_json", "estimated_credits"} <= columns


def test_editing_one_prompt_marks_only_its_day_stale(tmp_path, emulator, api_key):
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, emulator, api_key)
    assets = [prompt_catalog, media_catalog, generation_requests]
    graph = Definitions(assets=assets, resources=resources).get_repository_def().asset_graph
    with instance_for_test() as instance:
        assert materialize([media_catalog], resources=resources, instance=instance).success
        for day in (DAY, OTHER_DAY):
            assert materialize(
                [prompt_catalog, generation_requests],
                partition_key=day,
                resources=resources,
                instance=instance,
            ).success

        catalog = data / "catalog" / "prompts.csv"
        text = catalog.read_text()
        assert text.count("A drone shot gliding") == 1  # a prompt of DAY
        catalog.write_text(text.replace("A drone shot gliding", "A drone shot soaring"))
        for day in (DAY, OTHER_DAY):
            assert materialize(
                [prompt_catalog], partition_key=day, resources=resources, instance=instance
            ).success

        def status(day: str) -> StaleStatus:
            resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
            return resolver.get_status(AssetKey("generation_requests"), day)

        assert status(DAY) == StaleStatus.STALE
        assert status(OTHER_DAY) == StaleStatus.FRESH


def test_a_submission_that_sends_nothing_new_leaves_the_days_videos_fresh(
    tmp_path, emulator, api_key
):
    """`submitted_tasks` had no data version: every run of it, even one that found every
    prompt already sent, marked the day's generated_videos stale for good."""
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, emulator, api_key)
    assets = [prompt_catalog, media_catalog, generation_requests, submitted_tasks]
    graph = (
        Definitions(assets=[*assets, generated_videos], resources=resources)
        .get_repository_def()
        .asset_graph
    )
    with instance_for_test() as instance:
        assert materialize([media_catalog], resources=resources, instance=instance).success
        submit = [prompt_catalog, generation_requests, submitted_tasks]
        first = materialize(submit, partition_key=DAY, resources=resources, instance=instance)
        wait_for_tasks(resources)
        assert save_videos(resources, instance=instance).success
        again = materialize(submit, partition_key=DAY, resources=resources, instance=instance)

        def version(result) -> str:
            (done,) = result.asset_materializations_for_node("submitted_tasks")
            return done.tags["dagster/data_version"]

        assert again.success and version(again) == version(first)
        resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
        assert resolver.get_status(AssetKey("generated_videos"), DAY) == StaleStatus.FRESH
