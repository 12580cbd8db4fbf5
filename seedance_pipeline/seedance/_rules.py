"""The vendor's rules for `POST /v1/videos/generations`, stated once.

Everything here comes from the Seedance 2.0 parameter guide (the Mini tier from the vendor's
Chinese overview); the emulator and the catalog validation both call `validate_request`, so no
limit is written down anywhere else.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ._urls import url_problem

TEXT, IMAGE, REFERENCE = "text-to-video", "image-to-video", "reference-to-video"
STANDARD, FAST, MINI = "standard", "fast", "mini"


@dataclass(frozen=True)
class ModelSpec:
    mode: str
    tier: str
    # Mini's text-to-video refuses `model_params` altogether (the Chinese overview).
    takes_model_params: bool = True


MODELS: dict[str, ModelSpec] = {
    "seedance-2.0-text-to-video": ModelSpec(TEXT, STANDARD),
    "seedance-2.0-image-to-video": ModelSpec(IMAGE, STANDARD),
    "seedance-2.0-reference-to-video": ModelSpec(REFERENCE, STANDARD),
    "seedance-2.0-fast-text-to-video": ModelSpec(TEXT, FAST),
    "seedance-2.0-fast-image-to-video": ModelSpec(IMAGE, FAST),
    "seedance-2.0-fast-reference-to-video": ModelSpec(REFERENCE, FAST),
    "seedance-2.0-mini-text-to-video": ModelSpec(TEXT, MINI, takes_model_params=False),
    "seedance-2.0-mini-image-to-video": ModelSpec(IMAGE, MINI),
    "seedance-2.0-mini-reference-to-video": ModelSpec(REFERENCE, MINI),
}

# `task-unified-<unix time>-<suffix>`: 8 characters in live answers, 6 in the vendor's examples.
# An id of this form that is not known answers 404; anything else cannot be a task id (400).
TASK_ID = re.compile(r"\Atask-unified-[0-9]+-[a-z0-9]+\Z")

# (min, max) number of media of each kind per mode; None means the field is not accepted.
MEDIA_COUNTS: dict[str, dict[str, tuple[int, int] | None]] = {
    TEXT: {"image": None, "video": None, "audio": None},
    IMAGE: {"image": (1, 2), "video": None, "audio": None},
    REFERENCE: {"image": (0, 9), "video": (0, 3), "audio": (0, 3)},
}
URL_FIELDS = {"image": "image_urls", "video": "video_urls", "audio": "audio_urls"}

DURATIONS = range(4, 16)
DEFAULT_DURATION = 5
QUALITIES = ("480p", "720p", "1080p")
TIER_QUALITIES = {STANDARD: QUALITIES, FAST: ("480p", "720p"), MINI: ("480p", "720p")}
DEFAULT_QUALITY = "720p"
ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "adaptive")
DEFAULT_ASPECT_RATIO = "16:9"

# Output pixels (width, height) for quality x aspect ratio.
PIXELS: dict[str, dict[str, tuple[int, int]]] = {
    "16:9": {"480p": (864, 496), "720p": (1280, 720), "1080p": (1920, 1080)},
    "4:3": {"480p": (752, 560), "720p": (1112, 834), "1080p": (1664, 1248)},
    "1:1": {"480p": (640, 640), "720p": (960, 960), "1080p": (1440, 1440)},
    "3:4": {"480p": (560, 752), "720p": (834, 1112), "1080p": (1248, 1664)},
    "9:16": {"480p": (496, 864), "720p": (720, 1280), "1080p": (1080, 1920)},
    "21:9": {"480p": (992, 432), "720p": (1470, 630), "1080p": (2206, 946)},
}

MIB = 1024 * 1024  # the vendor's "MB", taken as binary


def _a(kind: str) -> str:
    """`an image`, `a video`, `an audio`: a media kind with its article."""
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


@dataclass(frozen=True)
class MediaLimits:
    formats: tuple[str, ...]
    max_bytes: int
    min_side: int | None = None
    max_side: int | None = None
    min_aspect: float | None = None
    max_aspect: float | None = None
    min_frame_pixels: int | None = None
    max_frame_pixels: int | None = None
    min_fps: float | None = None
    max_fps: float | None = None
    min_seconds: float | None = None
    max_seconds: float | None = None
    max_total_seconds: float | None = None


MEDIA_LIMITS: dict[str, MediaLimits] = {
    "image": MediaLimits(
        formats=("jpeg", "png", "webp"),
        max_bytes=30 * MIB,
        min_side=300,
        max_side=6000,
        min_aspect=0.4,
        max_aspect=2.5,
    ),
    "video": MediaLimits(
        formats=("mp4", "mov"),
        max_bytes=50 * MIB,
        min_side=300,
        max_side=6000,
        min_aspect=0.4,
        max_aspect=2.5,
        min_frame_pixels=409_600,
        max_frame_pixels=2_086_876,
        min_fps=24,
        max_fps=60,
        min_seconds=2,
        max_seconds=15,
        max_total_seconds=15,
    ),
    "audio": MediaLimits(
        formats=("wav", "mp3"),
        max_bytes=15 * MIB,
        min_seconds=2,
        max_seconds=15,
        max_total_seconds=15,
    ),
}
MAX_TOTAL_MEDIA_BYTES = 64 * MIB

# The guide "recommends" these; we enforce them (see README, "Decisions on the vendor's text").
MAX_PROMPT_CJK_CHARS = 500
MAX_PROMPT_WORDS = 1000
# Our cap for text without spaces or CJK (1000 words of up to ~9 letters): a prompt one long
# "word" would otherwise pass, and it is checked first, so a huge prompt costs nothing to refuse.
MAX_PROMPT_CHARS = 10_000
MAX_CALLBACK_URL_CHARS = 2048

KNOWN_FIELDS = {
    "model",
    "prompt",
    "image_urls",
    "video_urls",
    "audio_urls",
    "duration",
    "quality",
    "aspect_ratio",
    "generate_audio",
    "model_params",
    "callback_url",
}

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
# Unicode category Cc is exactly these; tab, newline and carriage return are allowed in prompts.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class MediaFacts:
    """What is known about one media file; any field may be unknown (None)."""

    kind: str
    format: str | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    fps: float | None = None
    size_bytes: int | None = None


@dataclass(frozen=True)
class Violation:
    """One broken rule: the request field it concerns and a message naming the limit."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _fmt(x: float) -> str:
    return f"{x:g}"


