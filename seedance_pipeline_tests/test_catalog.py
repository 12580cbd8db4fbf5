"""Catalog reading: the CSV and Parquet forms of the sample catalogs agree.

Malformed catalogs and bad rows are the corpus's job (test_corpus.py).
"""

from __future__ import annotations

import json

from seedance_pipeline.cli import main

from .pipeline_support import SAMPLE


def test_csv_and_parquet_catalogs_plan_the_same(monkeypatch, capsys):
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(SAMPLE))
    reports = []
    for path in ("catalog/prompts.csv", "catalog/parquet/prompts.parquet"):
        assert main(["plan", str(SAMPLE / path), "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0] == reports[1]
    assert len(reports[0]["accepted"]) == 16 and len(reports[0]["rejected"]) == 4
