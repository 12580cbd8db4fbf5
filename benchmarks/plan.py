"""Planning time per catalog row: `load_prompts` + `plan_partition` on generated catalogs, and
then `requests_frame` (the day's `generation_requests` table).

Writes prompt catalogs of 1,000 and 100,000 rows (CSV and Parquet, every row on one day, a mix
of models, English and Chinese prompts, remote media) to a temporary folder and prints the median
of 3 CPU timings of each in microseconds per row, and the cost per row beyond start-up (the slope
between the two sizes).

Run: python benchmarks/plan.py [--sizes 1000 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from seedance_pipeline import catalog
from seedance_pipeline.catalog import load_media, load_prompts
from seedance_pipeline.planning import MediaFactsCache, plan_partition, requests_frame
from seedance_pipeline.seedance import PriceTable

DAY = "2026-11-20"
COLUMNS = [
    "prompt_id",
    "scheduled_date",
    "model",
    "prompt",
    "image_ids",
    "duration",
    "quality",
    "aspect_ratio",
    "generate_audio",
    "campaign",
]
ENGLISH = (
    "A slow dolly shot across a rain-soaked neon street at night, reflections shimmering in "
    "puddles, a lone cyclist passing under flickering signs, cinematic lighting, shallow depth "
    "of field, gentle synth music, variant {i}"
)
CHINESE = "镜头缓缓推进，花瓣随风飘落，夕阳金色光线洒满古老的庭院，电影感光影，特写镜头，第{i}版"


def _row(i: int) -> dict:
    image = i % 3 == 0
    return {
        "prompt_id": f"p{i:07d}",
        "scheduled_date": DAY,
        "model": "seedance-2.0-image-to-video" if image else "seedance-2.0-fast-text-to-video",
        "prompt": (CHINESE if i % 4 == 1 else ENGLISH).format(i=i),
        "image_ids": f"img{i % 50}" if image else "",
        "duration": str(4 + i % 12),
        "quality": "720p" if i % 2 else "480p",
        "aspect_ratio": "16:9",
        "generate_audio": "true",
        "campaign": f"campaign-{i % 7}",
    }


def write_catalogs(folder: Path, rows: int) -> tuple[Path, Path]:
    """`prompts-N.csv` and `prompts-N.parquet` with `rows` rows."""
    records = [_row(i) for i in range(rows)]
    csv_path = folder / f"prompts-{rows}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    for r in records:
        r["image_ids"] = [r["image_ids"]] if r["image_ids"] else []
        r["duration"] = int(r["duration"])
        r["generate_audio"] = True
    parquet_path = folder / f"prompts-{rows}.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet_path)
    return csv_path, parquet_path


def write_media(folder: Path) -> Path:
    path = folder / "media.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["media_id", "kind", "uri", "width", "height", "size_bytes"])
        for i in range(50):
            uri = f"https://cdn.example.com/{i}.jpg"
            writer.writerow([f"img{i}", "image", uri, 1280, 720, 100_000])
    return path


def seconds_to_plan(prompts: Path, media: Path, folder: Path) -> tuple[float, float]:
    """CPU seconds (other load on the machine aside) to load the catalogs and plan the day, and
    then to build its `generation_requests` table."""
    getattr(catalog, "_CACHE", {}).clear()
    started = time.process_time()
    rows = plan_partition(
        load_prompts(prompts),
        load_media(media, folder),
        DAY,
        MediaFactsCache(folder),
        PriceTable.load(),
    )
    planned = time.process_time()
    requests_frame(rows)
    tabled = time.process_time()
    assert rows and all(r.accepted for r in rows), [r.errors for r in rows if not r.accepted][:3]
    return planned - started, tabled - planned


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 100_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="plan-bench-"))
    media = write_media(folder)
    files = {n: write_catalogs(folder, n) for n in args.sizes}
    for index, kind in enumerate(("csv", "parquet")):
        plan, table = {}, {}
        for n in args.sizes:
            times = [seconds_to_plan(files[n][index], media, folder) for _ in range(args.repeat)]
            plan[n] = statistics.median(t for t, _ in times)
            table[n] = statistics.median(t for _, t in times)
            print(
                f"{kind:8} {n:>7,} rows: plan {plan[n]:7.3f} s, {plan[n] / n * 1e6:6.1f} us/row; "
                f"requests table {table[n]:7.3f} s, {table[n] / n * 1e6:6.1f} us/row"
            )
        small, large = args.sizes
        slope = {
            name: (m[large] - m[small]) / (large - small) * 1e6
            for name, m in (("plan", plan), ("requests table", table))
        }
        figures = ", ".join(f"{name} {us:.1f} us/row" for name, us in slope.items())
        print(f"{kind:8} beyond start-up: {figures}")


if __name__ == "__main__":
    main()
