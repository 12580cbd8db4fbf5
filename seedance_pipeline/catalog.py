"""Reading the prompt and media catalogs (CSV or Parquet) into checked, typed rows."""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import gc
import hashlib
import io
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .seedance import (
    DEFAULT_ASPECT_RATIO,
    DEFAULT_DURATION,
    DEFAULT_QUALITY,
    MediaFacts,
    RequestOptions,
)

PROMPT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
PROMPT_REQUIRED = ("prompt_id", "scheduled_date", "model", "prompt")
MEDIA_REQUIRED = ("media_id", "kind", "uri")
LIST_COLUMNS = ("image_ids", "video_ids", "audio_ids")
MEDIA_KINDS = ("image", "video", "audio")
MEDIA_NUMBERS = ("width", "height", "duration_s", "fps", "size_bytes")
# Unicode category Cc. The prompt's own rules (tab and newlines allowed) are the vendor's, and
# break only its row (seedance/_rules.py); in any other text field they are a malformed cell.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The `user:password@` part of a URL: everything up to the last @ of the authority.
_USERINFO = re.compile(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?//)[^/?#]*@")
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}


class CatalogError(ValueError):
    """A catalog cannot be used at all; the message names file, row and column."""


@dataclass(frozen=True, kw_only=True)
class Prompt(RequestOptions):
    """One checked row of the prompt catalog: a request whose media are named by id."""

    prompt_id: str
    scheduled_date: str
    image_ids: tuple[str, ...] = ()
    video_ids: tuple[str, ...] = ()
    audio_ids: tuple[str, ...] = ()
    campaign: str | None = None


@dataclass(frozen=True)
class Media:
    """One checked row of the media catalog; `path` is set for local files.

    `facts` are what the row itself says of the file (all a remote file is known by).
    """

    media_id: str
    uri: str
    path: Path | None
    facts: MediaFacts

    @property
    def kind(self) -> str:
        return self.facts.kind


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


Record = dict[str, object]


def _read_table(path: Path, raw: bytes) -> tuple[list[str], list[tuple[int, Record]]]:
    """Column names, and each row that is not entirely blank with its row number.

    Cells are stripped text, lists or other Python values; empty cells and NaN are None.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, raw)
    if suffix == ".parquet":
        return _read_parquet(path, raw)
    raise CatalogError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")


def _read_parquet(path: Path, raw: bytes) -> tuple[list[str], list[tuple[int, Record]]]:
    """A Parquet file's rows, numbered from 1 (pandas' saved index columns left out)."""
    try:
        table = pq.ParquetFile(pa.BufferReader(raw)).read()
        index = (table.schema.pandas_metadata or {}).get("index_columns", [])
        table = table.drop_columns([c for c in index if isinstance(c, str)])
        columns = table.column_names
        values = [column.to_pylist() for column in table.columns]
    except Exception as exc:  # pyarrow raises many types for unreadable files
        raise CatalogError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise CatalogError(f"{path}: column(s) {', '.join(repeated)} appear more than once")
    rows = []
    for number, cells in enumerate(zip(*values, strict=True), start=1):
        record = {c: _cell(v) for c, v in zip(columns, cells, strict=True)}
        if any(v is not None for v in record.values()):
            rows.append((number, record))
    return columns, rows


def _read_csv(path: Path, raw: bytes) -> tuple[list[str], list[tuple[int, Record]]]:
    """A UTF-8 CSV as text cells, each row numbered by the line it starts on.

    So "row N" is line N in an editor, also after blank lines and quoted cells that span
    lines. A line with more values than the header is an error (pandas would shift columns).
    """
    raw = raw.removeprefix(codecs.BOM_UTF8)
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
        if "field larger than field limit" in str(exc):
            header = records[0][1] if records else []
            raise _long_cell_error(path, text, next_line, header) from None
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
    width, named = len(header), [(i, name) for i, name in enumerate(header) if name]
    out = []
    for line, cells in rows:
        if len(cells) > width:
            raise CatalogError(
                f"{path}, line {line}: {len(cells)} values for {width} columns; "
                "quote values that contain commas"
            )
        cells += [""] * (width - len(cells))
        record = {name: cells[i].strip() or None for i, name in named}
        if any(v is not None for v in record.values()):
            out.append((line, record))
    return [name for _, name in named], out


# One CSV cell: quoted (a doubled quote inside stands for one) or plain up to the next comma.
_CSV_CELL = re.compile(r'"([^"]*(?:""[^"]*)*)"?|([^,\r\n]*)')


def _long_cell_error(path: Path, text: str, first_line: int, header: list[str]) -> CatalogError:
    """The csv module's field-size error, told as the line and column of the cell."""
    limit = csv.field_size_limit()
    start = 0
    for _ in range(first_line - 1):
        start = text.index("\n", start) + 1
    position, index = start, 0
    while True:
        cell = _CSV_CELL.match(text, position)
        if len((cell[1] or "").replace('""', '"')) > limit or len(cell[2] or "") > limit:
            break
        position = cell.end() + 1
        if text[cell.end() : position] != ",":
            break  # not found (cannot happen: the csv module stopped on this record)
        index += 1
    line = first_line + text.count("\n", start, cell.start())
    name = header[index].strip() if index < len(header) and header[index].strip() else ""
    column = f"column {name}" if name else f"column {index + 1}"
    return CatalogError(
        f"{path}, line {line}, {column}: the cell holds more than {limit:,} characters, the most "
        "the CSV reader takes in one cell; shorten it, or use a Parquet catalog"
    )


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

    def __init__(self, path: Path, raw: bytes, required: tuple[str, ...]):
        self.path = path
        columns, self.records = _read_table(path, raw)
        missing = [c for c in required if c not in columns]
        if missing:
            raise CatalogError(f"{path}: missing required column(s) {', '.join(missing)}")

    def __iter__(self):
        """(row number, cells) of every row that is not entirely blank."""
        return iter(self.records)

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
        if column != "prompt" and _CONTROL.search(value):
            codes = ", ".join(f"U+{ord(c):04X}" for c in sorted(set(_CONTROL.findall(value))))
            raise self.error(row, column, f"contains control characters ({codes}); remove them")
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


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pauses Python's cyclic garbage collector while many lasting objects are made.

    Reading or planning 100,000 rows makes millions of small objects and no reference cycles;
    the collector would scan them again and again (about a third of the time, measured).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# Parsed catalogs by (catalog, path, data dir), with the sha256 of the bytes they came from: a
