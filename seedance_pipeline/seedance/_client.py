"""Sync and async httpx clients for the EvoLink Seedance 2.0 API.

Retries live in one generator (`_exchange`) that yields requests and sleeps; the sync and
async drivers only carry them out, so both clients retry by exactly the same rules.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ._exceptions import (
    APIError,
    LinkExpiredError,
    OutcomeUnknownError,
    RateLimitError,
    SeedanceError,
    TransportError,
    error_class_for,
)
from ._models import Download, GenerationRequest, Task, UploadedFile

log = logging.getLogger("seedance_pipeline.seedance")

DEFAULT_BASE_URL = "https://api.evolink.ai"
DEFAULT_FILES_URL = "https://files-api.evolink.ai"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0, pool=5.0)
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with +/-50 % jitter, bounded by attempts and total wait."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_total_wait: float = 180.0

    def next_delay(self, error: SeedanceError, attempt: int, waited: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up with `error`."""
        retryable = isinstance(error, TransportError) or getattr(error, "retryable", False)
        if not retryable or attempt >= self.max_attempts:
            return None
        delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.5)
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if waited + delay > self.max_total_wait:
            return None
        return delay


@dataclass(frozen=True)
class _Sleep:
    seconds: float


class _Pacer:
    """Books send times `1 / rate` seconds apart, for every client of one API in this process.

    The vendor limits requests per key; pacing below the limit costs less than answering 429s
    (concurrent polls would otherwise burst past it and all retry at once).
    """

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Seconds to wait before sending, having booked the next free slot."""
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
            return slot - now


_PACERS: dict[tuple[str, float], _Pacer] = {}
_PACERS_LOCK = threading.Lock()


def _pacer(base_url: str, rate: float | None) -> _Pacer | None:
    if not rate:
        return None
    if rate < 0:
        raise ValueError(f"max_requests_per_second must be positive, got {rate}")
    with _PACERS_LOCK:
        return _PACERS.setdefault((base_url, rate), _Pacer(rate))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def api_error(response: httpx.Response) -> APIError:
    """The exception for an HTTP error answer, carrying the vendor's code and message."""
    code, message, kind = None, None, None
    try:
        error = response.json().get("error") or {}
        code, message, kind = error.get("code"), error.get("message"), error.get("type")
    except (ValueError, AttributeError):
        pass
    message = message or response.text[:200] or response.reason_phrase
    cls = error_class_for(response.status_code)
    kwargs: dict[str, Any] = {}
    if cls is RateLimitError:
        kwargs["retry_after"] = _retry_after(response)
    return cls(response.status_code, None if code is None else str(code), message, kind, **kwargs)


def _transport_error(exc: httpx.HTTPError, request: httpx.Request, creates: bool) -> SeedanceError:
    """Translate an httpx error: was the request possibly received by the vendor?"""
    where = f"{request.method} {request.url.copy_with(query=None)}"
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    if creates and not never_sent:
        return OutcomeUnknownError(
            f"{where}: the request was sent but its answer was lost ({type(exc).__name__}); "
            "a task may have been created and is not resubmitted"
        )
    return TransportError(f"{where}: {type(exc).__name__}: {exc}")


class _BaseClient:
    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        files_url: str = DEFAULT_FILES_URL,
        retry: RetryPolicy | None = None,
        max_requests_per_second: float | None = None,
    ):
        if not api_key:
            raise ValueError("an EvoLink API key is required (set EVOLINK_API_KEY)")
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self.base_url = base_url.rstrip("/")
        self.files_url = files_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._pacer = _pacer(self.base_url, max_requests_per_second)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Request:
        return self._http.build_request(method, url, headers=self._auth, **kwargs)

    def _exchange(
        self, request: httpx.Request, *, creates: bool = False
    ) -> Generator[httpx.Request | _Sleep, httpx.Response | None, httpx.Response]:
        """Send `request` until it succeeds or the retry policy gives up.

        A create is retried only when the answer proves no task was made: the connection
        never opened, or the vendor answered 429/5xx. A lost answer raises
        `OutcomeUnknownError` at once.
        """
        waited = 0.0
        for attempt in range(1, self.retry.max_attempts + 1):
            if self._pacer and (pause := self._pacer.reserve()) > 0:
                yield _Sleep(pause)
            try:
                response = yield request
            except httpx.HTTPError as exc:
                error: SeedanceError = _transport_error(exc, request, creates)
            else:
                if response.is_success:
                    return response
                error = api_error(response)
            delay = self.retry.next_delay(error, attempt, waited)
            if delay is None:
                raise error
            log.warning(
                "%s %s: %s; retry %d in %.1fs",
                request.method,
                request.url.path,
                error,
                attempt,
                delay,
            )
            waited += delay
            yield _Sleep(delay)
        raise AssertionError("unreachable: next_delay stops at max_attempts")

    def _create_request(self, request: GenerationRequest | Mapping[str, Any]) -> httpx.Request:
        body = request.to_body() if isinstance(request, GenerationRequest) else dict(request)
        return self._request("POST", f"{self.base_url}/v1/videos/generations", json=body)

    def _task_request(self, task_id: str) -> httpx.Request:
        return self._request("GET", f"{self.base_url}/v1/tasks/{task_id}")


def _upload_answer(response: httpx.Response) -> UploadedFile:
    payload = response.json()
    if not payload.get("success", True):
        raise error_class_for(400)(
            400, str(payload.get("code")), payload.get("msg") or "upload failed"
        )
    return UploadedFile.from_json(payload["data"])


