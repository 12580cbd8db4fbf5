"""Catalog reading: CSV and Parquet agree; a malformed catalog names file, row and column."""

from __future__ import annotations

import pytest

from seedance_pipeline.catalog import CatalogError, load_media, load_prompts
from seedance_pipeline.cli import main

from .pipeline_support import SAMPLE

HEADER = "prompt_id,scheduled_date,model,prompt,duration\n"
MODEL = "seedance-2.0-text-to-video"


def test_csv_and_parquet_catalogs_plan_the_same(monkeypatch, capsys):
    import json

    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(SAMPLE))
    reports = []
    for path in ("catalog/prompts.csv", "catalog/parquet/prompts.parquet"):
        assert main(["plan", str(SAMPLE / path), "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0] == reports[1]
    assert len(reports[0]["accepted"]) == 16 and len(reports[0]["rejected"]) == 4


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (f"a,2026-11-20,{MODEL},x,5\na,2026-11-20,{MODEL},y,5\n", "row 3, column prompt_id"),
        (f"a,2026-13-40,{MODEL},x,5\n", "row 2, column scheduled_date"),
        (f"a,2026-11-20,{MODEL},x,five\n", "row 2, column duration"),
        (f"a,2026-11-20,{MODEL},,5\n", "row 2, column prompt"),
        (f"../etc,2026-11-20,{MODEL},x,5\n", "row 2, column prompt_id"),
    ],
)
def test_malformed_prompt_catalog_names_file_row_and_column(tmp_path, body, where):
    path = tmp_path / "prompts.csv"
    path.write_text(HEADER + body)
    with pytest.raises(CatalogError, match=f"{path}, {where}"):
        load_prompts(path)


def test_missing_column_and_unreadable_files(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text("prompt_id,model\n")
    with pytest.raises(CatalogError, match="missing required column.*scheduled_date"):
        load_prompts(path)
    broken = tmp_path / "prompts.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(CatalogError, match="unreadable"):
        load_prompts(broken)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("../../etc/passwd", "outside the data directory"),
        ("/etc/passwd", "absolute paths are not allowed"),
        ("file:///etc/passwd", "use https://, s3:// or a path"),
    ],
)
def test_media_uri_path_tricks_are_refused(tmp_path, uri, message):
    path = tmp_path / "catalog" / "media.csv"
    path.parent.mkdir()
    path.write_text(f"media_id,kind,uri\nm1,image,{uri}\n")
    with pytest.raises(CatalogError, match=f"row 2, column uri.*{message}"):
        load_media(path, tmp_path)


def test_plan_rejects_unknown_and_mismatched_media(tmp_path, monkeypatch, capsys):
    import json

    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "prompts.csv").write_text(
        "prompt_id,scheduled_date,model,prompt,image_ids\n"
        "a,2026-11-20,seedance-2.0-image-to-video,x,nope\n"
        "b,2026-11-20,seedance-2.0-image-to-video,x,clip\n"
    )
    (catalog / "media.csv").write_text("media_id,kind,uri\nclip,video,https://e.com/c.mp4\n")
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path))
    assert main(["plan", str(catalog / "prompts.csv"), "--json"]) == 0
    rejected = {
        r["prompt_id"]: r["errors"] for r in json.loads(capsys.readouterr().out)["rejected"]
    }
    assert "unknown media_id 'nope'" in rejected["a"][0]
    assert "'clip' is video, not image" in rejected["b"][0]


def test_csv_with_byte_order_mark_and_crlf_reads(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_bytes(
        ("\ufeff" + HEADER + f"a,2026-11-20,{MODEL},x,5\n").replace("\n", "\r\n").encode()
    )
    assert [p.prompt_id for p in load_prompts(path)] == ["a"]


@pytest.mark.parametrize(
    ("prompt", "error"),
    [
        ("\u200b\u200b", "must have visible text"),
        ("\u3000\u200b\u00a0", "must have visible text"),
        ("a\x00b", "control characters (U+0000)"),
        ("x\x1bsecret", "control characters (U+001B)"),
        ("猫" * 501, "501 Chinese/Japanese/Korean characters; at most 500"),
        ("word " * 1001, "1001 words; at most 1000"),
        ("🎬 مرحبا café e\u0301 \u202eRTL\u202c", None),
        ("line one\nline two\ttab", None),
    ],
)
def test_unicode_oddities_are_accepted_or_rejected_with_the_reason(tmp_path, prompt, error):
    import pandas as pd

    from seedance_pipeline.planning import MediaFactsCache, plan_row
    from seedance_pipeline.seedance import PriceTable

    path = tmp_path / "prompts.parquet"
    pd.DataFrame(
        [{"prompt_id": "odd", "scheduled_date": "2026-11-20", "model": MODEL, "prompt": prompt}]
    ).to_parquet(path)
    (row,) = load_prompts(path)
    planned = plan_row(row, {}, MediaFactsCache(tmp_path), PriceTable.load())
    if error is None:
        assert planned.accepted and planned.body["prompt"] == prompt
    else:
        assert not planned.accepted and any(error in e for e in planned.errors), planned.errors


def test_missing_unreadable_and_lying_media_files_reject_their_rows(tmp_path, monkeypatch, capsys):
    import json
    import shutil

    catalog, media = tmp_path / "catalog", tmp_path / "media"
    catalog.mkdir()
    media.mkdir()
    (media / "garbage.png").write_bytes(b"\x89PNG but not really")
    shutil.copy(SAMPLE / "media" / "aud_jingle_3s.mp3", media / "song.png")  # audio named .png
    (catalog / "media.csv").write_text(
        "media_id,kind,uri\n"
        "gone,image,../media/nowhere.png\n"
        "garbage,image,../media/garbage.png\n"
        "liar,image,../media/song.png\n"
    )
    model = "seedance-2.0-image-to-video"
    (catalog / "prompts.csv").write_text(
        "prompt_id,scheduled_date,model,prompt,image_ids\n"
        + "".join(f"{m},2026-11-20,{model},x,{m}\n" for m in ("gone", "garbage", "liar"))
    )
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path))
    assert main(["plan", str(catalog / "prompts.csv"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    errors = {r["prompt_id"]: " ".join(r["errors"]) for r in report["rejected"]}
    assert report["accepted"] == []
    assert "nowhere.png: no such file" in errors["gone"]
    assert "garbage.png: not a readable image file" in errors["garbage"]
    assert "song.png: holds no image" in errors["liar"]


def test_header_only_catalog_plans_nothing(tmp_path, monkeypatch, capsys):
    (tmp_path / "prompts.csv").write_text(HEADER)
    (tmp_path / "media.csv").write_text("media_id,kind,uri\n")
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path))
    assert main(["plan", str(tmp_path / "prompts.csv")]) == 0
    assert "0 accepted, 0 rejected" in capsys.readouterr().out
