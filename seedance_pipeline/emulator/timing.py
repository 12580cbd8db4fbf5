"""How long the vendor takes for a task, and where a task stands at a given moment."""

from __future__ import annotations

from ..seedance import TaskStatus
from ..seedance._rules import FAST, MODELS

# Vendor-like seconds: a fixed start-up plus seconds per output second, by quality. Gives
# 30-35 s for 4-5 s at 480p, 50-74 s for 5-8 s at 720p, 90-130 s for 10-15 s at 720p.
_STARTUP = 10.0
_PER_SECOND = {"480p": 5.0, "720p": 8.0, "1080p": 14.0}
_FAST_FACTOR = 0.6
PENDING_SHARE = 0.1


def vendor_seconds(model: str, duration: int, quality: str) -> float:
    """Unscaled generation time of a task, as the vendor's typical times suggest."""
    seconds = _STARTUP + duration * _PER_SECOND[quality]
    return seconds * _FAST_FACTOR if MODELS[model].tier == FAST else seconds


def progress_at(elapsed: float, run_seconds: float) -> tuple[TaskStatus, int]:
    """Status and progress `elapsed` seconds after creation (completed: done, maybe failed)."""
    if elapsed <= 0:
        return TaskStatus.PENDING, 0
    if elapsed >= run_seconds:
        return TaskStatus.COMPLETED, 100
    share = elapsed / run_seconds if run_seconds > 0 else 1.0
    if share < PENDING_SHARE:
        return TaskStatus.PENDING, 0
    progress = int(100 * (share - PENDING_SHARE) / (1 - PENDING_SHARE))
    return TaskStatus.PROCESSING, min(99, max(1, progress))
