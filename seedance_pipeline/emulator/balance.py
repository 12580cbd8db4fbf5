"""The account balance as running totals, so no request sums every task.

A task holds its reservation from creation; when it ends it is settled once, in order of
its end time from a heap: a completed task's hold becomes a charge, a failed task's hold is
released. Time only moves forward: asking about an earlier moment than before answers for
the latest one.
"""

from __future__ import annotations

import heapq
from decimal import Decimal
from typing import TYPE_CHECKING

from ..seedance import TERMINAL_STATUSES

if TYPE_CHECKING:
    from .state import TaskRecord

_FOUR_PLACES = Decimal("0.0001")


class Balance:
    """Credits held and charged; not thread-safe (the state store holds its lock)."""

    def __init__(self, credits: float):
        self._start = Decimal(str(credits))
        self._held = Decimal(0)  # reservations of tasks not failed, charged ones included
        self._charged = Decimal(0)
        self._pending: list[tuple[float, str, TaskRecord]] = []

    def add(self, task: TaskRecord) -> None:
        self._held += Decimal(str(task.credits_reserved))
        heapq.heappush(self._pending, (task.completed_at, task.id, task))

    def settle(self, now: float) -> None:
        """Settle every task that has ended by `now`."""
        while self._pending and self._pending[0][2].status(now)[0] in TERMINAL_STATUSES:
            task = heapq.heappop(self._pending)[2]
            credits = Decimal(str(task.credits_reserved))
            if task.error_code:
                self._held -= credits
            else:
                self._charged += credits

    def remaining(self, now: float) -> float:
        self.settle(now)
        return float((self._start - self._held).quantize(_FOUR_PLACES))

    def charged(self, now: float) -> float:
        self.settle(now)
        return float(self._charged.quantize(_FOUR_PLACES))
