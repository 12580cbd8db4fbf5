"""A throwaway PostgreSQL server on loopback, for the ledger's tests and benchmarks."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from .fault_support import free_port


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be started here."""


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


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """Start a cluster with the machine's `initdb`/`pg_ctl`; yields `postgresql://…@host:port`.

    Run as root, the server runs as the `postgres` user (initdb refuses root).

    Raises:
        PostgresUnavailable: no server binaries, or the server would not start.
    """
    bindir = _postgres_bin()
    if bindir is None:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries (initdb, pg_ctl): install postgresql"
        )
    # Not under pytest's tmp folder: the `postgres` user cannot enter root's private folders.
    root = Path(tempfile.mkdtemp(prefix="seedance-postgres-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    pg_ctl = [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w"]
    # 1 MB WAL segments (16 by default) and little WAL kept: each CREATE DATABASE logs a copy of
    # its template (about 8 MB), and a clean CI machine's disk may be small.
    initdb = [
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-A",
        "trust",
        "-U",
        "postgres",
        "--wal-segsize=1",
    ]
    options = (
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        " -c min_wal_size=2MB -c max_wal_size=16MB"
    )
    try:
        for step in (
            [*as_user, *initdb],
            [*pg_ctl, "-o", options, "-l", str(root / "log"), "start"],
        ):
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode:
                raise PostgresUnavailable(f"{' '.join(step)} failed: {done.stderr.strip()}")
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def new_database(server: str) -> str:
    """A fresh, empty database on `server`; returns its URL."""
    import psycopg

    name = f"ledger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


def drop_database(url: str) -> None:
    """Drop the database `new_database` made, closing what still holds it."""
    import psycopg

    server, name = url.rsplit("/", 1)
    with psycopg.connect(f"{server}/postgres", autocommit=True) as db:
        db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
