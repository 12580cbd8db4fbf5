"""Workers that share no disk: one day, three `run` processes, PostgreSQL and S3 only."""

from __future__ import annotations

from collections import Counter

import pytest

from .scale_out import PREFIX, run_fleet


@pytest.mark.timeout(900)
def test_three_workers_share_only_postgres_and_s3_and_pay_each_prompt_once(
    tmp_path, postgres_server, moto_server, s3_bucket
):
    fleet = run_fleet(tmp_path, postgres_server, moto_server, s3_bucket)
    paid = Counter(t["prompt"] for t in fleet.tasks)
    assert len(paid) == len(fleet.prompts) and set(paid.values()) == {1}
    assert fleet.unknown_settled >= 1  # A's open claim, settled by hand, never resent
    assert fleet.table_statuses == Counter({"completed": len(fleet.prompts)})
    keys = {f"{PREFIX}/videos/2026-11-20/{p}.mp4" for p in fleet.prompts}
    assert set(fleet.videos_in_s3) == keys
    assert {k.rsplit("/", 1)[1][:-4]: v for k, v in fleet.videos_in_s3.items()} == (
        fleet.table_sha256
    )
    assert fleet.runs >= 6  # B's, C's and the last run's materialisations, in Postgres
    assert fleet.scratch_files == []
