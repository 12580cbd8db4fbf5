"""Numbered schema migrations, applied once each, in order, inside one locked transaction.

Version 1 is the schema the SQLite ledger had before migrations existed, so an old
`ledger.sqlite3` is recognised and brought forward. Add a migration by appending to
`MIGRATIONS`; never edit one that has shipped.
"""

from __future__ import annotations

import time

from sqlalchemy import Connection, text

from ..settings import SettingError

_V1 = [
    """CREATE TABLE IF NOT EXISTS tasks (
        partition TEXT NOT NULL,
        prompt_id TEXT NOT NULL,
        request_json TEXT NOT NULL,
        estimated_credits DOUBLE PRECISION,
        status TEXT NOT NULL,
        owner TEXT,
        claimed_at DOUBLE PRECISION NOT NULL,
        task_id TEXT UNIQUE,
        submitted_at DOUBLE PRECISION,
        progress INTEGER,
        estimated_time DOUBLE PRECISION,
        error_code TEXT,
        error_message TEXT,
        credits_reserved DOUBLE PRECISION,
        result_url TEXT,
        completed_at DOUBLE PRECISION,
        polls INTEGER NOT NULL DEFAULT 0,
        next_poll_at DOUBLE PRECISION,
        video_uri TEXT,
        video_sha256 TEXT,
        video_bytes BIGINT,
        attempt INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (partition, prompt_id)
    )""",
    """CREATE TABLE IF NOT EXISTS attempts (
        partition TEXT NOT NULL,
        prompt_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        task_id TEXT,
        status TEXT NOT NULL,
        error_code TEXT,
        error_message TEXT,
        credits_reserved DOUBLE PRECISION,
        submitted_at DOUBLE PRECISION,
        completed_at DOUBLE PRECISION,
        PRIMARY KEY (partition, prompt_id, attempt)
    )""",
    "CREATE INDEX IF NOT EXISTS tasks_due ON tasks (status, next_poll_at)",
    """CREATE TABLE IF NOT EXISTS partitions (
        partition TEXT PRIMARY KEY,
        submission_complete INTEGER NOT NULL DEFAULT 0,
        videos_requested_at DOUBLE PRECISION
    )""",
    """CREATE TABLE IF NOT EXISTS published_media (
        sha256 TEXT NOT NULL,
        files_url TEXT NOT NULL,
        url TEXT NOT NULL,
        published_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (sha256, files_url)
    )""",
]

# Leases instead of process ids, what was sent, vendor answers beyond the happy path,
# measured videos, callback tokens.
_V2 = [
    *(
        f"ALTER TABLE tasks ADD COLUMN {column}"
        for column in (
            "lease_expires_at DOUBLE PRECISION",
            "request_sha256 TEXT",
            "vendor_status TEXT",
            "poll_errors INTEGER NOT NULL DEFAULT 0",
            "not_found_since DOUBLE PRECISION",
            "width INTEGER",
            "height INTEGER",
            "duration_s DOUBLE PRECISION",
            "has_audio INTEGER",
            "download_attempts INTEGER NOT NULL DEFAULT 0",
            "callback_token_sha256 TEXT",
            "callback_at DOUBLE PRECISION",
        )
    ),
    "CREATE INDEX tasks_prompt ON tasks (prompt_id)",
    "CREATE UNIQUE INDEX tasks_callback_token ON tasks (callback_token_sha256)",
    "ALTER TABLE partitions DROP COLUMN videos_requested_at",
]

# A day's rows by status (and which hold a video) without reading the rows themselves:
# followers count them twice a second.
_V3 = ["CREATE INDEX tasks_partition_status ON tasks (partition, status, video_uri)"]

# A failed task whose prompt has left the day's accepted rows is not resubmitted.
_V4 = ["ALTER TABLE tasks ADD COLUMN resubmission_stopped INTEGER NOT NULL DEFAULT 0"]

# The task a callback named, kept before the receiver answers 2xx (the vendor never sends it
# again), until a query confirms it.
_V5 = [
    "ALTER TABLE tasks ADD COLUMN callback_task_id TEXT",
    "ALTER TABLE tasks ADD COLUMN callback_received_at DOUBLE PRECISION",
]

# The frame the plan expected of the request as sent: an `adaptive` ratio follows its media,
# which may be replaced under the same name after the task was sent.
_V6 = [
    "ALTER TABLE tasks ADD COLUMN expected_width INTEGER",
    "ALTER TABLE tasks ADD COLUMN expected_height INTEGER",
]

# Who holds a task is asked of every create's answer (a replayed answer may name an earlier
# attempt's task): without an index, each looked through every attempt the ledger has kept.
_V7 = ["CREATE INDEX attempts_task ON attempts (task_id)"]

# The catalog's campaign of a prompt when it was claimed: a day's spend stays under it when the
# prompt leaves the catalog.
_V8 = ["ALTER TABLE tasks ADD COLUMN campaign TEXT"]

# Claims released as their creates provably made no task: another run may have recorded one
# open (`unknown`) and written its record last, and every process must know it was released.
_V9 = [
    """CREATE TABLE released_claims (
        partition TEXT NOT NULL,
        prompt_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        claimed_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (partition, prompt_id, attempt, claimed_at)
    )"""
]

MIGRATIONS: list[list[str]] = [_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9]

# Any constant: PostgreSQL serialises concurrent migrators on it.
_ADVISORY_LOCK = 734_201_116


def migrate(db: Connection, is_postgres: bool) -> int:
    """Apply the migrations this database lacks; returns its version after."""
    if is_postgres:
        db.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK})
    db.execute(
        text(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
        )
    )
    current = db.execute(text("SELECT MAX(version) FROM schema_migrations")).scalar() or 0
    if current > len(MIGRATIONS):  # this worker would not keep what the newer code relies on
        raise SettingError(
            f"the ledger's schema is at version {current}, newer than this seedance-pipeline "
            f"knows ({len(MIGRATIONS)}): another worker runs a newer release; upgrade this one "
            "before it uses the ledger"
        )
    for version, statements in enumerate(MIGRATIONS, start=1):
        if version <= current:
            continue
        for statement in statements:
            db.execute(text(statement))
        db.execute(
            text("INSERT INTO schema_migrations VALUES (:v, :t)"), {"v": version, "t": time.time()}
        )
    return len(MIGRATIONS)
