"""The bad-input corpus in `corpus/` (see its README): clear errors, rejected rows, no damage.

`corpus/catalogs/expected.json` says, for each catalog file, where its error must point (file,
row, column) and what it must say, or how many rows a file that only looks odd must load.
`corpus/day/` is a data directory whose prompts for 2026-11-20 are mostly rejected;
`expected.json` there gives each prompt's reason (null: accepted).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from seedance_pipeline.catalog import CatalogError, load_media, load_prompts
from seedance_pipeline.cli import main
from seedance_pipeline.media import measure_video_output
from seedance_pipeline.tables import read_table

from .pipeline_support import DAY, copy_sample_data, emulator_tasks

CORPUS = Path(__file__).parent / "corpus"
CATALOGS = CORPUS / "catalogs"
CATALOG_CASES = json.loads((CATALOGS / "expected.json").read_text())
REFUSED = sorted(name for name, case in CATALOG_CASES.items() if "message" in case)
LOADED = sorted(name for name, case in CATALOG_CASES.items() if "rows" in case)
DAY_EXPECTED = json.loads((CORPUS / "day" / "expected.json").read_text())


def _load(name: str):
    path = CATALOGS / name
    if CATALOG_CASES[name]["catalog"] == "prompts":
        return load_prompts(path)
    return load_media(path, path.parent)


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def shell(monkeypatch, tmp_path, emulator, api_key):
    """Environment for `seedance-pipeline run` in this process, pointed at the emulator."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for name in ("EVOLINK_BASE_URL", "EVOLINK_FILES_URL"):
        monkeypatch.setenv(name, emulator)
    monkeypatch.setenv("EVOLINK_API_KEY", api_key)
    return monkeypatch


@pytest.mark.parametrize("name", REFUSED)
def test_malformed_catalog_is_refused_naming_file_row_and_column(name):
    case = CATALOG_CASES[name]
    with pytest.raises(CatalogError) as caught:
        _load(name)
    where = f", {case['where']}: " if case["where"] else ": "
    assert str(caught.value).startswith(f"{CATALOGS / name}{where}"), caught.value
    assert case["message"] in str(caught.value)


@pytest.mark.parametrize("name", LOADED)
def test_odd_but_valid_catalog_loads(name):
    assert len(_load(name)) == CATALOG_CASES[name]["rows"]


@pytest.mark.timeout(900)  # a run per malformed catalog: 80 s on 4 workers, 300+ under load
def test_runs_on_malformed_catalogs_stop_before_any_request_and_write_nothing(
    tmp_path, shell, emulator, capsys
):
    data = copy_sample_data(tmp_path / "data")
    shell.setenv("SEEDANCE_DATA_DIR", str(data))
    before = _files(data)
    for name in REFUSED:
        option = "--prompts" if CATALOG_CASES[name]["catalog"] == "prompts" else "--media"
        assert main(["run", DAY, option, str(CATALOGS / name)]) == 1, name
        error = capsys.readouterr().err
        assert str(CATALOGS / name) in error and CATALOG_CASES[name]["message"] in error, error
    assert _files(data) == before
    assert emulator_tasks(emulator) == []


def test_a_day_of_bad_rows_rejects_each_with_its_reason_and_sends_only_good_ones(
    tmp_path, shell, emulator, capsys
):
    data = tmp_path / "data"
    shutil.copytree(CORPUS / "day", data, ignore=shutil.ignore_patterns("expected.json"))
    shell.setenv("SEEDANCE_DATA_DIR", str(data))

    assert main(["run", DAY]) == 0, capsys.readouterr().err
    table = read_table(data, "generated_videos", DAY).set_index("prompt_id")
    assert sorted(table.index) == sorted(DAY_EXPECTED)
    for prompt_id, reason in DAY_EXPECTED.items():
        row = table.loc[prompt_id]
        if reason is None:
            video = measure_video_output(data / "videos" / DAY / f"{prompt_id}.mp4")
            assert row["status"] == "completed"
            assert video["duration_s"] == pytest.approx(4, abs=0.1) and video["has_audio"]
        else:
            assert row["status"] == "rejected" and reason in row["error_message"], prompt_id
            assert row["credits_charged"] == 0
    accepted = {p for p, reason in DAY_EXPECTED.items() if reason is None}
    sent = emulator_tasks(emulator)
    assert len(sent) == len(accepted)
    assert {t["prompt"] for t in sent} == {table.loc[p, "prompt"] for p in accepted}
    assert sorted(p.name for p in (data / "videos" / DAY).iterdir()) == sorted(
        f"{p}.mp4" for p in accepted
    )

    # A day with no rows: empty tables, nothing sent.
    assert main(["run", "2026-11-21"]) == 0
    assert read_table(data, "generated_videos", "2026-11-21").empty
    assert len(emulator_tasks(emulator)) == len(accepted)


@pytest.mark.parametrize("form", ["url", "bare_path"])
def test_a_run_refused_on_its_catalog_makes_no_ledger_file_however_it_is_named(
    tmp_path, shell, emulator, capsys, form
):
    """SEEDANCE_LEDGER_URL may name the SQLite file by a bare path: taken for a server, it was
    opened before planning, and the refused run made the file (helper-66)."""
    data = copy_sample_data(tmp_path / "data")
    shell.setenv("SEEDANCE_DATA_DIR", str(data))
    ledger = tmp_path / "elsewhere" / "ledger.sqlite3"
    shell.setenv("SEEDANCE_LEDGER_URL", f"sqlite:///{ledger}" if form == "url" else str(ledger))
    name = REFUSED[0]
    option = "--prompts" if CATALOG_CASES[name]["catalog"] == "prompts" else "--media"
    assert main(["run", DAY, option, str(CATALOGS / name)]) == 1
    assert not ledger.exists()
