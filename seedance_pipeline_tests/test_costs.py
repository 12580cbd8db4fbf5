"""Cost agreement: estimate = reservation, rolled-up totals = per-task rows = emulator ledger."""

from __future__ import annotations

import json
import os

import httpx
import pandas as pd
import pyarrow.dataset
import pytest

from seedance_pipeline.cli import main
from seedance_pipeline.costs import COUNTS, chart, rollup
from seedance_pipeline.ledger.database import sql
from seedance_pipeline.media import measure
from seedance_pipeline.records import SpendNotTabled
from seedance_pipeline.reports import cost_report, costs_json, print_run_summary
from seedance_pipeline.seedance import MODELS, Client, PriceTable
from seedance_pipeline.seedance._rules import DURATIONS, FAST, IMAGE, MINI, QUALITIES, REFERENCE
from seedance_pipeline.tables import read_all, read_table

from .fault_support import write_catalog
from .pipeline_support import (
    SAMPLE,
    copy_sample_data,
    emulator_tasks,
    make_resources,
    run_day,
    save_costs,
    save_videos,
    submit,
    videos_table,
    wait_for_tasks,
)

DAYS = ("2026-11-20", "2026-11-21", "2026-11-22")
EMPTY_DAY = "2026-11-23"


def test_estimate_equals_emulator_reservation_for_every_model_quality_duration(
    start_emulator, api_key
):
    url = start_emulator(time_scale=0.0001, credits=1e9)
    prices = PriceTable.load()
    with Client(api_key, base_url=url, files_url=url) as client:
        image = client.upload_file(SAMPLE / "media" / "img_product_800x600.png").file_url
        video_path = SAMPLE / "media" / "vid_wide_864x496_24fps_4s.mp4"
        video = client.upload_file(video_path).file_url
        video_seconds = measure(video_path, "video").duration_s
        checked = 0
        for model, spec in MODELS.items():
            if spec.tier == MINI:  # unpriced in the bundled table; test_conformance prices it
                continue
            for quality in QUALITIES:
                if spec.tier == FAST and quality == "1080p":
                    continue
                for duration in DURATIONS:
                    body = {
                        "model": model,
                        "prompt": "a lighthouse at dusk",
                        "duration": duration,
                        "quality": quality,
                    }
                    seconds: list[float] = []
                    if spec.mode == IMAGE:
                        body["image_urls"] = [image]
                    if spec.mode == REFERENCE:
                        body["video_urls"] = [video]
                        seconds = [video_seconds]
                    task = client.create_task(body)
                    assert task.credits_reserved == prices.estimate_credits(body, seconds), body
                    checked += 1
    assert checked == 4 * 3 * 12 + 2 * 2 * 12 - 12  # fast models have no 1080p


@pytest.fixture
def three_days(tmp_path, emulator, api_key, monkeypatch):
    """The three sample days run end to end, costs included."""
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, emulator, api_key)
    metadata = {}
    for day in DAYS:
        assert submit(resources, day).success
        wait_for_tasks(resources, day)
        videos = save_videos(resources, day)
        costs = save_costs(resources, day)
        assert videos.success and costs.success
        metadata[day] = {
            asset: result.asset_materializations_for_node(asset)[0].metadata
            for asset, result in (("generated_videos", videos), ("generation_costs", costs))
        }
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    return data, emulator, metadata


def test_rollup_totals_equal_task_rows_and_emulator_ledger(three_days):
    data, url, _ = three_days
    ledger = httpx.get(f"{url}/emulator/ledger").json()
    videos = read_all(data, "generated_videos")
    costs = read_all(data, "generation_costs")
    charged = ledger["credits_charged_total"]
    assert charged > 0
    assert costs.credits_charged.sum() == pytest.approx(videos.credits_charged.sum(), abs=1e-4)
    assert costs.credits_charged.sum() == pytest.approx(charged, abs=1e-4)
    assert costs.credits_estimated.sum() == pytest.approx(costs.credits_reserved.sum(), abs=1e-4)
    assert costs.tasks.sum() == len(videos)
    assert costs.completed.sum() == (videos.status == "completed").sum()
    assert costs.rejected.sum() == (videos.status == "rejected").sum() == 4
    assert (costs.cost_cny == (costs.credits_charged * 0.1).round(4)).all()
    assert set(costs.scheduled_date) == set(DAYS)


