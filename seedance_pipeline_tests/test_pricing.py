"""The price table: NOTES.md's per-second rates, the reference-video rule, overrides."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from seedance_pipeline.catalog import load_media, load_prompts
from seedance_pipeline.cli import main
from seedance_pipeline.emulator.config import PRICES
from seedance_pipeline.planning import (
    MediaFactsCache,
    over_budget_message,
    plan_partition,
    requests_frame,
)
from seedance_pipeline.seedance import PriceTable, _pricing
from seedance_pipeline.seedance._pricing import PRICE_TABLE_ENV
from seedance_pipeline.tables import LocalTableStore, read_table

from .pipeline_support import emulator_tasks, make_resources, submit

STANDARD = {
    "text": "seedance-2.0-text-to-video",
    "image": "seedance-2.0-image-to-video",
    "reference": "seedance-2.0-reference-to-video",
}
FAST = {
    "text": "seedance-2.0-fast-text-to-video",
    "image": "seedance-2.0-fast-image-to-video",
    "reference": "seedance-2.0-fast-reference-to-video",
}
MINI = {
    "text": "seedance-2.0-mini-text-to-video",
    "image": "seedance-2.0-mini-image-to-video",
    "reference": "seedance-2.0-mini-reference-to-video",
}
# NOTES.md, "Credits per output second" (1080p: our assumption, 720p x 2.25).
RATES = {
    ("standard", False): {"480p": "6.251", "720p": "13.50", "1080p": "30.375"},
    ("standard", True): {"480p": "3.807", "720p": "8.222", "1080p": "18.4995"},
    ("fast", False): {"480p": "5.063", "720p": "10.935"},
    ("fast", True): {"480p": "3.012", "720p": "6.506"},
}
VID = "https://cdn.example.com/ref.mp4"
# Every tier x quality with a published or assumed rate (fast has no 1080p).
TIER_QUALITY = [(tier, q) for (tier, ref), rates in RATES.items() if not ref for q in rates]


@pytest.fixture
def table(monkeypatch) -> PriceTable:
    monkeypatch.delenv(PRICE_TABLE_ENV, raising=False)
    return PriceTable.load()


def expected(rate: str, seconds: Decimal) -> float:
    return float((seconds * Decimal(rate)).quantize(Decimal("0.0001")))


def test_notes_example_10s_720p_standard_with_5s_reference(table):
    b = {"model": STANDARD["reference"], "duration": 10, "quality": "720p", "video_urls": [VID]}
    assert table.estimate_credits(b, [5]) == 164.44


@pytest.mark.parametrize(("tier", "quality"), TIER_QUALITY)
@pytest.mark.parametrize("duration", list(range(4, 16)))
@pytest.mark.parametrize("mode", ["text", "image", "reference"])
def test_without_reference_video(table, tier, quality, duration, mode):
    model = (STANDARD if tier == "standard" else FAST)[mode]
    b = {"model": model, "duration": duration, "quality": quality}
    if mode != "text":
        b["image_urls"] = ["https://cdn.example.com/a.png"]
    got = table.estimate_credits(b)
    assert got == expected(RATES[(tier, False)][quality], Decimal(duration))


@pytest.mark.parametrize(("tier", "quality"), TIER_QUALITY)
@pytest.mark.parametrize("duration", list(range(4, 16)))
@pytest.mark.parametrize("ref_seconds", [2, 5, 15])
def test_with_reference_video_bills_max_of_ref_and_output_plus_output(
    table, tier, quality, duration, ref_seconds
):
    model = (STANDARD if tier == "standard" else FAST)["reference"]
    b = {"model": model, "duration": duration, "quality": quality, "video_urls": [VID]}
    seconds = Decimal(max(ref_seconds, duration) + duration)
    assert table.estimate_credits(b, [ref_seconds]) == expected(
        RATES[(tier, True)][quality], seconds
    )


def test_max_rule_reference_longer_than_output(table):
    b = {"model": STANDARD["reference"], "duration": 4, "quality": "480p", "video_urls": [VID]}
    assert table.estimate_credits(b, [12]) == expected("3.807", Decimal(16))  # (12 + 4)


def test_max_rule_output_longer_than_reference(table):
    b = {"model": STANDARD["reference"], "duration": 12, "quality": "480p", "video_urls": [VID]}
    assert table.estimate_credits(b, [3]) == expected("3.807", Decimal(24))  # (12 + 12)


def test_several_reference_videos_are_summed(table):
    b = {"model": FAST["reference"], "duration": 5, "quality": "720p", "video_urls": [VID] * 3}
    # 4 + 3.5 + 2.5 = 10 s of reference: (max(10, 5) + 5) x 6.506
    assert table.estimate_credits(b, [4, 3.5, 2.5]) == expected("6.506", Decimal(15))


def test_reference_images_and_audio_do_not_change_the_rate(table):
    b = {
        "model": STANDARD["reference"],
        "duration": 5,
        "quality": "720p",
        "image_urls": ["https://cdn.example.com/a.png"],
        "audio_urls": ["https://cdn.example.com/a.mp3"],
    }
    assert table.estimate_credits(b) == 67.5  # 5 x 13.50, no reference video


@pytest.mark.parametrize(
    ("given", "ref_total"),
    [([3, 4], 7), ([], 15), ([None], 15), ([None, 3], 15), ([3], 15), ([12, None], 15)]
    + [([14, None], 16)],
)
def test_reference_videos_of_unknown_length_count_as_long_as_the_guide_allows(
    table, given, ref_total
):
    """Two reference videos; those not given or None last as long as the guide lets them: each
    2..15 s, 15 s at most in all. A guess (5 s each) priced 12 s + one unknown at 21 s, more
    than the vendor can bill (15 s), and one unknown at 9 s, less than it may (helper-63).
    With 14 s known, the other lasts 2 s at least: 16 s, which the vendor refuses."""
    b = {"model": STANDARD["reference"], "duration": 4, "quality": "720p", "video_urls": [VID] * 2}
    seconds = Decimal(max(ref_total, 4) + 4)
    assert table.estimate_credits(b, given) == expected("8.222", seconds)
    if ref_total == 15:
        assert table.estimate_credits(b, given) == 156.218  # (15 + 4) x 8.222, by hand


def test_defaults_are_5_seconds_720p(table):
    assert table.estimate_credits({"model": STANDARD["text"]}) == 67.5
    assert table.estimate_credits({"model": FAST["text"]}) == expected("10.935", Decimal(5))


@pytest.mark.parametrize("model", list(FAST.values()))
@pytest.mark.parametrize("with_ref", [False, True])
def test_fast_1080p_has_no_rate(table, model, with_ref):
    assert table.rate(model, "1080p", with_ref) is None
    b = {"model": model, "quality": "1080p"} | ({"video_urls": [VID]} if with_ref else {})
    assert table.estimate_credits(b, [5]) is None


@pytest.mark.parametrize("model", list(MINI.values()))
@pytest.mark.parametrize("quality", ["480p", "720p"])
@pytest.mark.parametrize("with_ref", [False, True])
def test_mini_is_unpriced_in_the_bundled_table(table, model, quality, with_ref):
    # No document we have publishes Mini's prices: unknown, never 0.
    assert "mini" not in table.credits_per_second
    assert table.rate(model, quality, with_ref) is None
    b = {"model": model, "quality": quality} | ({"video_urls": [VID]} if with_ref else {})
    assert table.estimate_credits(b, [5]) is None


def test_a_table_with_a_mini_tier_prices_mini(tmp_path):
    path = tmp_path / "with-mini.json"
    data = json.loads(Path(_pricing.__file__).with_name("prices.json").read_text())
    data["credits_per_second"]["mini"] = {
        "without_reference_video": {"480p": 2, "720p": 4},
        "with_reference_video": {"480p": 1, "720p": 3},
    }
    path.write_text(json.dumps(data))
    t = PriceTable.load(path)
    assert t.estimate_credits({"model": MINI["text"], "duration": 6}) == 24  # 6 x 4
    b = {"model": MINI["reference"], "quality": "480p", "duration": 4, "video_urls": [VID]}
    assert t.estimate_credits(b, [7]) == 11  # (max(7, 4) + 4) x 1


def test_rate_is_a_decimal_from_the_table(table):
    assert table.rate(STANDARD["text"], "720p", False) == Decimal("13.5")
    assert table.rate(FAST["image"], "480p", True) == Decimal("3.012")


def test_four_decimal_rounding_half_up(tmp_path):
    path = tmp_path / "prices.json"
    data = {
        "credits_per_second": {
            "standard": {
                "without_reference_video": {"480p": 0.00001, "720p": 1.23456789},
                "with_reference_video": {"720p": 0.33333},
            },
            "fast": {"without_reference_video": {"480p": 0.000025}},
        },
        "money_per_credit": {"CNY": 0.1},
    }
    path.write_text(json.dumps(data))
    t = PriceTable.load(path)
    assert t.estimate_credits({"model": STANDARD["text"], "quality": "720p", "duration": 4}) == (
        4.9383  # 4.93827156
    )
    assert t.estimate_credits({"model": STANDARD["text"], "quality": "480p", "duration": 5}) == (
        0.0001  # 0.00005 rounds half up
    )
    assert t.estimate_credits({"model": FAST["text"], "quality": "480p", "duration": 4}) == 0.0001
    b = {"model": STANDARD["reference"], "quality": "720p", "duration": 7, "video_urls": [VID]}
    assert t.estimate_credits(b, [1]) == 4.6666  # 14 x 0.33333 = 4.66662


def test_results_have_at_most_four_decimals(table):
    for d in range(4, 16):
        for q in ("480p", "720p"):
            for model in (STANDARD["reference"], FAST["reference"]):
                got = table.estimate_credits(
                    {"model": model, "duration": d, "quality": q, "video_urls": [VID]}, [2.3333]
                )
                assert Decimal(str(got)) == Decimal(str(got)).quantize(Decimal("0.0001"))


def test_money(table):
    assert table.money(164.44, "CNY") == 16.444
    assert table.money(100, "USD") == 1.47
    assert table.money(100, "EUR") is None


def test_override_via_env_var(tmp_path, monkeypatch):
    path = tmp_path / "my-prices.json"
    data = {
        "credits_per_second": {
            "standard": {
                "without_reference_video": {"480p": 1, "720p": 2, "1080p": 3},
                "with_reference_video": {"480p": 0.5, "720p": 1, "1080p": 1.5},
            },
            "fast": {
                "without_reference_video": {"480p": 0.25, "720p": 0.75},
                "with_reference_video": {"480p": 0.1, "720p": 0.2},
            },
        },
        "money_per_credit": {"USD": 0.01},
    }
    path.write_text(json.dumps(data))
    monkeypatch.setenv(PRICE_TABLE_ENV, str(path))
    t = PriceTable.load()
    assert t.estimate_credits({"model": STANDARD["text"], "duration": 10}) == 20
    assert t.estimate_credits({"model": FAST["text"], "duration": 4, "quality": "480p"}) == 1
    b = {"model": STANDARD["reference"], "duration": 4, "quality": "720p", "video_urls": [VID]}
    assert t.estimate_credits(b) == 19  # an unknown reference: (15 + 4) x 1
    assert t.money(100, "USD") == 1


def test_explicit_path_wins_over_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv(PRICE_TABLE_ENV, str(tmp_path / "missing.json"))
    default = PriceTable.load(Path(_pricing.__file__).with_name("prices.json"))
    assert default.estimate_credits({"model": STANDARD["text"]}) == 67.5


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read price table"),  # missing file
        ("{not json", "cannot read price table"),
        ("[1, 2]", "price table"),
        ('{"credits_per_second": {}}', "money_per_credit"),
        ('{"credits_per_second": {}, "money_per_credit": {}, "extra": 1}', "price table"),
    ],
)  # fmt: skip
def test_bad_override_file_gives_a_clear_error(tmp_path, monkeypatch, content, fragment):
    path = tmp_path / "bad-prices.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(PRICE_TABLE_ENV, str(path))
    with pytest.raises(ValueError) as info:
        PriceTable.load()
    message = str(info.value)
    assert fragment in message
    assert str(path) in message
    assert PRICE_TABLE_ENV in message


def test_a_rate_the_override_lacks_is_unknown(tmp_path):
    path = tmp_path / "partial.json"
    path.write_text(
        json.dumps(
            {
                "credits_per_second": {"standard": {"without_reference_video": {"720p": 1}}},
                "money_per_credit": {},
            }
        )
    )
    t = PriceTable.load(path)
    assert t.estimate_credits({"model": STANDARD["text"], "quality": "720p"}) == 5
    assert t.estimate_credits({"model": STANDARD["text"], "quality": "480p"}) is None
    assert t.estimate_credits({"model": FAST["text"]}) is None


# ---- rows without a known price: planned, reported unknown, refused under a budget ----------

MINI_DAY = "2026-11-20"


@pytest.fixture
def mini_catalog(tmp_path, monkeypatch):
    """A day with one priced (standard) and one unpriced (Mini) text-to-video row."""
    monkeypatch.delenv(PRICE_TABLE_ENV, raising=False)
    monkeypatch.delenv("SEEDANCE_MAX_CREDITS_PER_PARTITION", raising=False)
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path))
    prompts = tmp_path / "prompts.csv"
    prompts.write_text(
        "prompt_id,scheduled_date,model,prompt,duration,quality\n"
        f"std,{MINI_DAY},{STANDARD['text']},a fox in snow,4,480p\n"
        f"mini,{MINI_DAY},{MINI['text']},a fox in snow,5,720p\n"
    )
    (tmp_path / "media.csv").write_text("media_id,kind,uri\n")
    return tmp_path


def plan_mini_day(root: Path):
    prompts, media = load_prompts(root / "prompts.csv"), load_media(root / "media.csv", root)
    return plan_partition(prompts, media, MINI_DAY, MediaFactsCache(root), PriceTable.load())


def test_unpriced_row_is_planned_with_an_unknown_estimate(mini_catalog):
    rows = plan_mini_day(mini_catalog)
    assert [(r.prompt.prompt_id, r.accepted, r.estimated_credits) for r in rows] == [
        ("std", True, expected("6.251", Decimal(4))),
        ("mini", True, None),
    ]
    LocalTableStore(mini_catalog).write(requests_frame(rows), "generation_requests", MINI_DAY)
    stored = read_table(mini_catalog, "generation_requests", MINI_DAY).set_index("prompt_id")
    assert stored.estimated_credits["std"] == expected("6.251", Decimal(4))
    assert stored.estimated_credits.isna()["mini"]  # NaN in Parquet, not 0


def test_budget_guard_refuses_a_day_holding_an_unpriced_row(mini_catalog):
    frame = requests_frame(plan_mini_day(mini_catalog))
    message = over_budget_message(frame, budget=1e9)
    assert message is not None
    assert "1 row(s) have no known price" in message
    assert f"mini ({MINI['text']} 720p)" in message
    assert "SEEDANCE_PRICE_TABLE" in message and "SEEDANCE_MAX_CREDITS_PER_PARTITION" in message
    assert over_budget_message(frame[frame.prompt_id == "std"], budget=1e9) is None


def test_plan_reports_an_unknown_estimate_as_unknown(mini_catalog, monkeypatch, capsys):
    prompts = str(mini_catalog / "prompts.csv")
    assert main(["plan", prompts, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    estimates = {r["prompt_id"]: r["estimated_credits"] for r in report["accepted"]}
    assert estimates == {"std": expected("6.251", Decimal(4)), "mini": None}
    assert report["estimated_credits_total"] is None
    monkeypatch.setenv("SEEDANCE_MAX_CREDITS_PER_PARTITION", "1000000")
    assert main(["plan", prompts]) == 0
    out = capsys.readouterr().out
    mini_line = next(line for line in out.splitlines() if " mini " in line)
    assert mini_line.split()[-2:] == ["unknown", "credits"]
    assert "estimated unknown credits" in out
    assert "budget 1e+06 credits: OVER: 1 row(s) have no known price" in out
    assert "cannot be checked" in out


def test_unpriced_day_is_refused_under_a_budget_and_submitted_without_one(
    mini_catalog, start_emulator, api_key
):
    mini_rates = {"480p": 3.0, "720p": 6.5}  # test values: Mini's prices are not published
    own = PriceTable.load(PRICES)  # the emulator's: every tier priced
    rates = json.loads(json.dumps(own.credits_per_second))
    rates["mini"]["without_reference_video"] = mini_rates
    emulator_table = PriceTable(rates, own.money_per_credit)
    url = start_emulator(price_table=emulator_table)
    catalogs = {
        "prompts_path": str(mini_catalog / "prompts.csv"),
        "media_path": str(mini_catalog / "media.csv"),
    }
    budgeted = make_resources(mini_catalog, url, api_key, max_credits_per_partition=1e6, **catalogs)
    refused = submit(budgeted, MINI_DAY)
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure)
    assert "1 row(s) have no known price" in failure.step_failure_data.user_failure_data.description
    assert emulator_tasks(url) == []

    result = submit(make_resources(mini_catalog, url, api_key, **catalogs), MINI_DAY)
    assert result.success
    rows = {r.prompt_id: r for r in budgeted["pipeline"].ledger().rows(MINI_DAY)}
    assert rows["mini"].estimated_credits is None
    assert rows["mini"].credits_reserved == 5 * 6.5  # the vendor's (emulator's) reservation
    assert rows["std"].estimated_credits == rows["std"].credits_reserved == 4 * 6.251
