"""Fixtures that run the local EvoLink emulator on loopback."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from seedance_pipeline.emulator import DEFAULT_API_KEY, EmulatorConfig, running_emulator


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
