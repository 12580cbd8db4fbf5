"""Catalog reading and the checks made while planning on what it read.

Malformed catalogs and bad rows of every kind are the corpus's job (test_corpus.py); here are
the CSV and Parquet forms agreeing, media URLs, secrets, time zones, prompt size and caching.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import materialize

from seedance_pipeline import catalog
from seedance_pipeline.catalog import Media, Prompt, load_prompts
from seedance_pipeline.cli import main
from seedance_pipeline.defs.catalog.assets import media_catalog, prompt_catalog
from seedance_pipeline.defs.resources import PipelineResource
from seedance_pipeline.planning import MediaFactsCache, plan_partition, plan_rows
from seedance_pipeline.seedance import (
    GenerationRequest,
    MediaFacts,
    PriceTable,
    output_pixels,
    validate_request,
)

from .model_ids import I2V, R2V, T2V
from .pipeline_support import DAY, SAMPLE, copy_sample_data, emulator_tasks, plan_day

PASSWORD = "hunter2-Zq8"


def test_csv_and_parquet_catalogs_plan_the_same(monkeypatch, capsys):
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(SAMPLE))
    reports = []
    for path in ("catalog/prompts.csv", "catalog/parquet/prompts.parquet"):
        assert main(["plan", str(SAMPLE / path), "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0] == reports[1]
    assert len(reports[0]["accepted"]) == 16 and len(reports[0]["rejected"]) == 4


def _write_catalogs(folder: Path, media_uri: str) -> Path:
    """A day of two image-to-video rows: `uses-m1` (media `m1` at `media_uri`) and `control`."""
    (folder / "catalog").mkdir(parents=True)
    (folder / "catalog" / "media.csv").write_text(
        "media_id,kind,uri,width,height,size_bytes\n"
        f"m1,image,{media_uri},1280,720,100000\n"
        "fine,image,https://cdn.example.com/fine.png,1280,720,100000\n"
    )
    (folder / "catalog" / "prompts.csv").write_text(
        "prompt_id,scheduled_date,model,prompt,duration,image_ids\n"
        f"uses-m1,{DAY},{I2V},a lighthouse,4,m1\n"
        f"control,{DAY},{I2V},a lighthouse,4,fine\n"
    )
    return folder


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("https://169.254.169.254/latest/meta-data/a.png", "169.254.169.254 is not public"),
        ("https://10.0.0.5/a.png", "10.0.0.5 is not public"),
        ("https://127.0.0.1/a.png", "127.0.0.1 is not public"),
        ("https://localhost/a.png", "localhost is not public"),
        ("https://[::1]/a.png", "is not public"),
        ("https://[::ffff:169.254.169.254]/a.png", "is not public"),
        ("https://0x7f.1/a.png", "(127.0.0.1 is private"),
        ("https://2130706433/a.png", "(127.0.0.1 is private"),
        ("https://0177.0.0.1/a.png", "(127.0.0.1 is private"),
        ("https://10.1/a.png", "(10.0.0.1 is private"),
        ("https://%31%30.0.0.5/a.png", "is not public"),
        ("https://metadata.google.internal/a.png", "a local or internal name"),
        ("https://printer.local/a.png", "a local or internal name"),
        ("https://fileserver/a.png", "a single-label name"),
        ("https://alice:hunter2@cdn.example.com/a.png", "must not carry a user name or password"),
        ("https://ghp_token@cdn.example.com/a.png", "must not carry a user name or password"),
    ],
)
def test_a_media_url_that_may_not_be_sent_rejects_the_rows_using_it(tmp_path, uri, problem):
    rows = plan_day(_write_catalogs(tmp_path, uri))
    assert rows["control"].accepted, rows["control"].errors
    assert not rows["uses-m1"].accepted
    error = rows["uses-m1"].errors[0]
    assert error.startswith("image_ids: 'm1': its uri ") and problem in error, error
    assert "in the media catalog give it a public https:// URL" in error
    assert not any("hunter2" in e or "ghp_token" in e for e in rows["uses-m1"].errors)


@pytest.mark.parametrize(
    "uri",
    [
        "https://cdn.example.com/a.png",
        # Suffixes that name no media format say nothing of what the link serves; these were
        # refused as "format php" (or "jpg:large", "1").
        "https://cdn.example.com/image.php?id=42",
        "https://cdn.example.com/hero.jpg:large",
        "https://cdn.example.com/render/v2.1",
    ],
)
def test_a_public_media_url_is_accepted(tmp_path, uri):
    rows = plan_day(_write_catalogs(tmp_path, uri))
    assert rows["uses-m1"].body["image_urls"] == [uri]


@pytest.mark.parametrize("suffix", ["bmp", "m4v", "tiff"])
def test_a_media_url_naming_a_format_the_vendor_refuses_rejects_its_rows(tmp_path, suffix):
    """The same on every machine: read through `mimetypes`, .m4v named a format only where
    /etc/mime.types lists it (the python:3.11-slim image has none)."""
    rows = plan_day(_write_catalogs(tmp_path, f"https://cdn.example.com/a.{suffix}"))
    assert not rows["uses-m1"].accepted and rows["control"].accepted
    assert f"format {suffix} is not accepted for image" in rows["uses-m1"].errors[0]


def test_a_jfif_link_is_a_jpeg(tmp_path):
    rows = plan_day(_write_catalogs(tmp_path, "https://cdn.example.com/a.jfif"))
    assert rows["uses-m1"].accepted, rows["uses-m1"].errors


@pytest.fixture
def shell(monkeypatch, emulator, api_key, tmp_path):
    """Environment for `seedance-pipeline run` in this process, with a Dagster home to search."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    for name in ("EVOLINK_BASE_URL", "EVOLINK_FILES_URL"):
        monkeypatch.setenv(name, emulator)
    monkeypatch.setenv("EVOLINK_API_KEY", api_key)
    return monkeypatch


