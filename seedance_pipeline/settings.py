"""Where the data lives, checked so that a slip never starts an empty data directory."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "SEEDANCE_DATA_DIR"
DEFAULT_DATA_DIR = Path("data")


class SettingError(ValueError):
    """A setting is missing or malformed; the message names it and what to do."""


def data_dir() -> Path:
    """`SEEDANCE_DATA_DIR`, else `./data` when it holds a catalog.

    A relative default that finds no catalog means the command runs from another folder: a
    new, empty data directory there would hold no ledger, and paying again would follow.

    Raises:
        SettingError: SEEDANCE_DATA_DIR is unset and `./data/catalog` does not exist.
    """
    configured = os.environ.get(DATA_DIR_ENV, "").strip()
    if configured:
        return Path(configured)
    if not (DEFAULT_DATA_DIR / "catalog").is_dir():
        raise SettingError(
            f"no {DEFAULT_DATA_DIR / 'catalog'} in {Path.cwd()}: run from the project folder "
            f"or set {DATA_DIR_ENV} to your data directory (the one holding catalog/ and state/)"
        )
    return DEFAULT_DATA_DIR
