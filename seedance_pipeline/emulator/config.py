"""Settings of the local EvoLink emulator.

The emulator prices from its own table, `prices.json` beside this file: the pipeline's bundled
table plus a `mini` tier. Mini prices are not published anywhere we have read; the table's mini
rates are OUR ASSUMPTION: 0.7 x the fast tier's rates (480p and 720p, as mini offers).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..seedance import PriceTable
from ..seedance._rules import MODELS, TIER_QUALITIES

DEFAULT_API_KEY = "sk-evo-local-emulator"
PRICES = Path(__file__).with_name("prices.json")
LINK_FAULTS = (
    "foreign_host",
    "private_redirect",
    "endless",
    "slow_drip",
    "html",
    "truncated",
    "oversize",
    "wrong_video",
)
# Status queries may go this many times faster than creates unless poll_rate_limit is set.
POLL_RATE_MULTIPLE = 5
POLL_FAULTS = ("queued", "completed_without_results", "transient_404", "non_json", "huge_body")


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator listens, bills, paces tasks and misbehaves.

    Every `*_rate` is a probability per request (error_rate) or per created task (the rest),
    drawn from one random source seeded by `seed`; what was injected shows in the ledger.
    """

    host: str = "127.0.0.1"
    port: int = 8790
    api_key: str = field(default=DEFAULT_API_KEY, repr=False)
    credits: float = 100000.0
    time_scale: float = 1.0
    # Requests per second: creates (and uploads, in their own bucket) ...
    rate_limit: float | None = None
    # ... and status queries and credits; None: POLL_RATE_MULTIPLE x rate_limit.
    poll_rate_limit: float | None = None
    error_rate: float = 0.0
    task_failure_rate: float = 0.0
    link_ttl: float = 86400.0
    state_dir: Path | None = None
    denied_models: tuple[str, ...] = ()
    drop_rate: float = 0.0
    price_table: PriceTable = field(default_factory=lambda: PriceTable.load(PRICES))
    seed: int | None = None
    # The task is made and billed, then a gateway answers 502, 503 or 504 (HTML or JSON).
    post_create_error_rate: float = 0.0
    # The task is made and billed, then the 200 answer is not JSON, cut short, or has no id.
    garbled_create_rate: float = 0.0
    # The task's result link misbehaves in one of `link_faults` (kinds in LINK_FAULTS) ...
    link_fault_rate: float = 0.0
    link_faults: tuple[str, ...] = LINK_FAULTS
    # ... for its first `link_fault_heal_after` fetches (answers, for foreign_host); None: always.
    link_fault_heal_after: int | None = None
    # Seconds between the bytes of a slow_drip link.
    link_drip_seconds: float = 1.0
    # The task's first `poll_fault_polls` queries misbehave in one of `poll_faults`.
    poll_fault_rate: float = 0.0
    poll_faults: tuple[str, ...] = POLL_FAULTS
    poll_fault_polls: int = 3
    # Accept (and deliver to) http callback URLs on loopback; the vendor takes public https only.
    allow_loopback_callbacks: bool = False
    # Multiplies the vendor's callback retry delays (1, 2 and 4 s).
    callback_retry_scale: float = 1.0
    # The first this many attempts of every callback fail without being sent.
    callback_fail_first: int = 0

    def __post_init__(self) -> None:
        for name in (
            "credits",
            "time_scale",
            "link_ttl",
            "link_drip_seconds",
            "callback_retry_scale",
        ):
            if not getattr(self, name) >= 0:  # NaN too
                raise ValueError(f"{name} (--{name.replace('_', '-')}) must be at least 0")
        for name in ("rate_limit", "poll_rate_limit"):
            rate = getattr(self, name)
            if rate is not None and not 0 < rate < math.inf:  # NaN too
                flag = name.replace("_", "-")
                raise ValueError(
                    f"{name} (--{flag}) is requests per second: a number above 0 (leave it "
                    "out for no limit)"
                )
        for f in fields(self):
            if f.name.endswith("_rate") and not 0 <= getattr(self, f.name) <= 1:
                flag = f.name.replace("_", "-")
                raise ValueError(f"{f.name} (--{flag}) is a probability: from 0 to 1")
        if unpriced := [
            f"{model} {quality}"
            for model, spec in MODELS.items()
            for quality in TIER_QUALITIES[spec.tier]
            for with_video in (False, True)
            if self.price_table.rate(model, quality, with_video) is None
        ]:
            raise ValueError(
                f"the price table (--price-table) has no rate for {unpriced[0]}: the emulator "
                "reserves credits for every model and quality, as the vendor prices them all"
            )
        state_dir = self.state_dir
        if state_dir is None:
            state_dir = tempfile.mkdtemp(prefix="seedance-emulator-")
        object.__setattr__(self, "state_dir", Path(state_dir))
        if self.poll_rate_limit is None and self.rate_limit:
            object.__setattr__(self, "poll_rate_limit", self.rate_limit * POLL_RATE_MULTIPLE)
        for name, known in (("link_faults", LINK_FAULTS), ("poll_faults", POLL_FAULTS)):
            kinds = tuple(getattr(self, name))
            unknown = sorted(set(kinds) - set(known))
            if unknown or not kinds:
                given = ", ".join(unknown) or "no kind"
                flag = name.replace("_", "-")
                raise ValueError(f"{name} (--{flag}): {given}; choose from {', '.join(known)}")
            object.__setattr__(self, name, kinds)
        object.__setattr__(self, "denied_models", tuple(self.denied_models))