def test_a_run_parses_each_catalog_once_and_no_media_password_leaks(
    tmp_path, shell, emulator, capsys
):
    data = _write_catalogs(tmp_path / "data", f"https://alice:{PASSWORD}@cdn.example.com/a.png")
    shell.setenv("SEEDANCE_DATA_DIR", str(data))
    catalog._CACHE.clear()
    parsed = []
    read_table = catalog._read_table
    shell.setattr(
        catalog, "_read_table", lambda path, raw: parsed.append(path) or read_table(path, raw)
    )

    assert main(["run", DAY]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in parsed) == ["media.csv", "prompts.csv"]
    assert main(["plan", str(data / "catalog" / "prompts.csv")]) == 0
    assert main(["plan", str(data / "catalog" / "prompts.csv"), "--json"]) == 0

    shown = capsys.readouterr()
    assert "must not carry a user name or password" in shown.out
    assert PASSWORD not in shown.out + shown.err
    written = [
        p
        for p in [*data.rglob("*"), *(tmp_path / "dagster_home").rglob("*")]
        if p.is_file() and p != data / "catalog" / "media.csv"
    ]
    assert any(p.suffix == ".parquet" for p in written) and any(".db" in p.name for p in written)
    assert [p for p in written if PASSWORD.encode() in p.read_bytes()] == []
    assert PASSWORD not in json.dumps(emulator_tasks(emulator))


def test_an_unchanged_catalog_is_parsed_once_and_a_changed_one_again(tmp_path, monkeypatch):
    path = shutil.copy(SAMPLE / "catalog" / "prompts.csv", tmp_path / "prompts.csv")
    catalog._CACHE.clear()
    parsed = []
    read_table = catalog._read_table
    monkeypatch.setattr(
        catalog, "_read_table", lambda path, raw: parsed.append(path) or read_table(path, raw)
    )
    first = load_prompts(path)
    assert load_prompts(path) == first and len(parsed) == 1

    # The same size and modification time, other bytes: still read afresh.
    stat = os.stat(path)
    text = Path(path).read_text()
    Path(path).write_text(text.replace("2026-11-20", "2026-11-23"))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(path).st_size == stat.st_size
    changed = load_prompts(path)
    assert len(parsed) == 2
    assert {p.scheduled_date for p in changed} - {p.scheduled_date for p in first} == {"2026-11-23"}


@pytest.mark.parametrize(
    ("stamp", "zone", "day"),
    [
        ("2026-11-20T23:30:00-05:00", "America/New_York", "2026-11-20"),
        ("2026-11-20T00:00:00+09:00", "Asia/Tokyo", "2026-11-20"),
        ("2026-11-21T08:00:00+09:00", "+09:00", "2026-11-21"),
        ("2026-11-20T00:00:00+00:00", "UTC", "2026-11-20"),
        ("2026-11-20T23:30:00", None, "2026-11-20"),  # naive: taken as written
    ],
)
@pytest.mark.parametrize("unit", ["us", "ns"])
def test_parquet_timestamps_are_dated_as_written(tmp_path, stamp, zone, day, unit):
    """The day as written in the timestamp's own zone: a date saved as midnight in Tokyo was
    moved to the day before (the UTC day), silently, where the same text in a CSV is refused."""
    path = tmp_path / "prompts.parquet"
    when = pa.array([dt.datetime.fromisoformat(stamp)], pa.timestamp(unit, tz=zone))
    pq.write_table(
        pa.table(
            {
                "prompt_id": ["p1"],
                "scheduled_date": when,
                "model": ["seedance-2.0-text-to-video"],
                "prompt": ["a lighthouse"],
            }
        ),
        path,
    )
    assert [p.scheduled_date for p in load_prompts(path)] == [day]