class Client(_BaseClient):
    """Blocking client.

    Args:
        api_key: the EvoLink bearer token; kept out of every repr, log line and exception.
        base_url: API host (`EVOLINK_BASE_URL`).
        files_url: file upload host (`EVOLINK_FILES_URL`).
        timeout: httpx timeout for each request.
        retry: retry policy for 429, 5xx and connection failures.
        max_requests_per_second: space API calls to stay under the key's rate limit
            (shared by every client of `base_url` in this process); None: no pacing.
        transport: an httpx transport, e.g. `httpx.MockTransport` in tests.
    """

    def __init__(
        self,
        api_key: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        **kwargs: Any,
    ):
        super().__init__(api_key, **kwargs)
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, request: httpx.Request, creates: bool = False) -> httpx.Response:
        steps = self._exchange(request, creates=creates)
        step = next(steps)
        try:
            while True:
                if isinstance(step, _Sleep):
                    time.sleep(step.seconds)
                    step = steps.send(None)
                    continue
                try:
                    response = self._http.send(step)
                except httpx.HTTPError as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(response)
        except StopIteration as done:
            return done.value

    def create_task(self, request: GenerationRequest | Mapping[str, Any]) -> Task:
        """Submit a generation request.

        Raises:
            OutcomeUnknownError: the answer was lost after the request went out.
        """
        return Task.from_json(self._run(self._create_request(request), creates=True).json())

    def get_task(self, task_id: str) -> Task:
        """The task's current state."""
        return Task.from_json(self._run(self._task_request(task_id)).json())

    def get_credits(self) -> dict[str, Any]:
        """The account balance (`GET /v1/credits`); also the cheap way to check a key."""
        return self._run(self._request("GET", f"{self.base_url}/v1/credits")).json()["data"]

    def upload_file(
        self, path: str | os.PathLike, *, upload_path: str | None = None
    ) -> UploadedFile:
        """Publish a local file through the files API; returns its `file_url`."""
        path = Path(path)
        with path.open("rb") as fh:
            data = {"upload_path": upload_path} if upload_path else None
            request = self._request(
                "POST",
                f"{self.files_url}/api/v1/files/upload/stream",
                files={"file": (path.name, fh)},
                data=data,
            )
            return _upload_answer(self._run(request))

    def upload_url(self, url: str) -> UploadedFile:
        """Have the files API fetch `url` and host it."""
        request = self._request(
            "POST", f"{self.files_url}/api/v1/files/upload/url", json={"file_url": url}
        )
        return _upload_answer(self._run(request))

    def download(self, url: str, dest: str | os.PathLike) -> Download:
        """Stream `url` to `dest` in constant memory, hashing as it goes.

        The file appears at `dest` only once complete (written to a temporary name, then
        renamed). The API key is not sent: result links are pre-signed.

        Raises:
            LinkExpiredError: the link answered 403, 404 or 410.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        waited = 0.0
        for attempt in range(1, self.retry.max_attempts + 1):
            try:
                return self._download_once(url, dest, tmp)
            except (TransportError, APIError) as error:
                delay = self.retry.next_delay(error, attempt, waited)
                if delay is None:
                    raise
                waited += delay
                time.sleep(delay)
            finally:
                tmp.unlink(missing_ok=True)
        raise AssertionError("unreachable: next_delay stops at max_attempts")

    def _download_once(self, url: str, dest: Path, tmp: Path) -> Download:
        digest, size = hashlib.sha256(), 0
        try:
            with self._http.stream("GET", url) as response:
                if response.status_code in (403, 404, 410):
                    raise LinkExpiredError(
                        f"result link answered {response.status_code}: it has expired or is "
                        f"invalid ({httpx.URL(url).copy_with(query=None)})"
                    )
                if not response.is_success:
                    response.read()
                    raise api_error(response)
                with tmp.open("wb") as out:
                    for chunk in response.iter_bytes(_CHUNK):
                        out.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
        except httpx.HTTPError as exc:
            raise TransportError(f"download failed: {type(exc).__name__}: {exc}") from None
        os.replace(tmp, dest)
        return Download(str(dest), digest.hexdigest(), size)


class AsyncClient(_BaseClient):
    """Asyncio client with the same calls and retry rules as `Client` (for polling many tasks)."""

    def __init__(
        self,
        api_key: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
        **kwargs: Any,
    ):
        super().__init__(api_key, **kwargs)
        self._http = httpx.AsyncClient(
            timeout=timeout, transport=transport, limits=limits or httpx.Limits(max_connections=32)
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, request: httpx.Request, creates: bool = False) -> httpx.Response:
        steps = self._exchange(request, creates=creates)
        step = next(steps)
        try:
            while True:
                if isinstance(step, _Sleep):
                    await asyncio.sleep(step.seconds)
                    step = steps.send(None)
                    continue
                try:
                    response = await self._http.send(step)
                except httpx.HTTPError as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(response)
        except StopIteration as done:
            return done.value

    async def create_task(self, request: GenerationRequest | Mapping[str, Any]) -> Task:
        """Submit a generation request (see `Client.create_task`)."""
        response = await self._run(self._create_request(request), creates=True)
        return Task.from_json(response.json())

    async def get_task(self, task_id: str) -> Task:
        """The task's current state."""
        return Task.from_json((await self._run(self._task_request(task_id))).json())
