"""Settling `unknown` rows: only they can be settled, and a task belongs to one row."""

from __future__ import annotations

import time

import pytest

from seedance_pipeline.ledger import Ledger
from seedance_pipeline.seedance import Task

DAY = "2026-11-20"
REQUEST = {"model": "seedance-2.0-text-to-video", "prompt": "x", "duration": 4}


def _task(task_id: str) -> Task:
    return Task.from_json(
        {
            "id": task_id,
            "object": "video.generation.task",
            "created": 1774857405,
            "model": REQUEST["model"],
            "status": "pending",
            "progress": 0,
            "usage": {"credits_reserved": 10.0},
        }
    )


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    """`sent` has task-1; `lost` was sent but its answer never came (`unknown`)."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    for prompt_id in ("sent", "lost"):
        assert ledger.claim(DAY, prompt_id, REQUEST, 10.0)
    ledger.record_submitted(DAY, "sent", _task("task-1"), time.time())
    ledger.record_outcome_unknown(DAY, "lost", "the answer was lost")
    return ledger


def _statuses(ledger: Ledger) -> dict[str, tuple[str, str | None]]:
    return {r.prompt_id: (r.status, r.task_id) for r in ledger.rows(DAY)}


@pytest.mark.parametrize(
    ("prompt_id", "task_id", "message"),
    [
        ("typo", None, "2026-11-20/typo: no such row in the ledger"),
        ("sent", None, "2026-11-20/sent is pending, not unknown"),
        ("lost", "task-1", "task task-1 is already attached to 2026-11-20/sent"),
    ],
)
def test_resolve_refuses_what_it_cannot_settle_and_changes_nothing(
    ledger, prompt_id, task_id, message
):
    before = _statuses(ledger)
    with pytest.raises(LookupError, match=message):
        ledger.resolve(DAY, prompt_id, task_id)
    assert _statuses(ledger) == before


def test_resolve_attaches_the_dashboards_task_or_forgets_the_row(ledger):
    ledger.resolve(DAY, "lost", "task-2")
    assert _statuses(ledger)["lost"] == ("pending", "task-2")
    assert ledger.claim(DAY, "other", REQUEST, 10.0)
    ledger.record_outcome_unknown(DAY, "other", "lost too")
    ledger.resolve(DAY, "other", None)
    assert "other" not in _statuses(ledger)
    assert ledger.claim(DAY, "other", REQUEST, 10.0)  # the next run may submit it again
