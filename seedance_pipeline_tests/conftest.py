"""Fixtures that run the local EvoLink emulator on loopback."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from seedance_pipeline.emulator import DEFAULT_API_KEY, EmulatorConfig, running_emulator

from .postgres import PostgresUnavailable, new_database, running_postgres


@pytest.fixture
def start_emulator(tmp_path):
    """Start an emulator (fast clock, seeded) with config overrides; returns its base URL."""
    with contextlib.ExitStack() as stack:

        def start(**overrides) -> str:
            settings = {
                "port": 0,
                "time_scale": 0.002,
                "seed": 7,
                "state_dir": tmp_path / "emulator-state",
                **overrides,
            }
            return stack.enter_context(running_emulator(EmulatorConfig(**settings)))

        yield start


@pytest.fixture
def emulator(start_emulator) -> str:
    """Base URL of an emulator with default settings and a fast clock."""
    return start_emulator()


@pytest.fixture
def api_key() -> str:
    return DEFAULT_API_KEY


@pytest.fixture(scope="session")
def evolink_schema() -> dict:
    """The trimmed JSON Schema of EvoLink's answers."""
    return json.loads((Path(__file__).parent / "schemas" / "evolink.json").read_text())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session (a missing server fails the run)."""
    try:
        with running_postgres() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.fail(str(exc))


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request, tmp_path) -> str:
    """A new, empty ledger database on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite3'}"
    return new_database(request.getfixturevalue("postgres_server"))