def test_ui_metadata_shows_each_days_credits_exactly(three_days):
    """The figures the asset pages plot, to the credit (no float noise like 196.24599999999998)."""
    _, _, metadata = three_days
    expected = {"2026-11-20": 235.48, "2026-11-21": 294.383, "2026-11-22": 196.246}
    for day, credits in expected.items():
        for asset in ("generated_videos", "generation_costs"):
            meta = metadata[day][asset]
            for key in ("credits_estimated", "credits_reserved", "credits_charged"):
                assert meta[key].value == credits, (day, asset, key, meta[key].value)


def test_rebuilding_costs_never_counts_a_task_twice(three_days, api_key):
    data, url, _ = three_days
    resources = make_resources(data, url, api_key)
    before = read_table(data, "generation_costs", DAYS[0]).credits_charged.sum()
    for _ in range(2):
        assert save_videos(resources, DAYS[0]).success
        assert save_costs(resources, DAYS[0]).success
    assert read_table(data, "generation_costs", DAYS[0]).credits_charged.sum() == before


def test_costs_command_totals_equal_what_the_emulator_charged(three_days, capsys, tmp_path):
    data, url, _ = three_days
    charged = httpx.get(f"{url}/emulator/ledger").json()["credits_charged_total"]
    png = tmp_path / "costs.png"
    assert main(["costs", "--by", "model,quality", "--json", "--png", str(png)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"]["credits_charged"] == pytest.approx(charged, abs=1e-4)
    assert sum(g["credits_charged"] for g in report["groups"]) == pytest.approx(charged, abs=1e-4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["costs", "--by", "campaign", "--since", DAYS[1], "--until", DAYS[1]]) == 0
    text = capsys.readouterr().out
    assert "TOTAL" in text and ("spring-launch" in text or "brand-always-on" in text)


def test_failed_tasks_cost_nothing(tmp_path, start_emulator, api_key):
    url = start_emulator(task_failure_rate=1.0)
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, url, api_key)
    run_day(resources)
    table = read_table(data, "generated_videos", DAYS[0])
    failed = table[table.status == "failed"]
    assert len(failed) == 6
    assert (failed.credits_charged == 0).all()
    assert failed.error_message.str.len().gt(0).all() and failed.error_code.notna().all()
    assert httpx.get(f"{url}/emulator/ledger").json()["credits_charged_total"] == 0


def test_plan_shows_budget_verdict(monkeypatch, capsys):
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(SAMPLE))
    monkeypatch.setenv("SEEDANCE_MAX_CREDITS_PER_PARTITION", "100")
    assert (
        main(["plan", str(SAMPLE / "catalog" / "prompts.csv"), "--partition", DAYS[0], "--json"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["estimated_credits_total"] == pytest.approx(235.48)
    budget = report["budget"]
    assert (budget["max_credits_per_partition"], budget["within_budget"]) == (100.0, False)
    assert "estimated 235.48 credits exceeds the budget of 100" in budget["refusal"]


@pytest.mark.parametrize(("budget", "within"), [("300", True), ("240", False)])
def test_plan_of_several_days_judges_each_day_by_the_budget(monkeypatch, capsys, budget, within):
    """The budget is per day: the three sample days (726.1 credits, each under 300) were
    judged as one day and refused."""
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(SAMPLE))
    monkeypatch.setenv("SEEDANCE_MAX_CREDITS_PER_PARTITION", budget)
    assert main(["plan", str(SAMPLE / "catalog" / "prompts.csv"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["estimated_credits_total"] > 700
    assert report["budget"]["within_budget"] is within
    if not within:  # only the second day (294.383; the others 235.48 and 196.246) is over
        refusal = report["budget"]["refusal"]
        assert refusal.startswith(f"{DAYS[1]}: estimated 294.383 credits exceeds the budget")
        assert DAYS[0] not in refusal and DAYS[2] not in refusal


def test_every_days_tables_read_as_one_dataset(three_days, api_key):
    """A day where every row was rejected and none has a campaign leaves columns empty; its
    files must still have the other days' types, or no reader can take the warehouse whole."""
    data, url, _ = three_days
    with (data / "catalog" / "prompts.csv").open("a", encoding="utf-8") as fh:
        fh.write(
            f"r1,{EMPTY_DAY},seedance-2.0-fast-text-to-video,A bus,,,,5,1080p,16:9,true,false,,\n"
        )
    resources = make_resources(data, url, api_key)
    assert submit(resources, EMPTY_DAY).success
    assert save_videos(resources, EMPTY_DAY).success
    assert save_costs(resources, EMPTY_DAY).success
    assert read_table(data, "generated_videos", EMPTY_DAY).task_id.isna().all()
    for asset in ("generation_requests", "submissions", "generated_videos", "generation_costs"):
        whole = pyarrow.dataset.dataset(data / "warehouse" / asset, format="parquet").to_table()
        days = [read_table(data, asset, d) for d in (*DAYS, EMPTY_DAY)]
        assert whole.num_rows == sum(map(len, days)) > 0, asset
        assert len(pd.read_parquet(data / "warehouse" / asset)) == whole.num_rows


def test_rollup_counts_every_outcome_as_computed_by_hand():
    """One row of each outcome; the expected figures are worked out by hand below."""
    rows = [  # status, task, estimated, reserved, charged, attempts, earlier attempts' reserve
        ("completed", "t1", 25.004, 25.004, 25.004, 1, 0.0),
        ("failed", "t2", 43.74, 43.74, 0.0, 2, 43.74),  # failed twice: resubmitted once
        ("failed", None, 20.252, None, 0.0, 1, 0.0),  # refused (403): no task was made
        ("unknown", None, 67.5, None, None, 1, 0.0),  # the answer was lost
        ("cancelled", "t3", 10.0, 10.0, 0.0, 1, 0.0),
        ("download_failed", "t4", 20.252, 20.252, 20.252, 1, 0.0),
        ("rejected", None, 5.0, 0.0, 0.0, None, 0.0),
    ]
    videos = videos_table(
        [
            {"scheduled_date": DAYS[0], "prompt_id": f"p{i}", "campaign": None, "status": s}
            | {"error_code": None}
            | {"task_id": t, "credits_estimated": e, "credits_reserved": r}
            | {
                "credits_charged": c,
                "attempts": a,
                "credits_reserved_earlier": x,
                "duration_s": 4.0,
            }
            for i, (s, t, e, r, c, a, x) in enumerate(rows)
        ]
        # A prompt another day sent (moved from there): that day's task, counted there. It
        # counted here too, as a rejected task: 13 tasks for a 12-prompt catalog.
        + [
            {"scheduled_date": DAYS[0], "prompt_id": "moved", "status": "rejected"}
            | {"error_code": "sent_on_other_day", "credits_estimated": 0.0}
        ]  # fmt: skip
    )
    (total,) = rollup(videos, []).to_dict("records")
    assert {k: total[k] for k in COUNTS} == {
        "tasks": 7,
        **dict.fromkeys(["completed", "failed", "cancelled", "rejected", "unknown"], 1),
        **{"expired": 0, "download_failed": 1, "refused": 1, "resubmissions": 1},
    }
    assert total["credits_reserved"] == pytest.approx(25.004 + 43.74 * 2 + 10.0 + 20.252)
    assert total["credits_failed_reserved"] == pytest.approx(43.74 * 2 + 10.0)
    assert total["credits_charged"] == pytest.approx(25.004 + 20.252)
    assert total["credits_at_risk"] == pytest.approx(67.5)
    # every row but the rejected ones, never sent
    assert total["credits_estimated"] == pytest.approx(25.004 + 43.74 + 20.252 * 2 + 67.5 + 10)
    assert total["credits_drift"] == 0  # every task reserved its estimate
    assert total["seconds_delivered"] == 4.0


def test_a_day_whose_every_row_was_rejected_is_estimated_at_nothing(capsys):
    """Its estimate read `unknown`, as if a price were missing."""
    videos = videos_table(
        [
            {"scheduled_date": DAYS[0], "prompt_id": f"p{i}", "status": "rejected"}
            | {"error_code": "invalid_request", "credits_estimated": None}
            for i in range(2)
        ]
    )
    print_run_summary(DAYS[0], videos)
    said = capsys.readouterr().out
    assert f"{DAYS[0]}: credits estimated 0, reserved 0, charged 0\n" in said
    assert "no known price" not in said


def test_a_model_with_no_known_price_has_no_estimate_and_no_drift(capsys):
    """A Mini task (unpriced in the bundled table) reserving 17.7205: its group showed
    `credits_estimated` 0.000 and `credits_drift` 17.7205, and the totals gave no sign of the
    missing price. `run`'s summary left earlier attempts out of what was reserved (the
    retried task below reserved 25.004 twice), and totals kept 6 digits (319.236)."""
    videos = pd.DataFrame(
        [
            {"model": "seedance-2.0-mini-text-to-video", "status": "completed", "task_id": "t1"}
            | {"credits_estimated": None, "credits_reserved": 17.7205, "credits_charged": 17.7205}
            | {"attempts": 1, "credits_reserved_earlier": 0.0},
            {"model": "seedance-2.0-text-to-video", "status": "completed", "task_id": "t2"}
            | {"credits_estimated": 300.0055, "credits_reserved": 300.0055}
            | {"credits_charged": 300.0055, "attempts": 2, "credits_reserved_earlier": 25.004},
        ]
    ).assign(scheduled_date=DAYS[0], quality="480p", campaign=None, duration_s=4.0)
    videos = videos.assign(error_code=None, error_message=None)
    videos["prompt_id"] = ["mini", "standard"]
    videos = videos_table(videos.to_dict("records"))  # every column, typed as read back
    by_model = rollup(videos, ["model"]).set_index("model")
    mini = by_model.loc["seedance-2.0-mini-text-to-video"]
    assert pd.isna(mini.credits_estimated) and mini.credits_drift == 0
    (total,) = rollup(videos, []).to_dict("records")
    assert total["credits_estimated"] == 300.0055 and total["credits_drift"] == 0

    print_run_summary(DAYS[0], videos)
    said = capsys.readouterr().out
    # reserved: 17.7205 + 300.0055 + 25.004 (the first attempt) = 342.73
    assert f"{DAYS[0]}: credits estimated 300.0055, reserved 342.73, charged 317.726\n" in said
    assert f"{DAYS[0]}: 1 row(s) have no known price: credits_estimated leaves them out" in said
    table, total = cost_report(videos, ["model"], PriceTable.load())
    report = json.loads(costs_json(table, total, videos, SpendNotTabled()))
    assert report["rows_without_price"] == 1
    assert [g["credits_estimated"] for g in report["groups"]] == [None, 300.0055]


def test_a_delivered_task_of_no_known_price_is_not_reported_free(capsys):
    """A completed Mini task (unpriced) no answer reported a reservation for: the vendor billed
    it (only failed tasks are free), at a price nobody knows. Its group said 0 credits charged
    and CNY 0, and the totals left it out without a word (helper-63). Beside it, an unpriced
    task of unknown outcome was 0 at risk."""
    mini = {"model": "seedance-2.0-mini-text-to-video", "credits_estimated": None}
    videos = pd.DataFrame(
        [
            mini
            | {"status": "completed", "task_id": "t1", "credits_reserved": None}
            | {"credits_charged": None, "prompt_id": "mini"},
            mini
            | {"status": "unknown", "task_id": None, "credits_reserved": None}
            | {"credits_charged": None, "prompt_id": "mini-unsure"},
            {"model": "seedance-2.0-text-to-video", "status": "completed", "task_id": "t2"}
            | {"credits_estimated": 54.0, "credits_reserved": 54.0, "credits_charged": 54.0}
            | {"prompt_id": "standard"},
        ]
    ).assign(scheduled_date=DAYS[0], quality="720p", campaign=None, duration_s=4.0)
    videos = videos.assign(
        error_code=None, error_message=None, attempts=1, credits_reserved_earlier=0.0
    )
    videos = videos_table(videos.to_dict("records"))
    by_model = rollup(videos, ["model"]).set_index("model")
    unpriced = by_model.loc["seedance-2.0-mini-text-to-video"]
    assert pd.isna(unpriced.credits_charged) and pd.isna(unpriced.credits_at_risk)
    assert by_model.loc["seedance-2.0-text-to-video"].credits_charged == 54.0  # 4 s x 13.5
    table, total = cost_report(videos, ["model"], PriceTable.load())
    assert pd.isna(table.set_index("model").loc[unpriced.name, "cost_cny"])
    assert pd.isna(total["credits_charged"]) and pd.isna(total["cost_cny"])

    print_run_summary(DAYS[0], videos)
    said = capsys.readouterr().out
    assert f"{DAYS[0]}: credits estimated 54, reserved 54, charged unknown\n" in said
    assert (
        "2 row(s) have no known price: credits_estimated leaves them out, and credits_charged "
        "the 1 delivered (billed) for which no answer reported the vendor's reservation" in said
    )


def test_the_videos_metadata_does_not_report_a_charge_nobody_knows(tmp_path, emulator, api_key):
    """generation_costs' metadata said the day's charge is not known, generated_videos' a
    smaller figure leaving the task out (helper-64)."""
    data = tmp_path / "data"
    write_catalog(data, 3, DAYS[0])
    resources = make_resources(data, emulator, api_key)
    assert submit(resources, DAYS[0]).success
    wait_for_tasks(resources, DAYS[0])
    with resources["pipeline"].ledger().db.transaction() as db:  # a price nobody knows
        db.execute(
            sql(
                "UPDATE tasks SET credits_reserved = NULL, estimated_credits = NULL"
                " WHERE prompt_id = 'p000'"
            )
        )
    [videos] = save_videos(resources, DAYS[0]).asset_materializations_for_node("generated_videos")
    [costs] = save_costs(resources, DAYS[0]).asset_materializations_for_node("generation_costs")
    assert videos.metadata["credits_charged"].value is None
    assert costs.metadata["credits_charged"].value is None
    for figure in ("credits_estimated", "credits_reserved", "seconds_delivered"):  # the same sums
        assert videos.metadata[figure].value == costs.metadata[figure].value > 0


def test_the_chart_says_which_days_hold_a_charge_nobody_knows(tmp_path, monkeypatch):
    """Drawn as 0 credits, such a day looked free beside the table's `unknown` (helper-64)."""
    import matplotlib.pyplot as plt

    drawn = []
    subplots = plt.subplots

    def kept(*args, **kwargs):
        drawn.append(subplots(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(plt, "subplots", kept)
    daily = pd.DataFrame(
        {"scheduled_date": DAYS[:2], "model": ["m", "m"], "credits_charged": [None, 10.0]}
    )
    chart(daily, tmp_path / "costs.png")
    [(_, ax)] = drawn
    labels = [label.get_text() for label in ax.get_xticklabels()]
    assert labels == [f"{DAYS[0]}\n+ unknown", DAYS[1]]


def test_money_is_rounded_half_up_and_the_groups_add_up_to_the_total():
    """Two campaigns of one 5 s 720p standard task each: 5 x 13.5 = 67.5 credits, at US$0.0147
    a credit 0.99225, half up 0.9923 (as floats, 0.9922: 0.99225 is 0.992249999... there), and
    the two rows add up to 1.9846; the total said 1.9845, from 135 credits (helper-63)."""
    videos = videos_table(
        [
            {"scheduled_date": DAYS[0], "prompt_id": f"p{i}", "campaign": f"c{i}"}
            | {"model": "seedance-2.0-text-to-video", "quality": "720p", "status": "completed"}
            | {"task_id": f"t{i}", "error_code": None, "credits_estimated": 67.5}
            | {"credits_reserved": 67.5, "credits_charged": 67.5, "attempts": 1}
            | {"credits_reserved_earlier": 0.0, "duration_s": 5.0}
            for i in range(2)
        ]
    )
    table, total = cost_report(videos, ["campaign"], PriceTable.load())
    assert list(table.cost_usd) == [0.9923, 0.9923] and list(table.cost_cny) == [6.75, 6.75]
    assert (total["credits_charged"], total["cost_usd"], total["cost_cny"]) == (135, 1.9846, 13.5)


def test_a_resubmitted_prompt_keeps_what_each_attempt_reserved(
    tmp_path, start_emulator, api_key, monkeypatch, capsys
):
    """Every task fails, half of them with `service_error`, which is resubmitted once. Each
    task the vendor made reserved 25.004 (4 s of 480p at 6.251 a second), and each failed.
    A ledger rebuilt from the day's record after it was lost kept the resubmissions but lost
    what the earlier attempts reserved: 150.024 for 225.036 (helper-63)."""
    url = start_emulator(task_failure_rate=1.0, seed=3)
    data = tmp_path / "data"
    write_catalog(data, 6, DAYS[0])
    resources = make_resources(data, url, api_key, max_resubmissions=1)
    for _ in range(2):
        assert submit(resources, DAYS[0]).success
        wait_for_tasks(resources, DAYS[0])
    saved = save_videos(resources, DAYS[0])
    assert saved.success
    assert save_costs(resources, DAYS[0]).success
    (day,) = read_table(data, "generation_costs", DAYS[0]).to_dict("records")
    made = len(httpx.get(f"{url}/emulator/ledger").json()["tasks"])
    assert made > 6, "some first attempts failed with service_error and were sent again"
    assert (day["tasks"], day["failed"], day["resubmissions"]) == (6, 6, made - 6)
    assert day["credits_reserved"] == day["credits_failed_reserved"] == round(made * 25.004, 4)
    assert day["credits_charged"] == 0 and day["credits_drift"] == 0
    # The videos asset's metadata says the same (it left the earlier attempts out).
    (videos,) = saved.asset_materializations_for_node("generated_videos")
    assert videos.metadata["credits_reserved"].value == round(made * 25.004, 4)

    ledger_file = data / "state" / "ledger.sqlite3"
    for lost in [ledger_file, *ledger_file.parent.glob("ledger.sqlite3-*")]:
        lost.unlink()
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    assert main(["rebuild-ledger", DAYS[0]]) == 0, capsys.readouterr().err
    resources = make_resources(data, url, api_key, max_resubmissions=1)
    assert save_videos(resources, DAYS[0]).success and save_costs(resources, DAYS[0]).success
    (rebuilt,) = read_table(data, "generation_costs", DAYS[0]).to_dict("records")
    columns = ["tasks", "failed", "resubmissions", "credits_reserved", "credits_failed_reserved"]
    assert {c: rebuilt[c] for c in columns} == {c: day[c] for c in columns}


def test_the_chart_draws_campaigns_with_dollar_signs_as_written(tmp_path):
    """`50% off $x^$` ended `costs --png` in a mathtext ParseSyntaxException, and `$5 or $10`
    was drawn as TeX math."""
    daily = pd.DataFrame(
        {
            "scheduled_date": ["2026-11-20", "2026-11-20"],
            "campaign": ["50% off $x^$", "Save $5 or $10 today"],
            "credits_charged": [10.0, 20.0],
        }
    )
    png = chart(daily, tmp_path / "costs.png", by=["campaign"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_costs_names_the_spend_of_a_day_whose_submission_stopped(
    tmp_path, start_emulator, api_key, monkeypatch, capsys
):
    """A day stopped part-way (here the credits ran out; Ctrl-C alike) made and paid for
    tasks, but has no generated_videos table until its next run: `costs` said there was
    nothing (helper-71)."""
    url = start_emulator(credits=100)
    data = copy_sample_data(tmp_path / "data")
    assert not submit(make_resources(data, url, api_key), DAYS[0]).success
    made = emulator_tasks(url)
    reserved = round(sum(t["credits_reserved"] for t in made), 4)
    assert made and reserved > 0
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    assert main(["costs"]) == 0
    said = capsys.readouterr().out
    assert "no generated_videos tables" in said
    assert f"{DAYS[0]}: {len(made)} task(s) reserving {reserved:.15g} credits" in said
    assert main(["costs", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["days_not_tabled"] == {
        DAYS[0]: {"tasks": len(made), "credits_reserved": reserved}
    }
    assert main(["costs", "--until", "2026-11-19"]) == 0  # not a day asked about
    assert "reserving" not in capsys.readouterr().out


def test_generation_costs_before_the_days_videos_table_says_what_to_materialise(
    tmp_path, emulator, api_key
):
    """It failed with a raw FileNotFoundError and its stack trace, retried as any error
    (helper-73)."""
    data = tmp_path / "data"
    write_catalog(data, 1, DAYS[0])
    result = save_costs(make_resources(data, emulator, api_key), DAYS[0])
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    assert failure.user_failure_data is not None  # a Failure, said as such
    assert f"materialise generated_videos for {DAYS[0]}" in failure.user_failure_data.description


def test_costs_names_tasks_sent_after_their_days_table_was_written(
    tmp_path, emulator, api_key, monkeypatch, capsys
):
    """Prompts added to a day already tabled were sent and paid, and no figure or note held
    them until the day's table was written again (helper-74)."""
    data = tmp_path / "data"
    write_catalog(data, 2, DAYS[0])
    resources = make_resources(data, emulator, api_key)
    run_day(resources, DAYS[0])
    write_catalog(data, 4, DAYS[0])  # two more for the day
    assert submit(resources, DAYS[0]).success
    added = [r.task_id for r in resources["pipeline"].ledger().rows(DAYS[0])][2:]
    made = {t["id"]: t for t in emulator_tasks(emulator)}
    reserved = round(sum(made[task_id]["credits_reserved"] for task_id in added), 4)
    warehouse = data / "warehouse"  # written within the second of the table, as S3 tells it
    table_written = (warehouse / "generated_videos" / f"{DAYS[0]}.parquet").stat().st_mtime
    os.utime(warehouse / "submissions" / f"{DAYS[0]}.parquet", (table_written,) * 2)
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    assert main(["costs", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"]["tasks"] == 2  # the table as written
    assert report["days_not_tabled"] == {DAYS[0]: {"tasks": 2, "credits_reserved": reserved}}
    wait_for_tasks(resources, DAYS[0])
    assert save_videos(resources, DAYS[0]).success  # tabled again: nothing left out
    assert main(["costs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["days_not_tabled"] == {}


@pytest.mark.parametrize("damage", ["cut short", "zeroed within"])
def test_costs_with_an_unreadable_record_still_prints_the_figures(
    tmp_path, emulator, api_key, monkeypatch, capsys, damage
):
    """One record of submissions cut short made `costs` print nothing, and `demo` end in an
    error (helper-74); so did one zeroed within, its header and footer whole (helper-76)."""
    data = tmp_path / "data"
    write_catalog(data, 2, DAYS[0])
    run_day(make_resources(data, emulator, api_key), DAYS[0])
    records = data / "warehouse" / "submissions"
    whole = (records / f"{DAYS[0]}.parquet").read_bytes()
    middle = len(whole) // 2
    damaged = (
        b"PAR1 cut"
        if damage == "cut short"
        else whole[:8] + bytes(middle - 8) + whole[middle:]  # the footer's start zeroed too
    )
    (records / f"{DAYS[1]}.parquet").write_bytes(damaged)
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    assert main(["costs"]) == 0
    said = capsys.readouterr().out
    assert "TOTAL: tasks=2" in said
    assert "note: spend not known: " in said and f"submissions/{DAYS[1]}.parquet" in said


def test_costs_names_a_prompt_sent_once_fixed_after_its_day_was_tabled_rejected(
    tmp_path, emulator, api_key, monkeypatch, capsys
):
    """The table's row of a rejected prompt holds no task: its task, sent once the row was
    fixed, was taken for one the table held (helper-76)."""
    data = tmp_path / "data"
    write_catalog(data, 2, DAYS[0])
    catalog = data / "catalog" / "prompts.csv"
    fixed = catalog.read_text()
    lines = fixed.splitlines(keepends=True)
    catalog.write_text(lines[0] + lines[1] + lines[2].replace(",4,480p,", ",99,480p,"))
    resources = make_resources(data, emulator, api_key)
    run_day(resources, DAYS[0])  # p001 rejected
    catalog.write_text(fixed)
    assert submit(resources, DAYS[0]).success
    (sent,) = [r for r in resources["pipeline"].ledger().rows(DAYS[0]) if r.prompt_id == "p001"]
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    assert main(["costs", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["days_not_tabled"] == {
        DAYS[0]: {"tasks": 1, "credits_reserved": sent.credits_reserved}
    }
