"""What every route shares: the settings, the state store and one seeded random source."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from typing import TypeVar

from .config import EmulatorConfig
from .state import EmulatorState

T = TypeVar("T")


class Emulator:
    """Settings, state (open while the app runs) and seeded choices, safe across threads."""

    def __init__(self, config: EmulatorConfig):
        self.config = config
        self.state: EmulatorState | None = None
        self._rng = random.Random(config.seed)
        self._rng_lock = threading.Lock()

    def chance(self, p: float) -> bool:
        with self._rng_lock:
            return p > 0 and self._rng.random() < p

    def choice(self, options: Sequence[T]) -> T:
        with self._rng_lock:
            return self._rng.choice(options)
