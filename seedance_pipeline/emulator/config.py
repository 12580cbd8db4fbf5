"""Settings of the local EvoLink emulator."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..seedance import PriceTable

DEFAULT_API_KEY = "sk-evo-local-emulator"


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator listens, bills, paces tasks and misbehaves."""

    host: str = "127.0.0.1"
    port: int = 8790
    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    credits: float = 100000.0
    time_scale: float = 1.0
    rate_limit: float | None = None
    error_rate: float = 0.0
    task_failure_rate: float = 0.0
    link_ttl: float = 86400.0
    state_dir: Path | None = None
    denied_models: tuple[str, ...] = ()
    drop_rate: float = 0.0
    price_table: PriceTable = field(default_factory=PriceTable.load)
    seed: int | None = None

    def __post_init__(self) -> None:
        state_dir = self.state_dir
        if state_dir is None:
            state_dir = tempfile.mkdtemp(prefix="seedance-emulator-")
        object.__setattr__(self, "state_dir", Path(state_dir))
        object.__setattr__(self, "denied_models", tuple(self.denied_models))
