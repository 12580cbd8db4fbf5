"""Reading the prompt and media catalogs (CSV or Parquet) into checked, typed rows."""

from __future__ import annotations

import codecs
import contextlib
import csv
import datetime as dt
import difflib
import gc
import hashlib
import io
import math
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import compress
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
from .settings import parse_day

PROMPT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNNAMED_INDEX = re.compile(r"__index_level_\d+__")  # pandas' name for an index it saves
_LARGEST_WHOLE = 2**63  # a table's int64 holds less
PROMPT_REQUIRED = ("prompt_id", "scheduled_date", "model", "prompt")
MEDIA_REQUIRED = ("media_id", "kind", "uri")
LIST_COLUMNS = ("image_ids", "video_ids", "audio_ids")
MEDIA_KINDS = ("image", "video", "audio")
MEDIA_NUMBERS = ("width", "height", "duration_s", "fps", "size_bytes")
# Every column read; other columns are left alone, unless one looks like a misspelt one of
# these (a missing `generate_audio` would silently mean audio, and its price).
PROMPT_COLUMNS = (
    *PROMPT_REQUIRED,
    *LIST_COLUMNS,
    "duration",
    "quality",
    "aspect_ratio",
    "generate_audio",
    "web_search",
    "callback_url",
    "campaign",
)
MEDIA_COLUMNS = (*MEDIA_REQUIRED, *MEDIA_NUMBERS)
_PRICED = ("generate_audio", "aspect_ratio")  # absent, their defaults cost or change most
# Unicode category Cc. The prompt's own rules (tab and newlines allowed) are the vendor's, and
# break only its row (seedance/_rules.py); in any other text field they are a malformed cell.
# Control characters, and the bidirectional marks, overrides and isolates that reorder text
# on a screen (a campaign that reads otherwise than it is).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
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


def find_catalog(directory: Path, stem: str, hint: str | None = None) -> Path:
    """`<stem>.csv` or `<stem>.parquet` in `directory`.

    Raises:
        CatalogError: neither is there (the message ends in `hint`, by default the setting
            that says where the data directory is), or both are: which one holds the rows is
            not ours to guess (one left behind after moving to the other lost the new rows).
    """
    found = [p for p in (directory / f"{stem}.csv", directory / f"{stem}.parquet") if p.is_file()]
    if len(found) == 2:
        raise CatalogError(
            f"{directory}: both {stem}.csv and {stem}.parquet are there; keep the one that is "
            "the catalog and move the other away"
        )
    if found:
        return found[0]
    hint = hint or "set SEEDANCE_DATA_DIR to the folder that holds catalog/"
    raise CatalogError(f"{directory}: no {stem}.csv or {stem}.parquet; {hint}")


Columns = dict[str, list]


