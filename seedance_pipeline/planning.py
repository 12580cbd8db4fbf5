"""Turning catalog rows into request bodies with credit estimates, or rejections."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .catalog import Media, Prompt, collector_paused, load_media, load_prompts
from .costs import credits_total
from .media import MediaError, measure
from .seedance import GenerationRequest, MediaFacts, PriceTable, RequestOptions, output_pixels
from .seedance._rules import URL_FIELDS, check_options, check_prompt
from .seedance._urls import url_problem
from .statuses import RequestStatus

if TYPE_CHECKING:
    from .s3 import S3Media

# Local files get this URL until they are published; `plan` shows it as is.
PENDING_UPLOAD = "https://upload.pending/"
KIND_FIELDS = (("image", "image_ids"), ("video", "video_ids"), ("audio", "audio_ids"))
REQUEST_COLUMNS = [
    "prompt_id",
    "scheduled_date",
    "campaign",
    "model",
    "prompt",
    "duration",
    "quality",
    "aspect_ratio",
    "generate_audio",
    "web_search",
]
_PROMPT_CELLS = attrgetter(*REQUEST_COLUMNS)  # a prompt's values of those columns, in one call


@dataclass
class PlannedRow:
    """A prompt of the partition: a request body and estimate, or the rules it breaks."""

    prompt: Prompt
    body: dict[str, Any] | None = None
    estimated_credits: float | None = None
    errors: list[str] = field(default_factory=list)
    local_files: dict[str, Path] = field(default_factory=dict)  # placeholder URL -> file
    expected_pixels: tuple[int, int] | None = None

    @property
    def accepted(self) -> bool:
        return self.body is not None


class MediaFactsCache:
    """Looks each media item up once: files are measured (local ones, s3:// ones with
    `s3_media`), URLs checked."""

    def __init__(self, data_dir: Path, s3_media: S3Media | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.s3_media = s3_media  # measures `s3://` media when given
        self._cache: dict[object, tuple[str, MediaFacts] | MediaError] = {}

    def url_and_facts(self, media: Media) -> tuple[str, MediaFacts]:
        """The URL to put in the request, and what is known of the file.

        Raises:
            MediaError: a local file is missing, unreadable, or not of its catalog kind; a
                remote URL is not one the vendor may be sent (private host, credentials).
        """
        key = media if media.path is None else (media.path, media.kind)
        if key not in self._cache:
            try:
                self._cache[key] = self._look_up(media)
            except MediaError as exc:
                self._cache[key] = exc
        result = self._cache[key]
        if isinstance(result, MediaError):
            raise result.with_traceback(None)
        return result

    def _look_up(self, media: Media) -> tuple[str, MediaFacts]:
        if media.path is not None:
            facts = measure(media.path, media.kind)
            return PENDING_UPLOAD + media.path.relative_to(self.data_dir).as_posix(), facts
        if self.s3_media and media.uri.startswith("s3://"):
            return media.uri, self.s3_media.facts(media.uri, media.kind)
        if not media.uri.lower().startswith("s3:"):
            problem = url_problem(media.uri, schemes=("https", "http"))
            if problem:
                raise MediaError(
                    f"its uri {problem}; in the media catalog give it a public https:// URL, "
                    "an s3:// URI or a path relative to the catalog"
                )
        facts = replace(media.facts, format=_format_from_uri(media.uri))
        return media.uri, facts


def _as_sent(
    body: dict[str, Any], known: dict[str, MediaFacts]
) -> tuple[dict[str, Any], dict[str, MediaFacts]]:
    """The body and its media facts as the vendor's rules see them: `s3://` URIs stay in every
    stored body and go out as presigned https URLs (`publishing.sendable`)."""
    if not any(url.startswith("s3://") for url in known):
        return body, known
    https = {url: "https://" + url[5:] if url.startswith("s3://") else url for url in known}
    return body | {
        name: [https[url] for url in body[name]] for name in URL_FIELDS.values() if name in body
    }, {https[url]: facts for url, facts in known.items()}


# Suffixes that name a media format (a fixed list: the MIME database differs by machine).
_IMAGE_SUFFIXES = ("jpeg", "jpg", "jfif", "png", "webp", "gif", "bmp", "tiff", "heic", "avif")
_VIDEO_SUFFIXES = ("mp4", "m4v", "mov", "avi", "mkv", "webm", "flv", "wmv", "mpg", "mpeg", "3gp")
_AUDIO_SUFFIXES = ("mp3", "wav", "m4a", "aac", "ogg", "oga", "opus", "flac", "wma", "aiff", "amr")
_MEDIA_SUFFIXES = frozenset((*_IMAGE_SUFFIXES, *_VIDEO_SUFFIXES, *_AUDIO_SUFFIXES))


def _format_from_uri(uri: str) -> str | None:
    """The format a link's suffix names, if it names one of media: `image.php?id=42`,
    `hero.jpg:large` or `render/v2.1` say nothing of what they serve."""
    suffix = Path(uri.split("?", 1)[0]).suffix.lower().lstrip(".")
    if suffix not in _MEDIA_SUFFIXES:
        return None
    return {"jpg": "jpeg", "jfif": "jpeg"}.get(suffix, suffix)


def plan_partition(
    prompts: list[Prompt],
    media: Mapping[str, Media],
    partition: str,
    facts: MediaFactsCache,
    prices: PriceTable,
) -> list[PlannedRow]:
    """Every prompt scheduled on `partition`, planned: accepted with a body, or rejected."""
    return plan_rows([p for p in prompts if p.scheduled_date == partition], media, facts, prices)


def plan_rows(
    prompts: list[Prompt], media: Mapping[str, Media], facts: MediaFactsCache, prices: PriceTable
) -> list[PlannedRow]:
    """`prompts` planned, in order. Rows asking for the same options and media share their
    request but for the prompt: it is built, checked and priced once for all of them."""
    shared: dict[tuple, _SharedRequest] = {}
    with collector_paused():
        return [_plan_row(p, media, facts, prices, shared) for p in prompts]


# What a request takes from its catalog row besides the prompt text: the options and media ids.
_OPTIONS_AND_MEDIA = attrgetter(
    *(f.name for f in fields(RequestOptions) if f.name != "prompt"),
    *(column for _, column in KIND_FIELDS),
)


def _plan_row(
    prompt: Prompt,
    media: Mapping[str, Media],
    facts: MediaFactsCache,
    prices: PriceTable,
    shared: dict[tuple, _SharedRequest],
) -> PlannedRow:
    key = _OPTIONS_AND_MEDIA(prompt)
    request = shared.get(key)
    if request is None:
        request = shared[key] = _SharedRequest.of(prompt, media, facts, prices)
    errors = request.errors(prompt.prompt)
    row = PlannedRow(prompt, errors=errors, local_files=dict(request.local_files))
    if not errors:
        row.body = request.body_for(prompt.prompt)
        row.estimated_credits, row.expected_pixels = request.credits, request.pixels
    return row


@dataclass(frozen=True)
class _SharedRequest:
    """What rows asking for the same options and media share (in one plan, a media id names
    one file): their body (with the first row's prompt), their problems besides the prompt's
    (their media's, then the rules the body breaks), local files, price and frame size."""

    body: dict[str, Any]
    before_prompt: list[str]
    after_prompt: list[str]
    local_files: dict[str, Path]
    credits: float | None = None
    pixels: tuple[int, int] | None = None

    @classmethod
    def of(
        cls, prompt: Prompt, media: Mapping[str, Media], facts: MediaFactsCache, prices: PriceTable
    ) -> _SharedRequest:
        errors: list[str] = []
        urls: dict[str, list[str]] = {}
        known: dict[str, MediaFacts] = {}
        local_files: dict[str, Path] = {}
        for kind, column in KIND_FIELDS:
            urls[kind] = []
            for media_id in getattr(prompt, column):
                item = media.get(media_id)
                if item is None:
                    errors.append(f"{column}: unknown media_id {media_id!r}")
                    continue
                if item.kind != kind:
                    errors.append(f"{column}: {media_id!r} is {item.kind}, not {kind}")
                    continue
                try:
                    url, known[url] = facts.url_and_facts(item)
                except MediaError as exc:
                    errors.append(f"{column}: {media_id!r}: {exc}")
                    continue
                urls[kind].append(url)
                if item.path is not None:
                    local_files[url] = item.path
        body = GenerationRequest.of(
            prompt,
            image_urls=tuple(urls["image"]),
            video_urls=tuple(urls["video"]),
            audio_urls=tuple(urls["audio"]),
        ).to_body()
        before, after = check_options(*_as_sent(body, known))
        errors += map(str, before)
        if errors or after:
            return cls(body, errors, [str(v) for v in after], local_files)
        seconds = [known[u].duration_s for u in urls["video"]]
        credits = prices.estimate_credits(body, seconds)
        return cls(body, [], [], local_files, credits, output_pixels(body, known))

    def errors(self, prompt: str) -> list[str]:
        """Every problem of a row of this `prompt`: its media's, then the rules its request
        breaks as `validate_request` lists them."""
        return [*self.before_prompt, *map(str, check_prompt(prompt)), *self.after_prompt]

    def body_for(self, prompt: str) -> dict[str, Any]:
        """The body for `prompt`, with media lists of its own (`publish` replaces their URLs)."""
        body = self.body | {"prompt": prompt}
        for name in URL_FIELDS.values():
            if name in body:
                body[name] = body[name].copy()
        return body


def publish(rows: list[PlannedRow], upload: Callable[[Path], str]) -> None:
    """Replace placeholder URLs by published ones in accepted rows, each file uploaded once."""
    published: dict[Path, str] = {}
    for row in rows:
        if not row.accepted:
            continue
        for field_name in ("image_urls", "video_urls", "audio_urls"):
            if field_name not in row.body:
                continue
            new = []
            for url in row.body[field_name]:
                path = row.local_files.get(url)
                if path is not None and path not in published:
                    published[path] = upload(path)
                new.append(published[path] if path is not None else url)
            row.body[field_name] = new


def request_fingerprint(prompt: Prompt) -> str:
    """sha256 of what a catalog row asks for (not its day or campaign): a changed row after
    submission is flagged, never resent silently."""
    asked = dict(vars(prompt))  # not dataclasses.asdict: it deep-copies, 3x slower per row
    for bookkeeping in ("prompt_id", "scheduled_date", "campaign"):
        asked.pop(bookkeeping)
    return hashlib.sha256(_SORTED_JSON.encode(asked).encode()).hexdigest()


def media_states(media: Mapping[str, Media]) -> dict[str, tuple]:
    """Each media row as `media_fingerprint` takes it: its uri, what it says of the file, and a
    local file's size and time (it may be replaced in place). Taken before planning reads the
    files, a file replaced meanwhile shows as changed when the day is sent (helper-78)."""
    return {i: (m.uri, repr(m.facts), _file_state(m.path)) for i, m in media.items()}


def media_fingerprint(prompt: Prompt, states: Mapping[str, tuple]) -> str:
    """sha256 of the media rows (`media_states`) a prompt names, '' when it names none: such a
    row or file changed changes what the prompt's request sends."""
    ids = (*prompt.image_ids, *prompt.video_ids, *prompt.audio_ids)
    if not ids:
        return ""
    return hashlib.sha256(repr([(i, states.get(i)) for i in ids]).encode()).hexdigest()


def _file_state(path: Path | None) -> tuple[int, int] | None:
    try:
        found = path.stat() if path else None
    except OSError:
        return None
    return (found.st_size, found.st_mtime_ns) if found else None


# json.dumps(x, sort_keys=True) and json.dumps(x, ensure_ascii=False), without the new encoder
# json.dumps makes on each call given any option.
_SORTED_JSON = json.JSONEncoder(sort_keys=True)
_BODY_JSON = json.JSONEncoder(ensure_ascii=False)


def requests_frame(rows: list[PlannedRow]) -> pd.DataFrame:
    """The `generation_requests` table from planned rows."""
    with collector_paused():
        pixels = [r.expected_pixels or (None, None) for r in rows]
        values = [_PROMPT_CELLS(r.prompt) for r in rows]
        cells = zip(*values, strict=True) if rows else [()] * len(REQUEST_COLUMNS)
        columns = dict(zip(REQUEST_COLUMNS, map(list, cells), strict=True))
        columns |= {
            "status": [
                RequestStatus.ACCEPTED if r.accepted else RequestStatus.REJECTED for r in rows
            ],
            "errors": [list(r.errors) for r in rows],
            "request_json": [_BODY_JSON.encode(r.body) if r.accepted else None for r in rows],
            "estimated_credits": [r.estimated_credits for r in rows],
            "expected_width": [width for width, _ in pixels],
            "expected_height": [height for _, height in pixels],
            "request_sha256": [request_fingerprint(r.prompt) for r in rows],
        }
    # No rows: columns of no type (object), as pandas gives them, not float for empty lists.
    frame = pd.DataFrame(columns) if rows else pd.DataFrame(columns=list(columns))
    return frame.astype(
        {"expected_width": "Int64", "expected_height": "Int64", "estimated_credits": "float64"}
    )


def plan_catalog(
    prompts_file: Path,
    media_file: Path,
    data_dir: Path,
    facts: MediaFactsCache,
    prices: PriceTable,
    partition: str | None = None,
) -> list[PlannedRow]:
    """The catalog's prompts (of `partition`, or all) planned against the vendor's rules;
    nothing is uploaded.

    Raises:
        CatalogError: a catalog cannot be used.
    """
    prompts = load_prompts(prompts_file)
    media = load_media(media_file, data_dir)
    if partition is not None:
        return plan_partition(prompts, media, partition, facts, prices)
    return plan_rows(prompts, media, facts, prices)


def over_budget_message(
    accepted: pd.DataFrame, budget: float, spent_elsewhere: float = 0.0
) -> str | None:
    """Why the partition may not be submitted, or None when it is within `budget`.

    `spent_elsewhere`: credits the day's tasks of prompts no longer among its accepted rows
    (removed, renamed, moved or refused since they were sent) hold; they count too.
    A row whose price is unknown (a tier the price table lacks) could cost anything: with a
    budget set, the day is refused.
    """
    unpriced = accepted[accepted.estimated_credits.isna()]
    if not unpriced.empty:
        rows = ", ".join(
            f"{r.prompt_id} ({r.model} {r.quality})" for r in unpriced.head(3).itertuples()
        )
        return (
            f"{len(unpriced)} row(s) have no known price, so the day's cost cannot be checked "
            f"against the budget of {budget:g} (SEEDANCE_MAX_CREDITS_PER_PARTITION): {rows}; "
            f"add their rates to a price table (SEEDANCE_PRICE_TABLE) or unset the budget"
        )
    total = credits_total(accepted.estimated_credits) + spent_elsewhere
    if total <= budget:
        return None
    top = accepted.nlargest(3, "estimated_credits")
    worst = ", ".join(f"{r.prompt_id} ({r.estimated_credits:g})" for r in top.itertuples())
    elsewhere = (
        f", {spent_elsewhere:g} of them by tasks already sent for prompts the day no longer "
        "accepts,"
        if spent_elsewhere
        else ""
    )
    return (
        f"estimated {total:g} credits{elsewhere} exceeds the budget of {budget:g} "
        f"(SEEDANCE_MAX_CREDITS_PER_PARTITION); most expensive rows: {worst}"
    )
