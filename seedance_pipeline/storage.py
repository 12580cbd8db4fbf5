"""Where videos are kept and how local media become URLs the API can fetch."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

from .catalog import file_digest
from .ledger import Ledger, pid_alive
from .seedance import Client, Download, SeedanceError

# Vendor uploads expire after 72 hours; reuse a published URL for at most 48.
PUBLISHED_URL_MAX_AGE = 48 * 3600


class PublishError(RuntimeError):
    """A local media file could not be made reachable by the API."""


# `.<name>.<pid>.part` (downloads) and `.<name>.<pid>.tmp` (tables): written, then renamed.
_TEMPORARY = re.compile(r"^\..+\.(\d+)\.(part|tmp)$")


def remove_orphaned_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files in `directory` whose writer process is gone (killed).

    A live writer's file is left alone; the data directory is assumed local to this host,
    as the ledger's claims are.
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


class Storage(Protocol):
    def publish(self, path: Path) -> str:
        """A URL the API can fetch for the local file `path`."""

    def save_video(self, url: str, partition: str, prompt_id: str) -> tuple[str, Download]:
        """Download a result to its home; returns its URI and the local copy's facts."""

    def local_copy(self, uri: str) -> Path | None:
        """The stored video as a local file (for measuring), or None if it is missing."""


class LocalStorage:
    """Videos under `<data_dir>/videos/`; media published through the files API."""

    def __init__(self, data_dir: Path, client: Client, ledger: Ledger):
        self.root = Path(data_dir)
        self.client = client
        self.ledger = ledger

    def publish(self, path: Path) -> str:
        digest = file_digest(path)
        host = self.client.files_url
        url = self.ledger.published_url(digest, host, PUBLISHED_URL_MAX_AGE)
        if url is None:
            try:
                url = self.client.upload_file(path).file_url
            except SeedanceError as exc:
                raise PublishError(
                    f"{path}: could not be published through the files API at {host} ({exc}); "
                    "check EVOLINK_API_KEY and EVOLINK_FILES_URL, or give this media an "
                    "https:// uri in the media catalog"
                ) from None
            self.ledger.record_published(digest, host, url)
        return url

    def save_video(self, url: str, partition: str, prompt_id: str) -> tuple[str, Download]:
        path = self.root / "videos" / partition / f"{prompt_id}.mp4"
        remove_orphaned_temporaries(path.parent)
        download = self.client.download(url, path)
        return str(path), download

    def local_copy(self, uri: str) -> Path | None:
        path = Path(uri)
        return path if path.is_file() else None