def test_a_million_character_prompt_in_parquet_is_rejected_at_once(tmp_path):
    path = tmp_path / "prompts.parquet"
    pq.write_table(
        pa.table(
            {
                "prompt_id": ["huge"],
                "scheduled_date": [DAY],
                "model": ["seedance-2.0-text-to-video"],
                "prompt": ["猫a" * 500_000],
            }
        ),
        path,
    )
    prompts = load_prompts(path)
    started = time.perf_counter()
    (row,) = plan_partition(prompts, {}, DAY, MediaFactsCache(tmp_path), PriceTable.load())
    assert time.perf_counter() - started < 0.05
    assert row.errors == ["prompt: has 1000000 characters; at most 10000"]


def test_a_csv_cell_may_hold_exactly_the_csv_readers_limit(tmp_path):
    path = tmp_path / "prompts.csv"
    head = f"prompt_id,scheduled_date,model,prompt\r\np1,{DAY},{I2V},"
    path.write_bytes(f"{head}{'q' * 131_072}\r\n".encode())
    assert len(load_prompts(path)[0].prompt) == 131_072
    path.write_bytes(f"{head}{'q' * 131_073}\r\n".encode())
    with pytest.raises(catalog.CatalogError, match=r"line 2, column prompt: .* 131,072 characters"):
        load_prompts(path)


@pytest.mark.parametrize("written", ["20261120", "2026-W47-5", "2026W475", "2026-11-20T00:00"])
def test_a_date_not_written_yyyy_mm_dd_is_refused_as_the_readme_says(tmp_path, written):
    """Python's fromisoformat took week dates and 20261120 as the 20th of November."""
    path = tmp_path / "prompts.csv"
    path.write_text(f"prompt_id,scheduled_date,model,prompt\np1,{written},{I2V},a lighthouse\n")
    with pytest.raises(catalog.CatalogError, match=r"scheduled_date: .* is not a date YYYY-MM-DD"):
        load_prompts(path)


