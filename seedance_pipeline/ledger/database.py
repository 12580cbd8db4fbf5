"""The ledger's database: a SQLite file under the data directory, or a shared PostgreSQL.

`SEEDANCE_LEDGER_URL` names it (`postgresql://user:pass@host:port/db`); unset, it is
`<data_dir>/state/ledger.sqlite3`. One engine per database per process; the schema is brought
up to date by the numbered migrations in `migrations.py` the first time a process opens it.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, TextClause, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from ..settings import SettingError
from .migrations import migrate

LEDGER_URL_ENV = "SEEDANCE_LEDGER_URL"

# How long a writer waits for another's lock before SQLite gives up (its busy timeout).
LOCK_WAIT_SECONDS = 60
# A database that stops answering (a restart, a failover) is waited for this long, tried again
# every OUTAGE_RETRY_SECONDS, by whatever cannot simply stop: the follower, and the recording
# of a create's answer (it cannot be asked for twice).
OUTAGE_SECONDS = 120.0
OUTAGE_RETRY_SECONDS = 5.0

_ENGINES: dict[str, Engine] = {}
_MIGRATED: set[str] = set()
_LOCK = threading.Lock()


def ledger_url(data_dir: str | os.PathLike) -> str:
    """`SEEDANCE_LEDGER_URL`, else the SQLite file under `data_dir`."""
    configured = os.environ.get(LEDGER_URL_ENV, "").strip()
    if configured:
        return configured
    return f"sqlite:///{(Path(data_dir) / 'state' / 'ledger.sqlite3').resolve()}"


def _driver_url(url: str) -> str:
    """The SQLAlchemy URL: PostgreSQL through psycopg 3; a bare path means a SQLite file."""
    if "://" not in url:
        return f"sqlite:///{Path(url).resolve()}"
    scheme, rest = url.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        url = f"postgresql+psycopg://{rest}"
    elif scheme.split("+")[0] not in ("sqlite", "postgresql"):
        raise SettingError(
            f"{LEDGER_URL_ENV} must be a postgresql:// URL (or unset for the SQLite file), "
            f"not {scheme}://…"
        )
    try:
        make_url(url)
    except (ValueError, ArgumentError):
        raise _unreadable_url() from None
    return url


def _unreadable_url() -> SettingError:
    """A URL that cannot be read (a port that is not a number): not shown, it has a password."""
    return SettingError(
        f"{LEDGER_URL_ENV} is not a URL of the form "
        "postgresql://user:password@host:port/database: check it"
    )


def safe_url(url: str) -> str:
    """`url` with its password hidden, for messages; query values too (`?password=…`)."""
    parsed = make_url(_driver_url(url))
    shown = parsed.set(query={}).render_as_string(hide_password=True)
    return shown + "".join(f"{'&' if n else '?'}{k}=***" for n, k in enumerate(parsed.query))


def _sqlite_file(url: str) -> Path:
    return Path(make_url(url).database)


def ledger_exists(url: str) -> bool:
    """Whether there is a ledger at `url` to read (opening a SQLite one creates its file)."""
    url = _driver_url(url)
    return not url.startswith("sqlite") or _sqlite_file(url).exists()


def _sqlite_engine(url: str) -> Engine:
    _sqlite_file(url).parent.mkdir(parents=True, exist_ok=True)
    # A run's threads (submission, follower, downloads, leases) each hold a connection at
    # times: enough of them stay open that none is reopened per query.
    engine = create_engine(
        url, connect_args={"timeout": LOCK_WAIT_SECONDS}, pool_size=16, max_overflow=16
    )

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # transactions begin where we say
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=FULL")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        # Writers take the lock up front, so two claims never both read "free".
        reading = connection.get_execution_options().get("read_only", False)
        connection.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

    return engine


# libpq waits for an unreachable server, and for one whose network went silent, as long as
# the kernel does (minutes); these bound both, unless the URL sets them itself.
CONNECT_TIMEOUT_SECONDS = 10


def _postgres_timeouts(url: str) -> dict[str, int]:
    """A connection attempt ends after CONNECT_TIMEOUT_SECONDS; an idle connection is probed
    after 10 s and dropped 15 s later without answers, and one whose sent data goes
    unacknowledged for 30 s is dropped (a network partition, a failover's lost packets)."""
    given = make_url(url).query
    timeouts = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": 30_000,
    }
    return {name: value for name, value in timeouts.items() if name not in given}


