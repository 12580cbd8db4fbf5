"""Where videos are kept and how local media become URLs the API can fetch."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Protocol

from .catalog import file_digest
from .ledger import Ledger, pid_alive
from .seedance import Client, SeedanceError

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


class VideoStore(Protocol):
    def scratch_path(self, partition: str, prompt_id: str) -> Path:
        """Where to download a video before it is checked and kept."""

    def put(self, local: Path, partition: str, prompt_id: str) -> str:
        """Keep the checked file (it leaves `local`); returns its key under the root."""

    def uri(self, key: str) -> str:
        """The stored video's URI, for tables."""


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

    def scratch_path(self, partition: str, prompt_id: str) -> Path:
        folder = self.root / "videos" / partition
        folder.mkdir(parents=True, exist_ok=True)
        remove_orphaned_temporaries(folder)
        return folder / f".{prompt_id}.mp4.{os.getpid()}.tmp"

    def put(self, local: Path, partition: str, prompt_id: str) -> str:
        key = f"videos/{partition}/{prompt_id}.mp4"
        os.replace(local, self.root / key)
        return key

    def uri(self, key: str) -> str:
        return str((self.root / key).resolve())
