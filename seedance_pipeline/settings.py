"""Settings read from the environment, checked where they are used (never at import)."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from pathlib import Path

from .seedance._urls import api_root_problem

DAY_FORMAT = re.compile(r"\d{4}-\d{2}-\d{2}")
DATA_DIR_ENV = "SEEDANCE_DATA_DIR"
DEFAULT_DATA_DIR = Path("data")


class SettingError(ValueError):
    """An environment setting is malformed; the message names the variable and the fix."""


def parse_day(text: str) -> str:
    """`text` if it is a real calendar day written YYYY-MM-DD.

    Raises:
        ValueError: with a message saying what was expected.
    """
    try:
        if DAY_FORMAT.fullmatch(text):
            return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    raise ValueError(f"{text!r} is not a date YYYY-MM-DD")


def env_day(name: str, default: str) -> str:
    """The day in environment variable `name`, or `default` when unset."""
    value = os.environ.get(name, "").strip()
    try:
        return parse_day(value) if value else default
    except ValueError as exc:
        raise SettingError(f"{name}: {exc}") from None


def first_day() -> str:
    """The partitions' first day (`SEEDANCE_PARTITIONS_START`): rows dated before it never run."""
    return env_day("SEEDANCE_PARTITIONS_START", "2026-11-01")


def env_api_url(name: str, default: str) -> str:
    """The EvoLink URL in environment variable `name`, or `default` when unset."""
    value = os.environ.get(name, "").strip() or default
    if problem := api_root_problem(value, name):
        raise SettingError(f"{name} {problem}")  # not the value: it may hold a password
    return value


def env_number(name: str, cast: type = float, *, zero: bool = True, most: float | None = None):
    """The number in environment variable `name` (at most `most`), or None when unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    kind = "whole number" if cast is int else "number"
    try:
        number = cast(value)
    except ValueError:
        raise SettingError(f"{name}={value!r} is not a {kind}") from None
    if not (cast is int or math.isfinite(number)) or number < 0 or (number == 0 and not zero):
        least = "at least 0" if zero else "above 0"
        raise SettingError(f"{name}={value!r} must be a finite {kind} {least}")
    if most is not None and number > most:
        raise SettingError(f"{name}={value!r} must be at most {most}")
    return number


def data_dir() -> Path:
    """`SEEDANCE_DATA_DIR`, else `./data` when it holds a catalog.

    A relative default that finds no catalog means the command runs from another folder: a
    new, empty data directory there would hold no ledger, and paying again would follow.

    Raises:
        SettingError: SEEDANCE_DATA_DIR names no folder, or it is unset and `./data/catalog`
            does not exist.
    """
    configured = os.environ.get(DATA_DIR_ENV, "").strip()
    if configured:
        if not Path(configured).is_dir():  # a typo: a new, empty ledger would be made there
            raise SettingError(
                f"{DATA_DIR_ENV}={configured} is not a folder: set it to your data directory "
                "(the one holding catalog/ and state/), or create it first"
            )
        return Path(configured)
    if not (DEFAULT_DATA_DIR / "catalog").is_dir():
        raise SettingError(
            f"no {DEFAULT_DATA_DIR / 'catalog'} in {Path.cwd()}: run from the project folder "
            f"or set {DATA_DIR_ENV} to your data directory (the one holding catalog/ and state/)"
        )
    return DEFAULT_DATA_DIR
