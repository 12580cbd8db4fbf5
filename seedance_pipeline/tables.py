"""Per-partition Parquet tables, `warehouse/<asset>/<partition>.parquet` under the storage root:
the data directory (here) or an S3 prefix (`s3.py`)."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
from pathlib import Path
from typing import Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .statuses import Status
from .storage import durable_replace, remove_orphaned_temporaries


def table_key(asset: str, partition: str) -> str:
    return f"warehouse/{asset}/{partition}.parquet"


def not_written(where: str, asset: str, partition: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{where}: not written yet; materialise {asset} for {partition} "
        f"(`seedance-pipeline run {partition}` writes every table of the day, sending first "
        "what it has not sent)"
    )


_TEXT, _NUMBER, _COUNT, _FLAG = pa.large_string(), pa.float64(), pa.int64(), pa.bool_()
_TIME = pa.timestamp("us", tz="UTC")
# Every column's type in every table, so that each day's file has the same schema and a year of
# them reads as one dataset: left to pandas, a day where a column is empty (every row rejected,
# no campaign) writes it as null or float, and no reader can combine that with the other days.
COLUMN_TYPES: dict[str, pa.DataType] = {
    **dict.fromkeys(
        ["prompt_id", "scheduled_date", "campaign", "model", "prompt", "quality", "aspect_ratio"]
        + ["status", "task_id", "error_code", "error_message", "video_uri", "video_sha256"]
        + ["request_json", "request_sha256", "media_sha256", "partition"],
        _TEXT,
    ),
    **dict.fromkeys(
        ["generate_audio", "web_search", "has_audio", "request_changed", "in_catalog"], _FLAG
    ),
    **dict.fromkeys(
        ["duration", "video_bytes", "width", "height", "expected_width", "expected_height"]
        + ["attempts", "attempt", "tasks", "refused", "resubmissions"]
        + [s.value for s in Status],
        _COUNT,
    ),
    **dict.fromkeys(
        ["estimated_credits", "credits_estimated", "credits_reserved", "credits_charged"]
        + ["credits_reserved_earlier", "credits_failed_reserved", "credits_at_risk"]
        + ["credits_drift", "credits_per_delivered_second"]
        + ["duration_s", "seconds_delivered", "cost_cny", "cost_usd"],
        _NUMBER,
    ),
    "submitted_at": _TIME,
    "completed_at": _TIME,
    "errors": pa.list_(pa.string()),
}
# Where a table's column differs from the rest: the ledger's own epoch seconds.
_TABLE_TYPES = {"submissions": {"submitted_at": _NUMBER}}


def parquet_bytes(frame: pd.DataFrame, asset: str) -> bytes:
    """`frame` as Parquet with the warehouse's types for `asset` (`COLUMN_TYPES`; a column not
    there is typed from its values)."""
    types = COLUMN_TYPES | _TABLE_TYPES.get(asset, {})
    if others := [c for c in frame.columns if c not in types]:  # typed from their values
        inferred = pa.Schema.from_pandas(frame[others], preserve_index=False)
        types |= dict(zip(inferred.names, inferred.types, strict=True))
    schema = pa.schema([(c, types[c]) for c in frame.columns])
    empty_times = [c for c in frame.columns if types[c] == _TIME and frame[c].dtype.kind == "f"]
    if empty_times:  # all empty, so pandas made them NaN floats
        frame = frame.assign(**{c: pd.NaT for c in empty_times})
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), buffer)
    return buffer.getvalue()


def read_parquet(source: str | os.PathLike | bytes) -> pd.DataFrame:
    """A table read on the calling thread. pyarrow's reader threads, torn down at interpreter
    exit, aborted about 1 process in 20 that had read a table from memory (SIGABRT, "terminate
    called without an active exception", apache/arrow#34314): a `run` that had done its work
    exited -6."""
    return pd.read_parquet(
        io.BytesIO(source) if isinstance(source, bytes) else source, use_threads=False
    )


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


class TableStore(Protocol):
    location: str  # where the warehouse is, for messages

    def write(self, frame: pd.DataFrame, asset: str, partition: str) -> str:
        """Write a partition's table atomically (a reader sees the old or the new one); its URI."""

    def write_if(
        self, frame: pd.DataFrame, asset: str, partition: str, version: str | None
    ) -> bool:
        """`write`, if the table's version is still `version` (None: not written yet); else
        False, writing nothing: another writer wrote it since that version was read."""

    def read(self, asset: str, partition: str) -> pd.DataFrame:
        """A partition's table. Raises FileNotFoundError (naming the asset) if not written."""

    def read_all(self, asset: str) -> pd.DataFrame:
        """Every partition of a table, concatenated (empty frame if none)."""

    def partitions(self, asset: str) -> list[str]:
        """The partitions a table has been written for, sorted."""

    def versions(self, asset: str) -> dict[str, tuple[str, float]]:
        """Each partition's table's version as a listing gives it (locally inode, time and
        size, which a rewrite can repeat: `version` for a check that must not miss one), and
        when it was written (epoch seconds)."""

    def version(self, asset: str, partition: str) -> str | None:
        """One partition's table's version, for `write_if`: the same only while the table
        holds the same bytes; None if not written."""

    def write_file(self, name: str, data: bytes) -> str:
        """Keep a file beside the tables (`warehouse/<name>`), atomically; its URI."""


class LocalTableStore:
    """Tables under `<data_dir>/warehouse/`."""

    def __init__(self, data_dir: str | os.PathLike):
        self.root = Path(data_dir)
        self.location = str(self.root / "warehouse")

    def path(self, asset: str, partition: str) -> Path:
        return self.root / table_key(asset, partition)

    def write(self, frame: pd.DataFrame, asset: str, partition: str) -> str:
        return self._replace(self.path(asset, partition), parquet_bytes(frame, asset))

    def write_if(
        self, frame: pd.DataFrame, asset: str, partition: str, version: str | None
    ) -> bool:
        path = self.path(asset, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Writers of the folder's tables, in every process, take turns from the check to the
        # rename (a lock file: the table itself is a new file at each write).
        with open(path.parent / ".write.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # let go when closed
            if self.version(asset, partition) != version:
                return False
            self._replace(path, parquet_bytes(frame, asset))
        return True

    def read(self, asset: str, partition: str) -> pd.DataFrame:
        path = self.path(asset, partition)
        try:
            return read_parquet(_snapshot(path))
        except FileNotFoundError:
            raise not_written(str(path), asset, partition) from None

    def read_all(self, asset: str) -> pd.DataFrame:
        frames = []
        for partition in self.partitions(asset):
            try:
                frames.append(read_parquet(_snapshot(self.path(asset, partition))))
            except FileNotFoundError:  # taken away since listed
                continue
        return concat(frames)

    def partitions(self, asset: str) -> list[str]:
        return sorted(f.stem for f in (self.root / "warehouse" / asset).glob("*.parquet"))

    def versions(self, asset: str) -> dict[str, tuple[str, float]]:
        found = {}
        for table in (self.root / "warehouse" / asset).glob("*.parquet"):
            st = table.stat()  # each write is a rename: a new inode, whatever the clock
            found[table.stem] = (f"{st.st_ino}.{st.st_mtime_ns}.{st.st_size}", st.st_mtime)
        return found

    def version(self, asset: str, partition: str) -> str | None:
        # A digest of the bytes, as S3's ETag: inode, time and size can all come back (the
        # next file given the freed inode number, times kept to the second on some file
        # systems), and a worker holding an older version wrote over a newer table.
        try:
            return hashlib.sha256(_snapshot(self.path(asset, partition))).hexdigest()
        except FileNotFoundError:
            return None

    def write_file(self, name: str, data: bytes) -> str:
        return self._replace(self.root / "warehouse" / name, data)

    @staticmethod
    def _replace(path: Path, data: bytes) -> str:
        """Write to a temporary name, fsync, rename: never half a file under `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_orphaned_temporaries(path.parent)  # what a killed writer left
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            durable_replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return str(path)


# The local default's tables by data directory (tests and scripts).
def table_path(data_dir: str | Path, asset: str, partition: str) -> Path:
    return LocalTableStore(data_dir).path(asset, partition)


def _snapshot(path: Path) -> bytes:
    """The file's bytes from one open: pyarrow given a path opens it more than once, so a
    table another process replaced meanwhile was read half old, half new ("Page was smaller
    than expected"), and a healthy record of submissions was called unreadable."""
    return path.read_bytes()


def read_table(data_dir: str | Path, asset: str, partition: str) -> pd.DataFrame:
    return LocalTableStore(data_dir).read(asset, partition)


def read_all(data_dir: str | Path, asset: str) -> pd.DataFrame:
    return LocalTableStore(data_dir).read_all(asset)
