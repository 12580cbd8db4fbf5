"""Typed views of the EvoLink payloads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._rules import DEFAULT_ASPECT_RATIO, DEFAULT_DURATION, DEFAULT_QUALITY

# The vendor's official statuses end in completed/failed; companion docs add `cancelled`.
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True)
class GenerationRequest:
    """A `POST /v1/videos/generations` body."""

    model: str
    prompt: str
    image_urls: tuple[str, ...] = ()
    video_urls: tuple[str, ...] = ()
    audio_urls: tuple[str, ...] = ()
    duration: int = DEFAULT_DURATION
    quality: str = DEFAULT_QUALITY
    aspect_ratio: str = DEFAULT_ASPECT_RATIO
    generate_audio: bool = True
    web_search: bool = False
    callback_url: str | None = None

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
        if self.status == "failed" and self.error_code == "request_cancelled":
            return "cancelled"
        return self.status

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        info = data.get("task_info") or {}
        usage = data.get("usage") or {}
        error = data.get("error") or {}
        return cls(
            id=data["id"],
            status=data.get("status", "pending"),
            progress=int(data.get("progress") or 0),
            model=data.get("model"),
            created=data.get("created"),
            estimated_time=info.get("estimated_time"),
            video_duration=info.get("video_duration"),
            results=tuple(data.get("results") or ()),
            error_code=None if error.get("code") is None else str(error["code"]),
            error_message=error.get("message"),
            credits_reserved=usage.get("credits_reserved"),
            raw=data,
        )


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
    def from_json(cls, data: Mapping[str, Any]) -> UploadedFile:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Download:
    """A result file saved to disk."""

    path: str
    sha256: str
    bytes: int
