"""The files API's intake: measure an upload, accept images (and video and audio), store it."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

from ..media import MediaError, measure
from .state import EmulatorState, FileRecord

MAX_BYTES = 100 * 1024 * 1024
MAX_FILES = 100  # EvoLink's tools: 100 files per user (500 for VIP accounts)
FILE_TTL = 72 * 3600
IMAGE_FORMATS = ("jpeg", "png", "gif", "webp")
_MIME = {
    ("image", "jpeg"): "image/jpeg",
    ("image", "png"): "image/png",
    ("image", "gif"): "image/gif",
    ("image", "webp"): "image/webp",
    ("video", "mp4"): "video/mp4",
    ("video", "mov"): "video/quicktime",
    ("audio", "mp3"): "audio/mpeg",
    ("audio", "wav"): "audio/wav",
}
_EXT = {"jpeg": "jpg", "mov": "mov"}


class UploadRejected(ValueError):
    """The upload is empty, too large, or not an image, video or audio file."""


def _safe_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(name or "")).strip("._")
    return name or "upload"


def ingest(
    state: EmulatorState, data: bytes, original_name: str, file_name: str | None, upload_path: str
) -> FileRecord:
    """Measure `data`, store it under a new file id, and record it.

    Raises:
        UploadRejected: the content is not accepted.
    """
    if not data:
        raise UploadRejected("the file is empty")
    if len(data) > MAX_BYTES:
        raise UploadRejected(f"the file is {len(data)} bytes; at most {MAX_BYTES} bytes")
    file_id = f"file_{secrets.token_hex(8)}"
    folder = state.files_dir / file_id
    folder.mkdir(parents=True)
    probe = folder / ".probe"
    probe.write_bytes(data)
    try:
        facts = _measure_any(probe)
        mime = _MIME.get((facts.kind, facts.format), f"{facts.kind}/{facts.format}")
        name = _safe_name(file_name or original_name)
        if facts.kind != "image" and not Path(name).suffix:
            name = f"{name}.{_EXT.get(facts.format, facts.format)}"
        probe.rename(folder / name)
    except UploadRejected:
        probe.unlink()
        folder.rmdir()
        raise
    now = time.time()
    record = FileRecord(
        file_id,
        name,
        original_name or name,
        len(data),
        mime,
        upload_path,
        facts,
        now,
        now + FILE_TTL,
    )
    state.add_file(record)
    return record


def _measure_any(path: Path):
    for kind in ("image", "video", "audio"):
        try:
            facts = measure(path, kind)
        except (MediaError, OSError):
            continue
        if kind == "image" and facts.format not in IMAGE_FORMATS:
            raise UploadRejected(
                f"image format {facts.format} is not accepted; use {', '.join(IMAGE_FORMATS)}"
            )
        return facts
    raise UploadRejected("not an image (jpeg, png, gif, webp), video or audio file")
