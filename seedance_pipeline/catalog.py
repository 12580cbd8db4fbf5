"""Reading the prompt and media catalogs (CSV or Parquet) into checked, typed rows."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .seedance._rules import DEFAULT_ASPECT_RATIO, DEFAULT_DURATION, DEFAULT_QUALITY

PROMPT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PROMPT_REQUIRED = ("prompt_id", "scheduled_date", "model", "prompt")
MEDIA_REQUIRED = ("media_id", "kind", "uri")
LIST_COLUMNS = ("image_ids", "video_ids", "audio_ids")
MEDIA_KINDS = ("image", "video", "audio")
MEDIA_NUMBERS = ("width", "height", "duration_s", "fps", "size_bytes")
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}


class CatalogError(ValueError):
    """A catalog cannot be used at all; the message names file, row and column."""


@dataclass(frozen=True)
class Prompt:
    """One checked row of the prompt catalog."""

    prompt_id: str
    scheduled_date: str
    model: str
    prompt: str
    image_ids: tuple[str, ...] = ()
    video_ids: tuple[str, ...] = ()
    audio_ids: tuple[str, ...] = ()
    duration: int = DEFAULT_DURATION
    quality: str = DEFAULT_QUALITY
    aspect_ratio: str = DEFAULT_ASPECT_RATIO
    generate_audio: bool = True
    web_search: bool = False
    callback_url: str | None = None
    campaign: str | None = None


@dataclass(frozen=True)
class Media:
    """One checked row of the media catalog; `path` is set for local files."""

    media_id: str
    kind: str
    uri: str
    path: Path | None
    width: float | None = None
    height: float | None = None
    duration_s: float | None = None
    fps: float | None = None
    size_bytes: float | None = None


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (the catalog assets' data version)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_catalog(directory: Path, stem: str) -> Path:
    """`<stem>.csv` or `<stem>.parquet` in `directory` (CSV first)."""
    for suffix in (".csv", ".parquet"):
        if (directory / f"{stem}{suffix}").is_file():
            return directory / f"{stem}{suffix}"
    raise CatalogError(f"{directory}: no {stem}.csv or {stem}.parquet (set the catalog path)")


def _read_table(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """The raw table with every value as str/list/None, and the row number of each row."""
    if not path.is_file():
        raise CatalogError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for unreadable files
            raise CatalogError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
        return frame, list(range(1, len(frame) + 1))
    raise CatalogError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")


def _read_csv(path: Path) -> tuple[pd.DataFrame, list[int]]:
    """A UTF-8 CSV as text cells, each row numbered by the line it starts on.

    So "row N" is line N in an editor, also after blank lines and quoted cells that span
    lines. A line with more values than the header is an error (pandas would shift columns).
    """
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CatalogError(
            f"{path}, line {line}: byte {raw[exc.start]:#04x} is not UTF-8; save the file as UTF-8"
        ) from None
    if not text.strip():
        raise CatalogError(f"{path}: the file is empty; it needs at least a header line")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []  # (line the record starts on, cells)
    next_line = 1
    try:
        for cells in reader:
            records.append((next_line, cells))
            next_line = reader.line_num + 1
    except csv.Error as exc:
        raise CatalogError(
            f"{path}, line {reader.line_num}: {exc}; check that every quote is closed"
        ) from None
    (_, header), rows = records[0], records[1:]
    header = [name.strip() for name in header]
    if not any(header):
        raise CatalogError(f"{path}, line 1: must be the header (the column names)")
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise CatalogError(f"{path}, row 1: column(s) {', '.join(repeated)} appear more than once")
    for line, cells in rows:
        if len(cells) > len(header):
            raise CatalogError(
                f"{path}, line {line}: {len(cells)} values for {len(header)} columns; "
                "quote values that contain commas"
            )
    frame = pd.DataFrame(
        [cells + [""] * (len(header) - len(cells)) for _, cells in rows],
        columns=header,
        dtype=object,
    )
    return frame.drop(columns=[name for name in header if not name]), [line for line, _ in rows]


def _cell(value: object) -> object:
    """None for empty cells and NaN, else the value (strings stripped)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, float) and value != value:
        return None
    return value


class _Rows:
    """Walks a table with the location of each cell for error messages."""

    def __init__(self, path: Path, required: tuple[str, ...]):
        self.path = path
        self.frame, self.numbers = _read_table(path)
        missing = [c for c in required if c not in self.frame.columns]
        if missing:
            raise CatalogError(f"{path}: missing required column(s) {', '.join(missing)}")

    def __iter__(self):
        """(row number, cells) of every row that is not entirely blank."""
        for number, record in zip(self.numbers, self.frame.to_dict("records"), strict=True):
            cells = {k: _cell(v) for k, v in record.items()}
            if any(v is not None for v in cells.values()):
                yield number, cells

    def error(self, row: int, column: str, message: str) -> CatalogError:
        return CatalogError(f"{self.path}, row {row}, column {column}: {message}")

    def text(self, row: int, record: dict, column: str, required: bool = False) -> str | None:
        value = record.get(column)
        if value is None:
            if required:
                raise self.error(row, column, "is required")
            return None
        if not isinstance(value, str):
            raise self.error(row, column, f"must be text, got {value!r}")
        return value

    def integer(self, row: int, record: dict, column: str, default: int) -> int:
        value = record.get(column)
        if value is None:
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self.error(row, column, f"{value!r} is not a whole number") from None
        if not number.is_integer():
            raise self.error(row, column, f"{value!r} is not a whole number")
        return int(number)

    def number(self, row: int, record: dict, column: str) -> float | None:
        value = record.get(column)
        if value is None:
            return None
        try:
            return float(value)
        except (TypeError, ValueError):
            raise self.error(row, column, f"{value!r} is not a number") from None

    def boolean(self, row: int, record: dict, column: str, default: bool) -> bool:
        value = record.get(column)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise self.error(row, column, f"{value!r} is not true or false")

    def ids(self, row: int, record: dict, column: str) -> tuple[str, ...]:
        value = record.get(column)
        if value is None:
            return ()
        if isinstance(value, str):
            items = value.split("|")
        elif hasattr(value, "__iter__"):
            items = list(value)
        else:
            raise self.error(row, column, f"{value!r} is not a list of media ids")
        out = tuple(str(x).strip() for x in items if x is not None and str(x).strip())
        for item in out:
            if not PROMPT_ID.fullmatch(item):
                raise self.error(row, column, f"{item!r} is not a valid media id")
        return out


