"""Fixtures that run the local EvoLink emulator and moto's S3 server on loopback."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from seedance_pipeline.emulator import DEFAULT_API_KEY, EmulatorConfig, running_emulator

from .postgres import PostgresUnavailable, drop_database, new_database, running_postgres
from .s3_server import running_moto


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
def ledger_url(request, tmp_path) -> Iterator[str]:
    """A new, empty ledger database on each backend in turn (dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite3'}"
        return
    url = new_database(request.getfixturevalue("postgres_server"))
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory) -> Iterator[str]:
    with running_moto(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


_buckets = itertools.count()


@pytest.fixture
def s3_bucket(moto_server, monkeypatch) -> str:
    """A fresh, empty bucket on the moto server; the AWS_* variables point at it."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"seedance-test-{next(_buckets)}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return bucket
