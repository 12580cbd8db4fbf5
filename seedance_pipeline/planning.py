"""Turning catalog rows into request bodies with credit estimates, or rejections."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .catalog import Media, Prompt
from .media import MediaError, measure
from .seedance import GenerationRequest, MediaFacts, PriceTable, output_pixels, validate_request

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
    """Measures each local file once; facts of remote media come from the catalog."""

    def __init__(self, data_dir: Path, s3_media: S3Media | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.s3_media = s3_media  # measures and presigns `s3://` media when given
        self._cache: dict[tuple[Path, str], MediaFacts | MediaError] = {}

    def url_and_facts(self, media: Media) -> tuple[str, MediaFacts]:
        """The URL to put in the request, and what is known of the file.

        Raises:
            MediaError: a local file is missing, unreadable, or not of its catalog kind.
        """
        if media.path is None and self.s3_media and media.uri.startswith("s3://"):
            return self.s3_media.url_and_facts(media.uri, media.kind)
        if media.path is None:
            facts = MediaFacts(
                media.kind,
                _format_from_uri(media.uri),
                *(None if v is None else int(v) for v in (media.width, media.height)),
                media.duration_s,
                media.fps,
                None if media.size_bytes is None else int(media.size_bytes),
            )
            return media.uri, facts
        key = (media.path, media.kind)
        if key not in self._cache:
            try:
                self._cache[key] = measure(media.path, media.kind)
            except MediaError as exc:
                self._cache[key] = exc
        result = self._cache[key]
        if isinstance(result, MediaError):
            raise result
        return PENDING_UPLOAD + media.path.relative_to(self.data_dir).as_posix(), result


def _format_from_uri(uri: str) -> str | None:
    suffix = Path(uri.split("?", 1)[0]).suffix.lower().lstrip(".")
    return {"jpg": "jpeg"}.get(suffix, suffix) or None


def plan_partition(
    prompts: list[Prompt],
    media: Mapping[str, Media],
    partition: str,
    facts: MediaFactsCache,
    prices: PriceTable,
) -> list[PlannedRow]:
    """Every prompt scheduled on `partition`, planned: accepted with a body, or rejected."""
    return [plan_row(p, media, facts, prices) for p in prompts if p.scheduled_date == partition]


def plan_row(
    prompt: Prompt, media: Mapping[str, Media], facts: MediaFactsCache, prices: PriceTable
) -> PlannedRow:
    row = PlannedRow(prompt)
    urls: dict[str, list[str]] = {}
    known: dict[str, MediaFacts] = {}
    for kind, column in KIND_FIELDS:
        urls[kind] = []
        for media_id in getattr(prompt, column):
            item = media.get(media_id)
            if item is None:
                row.errors.append(f"{column}: unknown media_id {media_id!r}")
                continue
            if item.kind != kind:
                row.errors.append(f"{column}: {media_id!r} is {item.kind}, not {kind}")
                continue
            try:
                url, known[url] = facts.url_and_facts(item)
            except MediaError as exc:
                row.errors.append(f"{column}: {media_id!r}: {exc}")
                continue
            urls[kind].append(url)
            if item.path is not None:
                row.local_files[url] = item.path
    body = GenerationRequest(
        model=prompt.model,
        prompt=prompt.prompt,
        image_urls=tuple(urls["image"]),
        video_urls=tuple(urls["video"]),
        audio_urls=tuple(urls["audio"]),
        duration=prompt.duration,
        quality=prompt.quality,
        aspect_ratio=prompt.aspect_ratio,
        generate_audio=prompt.generate_audio,
        web_search=prompt.web_search,
        callback_url=prompt.callback_url,
    ).to_body()
    row.errors += [str(v) for v in validate_request(body, known)]
    if not row.errors:
        row.body = body
        seconds = [known[u].duration_s for u in urls["video"]]
        row.estimated_credits = prices.estimate_credits(body, seconds)
        row.expected_pixels = output_pixels(body, known)
    return row


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
    asked = dataclasses.asdict(prompt)
    for bookkeeping in ("prompt_id", "scheduled_date", "campaign"):
        asked.pop(bookkeeping)
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def requests_frame(rows: list[PlannedRow]) -> pd.DataFrame:
    """The `generation_requests` table from planned rows."""
    records = []
    for r in rows:
        p = r.prompt
        records.append(
            {
                "prompt_id": p.prompt_id,
                "scheduled_date": p.scheduled_date,
                "campaign": p.campaign,
                "model": p.model,
                "prompt": p.prompt,
                "duration": p.duration,
                "quality": p.quality,
                "aspect_ratio": p.aspect_ratio,
                "generate_audio": p.generate_audio,
                "web_search": p.web_search,
                "status": "accepted" if r.accepted else "rejected",
                "errors": list(r.errors),
                "request_json": json.dumps(r.body, ensure_ascii=False) if r.accepted else None,
                "estimated_credits": r.estimated_credits,
                "expected_width": r.expected_pixels[0] if r.expected_pixels else None,
                "expected_height": r.expected_pixels[1] if r.expected_pixels else None,
                "request_sha256": request_fingerprint(p),
            }
        )
    columns = REQUEST_COLUMNS + [
        "status",
        "errors",
        "request_json",
        "estimated_credits",
        "expected_width",
        "expected_height",
        "request_sha256",
    ]
    frame = pd.DataFrame(records, columns=columns)
    return frame.astype(
        {"expected_width": "Int64", "expected_height": "Int64", "estimated_credits": "float64"}
    )