def check_media(kind: str, facts: MediaFacts, field: str) -> list[Violation]:
    """Every per-file rule the facts break (unknown facts break nothing)."""
    return [Violation(field, message) for message in _media_problems(kind, facts)]


@functools.lru_cache(maxsize=4096)  # a day's requests use the same files again and again
def _media_problems(kind: str, facts: MediaFacts) -> tuple[str, ...]:
    lim = MEDIA_LIMITS[kind]
    out: list[str] = []
    bad = out.append

    if facts.kind != kind:
        bad(f"is {_a(facts.kind)} file, but {URL_FIELDS[kind]} takes {kind} files")
        return tuple(out)
    if facts.format is not None and facts.format not in lim.formats:
        bad(f"format {facts.format} is not accepted for {kind}; use {', '.join(lim.formats)}")
    if facts.size_bytes is not None and facts.size_bytes > lim.max_bytes:
        bad(
            f"file is {facts.size_bytes / MIB:.1f} MiB; {_a(kind)} may be at most "
            f"{lim.max_bytes // MIB} MiB"
        )
    w, h = facts.width, facts.height
    if w is not None and h is not None and lim.min_side is not None:
        if min(w, h) < lim.min_side or max(w, h) > lim.max_side:
            bad(f"is {w}x{h} px; width and height must be {lim.min_side}..{lim.max_side} px")
        aspect = w / h if h > 0 else math.inf  # a catalog may say 0 px: a violation, not a crash
        if not lim.min_aspect <= aspect <= lim.max_aspect:
            bad(
                f"aspect ratio (width/height) is {aspect:.2f}; it must be "
                f"{_fmt(lim.min_aspect)}..{_fmt(lim.max_aspect)}"
            )
        if lim.min_frame_pixels is not None and not (
            lim.min_frame_pixels <= w * h <= lim.max_frame_pixels
        ):
            bad(
                f"frame is {w * h:,} pixels ({w}x{h}); it must be "
                f"{lim.min_frame_pixels:,}..{lim.max_frame_pixels:,} pixels"
            )
    if (
        facts.fps is not None
        and lim.min_fps is not None
        and not (lim.min_fps <= facts.fps <= lim.max_fps)
    ):
        bad(f"frame rate is {facts.fps:g} fps; it must be {lim.min_fps}..{lim.max_fps} fps")
    if (
        facts.duration_s is not None
        and lim.min_seconds is not None
        and not (lim.min_seconds <= round(facts.duration_s, 3) <= lim.max_seconds)
    ):
        bad(
            f"lasts {facts.duration_s:.2f} s; each {kind} must last "
            f"{_fmt(lim.min_seconds)}..{_fmt(lim.max_seconds)} s"
        )
    return tuple(out)


