"""Fixtures that run the local EvoLink emulator on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
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


def _postgres_bin() -> Path | None:
    """The folder holding `initdb` and `pg_ctl`: PATH, `pg_config --bindir`, or Debian's."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return next((c for c in candidates if (c / "initdb").is_file()), None)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on loopback; yields `postgresql://postgres@host:port`.

    Started with the machine's `initdb`/`pg_ctl` (as the `postgres` user when run as root,
    since initdb refuses root). No server means a failed test run, never a silent skip.
    """
    bindir = _postgres_bin()
    if bindir is None:
        pytest.fail("no PostgreSQL server binaries (initdb, pg_ctl): install postgresql")
    # Not under pytest's tmp folder: the `postgres` user cannot enter root's private folders.
    root = Path(tempfile.mkdtemp(prefix="seedance-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w"]
    subprocess.run(
        [*pg_ctl, "-o", options, "-l", str(root / "log"), "start"], check=True, capture_output=True
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_postgres_database(server: str) -> str:
    """A fresh, empty database on `server`; returns its URL."""
    import psycopg

    name = f"ledger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_url(request, tmp_path) -> str:
    """A new, empty ledger database on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'ledger.sqlite3'}"
    return new_postgres_database(request.getfixturevalue("postgres_server"))