def _read_table(path: Path, raw: bytes) -> tuple[list[int], Columns]:
    """The number of each row that is not entirely blank, and each column's cells in them.

    Cells are stripped text, lists or other Python values; empty cells and NaN are None.
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, raw)
    if suffix == ".parquet":
        return _read_parquet(path, raw)
    raise CatalogError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")


def _read_parquet(path: Path, raw: bytes) -> tuple[list[int], Columns]:
    """A Parquet file's rows, numbered from 1 (pandas' saved index columns left out)."""
    try:
        table = pq.ParquetFile(pa.BufferReader(raw)).read(use_threads=False)  # read_parquet
        # A named index (`set_index("prompt_id")`) is a column of the catalog's, kept.
        index = (table.schema.pandas_metadata or {}).get("index_columns", [])
        table = table.drop_columns([c for c in index if _UNNAMED_INDEX.fullmatch(str(c))])
        columns = table.column_names
        values = [[_cell(v) for v in column.to_pylist()] for column in table.columns]
    except Exception as exc:  # pyarrow raises many types for unreadable files
        raise CatalogError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if repeated:
        raise CatalogError(f"{path}: column(s) {', '.join(repeated)} appear more than once")
    numbers = list(range(1, table.num_rows + 1))
    rows = enumerate(zip(*values, strict=True))
    blank = {i for i, cells in rows if cells.count(None) == len(columns)}
    if blank:
        numbers = [n for i, n in enumerate(numbers) if i not in blank]
        values = [[v for i, v in enumerate(cells) if i not in blank] for cells in values]
    return numbers, dict(zip(columns, values, strict=True))


def _read_csv(path: Path, raw: bytes) -> tuple[list[int], Columns]:
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
    if not text or text.isspace():  # (not text.strip(): a copy of the whole file)
        raise CatalogError(f"{path}: the file is empty; it needs at least a header line")
    records, lines = _csv_records(path, text)
    header, rows = [name.strip() for name in records[0]], records[1:]
    if not any(header):
        raise CatalogError(f"{path}, line 1: must be the header (the column names)")
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise CatalogError(f"{path}, row 1: column(s) {', '.join(repeated)} appear more than once")
    width, named = len(header), [i for i, name in enumerate(header) if name]
    lengths = list(map(len, rows))
    if rows and max(lengths) > width:
        i = next(i for i, n in enumerate(lengths) if n > width)
        raise CatalogError(
            f"{path}, line {lines[i + 1]}: {lengths[i]} values for {width} columns; "
            "quote values that contain commas"
        )
    if len(named) < width:
        rows = [[cells[i] for i in named if i < len(cells)] for cells in rows]
    filled = list(map(bool, map(str.strip, map("".join, rows))))
    numbers, kept = list(compress(lines[1:], filled)), list(compress(rows, filled))
    if kept and min(map(len, kept)) < len(named):  # short lines: the missing cells are empty
        kept = [cells + [""] * (len(named) - len(cells)) for cells in kept]
    columns = zip(*kept, strict=True) if kept else [()] * len(named)
    return numbers, {
        header[i]: [c.strip() or None for c in cells]
        for i, cells in zip(named, columns, strict=True)
    }


def _csv_records(path: Path, text: str) -> tuple[list[list[str]], Sequence[int]]:
    """The records of a CSV text, and the line each starts on."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    with contextlib.suppress(csv.Error):  # told below, with its line
        records = list(reader)
        if reader.line_num == len(records):  # no record spans lines: record i is on line i + 1
            return records, range(1, len(records) + 1)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records, lines, next_line = [], [], 1
    try:
        for cells in reader:
            records.append(cells)
            lines.append(next_line)
            next_line = reader.line_num + 1
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise _long_cell_error(path, text, next_line, records[0] if records else []) from None
        raise CatalogError(
            f"{path}, line {reader.line_num}: {exc}; check that every quote is closed"
        ) from None
    return records, lines


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


class _CellError(CatalogError):
    """A bad cell, with its row: of several, the first by row (then column) is reported."""

    def __init__(self, message: str, row: int):
        super().__init__(message)
        self.row = row


def _misspelt(name: str, absent: list[str]) -> str | None:
    """The column of `absent` that `name` looks like a misspelling of: nearly the same
    letters (`image_id`), or, for the columns whose default sets the price, the same first
    word (`generate_sound`). A name extending a column's (`campaign_id`) is the user's own."""
    plain = name.strip().lower().replace(" ", "_").replace("-", "_")
    candidates = [c for c in absent if not plain.startswith(f"{c}_")]
    close = difflib.get_close_matches(plain, candidates, n=1, cutoff=0.8)
    if close:
        return close[0]
    first = plain.split("_")[0]
    return next((c for c in _PRICED if c in candidates and c.split("_")[0] == first), None)


def _header_problem(columns: list[str], missing: list[str]) -> str:
    """What the header read as lacks, for a user who wrote the columns: one named otherwise,
    or a file separated by something other than commas."""
    for name in columns:
        if meant := _misspelt(str(name), missing):
            return f"if column {name!r} means {meant!r}, name it so"
    first = str(columns[0]) if columns else ""
    if len(columns) == 1 and (sep := next((c for c in ";\t|" if c in first), None)):
        return (
            f"the header reads as one column ({first[:80]!r}): separate the columns with "
            f"commas, not {sep!r}"
        )
    shown = ", ".join(repr(str(c)[:40]) for c in columns[:8])
    return f"the header read: {shown or 'nothing'}" + (", ..." if len(columns) > 8 else "")