def check_callback_url(url: object, *, allow_loopback: bool = False) -> list[Violation]:
    """The vendor's callback rules: https, a public host, at most 2048 characters.

    `allow_loopback` (the emulator's `--allow-loopback-callbacks`) also accepts plain http to
    a loopback address, for tests and the demo.
    """
    field = "callback_url"
    if not isinstance(url, str) or not url:
        return [Violation(field, "must be a non-empty string")]
    out = []
    if len(url) > MAX_CALLBACK_URL_CHARS:
        out.append(Violation(field, f"is {len(url)} characters; at most {MAX_CALLBACK_URL_CHARS}"))
    if not (allow_loopback and _is_loopback_url(url)):
        problem = url_problem(url)
        if problem:
            out.append(Violation(field, f"{problem}; callbacks need https on a public host"))
    return out


def _is_loopback_url(url: str) -> bool:
    parts = urlsplit(url)
    try:
        return (
            parts.scheme in ("http", "https")
            and ipaddress.ip_address((parts.hostname or "").strip("[]")).is_loopback
        )
    except ValueError:
        return parts.hostname == "localhost"


def resolve_aspect_ratio(body: Mapping, media: Mapping[str, MediaFacts]) -> str:
    """The concrete aspect ratio an `adaptive` request gets, as the guide describes.

    Text-to-video: we pick 16:9 (the guide says "from the prompt"). Image-to-video: the first
    image's ratio. Reference-to-video: video ratio, then image ratio, then 16:9. The nearest of
    the six fixed ratios is used.
    """
    ratio = body.get("aspect_ratio", DEFAULT_ASPECT_RATIO)
    if ratio != "adaptive":
        return ratio
    for field in ("video_urls", "image_urls"):
        for url in body.get(field) or []:
            facts = media.get(url)
            if facts and facts.width and facts.height:
                return nearest_aspect_ratio(facts.width / facts.height)
    return DEFAULT_ASPECT_RATIO


def nearest_aspect_ratio(aspect: float) -> str:
    def distance(name: str) -> float:
        w, h = (int(x) for x in name.split(":"))
        return abs(math.log(aspect) - math.log(w / h))

    return min(PIXELS, key=distance)


def output_pixels(body: Mapping, media: Mapping[str, MediaFacts] | None = None) -> tuple[int, int]:
    """Width and height of the video the request will produce."""
    ratio = resolve_aspect_ratio(body, media or {})
    return PIXELS[ratio][body.get("quality", DEFAULT_QUALITY)]


def _is_url(value: object) -> bool:
    return isinstance(value, str) and _is_http_url(value)


