"""Where finished videos are kept: under the data directory (the default) or on S3 (`s3.py`).

A video is stored under a key relative to the storage root, `videos/<partition>/<id>.mp4`,
so that moving the data directory or the bucket prefix keeps every stored video findable.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from .ledger import pid_alive

# Folders this process has cleared of what killed writers left: once per folder, not once per
# download (a day's folder holds thousands of videos, and listing it per download is quadratic).
_CLEARED: set[Path] = set()

# `.<name>.<pid>.part` (downloads) and `.<name>.<pid>.tmp` (scratch files, tables): written,
# then renamed or uploaded.
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.(part|tmp)$")


def remove_orphaned_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files in `directory` whose writer process is gone (killed).

    A live writer's file is left alone; the directory is assumed local to this host, as the
    ledger's claims are.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for path in directory.glob(".*"):
        match = _TEMPORARY.match(path.name)
        if match and int(match.group(1)) != os.getpid() and not pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def durable_replace(source: Path, target: Path) -> None:
    """`os.replace`, then the folder's entry made durable: the file's data alone is (fsynced
    before), and after a power cut the ledger, which says it is stored, would outlive its
    name. Where a folder cannot be synced (Windows, SMB and some FUSE mounts), as SQLite
    does, the rename is taken as it is."""
    os.replace(source, target)
    with contextlib.suppress(OSError):
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def video_key(partition: str, prompt_id: str) -> str:
    """A video's key under the storage root."""
    return f"videos/{partition}/{prompt_id}.mp4"


def scratch_file(folder: Path, prompt_id: str) -> Path:
    """A per-process download name in `folder`, after clearing (once per process) what killed
    writers left."""
    folder.mkdir(parents=True, exist_ok=True)
    if folder not in _CLEARED:
        remove_orphaned_temporaries(folder)
        _CLEARED.add(folder)
    return folder / f".{prompt_id}.mp4.{os.getpid()}.tmp"


class StoreError(RuntimeError):
    """A store could not keep or read an object (S3 refused or dropped the call); the message
    names the object and the settings to check."""


class StoreRefused(StoreError):
    """The store refuses every call alike (the credentials, their permissions, a missing
    bucket): nothing is stored until the settings are fixed, so the work stops."""


class VideoStore(Protocol):
    def scratch_path(self, partition: str, prompt_id: str) -> Path:
        """Where to download a video before it is checked and kept."""

    def put(self, local_path: Path, partition: str, prompt_id: str) -> str:
        """Keep the checked file (it is gone from `local_path` after); returns its key.

        Raises:
            OSError, StoreError: it could not be kept.
        """

    def uri(self, key: str) -> str:
        """The stored video's URI for tables: an absolute path or `s3://bucket/key`."""

    def stored_size(self, key: str) -> int | None:
        """The size in bytes of the video stored under `key`; None when none is."""


class LocalVideoStore:
    """Videos under `<data_dir>/videos/<partition>/<prompt_id>.mp4`."""

    def __init__(self, data_dir: str | os.PathLike):
        self.root = Path(data_dir)

    def scratch_path(self, partition: str, prompt_id: str) -> Path:
        # Beside the final name, so that `put` is an atomic rename.
        return scratch_file(self.root / "videos" / partition, prompt_id)

    def put(self, local_path: Path, partition: str, prompt_id: str) -> str:
        key = video_key(partition, prompt_id)
        (self.root / key).parent.mkdir(parents=True, exist_ok=True)
        durable_replace(local_path, self.root / key)
        return key

    def uri(self, key: str) -> str:
        # Keys recorded before they were relative are absolute paths: `root / key` is `key`.
        return str((self.root / key).resolve())

    def stored_size(self, key: str) -> int | None:
        path = self.root / key
        return path.stat().st_size if path.is_file() else None


def temporary_scratch(partition: str, prompt_id: str) -> Path:
    """A scratch name outside the data directory, for stores that keep nothing locally."""
    return scratch_file(Path(tempfile.gettempdir()) / "seedance-videos" / partition, prompt_id)