class _Rows:
    """A table's cells, converted column by column, with the location of each for errors."""

    def __init__(self, path: Path, raw: bytes, required: tuple[str, ...], known: tuple[str, ...]):
        self.path = path
        self.numbers, self.columns = _read_table(path, raw)
        missing = [c for c in required if c not in self.columns]
        if missing:
            raise CatalogError(
                f"{path}: missing required column(s) {', '.join(missing)}; "
                + _header_problem(list(self.columns), missing)
            )
        absent = [c for c in known if c not in self.columns]
        for name in self.columns:
            if name not in known and (meant := _misspelt(str(name), absent)):
                raise CatalogError(
                    f"{path}: column {name!r} is not read; if it means {meant!r}, name it so "
                    f"(as it is, {meant!r} takes its default); otherwise rename it"
                )
        self._failures: list[_CellError] = []

    def __iter__(self):
        """(row number, cells) of every row that is not entirely blank."""
        names = list(self.columns)
        for row, cells in zip(self.numbers, zip(*self.columns.values(), strict=True), strict=True):
            yield row, dict(zip(names, cells, strict=True))

    def column(self, column: str, convert: Callable, distinct: bool = True) -> list:
        """`convert(row, column, cell)` of each row's cell in `column` (None where it is
        missing); with `distinct`, once per distinct cell. A failure is kept for `check`."""
        values = self.columns.get(column) or [None] * len(self.numbers)
        cells = zip(self.numbers, values, strict=True)
        try:
            if not distinct:
                return [convert(row, column, value) for row, value in cells]
            done: dict = {}
            out = []
            for row, value in cells:
                key = (type(value), value)  # 1 and True are equal, but not the same cell
                try:
                    out.append(done[key])
                except KeyError:
                    out.append(done.setdefault(key, convert(row, column, value)))
                except TypeError:  # an unhashable cell (a Parquet list)
                    out.append(convert(row, column, value))
            return out
        except _CellError as exc:
            self._failures.append(exc)
            return []

    def check(self) -> None:
        """Raise the first failure by row, of those of the columns converted so far."""
        if self._failures:
            raise min(self._failures, key=lambda exc: exc.row)

    def error(self, row: int, column: str, message: str) -> CatalogError:
        return _CellError(f"{self.path}, row {row}, column {column}: {message}", row)

    def text(self, row: int, record: dict, column: str, required: bool = False) -> str | None:
        return self.text_cell(row, column, record.get(column), required)

    def identifier(
        self, row: int, column: str, value: object, seen: dict[str, tuple], names_files=False
    ) -> str:
        """A required id of the catalog's form, on no earlier row (`seen`: id -> the id and its
        row); one that `names_files` not even in another case, for on macOS and Windows
        `Hero.mp4` is `hero.mp4`."""
        if not (isinstance(value, str) and PROMPT_ID.fullmatch(value)):
            found = self.text_cell(row, column, value, required=True)  # blank? not text?
            raise self.error(row, column, f"{found!r} must match [A-Za-z0-9_-]{{1,64}}")
        key = value.lower() if names_files else value
        if (earlier := seen.get(key)) is not None:
            same, at = earlier
            if same == value:
                raise self.error(row, column, f"{value!r} repeats row {at}")
            raise self.error(
                row,
                column,
                f"{value!r} differs from row {at}'s {same!r} only in case, and their videos would "
                "be one file on macOS and Windows: delete one row, or change the id of one not "
                "sent yet (a new id is a new prompt, sent and paid again)",
            )
        seen[key] = (value, row)
        return value

    def text_cell(
        self, row: int, column: str, value: object, required: bool = False, default=None
    ) -> str | None:
        if value is None:
            if required:
                raise self.error(row, column, "is required")
            return default
        if not isinstance(value, str):
            raise self.error(row, column, f"must be text, got {value!r}")
        if column != "prompt" and _CONTROL.search(value):
            codes = ", ".join(f"U+{ord(c):04X}" for c in sorted(set(_CONTROL.findall(value))))
            raise self.error(row, column, f"contains control characters ({codes}); remove them")
        return value

    def integer(self, row: int, column: str, value: object, default: int) -> int:
        if value is None:
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self.error(row, column, f"{value!r} is not a whole number") from None
        if not number.is_integer():
            raise self.error(row, column, f"{value!r} is not a whole number")
        if abs(number) >= _LARGEST_WHOLE:
            raise self.error(row, column, f"{value!r} is out of range")
        return int(number)

    def number(self, row: int, record: dict, column: str) -> float | None:
        value = record.get(column)
        if value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self.error(row, column, f"{value!r} is not a number") from None
        if not math.isfinite(number) or abs(number) >= _LARGEST_WHOLE:
            raise self.error(row, column, f"{value!r} is not a number in range")
        return number

    def boolean(self, row: int, column: str, value: object, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise self.error(row, column, f"{value!r} is not true or false")

    def ids(self, row: int, column: str, value: object) -> tuple[str, ...]:
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

    def date(self, row: int, column: str, value: object) -> str:
        if value is None:
            raise self.error(row, column, "is required")
        if isinstance(value, dt.datetime):
            # The day as written, in its own time zone: midnight of 20 November in Tokyo is
            # 20 November, not the 19th it is in UTC.
            value = value.date()
        if isinstance(value, dt.date):
            return value.isoformat()
        try:
            return parse_day(str(value))  # strictly YYYY-MM-DD: not 20261120 nor 2026-W47-5
        except ValueError as exc:
            raise self.error(row, column, str(exc)) from None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pauses Python's cyclic garbage collector while many lasting objects are made.

    Reading or planning 100,000 rows makes millions of small objects and no reference cycles;
    the collector would scan them again and again (about a third of the time, measured). On
    resuming, they go straight to its oldest generation (freeze, then unfreeze), so its young
    generations' passes do not scan them all once more (a fifth of planning time, measured).
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if not gc.get_freeze_count():  # else unfreeze would also thaw what others froze
            gc.freeze()
            gc.unfreeze()
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
    rows = _Rows(path, raw, PROMPT_REQUIRED, PROMPT_COLUMNS)
    unique_id = partial(rows.identifier, seen={}, names_files=True)
    text, required = rows.text_cell, partial(rows.text_cell, required=True)
    # In the order a row's cells are checked: of a row's bad cells, the first is reported.
    cells = (
        rows.column("prompt_id", unique_id, distinct=False),
        rows.column("scheduled_date", rows.date),
        rows.column("model", required),
        rows.column("prompt", required, distinct=False),
        rows.column("image_ids", rows.ids),
        rows.column("video_ids", rows.ids),
        rows.column("audio_ids", rows.ids),
        rows.column("duration", partial(rows.integer, default=DEFAULT_DURATION)),
        rows.column("quality", partial(text, default=DEFAULT_QUALITY)),
        rows.column("aspect_ratio", partial(text, default=DEFAULT_ASPECT_RATIO)),
        rows.column("generate_audio", partial(rows.boolean, default=True)),
        rows.column("web_search", partial(rows.boolean, default=False)),
        rows.column("callback_url", text),
        rows.column("campaign", text),
    )
    rows.check()
    return tuple(
        Prompt(
            prompt_id=prompt_id,
            scheduled_date=scheduled_date,
            model=model,
            prompt=prompt,
            image_ids=image_ids,
            video_ids=video_ids,
            audio_ids=audio_ids,
            duration=duration,
            quality=quality,
            aspect_ratio=aspect_ratio,
            generate_audio=generate_audio,
            web_search=web_search,
            callback_url=callback_url,
            campaign=campaign,
        )
        for (
            prompt_id,
            scheduled_date,
            model,
            prompt,
            image_ids,
            video_ids,
            audio_ids,
            duration,
            quality,
            aspect_ratio,
            generate_audio,
            web_search,
            callback_url,
            campaign,
        ) in zip(*cells, strict=True)
    )


def load_media(path: str | Path, data_dir: str | Path) -> dict[str, Media]:
    """The media catalog by media_id; local uris resolved against the catalog's folder.

    Raises:
        CatalogError: missing column, duplicate media_id, unknown kind, bad number.
    """
    path, root = Path(path), Path(data_dir).resolve()
    key = ("media", path.resolve(), root)
    return dict(_cached(key, path, lambda raw: _media(path, raw, root)))


def _media(path: Path, raw: bytes, root: Path) -> dict[str, Media]:
    rows = _Rows(path, raw, MEDIA_REQUIRED, MEDIA_COLUMNS)
    out: dict[str, Media] = {}
    seen: dict[str, tuple] = {}
    for row, rec in rows:
        media_id = rows.identifier(row, "media_id", rec.get("media_id"), seen)
        kind = rows.text(row, rec, "kind", required=True).lower()
        if kind not in MEDIA_KINDS:
            raise rows.error(row, "kind", f"{kind!r} is not one of {', '.join(MEDIA_KINDS)}")
        uri = _redacted(rows.text(row, rec, "uri", required=True))
        numbers = {c: rows.number(row, rec, c) for c in MEDIA_NUMBERS}
        if negative := next((c for c, n in numbers.items() if n and n < 0), None):
            raise rows.error(row, negative, f"{rec[negative]!r} is below 0")
        width, height, seconds, fps, size = numbers.values()
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
    try:
        resolved = (base / uri).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise rows.error(row, "uri", f"{uri!r} cannot be followed: {exc}") from None
    if not resolved.is_relative_to(root):
        raise rows.error(row, "uri", f"{uri!r} points outside the data directory {root}")
    return resolved