@functools.lru_cache(maxsize=4096)  # a day's requests name the same media again and again
def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def check_prompt(prompt: object) -> list[Violation]:
    """The rules of the prompt text (the part of a request `check_options` leaves out)."""
    if not isinstance(prompt, str):
        return [Violation("prompt", "is required and must have visible text")]
    if len(prompt) > MAX_PROMPT_CHARS:
        return [Violation("prompt", f"has {len(prompt)} characters; at most {MAX_PROMPT_CHARS}")]
    # Printable text (no Unicode C or Z character but the space) needs no per-character look-up.
    printable = prompt.isprintable()
    if not (
        prompt.strip() if printable else any(unicodedata.category(c)[0] not in "CZ" for c in prompt)
    ):
        return [Violation("prompt", "is required and must have visible text")]
    controls = set() if printable else set(_CONTROL.findall(prompt))
    if controls:
        codes = ", ".join(f"U+{ord(c):04X}" for c in sorted(controls))
        return [Violation("prompt", f"contains control characters ({codes}); remove them")]
    # A prompt shorter than a limit cannot exceed it: most are not counted at all.
    cjk = 0 if len(prompt) <= MAX_PROMPT_CJK_CHARS else len(_CJK.findall(prompt))
    if cjk > MAX_PROMPT_CJK_CHARS:
        return [
            Violation(
                "prompt",
                f"has {cjk} Chinese/Japanese/Korean characters; at most {MAX_PROMPT_CJK_CHARS}",
            )
        ]
    words = 0 if len(prompt) < 2 * MAX_PROMPT_WORDS else len(prompt.split())
    if words > MAX_PROMPT_WORDS:
        return [Violation("prompt", f"has {words} words; at most {MAX_PROMPT_WORDS}")]
    return []


def validate_request(
    body: Mapping,
    media: Mapping[str, MediaFacts] | None = None,
    *,
    allow_loopback_callbacks: bool = False,
) -> list[Violation]:
    """Every rule of the vendor guide that `body` breaks, given what is known of its media.

    Args:
        body: a candidate `POST /v1/videos/generations` body.
        media: facts about media files keyed by their URL; missing URLs are checked only for
            form and count.
        allow_loopback_callbacks: accept http callback URLs on loopback (emulator only).

    Returns:
        One `Violation` per broken rule; empty when the request is valid.
    """
    if not isinstance(body, Mapping):
        return [Violation("body", "must be a JSON object")]
    before, after = check_options(body, media, allow_loopback_callbacks=allow_loopback_callbacks)
    return before + check_prompt(body.get("prompt")) + after


