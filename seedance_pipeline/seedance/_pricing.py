"""Credits a Seedance 2.0 request reserves, from one price table.

The default table is `prices.json` beside this file (EvoLink's per-second rates; 1080p is our
assumption of the 720p rate x 2.25). It has no Mini tier: its prices are not published, and a
rate the table lacks is unknown (None), never 0. Point `SEEDANCE_PRICE_TABLE` at a JSON file of
the same shape to override it. The emulator reserves `estimate_credits` of its own table.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from pathlib import Path

from ._rules import DEFAULT_DURATION, DEFAULT_QUALITY, MEDIA_LIMITS, MODELS, QUALITIES

PRICE_TABLE_ENV = "SEEDANCE_PRICE_TABLE"
_COLUMNS = ("without_reference_video", "with_reference_video")
_FOUR_PLACES = Decimal("0.0001")
# The most any number in a price table may be: far above any real price, and small enough that
# a task's credits (up to 15 s at such a rate) stay exact to four places in `decimal`'s 28 digits.
_MOST = 1_000_000
_VIDEO = MEDIA_LIMITS["video"]  # how long reference videos may be


class _Shape(ValueError):
    """What is wrong with a price table's JSON."""


def _check_shape(data: object, keys: list[str]) -> None:
    """Raises _Shape saying what is wrong with a price table's JSON. Rates are looked up as
    requests are planned and costed: a table of the wrong shape is refused before a run spends
    credits, not when its tables are written."""
    if not isinstance(data, dict):
        raise _Shape(f"must be a JSON object, not {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    unknown = sorted(set(data) - set(keys))
    if missing or unknown:
        said = "; ".join(
            f"{what}: {', '.join(names)}"
            for what, names in (("missing", missing), ("unknown", unknown))
            if names
        )
        raise _Shape(f"needs exactly the keys {', '.join(keys)} ({said})")
    tiers = sorted({spec.tier for spec in MODELS.values()})
    for tier, table in _object(data["credits_per_second"], "credits_per_second").items():
        _one_of(tier, tiers, "credits_per_second")  # "Standard" would price nothing
        for column, rates in _object(table, f"credits_per_second.{tier}").items():
            _one_of(column, _COLUMNS, f"credits_per_second.{tier}")
            where = f"credits_per_second.{tier}.{column}"
            for quality, rate in _object(rates, where).items():
                _one_of(quality, QUALITIES, where)
                _number(rate, f"{where}.{quality}")
    for currency, rate in _object(data["money_per_credit"], "money_per_credit").items():
        _number(rate, f"money_per_credit.{currency}")


def _object(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise _Shape(f"has {where} = {json.dumps(value)[:40]}; it must be an object")
    return value


def _one_of(key: str, known: Sequence[str], where: str) -> None:
    if key not in known:
        raise _Shape(f"has {where}.{key}; the keys there are {', '.join(known)}")


def _number(value: object, where: str) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and 0 < value <= _MOST):
        raise _Shape(
            f"has {where} = {json.dumps(value)[:40]}; it must be a number above 0 and at most "
            f"{_MOST:,}"
        )


@dataclass(frozen=True)
class PriceTable:
    credits_per_second: Mapping[str, Mapping[str, Mapping[str, float]]]
    money_per_credit: Mapping[str, float]
    _without_references: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def load(
        cls, path: str | os.PathLike | None = None, *, given_by: str = PRICE_TABLE_ENV
    ) -> PriceTable:
        """The table at `path`, else at `$SEEDANCE_PRICE_TABLE`, else the packaged default;
        errors name `given_by`, the setting or flag that gave the path."""
        path = path or os.environ.get(PRICE_TABLE_ENV)
        if path:
            try:
                data = json.loads(Path(path).read_text())
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot read price table {path} ({given_by}): {exc}") from None
        else:
            data = json.loads(resources.files(__package__).joinpath("prices.json").read_text())
        try:
            _check_shape(data, [f.name for f in fields(cls) if f.init])
        except _Shape as exc:
            raise ValueError(
                f"price table {path or 'prices.json'} ({given_by}) {exc}; the packaged "
                "prices.json shows the shape"
            ) from None
        return cls(**data)

    def rate(self, model: str, quality: str, with_reference_video: bool) -> Decimal | None:
        """Credits per output second, or None when the table has no such rate."""
        column = "with_reference_video" if with_reference_video else "without_reference_video"
        rate = self.credits_per_second.get(MODELS[model].tier, {}).get(column, {}).get(quality)
        return None if rate is None else Decimal(str(rate))

    def estimate_credits(
        self, body: Mapping, reference_video_seconds: Sequence[float | None] = ()
    ) -> float | None:
        """Credits reserved for `body`: output seconds x rate, with reference videos counted.

        None when the table has no rate for the model's tier and quality (Mini, by default).

        With reference videos the vendor bills (max(reference seconds, output seconds) + output
        seconds) x the lower "with reference video" rate. Reference videos of unknown length
        (None, or not given) count as long as the guide lets them be: together with the known
        ones, 15 s (each at least 2 s). So the estimate is the most the vendor may bill, as a
        budget needs, not a guess that may fall short of it.
        """
        model, quality = body["model"], body.get("quality", DEFAULT_QUALITY)
        duration = body.get("duration", DEFAULT_DURATION)
        if not body.get("video_urls"):  # then these alone set the price: worked out once each
            key = (model, quality, duration)
            if key not in self._without_references:
                rate = self.rate(model, quality, False)
                price = None if rate is None else _credits(Decimal(duration) * rate)
                self._without_references[key] = price
            return self._without_references[key]
        rate = self.rate(model, quality, True)
        if rate is None:
            return None
        known = [Decimal(str(s)) for s in reference_video_seconds if s is not None]
        ref = sum(known, Decimal(0))
        if unknown := len(body["video_urls"]) - len(known):
            ref = max(ref + unknown * _VIDEO.min_seconds, Decimal(_VIDEO.max_total_seconds))
        seconds = Decimal(duration)
        seconds = max(ref, seconds) + seconds
        return _credits(seconds * rate)

    def money(self, credits: float, currency: str) -> float | None:
        """`credits` in `currency` to 4 places, half up as credits are; None when the table
        has no rate for it (or `credits` is not known)."""
        rate = self.money_per_credit.get(currency)
        if rate is None or math.isnan(credits):
            return None
        return _credits(Decimal(str(credits)) * Decimal(str(rate)))


def _credits(exact: Decimal) -> float:
    return float(exact.quantize(_FOUR_PLACES, rounding=ROUND_HALF_UP))