def load_prompts(path: str | Path) -> list[Prompt]:
    """Every row of the prompt catalog, checked for form (not for the vendor's rules).

    Raises:
        CatalogError: missing column, bad or duplicate prompt_id, bad date or value type.
    """
    rows = _Rows(Path(path), PROMPT_REQUIRED)
    seen: dict[str, int] = {}
    out = []
    for row, rec in rows:
        prompt_id = rows.text(row, rec, "prompt_id", required=True)
        if not PROMPT_ID.fullmatch(prompt_id):
            raise rows.error(row, "prompt_id", f"{prompt_id!r} must match [A-Za-z0-9_-]{{1,64}}")
        if prompt_id in seen:
            raise rows.error(row, "prompt_id", f"{prompt_id!r} repeats row {seen[prompt_id]}")
        seen[prompt_id] = row
        out.append(
            Prompt(
                prompt_id=prompt_id,
                scheduled_date=_date(rows, row, rec),
                model=rows.text(row, rec, "model", required=True),
                prompt=rows.text(row, rec, "prompt", required=True),
                image_ids=rows.ids(row, rec, "image_ids"),
                video_ids=rows.ids(row, rec, "video_ids"),
                audio_ids=rows.ids(row, rec, "audio_ids"),
                duration=rows.integer(row, rec, "duration", DEFAULT_DURATION),
                quality=rows.text(row, rec, "quality") or DEFAULT_QUALITY,
                aspect_ratio=rows.text(row, rec, "aspect_ratio") or DEFAULT_ASPECT_RATIO,
                generate_audio=rows.boolean(row, rec, "generate_audio", True),
                web_search=rows.boolean(row, rec, "web_search", False),
                callback_url=rows.text(row, rec, "callback_url"),
                campaign=rows.text(row, rec, "campaign"),
            )
        )
    return out


def _date(rows: _Rows, row: int, rec: dict) -> str:
    value = rec.get("scheduled_date")
    if value is None:
        raise rows.error(row, "scheduled_date", "is required")
    if isinstance(value, dt.datetime | pd.Timestamp):
        value = value.date()
    if isinstance(value, dt.date):
        return value.isoformat()
    try:
        return dt.date.fromisoformat(str(value)).isoformat()
    except ValueError:
        raise rows.error(row, "scheduled_date", f"{value!r} is not a date YYYY-MM-DD") from None


def load_media(path: str | Path, data_dir: str | Path) -> dict[str, Media]:
    """The media catalog by media_id; local uris resolved against the catalog's folder.

    Raises:
        CatalogError: missing column, duplicate media_id, unknown kind, bad number.
    """
    path, root = Path(path), Path(data_dir).resolve()
    rows = _Rows(path, MEDIA_REQUIRED)
    out: dict[str, Media] = {}
    for row, rec in rows:
        media_id = rows.text(row, rec, "media_id", required=True)
        if not PROMPT_ID.fullmatch(media_id):
            raise rows.error(row, "media_id", f"{media_id!r} must match [A-Za-z0-9_-]{{1,64}}")
        if media_id in out:
            raise rows.error(row, "media_id", f"{media_id!r} is listed twice")
        kind = rows.text(row, rec, "kind", required=True).lower()
        if kind not in MEDIA_KINDS:
            raise rows.error(row, "kind", f"{kind!r} is not one of {', '.join(MEDIA_KINDS)}")
        uri = rows.text(row, rec, "uri", required=True)
        out[media_id] = Media(
            media_id,
            kind,
            uri,
            _local_path(rows, row, uri, path.parent, root),
            **{c: rows.number(row, rec, c) for c in MEDIA_NUMBERS},
        )
    return out


def _local_path(rows: _Rows, row: int, uri: str, base: Path, root: Path) -> Path | None:
    scheme = uri.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri) else ""
    if scheme in ("http", "https", "s3"):
        return None
    if scheme:
        raise rows.error(
            row, "uri", f"{uri!r}: use https://, s3:// or a path relative to the catalog"
        )
    if Path(uri).is_absolute():
        raise rows.error(
            row, "uri", f"{uri!r}: absolute paths are not allowed; use a relative path"
        )
    resolved = (base / uri).resolve()
    if not resolved.is_relative_to(root):
        raise rows.error(row, "uri", f"{uri!r} points outside the data directory {root}")
    return resolved
