"""Cost analytics: rolling the `generated_videos` tables up by day, model, quality, campaign."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .statuses import COUNTED, Status

GROUPS = ("model", "quality", "campaign")
ROLLUP_KEYS = ["scheduled_date", *GROUPS]
MEASURES = [
    "tasks",
    *(s.value for s in COUNTED),
    "seconds_delivered",
    "credits_estimated",
    "credits_reserved",
    "credits_charged",
    "credits_failed_reserved",
    "resubmissions",
]
# The measures that count tasks (integers in the cost report's JSON and table).
COUNTS = ["tasks", *(s.value for s in COUNTED), "resubmissions"]


def credits_total(values: pd.Series) -> float:
    """A sum of credits without float noise (prices are exact to 4 places)."""
    return round(float(values.fillna(0).sum()), 4)


def rollup(videos: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Totals per group of the videos table; one row per task id (duplicates dropped)."""
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
    frame["campaign"] = frame.campaign.fillna("(none)")
    status = frame.status
    frame = frame.assign(
        tasks=1,
        **{s.value: (status == s).astype(int) for s in COUNTED},
        seconds_delivered=frame.duration_s.where(status == Status.COMPLETED, 0).fillna(0),
        credits_failed_reserved=frame.credits_reserved.where(status == Status.FAILED, 0).fillna(0),
        resubmissions=frame.attempts.fillna(1) - 1,
    )
    for col in ("credits_estimated", "credits_reserved", "credits_charged"):
        frame[col] = frame[col].fillna(0).astype(float)
    out = (
        frame.groupby(by, dropna=False)[MEASURES].sum().reset_index()
        if by
        else (frame[MEASURES].sum().to_frame().T)
    )
    # The vendor's reservation is the truth; a non-zero drift means the price table is stale.
    out["credits_drift"] = (out.credits_reserved - out.credits_estimated).round(4)
    out["credits_per_delivered_second"] = (
        out.credits_charged / out.seconds_delivered.where(out.seconds_delivered > 0)
    ).round(4)
    return out.round(
        {
            "credits_estimated": 4,
            "credits_reserved": 4,
            "credits_charged": 4,
            "seconds_delivered": 3,
        }
    )


def chart(daily: pd.DataFrame, path: str | Path, by: Sequence[str] = ("model",)) -> Path:
    """A PNG of credits charged per day, stacked by the groups `by` (one bar a day if none)."""
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
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if not pivot.empty:
        pivot.plot(kind="bar", stacked=True, ax=ax)
        ax.legend(fontsize=7, title=" / ".join(by) or None)
    ax.set_title(f"Credits charged per day, by {', '.join(by) or 'day'}")
    ax.set_xlabel("day")
    ax.set_ylabel("credits")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
