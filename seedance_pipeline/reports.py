"""What the shell commands print: the plan, the cost report and the summary of a run."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from .costs import COUNTS, rollup, totals
from .planning import PlannedRow, over_budget_message, requests_frame
from .records import SpendNotTabled, edited_not_resent
from .seedance import PriceTable
from .statuses import CHARGED, COUNTED, SENT_ON_OTHER_DAY, Status
from .videos import mismatch_text, mismatched

# The columns `costs` prints (its JSON has every measure).
COST_COLUMNS = [
    "tasks",
    *(s.value for s in COUNTED),
    "refused",
    "seconds_delivered",
    "credits_estimated",
    "credits_reserved",
    "credits_charged",
    "credits_at_risk",  # may have been billed: beside the charge
    "credits_per_delivered_second",
]


# --- plan -----------------------------------------------------------------------------------


def plan_report(rows: list[PlannedRow], budget: float | None) -> dict:
    """The `plan --json` document, with the budget verdict when one is set."""
    accepted = [r for r in rows if r.accepted]
    report = {
        "accepted": [
            {
                "prompt_id": r.prompt.prompt_id,
                "request": r.body,
                "estimated_credits": r.estimated_credits,
            }
            for r in accepted
        ],
        "rejected": [
            {"prompt_id": r.prompt.prompt_id, "errors": r.errors} for r in rows if not r.accepted
        ],
        # None (unknown) when a row's price is unknown: a partial sum would understate the day.
        "estimated_credits_total": _total(r.estimated_credits for r in accepted),
    }
    if budget is not None:  # a budget per day: a catalog of several days is judged day by day
        days: dict[str, list[PlannedRow]] = {}
        for r in accepted:
            days.setdefault(str(r.prompt.scheduled_date), []).append(r)
        refusals = {
            day: refusal
            for day, day_rows in sorted(days.items())
            if (refusal := over_budget_message(requests_frame(day_rows), budget))
        }
        said = [
            f"{day}: {refusal}" if len(days) > 1 else refusal for day, refusal in refusals.items()
        ]
        report["budget"] = {
            "max_credits_per_partition": budget,
            "within_budget": not refusals,
            "refusal": "; ".join(said) or None,
        }
    return report


def _total(estimates) -> float | None:
    estimates = list(estimates)
    return None if None in estimates else round(sum(estimates), 4)


def _credits(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def print_plan(report: dict) -> None:
    for row in report["accepted"]:
        body = row["request"]
        print(
            f"ACCEPT {row['prompt_id']:<24} {body['model']:<38} {body['quality']:>5} "
            f"{body['duration']:>3}s  {_credits(row['estimated_credits']):>10} credits"
        )
    for row in report["rejected"]:
        print(f"REJECT {row['prompt_id']:<24} " + "\n       ".ljust(32).join(row["errors"]))
    print(
        f"{len(report['accepted'])} accepted, {len(report['rejected'])} rejected, "
        f"estimated {_credits(report['estimated_credits_total'])} credits"
    )
    if "budget" in report:
        verdict = "within" if report["budget"]["within_budget"] else "OVER"
        if report["budget"]["refusal"]:
            verdict = f"OVER: {report['budget']['refusal']}"
        print(f"budget {report['budget']['max_credits_per_partition']:g} credits: {verdict}")


# --- costs ----------------------------------------------------------------------------------


def cost_report(
    videos: pd.DataFrame, by: Sequence[str], prices: PriceTable
) -> tuple[pd.DataFrame, dict]:
    """The rollup by `by` with money columns, and the total row; counts are integers."""

    def with_money(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({c: "int64" for c in COUNTS if c in frame})
        for currency in prices.money_per_credit:
            frame[f"cost_{currency.lower()}"] = [
                prices.money(c, currency) for c in frame.credits_charged
            ]
        return frame

    table = with_money(rollup(videos, list(by)))
    total = with_money(rollup(videos, []))
    if len(total):  # the groups' money, added up: what the table's rows show, to the cent
        for money in [c for c in total.columns if c.startswith("cost_")]:
            total[money] = round(table[money].sum(min_count=len(table)), 4)
    return table, (total.to_dict("records")[0] if len(total) else {})


def costs_json(
    table: pd.DataFrame,
    total: dict,
    videos: pd.DataFrame,
    untabled: SpendNotTabled,
) -> str:
    def plain(record: dict) -> dict:
        return {k: None if pd.isna(v) else v for k, v in record.items()}

    return json.dumps(
        {
            "groups": [plain(r) for r in table.to_dict("records")],
            "total": plain(total),
            "rows_without_price": unpriced_rows(videos),
            "days_not_tabled": {
                day: {"tasks": tasks, "credits_reserved": credits}
                for day, (tasks, credits) in untabled.days.items()
            },
            "records_unreadable": untabled.unreadable,
        },
        default=lambda v: v.item() if hasattr(v, "item") else str(v),
        indent=2,
    )


def untabled_notes(untabled: SpendNotTabled) -> list[str]:
    """The spend no generated_videos table holds (`records.spend_not_tabled`), said."""
    notes = [f"spend not known: {why}" for why in untabled.unreadable.values()]
    if untabled.days:
        days = "; ".join(
            f"{day}: {tasks} task(s) reserving {_figure(credits)} credits"
            for day, (tasks, credits) in untabled.days.items()
        )
        notes.insert(
            0,
            "not in these figures, as no generated_videos table holds them yet (their day's "
            f"submission stopped, or tasks still run): {days}",
        )
    return notes


def _figure(value: float | None) -> str:
    """A total as the table shows it: to 4 places, no trailing zeros (`:g` kept 6 digits);
    NaN or None (no known price) is `unknown`."""
    return "unknown" if pd.isna(value) else f"{round(value, 4):.15g}"


def unpriced_rows(videos: pd.DataFrame) -> int:
    """Rows sent, or to send, with no known price: what the estimates leave out."""
    if videos.empty:
        return 0
    return int((videos.credits_estimated.isna() & (videos.status != Status.REJECTED)).sum())


def unpriced_note(videos: pd.DataFrame) -> str | None:
    """What the estimates (and charges) leave out, said; None when nothing is."""
    unpriced = unpriced_rows(videos)
    if not unpriced:
        return None
    said = f"{unpriced} row(s) have no known price: credits_estimated leaves them out"
    delivered = videos.status.isin(CHARGED) & videos.credits_charged.isna()
    if charged := int(delivered.sum()):
        said += (
            f", and credits_charged the {charged} delivered (billed) for which no answer "
            "reported the vendor's reservation"
        )
    return f"{said} (add the model to SEEDANCE_PRICE_TABLE)"


def print_costs(table: pd.DataFrame, total: dict, by: Sequence[str], videos: pd.DataFrame) -> None:
    money = [c for c in table.columns if c.startswith("cost_")]
    columns = [*by, *COST_COLUMNS, *money]
    print(table[columns].to_string(index=False, na_rep="-"))
    figures = [*COST_COLUMNS, *money]
    if pd.isna(total["credits_per_delivered_second"]):  # nothing delivered: no such figure
        figures.remove("credits_per_delivered_second")
    print("TOTAL: " + ", ".join(f"{c}={_figure(total[c])}" for c in figures))
    if note := unpriced_note(videos):
        print(f"note: {note}")


# --- run ------------------------------------------------------------------------------------


def print_run_summary(partition: str, videos: pd.DataFrame, callbacks: bool = False) -> None:
    """Rows by status, credits, and how to settle each `unknown` row (`callbacks`: the
    receiver may still settle them after `run` has stopped waiting)."""
    counts = videos.status.value_counts()
    print(
        f"{partition}: {len(videos)} rows: "
        + (", ".join(f"{n} {status}" for status, n in counts.items()) or "none")
    )
    # As `costs` counts them: earlier attempts' reservations too.
    day = totals(videos)
    print(
        f"{partition}: credits estimated {_figure(day['credits_estimated'])}, "
        f"reserved {_figure(day['credits_reserved'])}, charged {_figure(day['credits_charged'])}"
    )
    if note := unpriced_note(videos):
        print(f"{partition}: {note}")
    for row in videos[videos.error_code == SENT_ON_OTHER_DAY].itertuples():
        print(f"{partition}: {row.prompt_id} was not sent again: {row.error_message}")
    if edited := list(videos.prompt_id[videos.request_changed.fillna(False).astype(bool)]):
        print(f"{partition}: {edited_not_resent(edited)}")
    _print_reasons(partition, videos)
    if not (wrong := mismatched(videos)).empty:
        print(
            f"{partition}: {len(wrong)} stored video(s) are not what was asked (kept, and "
            "named by the videos_match_requests check; look the task up on the dashboard):"
        )
        for row in wrong.head(REASONS_SHOWN).itertuples():
            print(f"  {row.prompt_id}: {mismatch_text(row)}")
    unknown = videos[videos.status == Status.UNKNOWN]
    if unknown.empty:
        return
    print(
        f"{partition}: {len(unknown)} submission(s) whose answer was lost; each may have cost "
        "its estimate. Look it up on the EvoLink dashboard, then settle it:"
    )
    for row in unknown.itertuples():
        estimate = "unknown" if pd.isna(row.credits_estimated) else f"{row.credits_estimated:g}"
        print(
            f"  {row.prompt_id} (up to {estimate} credits): seedance-pipeline resolve "
            f"{partition} {row.prompt_id} (--task-id ID | --forget)"
        )
    if callbacks:
        print(
            f"{partition}: their callbacks may still come: the receiver then attaches their "
            f"tasks, and `seedance-pipeline run {partition}` stores their videos (under Dagster "
            "the sensor does)"
        )


# Rows whose reasons a run's summary prints; the table has them all.
REASONS_SHOWN = 10


def _print_reasons(partition: str, videos: pd.DataFrame) -> None:
    """Why rows were not delivered (rejected, failed, expired, ...): the shell user sees what
    to fix without opening the table. `unknown` rows have their own advice."""
    undelivered = videos[
        ~videos.status.isin([Status.COMPLETED, Status.UNKNOWN])
        & (videos.error_code != SENT_ON_OTHER_DAY)
    ]
    if undelivered.empty:
        return
    print(f"{partition}: not delivered:")
    for row in undelivered.head(REASONS_SHOWN).itertuples():
        said = [r for r in (row.error_message, row.error_code) if isinstance(r, str) and r]
        print(f"  {row.prompt_id} ({row.status}): {(said or ['no reason recorded'])[0]}")
    if len(undelivered) > REASONS_SHOWN:
        print(
            f"  … and {len(undelivered) - REASONS_SHOWN} more; the generated_videos table of "
            f"{partition} gives every row's reason"
        )