def _engine(url: str) -> Engine:
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is not None and url.startswith("sqlite") and not _sqlite_file(url).exists():
            # The file was deleted or moved: pooled connections would write to a ghost.
            engine.dispose()
            engine = None
            _MIGRATED.discard(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = _sqlite_engine(url)
            else:
                try:
                    engine = create_engine(
                        url,
                        pool_size=5,
                        max_overflow=10,
                        pool_pre_ping=True,
                        connect_args=_postgres_timeouts(url),
                    )
                except (ValueError, ArgumentError):  # `?port=x`
                    raise _unreadable_url() from None
            _ENGINES[url] = engine
        return engine


class LedgerBusy(RuntimeError):
    """Another writer held the ledger's lock longer than this transaction could wait."""


class LedgerUnreachable(RuntimeError):
    """The ledger's database did not answer for longer than a caller could wait."""


def _lock_timed_out(exc: OperationalError) -> bool:
    """SQLite's `database is locked`, or PostgreSQL's lock_timeout (SQLSTATE 55P03)."""
    return getattr(exc.orig, "sqlstate", None) == "55P03" or "locked" in str(exc.orig)


class Database:
    """Transactions on the ledger's database (created and migrated on first use)."""

    def __init__(self, url: str):
        self.url = _driver_url(url)
        self.engine = _engine(self.url)
        self.is_postgres = self.engine.dialect.name == "postgresql"
        with _LOCK:
            if self.url not in _MIGRATED:
                with self.transaction() as db:
                    migrate(db, self.is_postgres)
                _MIGRATED.add(self.url)

    def __repr__(self) -> str:
        return f"Database({safe_url(self.url)!r})"

    @contextmanager
    def _named(self) -> Iterator[None]:
        """A database error leaves with a note naming the ledger (what the CLI prints)."""
        try:
            yield
        except DBAPIError as exc:
            exc.add_note(f"the ledger, {safe_url(self.url)}")
            raise

    @contextmanager
    def transaction(self, lock_wait: float | None = None) -> Iterator[Connection]:
        """One durable write transaction (committed on exit, rolled back on error).

        Raises:
            LedgerBusy: with `lock_wait`, another writer held the lock longer than that.
        """
        if lock_wait is None:
            with self._named(), self.engine.connect() as connection, connection.begin():
                yield connection
            return
        wait_ms = max(1, int(lock_wait * 1000))
        with self._named(), self.engine.connect() as connection:
            raw = connection.connection.dbapi_connection
            try:
                if not self.is_postgres:  # BEGIN IMMEDIATE waits this long for the lock
                    raw.execute(f"PRAGMA busy_timeout = {wait_ms}")
                with connection.begin():
                    if self.is_postgres:
                        connection.exec_driver_sql(f"SET LOCAL lock_timeout = {wait_ms}")
                    yield connection
            except OperationalError as exc:
                if not _lock_timed_out(exc):  # a full disk, a read-only file: not a lock
                    raise
                raise LedgerBusy(f"the ledger stayed locked for {lock_wait:.1f} s") from exc
            finally:
                if not self.is_postgres:
                    raw.execute(f"PRAGMA busy_timeout = {LOCK_WAIT_SECONDS * 1000}")

    def ping(self) -> None:
        """Raises what the database raises when it does not answer."""
        with self.read() as db:
            db.execute(sql("SELECT 1"))

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot."""
        with (
            self._named(),
            self.engine.connect().execution_options(read_only=True) as connection,
            connection.begin(),
        ):
            yield connection


@functools.cache
def sql(statement: str) -> TextClause:
    """A SQL statement with `:name` parameters, the same text on SQLite and PostgreSQL.

    Built once per text: the ledger runs the same few statements thousands of times a day.
    """
    return text(statement)