# run reads each catalog more than once (the catalog asset, then planning), and parses it once.
_CACHE: dict[tuple, tuple[bytes, object]] = {}
_CACHE_SIZE = 4
_CACHE_LOCK = threading.Lock()


def _cached(key: tuple, path: Path, parse: Callable[[bytes], object]) -> object:
    """`parse(bytes of path)`, reused while the file's bytes are unchanged."""
    if not path.is_file():
        raise CatalogError(f"{path}: no such file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CatalogError(f"{path}: unreadable ({exc.strerror})") from None
    digest = hashlib.sha256(raw).digest()
    hit = _CACHE.get(key)
    if hit is not None and hit[0] == digest:
        return hit[1]
    with collector_paused():
        result = parse(raw)
    with _CACHE_LOCK:  # a run's threads may load catalogs at the same time
        _CACHE.pop(key, None)
        _CACHE[key] = (digest, result)
        while len(_CACHE) > _CACHE_SIZE:
            del _CACHE[next(iter(_CACHE))]
    return result


def load_prompts(path: str | Path) -> list[Prompt]:
    """Every row of the prompt catalog, checked for form (not for the vendor's rules).

    Raises:
        CatalogError: missing column, bad or duplicate prompt_id, bad date or value type.
    """
    path = Path(path)
    return list(_cached(("prompts", path.resolve()), path, lambda raw: _prompts(path, raw)))


def _prompts(path: Path, raw: bytes) -> tuple[Prompt, ...]:
    rows = _Rows(path, raw, PROMPT_REQUIRED)
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
    return tuple(out)


def _date(rows: _Rows, row: int, rec: dict) -> str:
    value = rec.get("scheduled_date")
    if value is None:
        raise rows.error(row, "scheduled_date", "is required")
    if isinstance(value, dt.datetime):
        # An aware timestamp (Parquet with a time zone) means the day in UTC, as partitions do.
        value = (value if value.tzinfo is None else value.astimezone(dt.UTC)).date()
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
    key = ("media", path.resolve(), root)
    return dict(_cached(key, path, lambda raw: _media(path, raw, root)))


def _media(path: Path, raw: bytes, root: Path) -> dict[str, Media]:
    rows = _Rows(path, raw, MEDIA_REQUIRED)
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
        uri = _redacted(rows.text(row, rec, "uri", required=True))
        width, height, seconds, fps, size = (rows.number(row, rec, c) for c in MEDIA_NUMBERS)
        facts = MediaFacts(kind, None, _whole(width), _whole(height), seconds, fps, _whole(size))
        out[media_id] = Media(media_id, uri, _local_path(rows, row, uri, path.parent, root), facts)
    return out


def _whole(number: float | None) -> int | None:
    return None if number is None else int(number)


def _redacted(uri: str) -> str:
    """`uri` with its user name and password (`user:password@`) replaced by `***`.

    Such a URI is refused when planned; redacted here, its secret reaches no table, log or
    error message.
    """
    return _USERINFO.sub(r"\1***@", uri, count=1)


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
