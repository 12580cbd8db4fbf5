"""Helpers for the pipeline's integration tests: a copy of the sample data and real runs."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pandas as pd
from dagster import DagsterInstance, materialize

from seedance_pipeline.defs.costs.assets import generation_costs
from seedance_pipeline.defs.generation.assets import (
    generated_videos,
    generation_requests,
    submitted_tasks,
)
from seedance_pipeline.defs.resources import EvoLinkResource, PipelineResource
from seedance_pipeline.media import ffmpeg
from seedance_pipeline.planning import MediaFactsCache, PlannedRow, plan_catalog
from seedance_pipeline.polling import poll_round
from seedance_pipeline.seedance import PriceTable
from seedance_pipeline.statuses import WAITING
from seedance_pipeline.tables import parquet_bytes, read_parquet
from seedance_pipeline.videos import VIDEO_COLUMNS

SAMPLE = Path(__file__).resolve().parents[1] / "data"
DAY = "2026-11-20"


def copy_sample_data(dest: Path) -> Path:
    """The sample catalogs and media under `dest` (a fresh SEEDANCE_DATA_DIR)."""
    for folder in ("catalog", "media"):
        shutil.copytree(SAMPLE / folder, dest / folder)
    return dest


def make_resources(data_dir: Path, url: str, api_key: str, **pipeline) -> dict:
    return {
        "evolink": EvoLinkResource(api_key=api_key, base_url=url, files_url=url),
        "pipeline": PipelineResource(data_dir=str(data_dir), **pipeline),
    }


def plan_day(data_dir: Path, partition: str = DAY) -> dict[str, PlannedRow]:
    """The day's catalog rows by prompt id, planned as `generation_requests` plans them
    (nothing uploaded)."""
    catalogs = data_dir / "catalog"
    facts, prices = MediaFactsCache(data_dir), PriceTable.load()
    rows = plan_catalog(
        catalogs / "prompts.csv", catalogs / "media.csv", data_dir, facts, prices, partition
    )
    return {row.prompt.prompt_id: row for row in rows}


def _materialize(assets: list, resources: dict, partition: str, instance=None):
    return materialize(
        assets,
        partition_key=partition,
        resources=resources,
        instance=instance or DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def plan_requests(resources: dict, partition: str = DAY):
    return _materialize([generation_requests], resources, partition)


def submit(resources: dict, partition: str = DAY, instance: DagsterInstance | None = None):
    return _materialize([generation_requests, submitted_tasks], resources, partition, instance)


def wait_for_tasks(resources: dict, partition: str = DAY, timeout: float = 60) -> None:
    """Poll with the sensor's own code until no task of the partition is running."""
    ledger, evolink = resources["pipeline"].ledger(), resources["evolink"]
    deadline = time.monotonic() + timeout
    while any(r.status in WAITING for r in ledger.rows(partition)):
        assert time.monotonic() < deadline, "tasks did not finish in time"
        time.sleep(0.2)
        poll_round(ledger, evolink.poll_client)


def save_videos(resources: dict, partition: str = DAY, instance: DagsterInstance | None = None):
    return _materialize([generated_videos], resources, partition, instance)


def run_day(resources: dict, partition: str = DAY) -> None:
    """The day end to end: submitted, every task ended, its videos stored and tabled."""
    assert submit(resources, partition).success
    wait_for_tasks(resources, partition)
    assert save_videos(resources, partition).success


def save_costs(resources: dict, partition: str = DAY):
    return _materialize([generation_costs], resources, partition)


def videos_table(rows: list[dict]) -> pd.DataFrame:
    """A `generated_videos` table of `rows`, every column they leave out empty, as the
    table's Parquet file reads back (its columns typed as written)."""
    frame = pd.DataFrame(rows).reindex(columns=VIDEO_COLUMNS)
    return read_parquet(parquet_bytes(frame, "generated_videos"))


def emulator_tasks(url: str) -> list[dict]:
    """Every task the emulator ever created, from its ledger."""
    return httpx.get(f"{url}/emulator/ledger").json()["tasks"]


def b_frame_video(path: Path, width: int, height: int, seconds: int) -> Path:
    """An MP4 as encoders make them by default (H.264 high profile with B-frames, AAC audio),
    unlike the emulator's renders (no B-frames)."""
    subprocess.run(
        [ffmpeg(), "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate=24"]
        + ["-f", "lavfi", "-i", "sine=frequency=440", "-t", str(seconds), "-c:v", "libx264"]
        + ["-preset", "superfast", "-profile:v", "high", "-bf", "3", "-pix_fmt", "yuv420p"]
        + ["-c:a", "aac", "-movflags", "+faststart", str(path)],
        check=True,
    )
    return path