def check_options(
    body: Mapping,
    media: Mapping[str, MediaFacts] | None = None,
    *,
    allow_loopback_callbacks: bool = False,
) -> tuple[list[Violation], list[Violation]]:
    """The rules `validate_request` checks but the prompt's: of those `body` breaks, the ones
    it reports before the prompt's, and the ones after.

    Requests that differ only in their prompt break the same ones: a day's plan checks them
    once per combination of options and media, and each row's prompt with `check_prompt`.
    """
    media = media or {}
    before = [
        Violation(k, "is not a field of the Seedance 2.0 API")
        for k in body
        if k not in KNOWN_FIELDS
    ]
    model = body.get("model")
    spec = MODELS.get(model) if isinstance(model, str) else None
    if spec is None:
        before.append(Violation("model", f"{model!r} is not one of {', '.join(MODELS)}"))

    out: list[Violation] = []
    duration = body.get("duration", DEFAULT_DURATION)
    if isinstance(duration, bool) or not isinstance(duration, int) or duration not in DURATIONS:
        out.append(
            Violation(
                "duration",
                f"{duration!r} is not allowed; whole seconds {DURATIONS[0]}..{DURATIONS[-1]}",
            )
        )
    quality = body.get("quality", DEFAULT_QUALITY)
    if quality not in QUALITIES:
        out.append(Violation("quality", f"{quality!r} is not one of {', '.join(QUALITIES)}"))
    elif spec and quality not in TIER_QUALITIES[spec.tier]:
        out.append(
            Violation(
                "quality",
                f"{quality} is not available on {spec.tier} models; they offer "
                f"{', '.join(TIER_QUALITIES[spec.tier])} (1080p: standard models only)",
            )
        )
    if body.get("aspect_ratio", DEFAULT_ASPECT_RATIO) not in ASPECT_RATIOS:
        out.append(
            Violation(
                "aspect_ratio",
                f"{body.get('aspect_ratio')!r} is not one of {', '.join(ASPECT_RATIOS)}",
            )
        )
    if not isinstance(body.get("generate_audio", True), bool):
        out.append(Violation("generate_audio", "must be true or false"))

    params = body.get("model_params")
    if params is not None and spec and not spec.takes_model_params:
        out.append(
            Violation("model_params", f"is not accepted by {model} (no web_search); leave it out")
        )
    elif params is not None:
        if not isinstance(params, Mapping) or set(params) - {"web_search"}:
            out.append(Violation("model_params", "may only hold web_search"))
        elif not isinstance(params.get("web_search", False), bool):
            out.append(Violation("model_params.web_search", "must be true or false"))
        elif params.get("web_search") and spec and spec.mode != TEXT:
            out.append(
                Violation("model_params.web_search", "is only available on text-to-video models")
            )

    if "callback_url" in body:
        out += check_callback_url(body["callback_url"], allow_loopback=allow_loopback_callbacks)

    out += _check_media_lists(body, spec, media)
    return before, out


def _check_media_lists(
    body: Mapping, spec: ModelSpec | None, media: Mapping[str, MediaFacts]
) -> list[Violation]:
    out: list[Violation] = []
    counts: dict[str, int] = {}
    total_bytes = 0
    for kind, field in URL_FIELDS.items():
        urls = body.get(field)
        if urls is None:
            urls = []
        if not isinstance(urls, list):
            out.append(Violation(field, "must be a list of URLs"))
            continue
        counts[kind] = len(urls)
        allowed = MEDIA_COUNTS[spec.mode][kind] if spec else None
        if not urls and not (allowed and allowed[0]):
            continue  # nothing to check (most fields of most requests)
        if spec and allowed is None and urls:
            out.append(Violation(field, f"is not accepted by {spec.mode} models"))
            continue
        if spec and allowed and not allowed[0] <= len(urls) <= allowed[1]:
            out.append(
                Violation(
                    field,
                    f"has {len(urls)} item(s); {spec.mode} models take {allowed[0]}..{allowed[1]}",
                )
            )
        seconds = 0.0
        for i, url in enumerate(urls):
            item = f"{field}[{i}]"
            if not _is_url(url):
                out.append(Violation(item, f"{url!r} is not an http(s) URL"))
                continue
            facts = media.get(url)
            if facts is None:
                continue
            out += check_media(kind, facts, item)
            total_bytes += facts.size_bytes or 0
            seconds += facts.duration_s or 0
        lim = MEDIA_LIMITS[kind]
        if lim.max_total_seconds is not None and round(seconds, 3) > lim.max_total_seconds:
            out.append(
                Violation(
                    field,
                    f"lasts {seconds:.2f} s in total; all {kind} together may last at most "
                    f"{_fmt(lim.max_total_seconds)} s",
                )
            )
    if spec and spec.mode == REFERENCE and not counts.get("image") and not counts.get("video"):
        out.append(
            Violation(
                "image_urls",
                "reference-to-video needs at least one image or video (audio alone is not enough)",
            )
        )
    if total_bytes > MAX_TOTAL_MEDIA_BYTES:
        out.append(
            Violation(
                "body",
                f"media total {total_bytes / MIB:.1f} MiB; a request may carry at most "
                f"{MAX_TOTAL_MEDIA_BYTES // MIB} MiB",
            )
        )
    return out