@pytest.mark.parametrize(("suffix", "second_row"), [(".csv", 3), (".parquet", 2)])
def test_of_several_bad_cells_the_first_by_row_then_column_is_reported(
    tmp_path, suffix, second_row
):
    rows = [
        {"prompt_id": "p1", "scheduled_date": DAY, "model": I2V, "prompt": "ok", "duration": "5"},
        {
            "prompt_id": "p2",
            "scheduled_date": "soon",
            "model": I2V,
            "prompt": "ok",
            "duration": "x",
        },
        {"prompt_id": "p 3", "scheduled_date": DAY, "model": I2V, "prompt": "ok", "duration": "5"},
    ]
    path = tmp_path / f"prompts{suffix}"
    if suffix == ".csv":
        lines = [",".join(rows[0])] + [",".join(r.values()) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(
        catalog.CatalogError, match=rf"row {second_row}, column scheduled_date: 'soon'"
    ):
        load_prompts(path)


def test_rows_sharing_options_and_media_are_each_judged_as_their_own_request(tmp_path):
    """Planning checks and prices each combination of options and media once: every row still
    gets the verdict, body and price `validate_request` and the price table give its own."""
    facts = {
        "img": MediaFacts("image", "jpeg", 1280, 720, size_bytes=1000),
        "tiny": MediaFacts("image", "png", 100, 100),
        "vid": MediaFacts("video", "mp4", 1280, 720, duration_s=5.0, fps=30),
    }
    media = {m: Media(m, f"https://cdn.example.com/{m}", None, f) for m, f in facts.items()}
    prompts = [
        Prompt(
            prompt_id=f"p{i}",
            scheduled_date=DAY,
            model=model,
            prompt=text,
            image_ids=images,
            video_ids=videos,
            duration=duration,
            quality=quality,
            aspect_ratio="adaptive",
        )
        for i, (model, text, (images, videos), duration, quality) in enumerate(
            itertools.product(
                [T2V, I2V, R2V, "seedance-2.0-fast-reference-to-video", "no-such-model"],
                ["A lighthouse at dawn", "猫" * 501, "bell\x07", "A lighthouse at dusk"],
                [((), ()), (("img",), ()), (("tiny",), ()), (("img",), ("vid",)), (("x",), ())],
                [4, 16],
                ["480p", "1080p"],
            )
        )
    ]
    prices = PriceTable.load()
    rows = plan_rows(prompts, media, MediaFactsCache(tmp_path), prices)
    assert [r.prompt for r in rows] == prompts
    for row in rows:
        p = row.prompt
        images = [media[m].uri for m in p.image_ids if m in media]
        videos = [media[m].uri for m in p.video_ids]
        body = GenerationRequest.of(p, image_urls=tuple(images), video_urls=tuple(videos))
        body = body.to_body()
        known = {media[m].uri: media[m].facts for m in (*p.image_ids, *p.video_ids) if m in media}
        unknown = [f"image_ids: unknown media_id {m!r}" for m in p.image_ids if m not in media]
        assert row.errors == unknown + [str(v) for v in validate_request(body, known)]
        if row.accepted:
            assert row.body == body
            seconds = [facts["vid"].duration_s] * len(videos)
            assert row.estimated_credits == prices.estimate_credits(body, seconds)
            assert row.expected_pixels == output_pixels(body, known)
    accepted = [r for r in rows if r.accepted]
    assert 0 < len(accepted) < len(rows)
    with_images = [r.body["image_urls"] for r in accepted if "image_urls" in r.body]
    assert len({id(urls) for urls in with_images}) == len(with_images) > 1  # lists of their own


@pytest.mark.parametrize(
    ("header", "refused"),
    [
        ("generate_sound", "column 'generate_sound' is not read; if it means 'generate_audio'"),
        ("Generate Audio", "column 'Generate Audio' is not read; if it means 'generate_audio'"),
        ("image_id", "column 'image_id' is not read; if it means 'image_ids'"),
        ("notes", None),  # a column of the user's own: left alone
        ("prompt_text", None),  # like `prompt`, which is there: not a misspelling of it
        ("campaign_id", None),  # extends `campaign`'s name
        ("quality_notes", None),
        ("video_title", None),
        ("image_caption", None),
    ],
)
def test_a_misspelt_optional_column_is_refused_not_left_to_its_default(tmp_path, header, refused):
    """`generate_sound: false` was ignored, and every row was sent with audio (the default),
    at audio's price."""
    path = tmp_path / "prompts.csv"
    path.write_text(
        f"prompt_id,scheduled_date,model,prompt,{header}\n"
        f"p1,{DAY},{T2V},a quiet harbour at dawn,false\n"
    )
    if refused is None:
        assert [p.prompt_id for p in load_prompts(path)] == ["p1"]
    else:
        with pytest.raises(catalog.CatalogError, match=refused.replace("(", r"\(")):
            load_prompts(path)


def _step_failure(asset, data: Path, day: str | None) -> str:
    """The one line a catalog step failed with (a Failure: no traceback)."""
    result = materialize(
        [asset],
        resources={"pipeline": PipelineResource(data_dir=str(data))},
        partition_key=day,
        raise_on_error=False,
    )
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    assert failure.user_failure_data is not None, failure.error
    return failure.user_failure_data.description


@pytest.mark.parametrize(
    ("asset", "stem", "day"), [(prompt_catalog, "prompts", DAY), (media_catalog, "media", None)]
)
def test_a_missing_catalog_fails_its_step_in_one_line_naming_the_setting(
    tmp_path, asset, stem, day
):
    """It failed with Dagster's wrapper and a traceback, saying `(set the catalog path)`."""
    data = tmp_path / "data"
    assert _step_failure(asset, data, day) == (
        f"{data / 'catalog'}: no {stem}.csv or {stem}.parquet; set SEEDANCE_DATA_DIR to the "
        "folder that holds catalog/"
    )


def test_a_catalog_folder_with_both_csv_and_parquet_is_refused_naming_both(tmp_path):
    """A user moving to Parquet left the old CSV behind: the CSV was read without a word and
    the new rows were never planned."""
    data = tmp_path / "data"
    copy_sample_data(data)
    shutil.copy(data / "catalog" / "parquet" / "prompts.parquet", data / "catalog")
    assert _step_failure(prompt_catalog, data, DAY) == (
        f"{data / 'catalog'}: both prompts.csv and prompts.parquet are there; keep the one that "
        "is the catalog and move the other away"
    )
