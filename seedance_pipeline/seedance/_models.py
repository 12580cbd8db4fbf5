"""Typed views of the EvoLink payloads."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from ._exceptions import MalformedAnswerError
from ._rules import DEFAULT_ASPECT_RATIO, DEFAULT_DURATION, DEFAULT_QUALITY
from ._untrusted import plain

log = logging.getLogger(__name__)

# What a task id may be: a URL path segment, one line of a log. The vendor's are
# `task-unified-<unix time>-<suffix>` (`TASK_ID`); this is looser, in case their form changes.
SAFE_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # fullmatch only


class TaskStatus(StrEnum):
    """A task's status as the vendor reports it (an unknown one is kept as a plain string)."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # not in the official docs (they end in completed/failed)


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})

# The most each number of a task answer can mean. A number beyond it, negative, NaN or
# infinite is ignored: recorded, it would be a charge of `inf` credits, or a 25-digit
# progress that no ledger column holds (failing the write of a whole poll round).
_LARGEST = {
    "progress": 100,
    "estimated_time": 7 * 24 * 3600,
    "video_duration": 3600,
    "credits_reserved": 1e9,
    "created": 1e11,  # seconds since 1970: year 5138
}


@dataclass(frozen=True, kw_only=True)
class RequestOptions:
    """What a generation request asks for besides its media files.

    A catalog row (media by id) and a `GenerationRequest` (media by URL) both build on it.
    """

    model: str
    prompt: str
    duration: int = DEFAULT_DURATION
    quality: str = DEFAULT_QUALITY
    aspect_ratio: str = DEFAULT_ASPECT_RATIO
    generate_audio: bool = True
    web_search: bool = False
    callback_url: str | None = None


_OPTION_NAMES = tuple(f.name for f in fields(RequestOptions))  # looked up once, not per row


@dataclass(frozen=True, kw_only=True)
class GenerationRequest(RequestOptions):
    """A `POST /v1/videos/generations` body."""

    image_urls: tuple[str, ...] = ()
    video_urls: tuple[str, ...] = ()
    audio_urls: tuple[str, ...] = ()

    @classmethod
    def of(cls, options: RequestOptions, **urls: tuple[str, ...]) -> GenerationRequest:
        """The request `options` (a catalog row, say) make with these media URLs."""
        shared = {name: getattr(options, name) for name in _OPTION_NAMES}
        return cls(**shared, **urls)

    def to_body(self) -> dict[str, Any]:
        """The JSON body, omitting empty media lists and unset options."""
        body: dict[str, Any] = {"model": self.model, "prompt": self.prompt}
        for name in ("image_urls", "video_urls", "audio_urls"):
            if getattr(self, name):
                body[name] = list(getattr(self, name))
        body.update(
            duration=self.duration,
            quality=self.quality,
            aspect_ratio=self.aspect_ratio,
            generate_audio=self.generate_audio,
        )
        if self.web_search:
            body["model_params"] = {"web_search": True}
        if self.callback_url:
            body["callback_url"] = self.callback_url
        return body


@dataclass(frozen=True)
class Task:
    """A generation task as `POST /v1/videos/generations` or `GET /v1/tasks/{id}` answer it."""

    id: str
    status: str
    progress: int = 0
    model: str | None = None
    created: int | None = None
    estimated_time: int | None = None
    video_duration: int | None = None
    results: tuple[str, ...] = ()
    error_code: str | None = None
    error_message: str | None = None
    credits_reserved: float | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def final_status(self) -> str:
        """`cancelled` for either form the vendor uses for it, else the status."""
        if self.status == TaskStatus.FAILED and self.error_code == "request_cancelled":
            return TaskStatus.CANCELLED
        return self.status

    @classmethod
    def from_json(cls, data: object) -> Task:
        """The task an answer describes.

        Raises:
            MalformedAnswerError: `data` is not a task (no id or status, or a field of the
                wrong type). Unknown statuses are kept as they are (not terminal).
        """
        if not isinstance(data, Mapping):
            raise MalformedAnswerError(f"a task answer must be a JSON object, not {_kind(data)}")
        task_id = _field(data, "id", str)
        info = _optional(data, "task_info", Mapping, task_id) or {}
        usage = _optional(data, "usage", Mapping, task_id) or {}
        error = _optional(data, "error", Mapping, task_id) or {}
        results = _field(data, "results", list) or []
        if not all(isinstance(url, str) for url in results):
            raise MalformedAnswerError("task field results must be a list of URLs")
        status = _field(data, "status", str)
        if not task_id or not status:
            raise MalformedAnswerError("a task answer needs a non-empty id and status")
        if not SAFE_TASK_ID.fullmatch(task_id):  # it goes into /v1/tasks/{id}, logs and tables
            raise MalformedAnswerError(
                f"its task id {plain(repr(task_id), 80)} is not letters, digits, - and _"
            )
        code = _optional(error, "code", (str, int), task_id)
        message = _optional(error, "message", str, task_id)
        model = _optional(data, "model", str, task_id)
        created = _amount(data, "created", task_id)
        return cls(
            id=task_id,
            # Every text goes to the ledger: a lone surrogate (no database stores one) or a
            # NUL (PostgreSQL's text refuses it) would fail the write of a whole poll round,
            # every round (helper-70). A link holding one is no link.
            status=plain(status, 100),
            progress=int(_amount(data, "progress", task_id) or 0),
            model=None if model is None else plain(model, 100),
            created=None if created is None else int(created),
            estimated_time=_amount(info, "estimated_time", task_id),
            video_duration=_amount(info, "video_duration", task_id),
            results=tuple(url for url in results if url.isprintable()),
            error_code=None if code is None else plain(str(code), 100),
            error_message=None if message is None else plain(message),
            credits_reserved=_amount(usage, "credits_reserved", task_id),
            raw=data,
        )


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """`data[name]` when it is missing, null or of `kind` (bool is never a number)."""
    value = data.get(name)
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise MalformedAnswerError(f"task field {name} is {_kind(value)}, not {_names(kind)}")


def _optional(
    data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], task_id: str
) -> Any:
    """A field the pipeline can do without: of the wrong type, it is ignored, not a reason to
    throw away an answer (a create's answer lost is a task paid for and never stored)."""
    try:
        return _field(data, name, kind)
    except MalformedAnswerError as exc:
        log.warning("task %s: %s; ignored", task_id, exc)
        return None


def _amount(data: Mapping[str, Any], name: str, task_id: str) -> float | None:
    """A number field of a task answer (a number written as a string too), or None when it
    cannot mean what it says."""
    value = data.get(name)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    value = _optional({name: value}, name, (int, float), task_id)
    if value is None or 0 <= value <= _LARGEST[name]:  # False for NaN
        return value
    log.warning("task %s: %s %.30s is not 0 to %g; ignored", task_id, name, value, _LARGEST[name])
    return None


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


@dataclass(frozen=True)
class UploadedFile:
    """The `data` of a files-API upload answer."""

    file_id: str
    file_url: str
    file_name: str | None = None
    mime_type: str | None = None
    file_size: int | None = None
    expires_at: str | None = None

    @classmethod
    def from_json(cls, data: object) -> UploadedFile:
        """Raises `MalformedAnswerError` when `data` has no file id and URL."""
        if not isinstance(data, Mapping):
            raise MalformedAnswerError(f"upload data must be a JSON object, not {_kind(data)}")
        if not (isinstance(data.get("file_id"), str) and isinstance(data.get("file_url"), str)):
            raise MalformedAnswerError("upload data needs a file_id and a file_url")
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Download:
    """A result file saved to disk."""

    path: str
    sha256: str
    bytes: int
