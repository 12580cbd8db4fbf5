"""Cost analytics: rolling the `generated_videos` tables up by day, model, quality, campaign."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .statuses import CHARGED, COUNTED, SENT_ON_OTHER_DAY, Status

GROUPS = ("model", "quality", "campaign")
# Tasks the vendor made and did not bill: their reservation was released.
_UNBILLED = (Status.FAILED, Status.CANCELLED)
# Sums that are unknown when a row's part is: what was billed, or may have been. (An estimate
# sums the rows of known price, and the reports say how many it leaves out.)
_UNKNOWN_IF_ANY = ("credits_charged", "credits_at_risk")
ROLLUP_KEYS = ["scheduled_date", *GROUPS]
MEASURES = [
    "tasks",
    *(s.value for s in COUNTED),
    "refused",
    "seconds_delivered",
    "credits_estimated",
    "credits_reserved",
    "credits_charged",
    "credits_failed_reserved",
    "credits_at_risk",
    "resubmissions",
    "credits_drift",
]
# The measures that count tasks (integers in the cost report's JSON and table).
COUNTS = ["tasks", *(s.value for s in COUNTED), "refused", "resubmissions"]


def credits_total(values: pd.Series) -> float:
    """A sum of credits without float noise (prices are exact to 4 places)."""
    return round(float(values.fillna(0).sum()), 4)


def known_total(values: pd.Series) -> float | None:
    """`credits_total`, or None when one of the values is not known (NaN): a task billed at a
    price nobody knows."""
    return None if values.isna().any() else credits_total(values)


def rollup(videos: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Totals per group of the videos table; one row per task id (duplicates dropped).

    Each row counts once, by its final status (`refused`: failed with no task, the vendor
    refused the request); `resubmissions` counts earlier attempts, each a failed task whose
    reservation adds to `credits_reserved` and `credits_failed_reserved`.
    """
    if not videos.empty:  # a prompt another day sent is that day's task: counted there, once
        videos = videos[videos.error_code != SENT_ON_OTHER_DAY]
    if videos.empty:
        return pd.DataFrame(columns=[*by, *MEASURES, "credits_per_delivered_second"])
    frame = videos.copy()
    has_task = frame.task_id.notna()
    frame = pd.concat(
        [
            frame[has_task].drop_duplicates("task_id", keep="last"),
            frame[~has_task].drop_duplicates(["scheduled_date", "prompt_id"]),
        ]
    )
    has_task = frame.task_id.notna()
    frame["campaign"] = frame.campaign.astype(object).fillna("(none)")  # all None: float64
    status = frame.status.where(has_task | (frame.status != Status.FAILED), "refused")
    reserved = frame.credits_reserved.fillna(0).astype(float)
    charged = frame.credits_charged.astype(float)
    # Tables written before earlier attempts were kept lack the column.
    earlier = frame.get("credits_reserved_earlier", pd.Series(0.0, frame.index)).fillna(0)
    frame = frame.assign(
        tasks=1,
        **{s.value: (status == s).astype(int) for s in COUNTED},
        refused=(status == "refused").astype(int),
        seconds_delivered=frame.duration_s.where(status == Status.COMPLETED, 0).fillna(0),
        # NaN: no known price; a rejected row is never sent, so it will cost nothing
        credits_estimated=frame.credits_estimated.astype(float).mask(
            status == Status.REJECTED, 0.0
        ),
        credits_reserved=reserved + earlier,
        # NaN: a delivered task of no known price whose answers reported no reservation. The
        # vendor billed it: unknown, never 0, and so is its group's charge (below).
        credits_charged=charged.where(status.isin(CHARGED), charged.fillna(0)),
        credits_failed_reserved=reserved.where(status.isin(_UNBILLED), 0) + earlier,
        # NaN: a task of unknown outcome and no known price (and so its group's, below)
        credits_at_risk=frame.credits_estimated.astype(float).where(status == Status.UNKNOWN, 0),
        resubmissions=frame.attempts.fillna(1) - 1,
        # Where the vendor made a task and said what it reserved: a non-zero sum means the
        # price table is stale (a row with no task reserved nothing, and proves nothing).
        # A row with no known price proves nothing either.
        credits_drift=(frame.credits_reserved - frame.credits_estimated)
        .where(has_task, 0)
        .fillna(0),
    )
    unknown = {f"{m} unknown": m for m in _UNKNOWN_IF_ANY}
    frame = frame.assign(**{flag: frame[m].isna() for flag, m in unknown.items()})
    summed = [*MEASURES, *unknown]
    # min_count: a group none of whose rows has a known price has no estimate (NaN), not 0.
    out = (
        frame.groupby(by, dropna=False)[summed].sum(min_count=1).reset_index()
        if by
        else frame[summed].sum(min_count=1).to_frame().T.infer_objects()  # numbers, rounded
    )
    for flag, m in unknown.items():
        out[m] = out[m].mask(out.pop(flag) > 0)
    out["credits_per_delivered_second"] = (
        out.credits_charged / out.seconds_delivered.where(out.seconds_delivered > 0)
    ).round(4)
    return out.round(
        {
            "credits_estimated": 4,
            "credits_reserved": 4,
            "credits_charged": 4,
            "credits_failed_reserved": 4,
            "credits_at_risk": 4,
            "credits_drift": 4,
            "seconds_delivered": 3,
        }
    )


def totals(videos: pd.DataFrame) -> dict[str, float | None]:
    """`rollup` of the whole table, as `generation_costs` sums the day: None where a sum is not
    known (a task billed at a price nobody knows); zeros for a table with no row."""
    out = rollup(videos, [])
    day = out.iloc[0] if len(out) else pd.Series(0.0, MEASURES)
    return {m: None if pd.isna(day[m]) else float(day[m]) for m in MEASURES}


def chart(daily: pd.DataFrame, path: str | Path, by: Sequence[str] = ("model",)) -> Path:
    """A PNG of credits charged per day, stacked by the groups `by` (one bar a day if none).
    A day holding a charge nobody knows (NaN) is drawn with what is known, its label saying so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = [g for g in by if g != "scheduled_date"]
    group = daily[by].astype(str).agg(" / ".join, axis=1) if by and len(daily) else "all"
    pivot = daily.assign(group=group).pivot_table(
        index="scheduled_date",
        columns="group",
        values="credits_charged",
        aggfunc="sum",
        fill_value=0,
    )
    unknown = set(daily.scheduled_date[daily.credits_charged.isna()])
    pivot.index = [f"{day}\n+ unknown" if day in unknown else day for day in pivot.index]
    # Labels are the catalog's text: `$5 or $10` is drawn as written, not parsed as TeX math.
    with matplotlib.rc_context({"text.parse_math": False}):
        fig, ax = plt.subplots(figsize=(10, 4.5))
        if not pivot.empty:
            pivot.plot(kind="bar", stacked=True, ax=ax, rot=0)
            # beside the bars, not over them
            ax.legend(fontsize=7, title=" / ".join(by) or None, loc="upper left")
            ax.get_legend().set_bbox_to_anchor((1.01, 1))
        ax.set_title(f"Credits charged per day, by {', '.join(by) or 'day'}")
        ax.set_xlabel("day")
        ax.set_ylabel("credits")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
    return Path(path)
