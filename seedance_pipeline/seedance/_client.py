"""Sync and async httpx clients for the EvoLink Seedance 2.0 API.

Every call is a generator of steps: send a request (its answer comes back unread), read an
answer's body into a sink, sleep, or set a deadline for the sends and reads after it (each API
attempt's, or a whole download's; only the sync client downloads). Retries, pacing, size
caps, redirects and every decision live in those generators; the sync and async drivers
(`Client._run`, `AsyncClient._run`) only carry the steps out, so both clients behave exactly
alike.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import functools
import hashlib
import http.cookiejar
import ipaddress
import itertools
import json
import logging
import math
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpcore
import httpx

from ._exceptions import (
    APIError,
    CallCutOff,
    CallHalted,
    DownloadError,
    DownloadTimeoutError,
    DownloadTooLargeError,
    LinkExpiredError,
    MalformedAnswerError,
    OutcomeUnknownError,
    RateLimitError,
    SeedanceError,
    TransportError,
    UnsafeLinkError,
    error_class_for,
)
from ._models import Download, GenerationRequest, Task, UploadedFile
from ._untrusted import plain
from ._urls import address_problem, api_root_problem, origin, url_problem

log = logging.getLogger("seedance_pipeline.seedance")

DEFAULT_BASE_URL = "https://api.evolink.ai"
DEFAULT_FILES_URL = "https://files-api.evolink.ai"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0, pool=5.0)
MAX_ANSWER_BYTES = 1024 * 1024  # an API answer larger than this is refused, not read
# An API answer, headers and body, must come whole within this of its attempt's start (connect
# and send included): httpx's timeouts bound each read, so a trickle could last for ever.
ANSWER_SECONDS = 60.0
# 15 s of 1080p is tens of MB; this leaves room for any bitrate the vendor may use.
DEFAULT_MAX_VIDEO_BYTES = 512 * 1024 * 1024
DEFAULT_DOWNLOAD_SECONDS = 600.0
MAX_REDIRECTS = 5
_DOWNLOAD_READ_SECONDS = 30.0
# Bodies are asked for and read as sent: a decoder would inflate a whole chunk before any cap
# saw it (a few KB of nested gzip are GBs).
_IDENTITY = {"Accept-Encoding": "identity"}
# Answers to a create that prove no task was made: the vendor's documented refusals. Any other
# (a 5xx, a gateway's 408, a redirect) may come after the task was made, and is never resent.
_NO_TASK_MADE = frozenset({400, 401, 402, 403, 404, 413, 429})
# The shortest key, token or signature cut out of answers: a shorter one (a test's key) would
# cut real words.
_MIN_REDACTED_KEY = 12

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with +/-50 % jitter, bounded by attempts and total wait."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_total_wait: float = 180.0

    def next_delay(self, error: SeedanceError, attempt: int, waited: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up with `error`."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.5)
        if isinstance(error, RateLimitError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if waited + delay > self.max_total_wait:
            return None
        return delay


class _Bucket:
    """A token bucket whose rate is learned from the API's answers, shared by every client of
    one API in this process (the AWS SDKs' adaptive retry mode). Each API has two: one for
    POSTs (creates, uploads) and one for queries, whose limit the vendor sets higher.

    Unlimited (or at `cap`) until the first 429. A 429 sets the rate to 0.7 times the rate
    at which calls were being accepted and pauses sending for its Retry-After; while calls
    succeed the rate climbs back along a cubic curve, slowly near the rate that was refused
    and faster beyond it, so it settles just under the key's limit. 429s of calls sent before
    the last slow-down are the same overload and do not slow it down again. It holds a
    quarter second's tokens at most: enough to absorb late wake-ups, too few for a burst.
    """

    BETA, SCALE, MIN_RATE, WINDOW, BURST_SECONDS = 0.7, 0.4, 0.5, 1.0, 0.25
    # The longest pause a Retry-After sets for the whole process: a longer one (a quota, a
    # year, a server clock ahead) would refuse every later call unsent, and so never learn
    # that it ended; the API is asked again after this (a 429 makes no task).
    MAX_PAUSE_SECONDS = 300.0

    def __init__(self, cap: float | None):
        self.cap = cap
        self.rate = cap  # None: no limit learned and none configured
        self.tokens, self.stamp = 1.0, time.monotonic()
        self.slowed_at, self.resume_at = -math.inf, 0.0
        self.refused_rate, self.k = 0.0, 0.0
        self._accepted: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0 having taken a token to send now; else seconds to wait before asking again."""
        with self._lock:
            now = time.monotonic()
            if now < self.resume_at:
                return self.resume_at - now
            if self.rate is None:
                return 0.0
            self._refill(now)
            if self.tokens > 1 - 1e-9:  # not a wait too short for the clock to advance
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate

    def pausing(self) -> bool:
        """Within a pause a 429's Retry-After asked for (not the pacing's own waits)."""
        return time.monotonic() < self.resume_at

    def answered(self, sent_at: float, refused: bool, retry_after: float | None = None) -> None:
        """Learn from the answer to a call sent at `sent_at` (429: `refused`)."""
        with self._lock:
            now = time.monotonic()
            while self._accepted and self._accepted[0] < now - self.WINDOW:
                self._accepted.popleft()
            accepted_rate = len(self._accepted) / self.WINDOW
            if not refused:
                self._accepted.append(now)
                if self.slowed_at > -math.inf:
                    since = max(0.0, now - self.resume_at)
                    cubic = self.SCALE * (since - self.k) ** 3 + self.refused_rate
                    # Past the refused rate, no faster than twice what is being accepted:
                    # calls not made prove nothing.
                    self._set_rate(now, min(cubic, max(2 * accepted_rate, self.refused_rate)))
                return
            if sent_at < self.slowed_at:
                return
            self.refused_rate = max(self.MIN_RATE, min(accepted_rate, self.rate or math.inf))
            self.k = (self.refused_rate * (1 - self.BETA) / self.SCALE) ** (1 / 3)
            self.slowed_at = now
            pause = min(retry_after or 0.0, self.MAX_PAUSE_SECONDS)
            self.resume_at = max(self.resume_at, now + pause)
            self._set_rate(now, self.refused_rate * self.BETA)
            self.tokens, self.stamp = 0.0, self.resume_at

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            burst = max(1.0, self.rate * self.BURST_SECONDS)
            self.tokens = min(burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def _set_rate(self, now: float, rate: float) -> None:
        if self.rate is not None:
            self._refill(now)
        self.rate = min(max(self.MIN_RATE, rate), self.cap or math.inf)


_BUCKETS: dict[tuple[str, float | None, str], _Bucket] = {}
_BUCKETS_LOCK = threading.Lock()


@functools.cache
def _tls() -> ssl.SSLContext:
    """httpx's default TLS settings, built once per process: building them (loading the CA
    bundle) costs more CPU than a poll round, and the sensor opens a client per round."""
    return httpx.create_ssl_context()


def _bucket(base_url: str, cap: float | None, method: str) -> _Bucket:
    """The process's bucket for `method` calls to `base_url`: POSTs and queries apart."""
    if cap is not None and not (math.isfinite(cap) and cap > 0):
        raise ValueError(f"max_requests_per_second must be a positive number, got {cap}")
    lane = "POST" if method == "POST" else "query"
    with _BUCKETS_LOCK:
        return _BUCKETS.setdefault((base_url, cap, lane), _Bucket(cap))


@dataclass(frozen=True)
class _Sleep:
    seconds: float


@dataclass(frozen=True)
class _Read:
    """Feed the body of `response` as sent (not decoded) to `sink` until it ends or `sink`
    returns False, then close it (without a sink: close it unread)."""

    response: httpx.Response
    sink: Callable[[bytes], bool] | None = None


@dataclass(frozen=True)
class _Deadline:
    """Every later send and read must end by `at` (`time.monotonic()`): past it, the one under
    way fails with an `httpx.ReadTimeout`. `seconds`: for messages; `download`: the requests
    after it fetch result links (the sync client has a pool for them)."""

    at: float
    seconds: float
    download: bool

    @property
    def cut_off(self) -> str:
        return f"the answer did not come whole within {self.seconds:g} s (a trickling host)"

    def late(self, where: str) -> DownloadTimeoutError:
        return DownloadTimeoutError(
            f"{where} did not finish within the download's {self.seconds:g} s deadline (a "
            "stalled or trickling host); a later try may succeed"
        )


# A call: yields requests (sent back: the unread answer), reads, sleeps and deadlines;
# returns T.
_Steps = Generator[httpx.Request | _Read | _Sleep | _Deadline, Any, T]
_CONNECTED = frozenset({"connection.connect_tcp.complete", "connection.start_tls.complete"})
_DEADLINE = threading.local()  # `step`: the `_Deadline` of the sync call this thread runs


def _bound_reads(event: str, info: dict[str, Any]) -> None:
    """The `trace` extension of the sync client's requests: every read on a connection they
    make ends by the deadline of the call its thread is running.

    httpx's timeouts bound each read, not a response: a host that sends its headers a byte at
    a time holds a read loop as long as it likes. httpx has no public way to give its pool a
    network backend, so each new connection's stream (the one httpcore reads from, handed
    to `trace`) has its public `read` wrapped instead.
    """
    if event in _CONNECTED:
        stream = info["return_value"]
        read = stream.read

        def bounded(max_bytes: int, timeout: float | None = None) -> bytes:
            deadline = getattr(_DEADLINE, "step", None)
            left = None if deadline is None else deadline.at - time.monotonic()
            if left is None or (timeout is not None and timeout < left):
                return read(max_bytes, timeout)  # the read's own timeout comes first
            with contextlib.suppress(httpcore.ReadTimeout):
                if left > 0:
                    return read(max_bytes, left)
            raise httpcore.ReadTimeout(deadline.cut_off)

        stream.read = bounded


def _cut_timeouts(request: httpx.Request, at: float) -> None:
    """Bound `request`'s connect, pool wait and send (httpx's timeouts, which reads' deadline
    does not reach) by `at` (`time.monotonic()`)."""
    left = at - time.monotonic()
    if left <= 0:
        raise CallCutOff("its deadline passed before it was sent")
    timeouts = request.extensions.get("timeout", {})
    request.extensions["timeout"] = {
        name: left if value is None else min(value, left) for name, value in timeouts.items()
    }


class _PublicPeer:
    """The `trace` of a request for a result link on `host`: `_bound_reads`, and a connection
    it opens must reach a public address.

    `url_problem` reads how a link spells its host, not where the name leads: a public-looking
    name can resolve (or rebind between two lookups) to 127.0.0.1, 10.x or the metadata
    address. httpx has no public way to choose the address it connects to, so the address a
    new connection reached is checked as soon as the TCP handshake is done, before TLS starts
    or a byte is sent, and refused with `UnsafeLinkError` (never retried).
    """

    def __init__(self, host: str):
        self.host, self.proxied = host, False

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.started":
            # Through a proxy (httpx takes one from the environment) the connection is to the
            # proxy, which resolves the link's name itself: its address, often a private one,
            # says nothing about the link's, so it is not checked. (A SOCKS proxy's connection
            # is traced as "socks.connect_tcp", never checked either.)
            self.proxied = info["host"] != self.host
        elif event == "connection.connect_tcp.complete" and not self.proxied:
            stream = info["return_value"]
            try:
                address = ipaddress.ip_address(stream.get_extra_info("server_addr")[0])
            except OSError as exc:  # the peer hung up at once: a failed connection, retried
                stream.close()
                raise httpcore.ConnectError(str(exc)) from None
            if problem := address_problem(address):
                stream.close()
                raise UnsafeLinkError(
                    f"result link refused: host {self.host} resolved to an address that is "
                    f"not public ({problem})"
                )
        _bound_reads(event, info)


class _Buffer:
    """Keeps a body of at most `limit` bytes; `overflow` when there was more."""

    def __init__(self, limit: int):
        self.limit, self.chunks, self.size, self.overflow = limit, [], 0, False

    def __call__(self, chunk: bytes) -> bool:
        self.size += len(chunk)
        self.overflow = self.size > self.limit
        if not self.overflow:
            self.chunks.append(chunk)
        return not self.overflow

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class _FileSink:
    """Writes a body to `out`, hashing it; stops past `max_bytes` or past `deadline`."""

    def __init__(self, out: IO[bytes], max_bytes: int, deadline: float):
        self.out, self.max_bytes, self.deadline = out, max_bytes, deadline
        self.digest, self.size, self.overflow, self.late = hashlib.sha256(), 0, False, False

    def __call__(self, chunk: bytes) -> bool:
        self.late = time.monotonic() > self.deadline
        self.size += len(chunk)
        self.overflow = self.size > self.max_bytes
        if self.late or self.overflow:
            return False
        self.out.write(chunk)
        self.digest.update(chunk)
        return True


def _encoding(response: httpx.Response) -> str | None:
    """The answer's Content-Encoding unless it is absent or identity (none was asked for)."""
    value = response.headers.get("content-encoding", "")
    codings = {coding.strip().lower() for coding in value.split(",")} - {"", "identity"}
    return value if codings else None


def _read_answer(response: httpx.Response) -> _Steps[_Buffer]:
    """Read an API answer or error page of at most `MAX_ANSWER_BYTES`; a compressed one is
    left unread (its buffer empty): the caller decides what that means."""
    body = _Buffer(MAX_ANSWER_BYTES)
    yield _Read(response, None if _encoding(response) else body)
    return body


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None  # `inf` is no pause


def api_error(response: httpx.Response, body: bytes, hidden: tuple[str, ...] = ()) -> APIError:
    """The exception for an HTTP error answer, carrying the vendor's code and message, without
    the `hidden` secrets however the answer escaped them."""
    code, message, kind = None, None, None
    # The answer itself, when it has no error message; cut as read, before it is shortened: a
    # secret across the cut would leave its start.
    said = _redacted(body, hidden).decode("utf-8", "replace")
    try:
        payload = _loads(body, hidden)
        said = json.dumps(payload, ensure_ascii=False)  # its escapes (\u002d) read
        error = payload.get("error") or {}
        code, message, kind = (_text(error.get(name)) for name in ("code", "message", "type"))
    except (ValueError, AttributeError, RecursionError):
        pass
    message = plain(message or said[:200] or response.reason_phrase)
    code, kind = (None if t is None else plain(t, 100) for t in (code, kind))
    cls = error_class_for(response.status_code)
    kwargs: dict[str, Any] = {}
    if cls is RateLimitError:
        kwargs["retry_after"] = _retry_after(response)
    return cls(response.status_code, code, message, kind, **kwargs)


_UTF8, _AS_IS = "utf-8", "surrogatepass"  # a lone surrogate of a JSON escape, kept for `plain`


def _loads(data: bytes, hidden: tuple[str, ...]) -> Any:
    """The JSON answer `data` without the `hidden` secrets, however it wrote them: cut from its
    bytes, and, where an escape (`sk\u002devo…`) may spell one, from its decoded text too.

    Raises:
        ValueError, RecursionError: not JSON (or arrays nested too deep).
    """
    payload = json.loads(_redacted(data, hidden))
    if hidden and b"\\u" in data:  # rare: escapes only where ASCII could not say it
        text = json.dumps(payload, ensure_ascii=False).encode(_UTF8, _AS_IS)
        payload = json.loads(_redacted(text, hidden).decode(_UTF8, _AS_IS))
    return payload


def _redacted(data: bytes, hidden: tuple[str, ...]) -> bytes:
    """`data` with each of `hidden` cut out, as sent or as JSON escapes its slashes."""
    for secret in hidden:
        for form in {secret, secret.replace("/", "\\/")}:
            data = data.replace(form.encode(), b"***")
    return data


# Query values a presigned URL carries that grant nothing: kept in messages, which they explain.
_PUBLIC_QUERY = frozenset({"x-amz-algorithm", "x-amz-date", "x-amz-expires", "x-amz-signedheaders"})


def _capabilities(callback_url: Any, links: Sequence[Any] = ()) -> tuple[str, ...]:
    """What in a request's URLs grants access to whoever reads it: the callback URL's path
    segments and query values (its token), each link's query values (a presigned URL's
    signature, credential and session token); as written and decoded, whole and split at
    slashes, when long enough to be a token or a key."""
    found: set[str] = set()
    for url, with_path in ((callback_url, True), *((link, False) for link in links)):
        if not isinstance(url, str):
            continue
        parts = urlsplit(url)
        pairs = [*parse_qsl(parts.query), *(p.partition("=")[::2] for p in parts.query.split("&"))]
        values = [v for name, v in pairs if name.lower() not in _PUBLIC_QUERY]
        values += parts.path.split("/") if with_path else []
        found.update(
            piece
            for value in values
            for piece in (value, *value.split("/"))
            if len(piece) >= _MIN_REDACTED_KEY and piece != "aws4_request"
        )
    return tuple(sorted(found, key=len, reverse=True))  # a long one before any part of it


def _text(value: Any) -> str | None:
    """A field of an error answer as text; None unless it is a string or a whole number (an
    object there would reach the ledger's text columns)."""
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def _where(request: httpx.Request) -> str:
    """Method and URL without the query (result links carry their signature there)."""
    return f"{request.method} {request.url.copy_with(query=None)}"


def _transport_error(exc: httpx.HTTPError, request: httpx.Request, creates: bool) -> SeedanceError:
    """Translate an httpx error: was the request possibly received by the vendor?"""
    # A header h11 refuses or an unknown scheme fails before a byte is written (h11 can also
    # refuse a body longer than declared, but API calls' bodies have a known length).
    never_sent = isinstance(
        exc,
        httpx.ConnectError
        | httpx.ConnectTimeout
        | httpx.PoolTimeout
        | httpx.LocalProtocolError
        | httpx.UnsupportedProtocol,
    )
    if creates and not never_sent:
        return OutcomeUnknownError(
            f"{_where(request)}: the request was sent but its answer was lost "
            f"({type(exc).__name__}); a task may have been created and is not resubmitted"
        )
    return TransportError(f"{_where(request)}: {type(exc).__name__}: {exc}")


def _loopback_origin(base_url: str) -> str | None:
    """The origin of `base_url` when it is on loopback (an emulator), else None."""
    host = urlsplit(base_url).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return origin(base_url) if loopback else None


def _upload_answer(payload: Any) -> UploadedFile:
    if not isinstance(payload, Mapping):
        raise MalformedAnswerError("an upload answer must be a JSON object")
    if not payload.get("success", True):
        code, message = (_text(payload.get(name)) for name in ("code", "msg"))
        raise error_class_for(400)(
            400, None if code is None else plain(code, 100), plain(message or "upload failed")
        )
    return UploadedFile.from_json(payload.get("data"))


def _credits_answer(payload: Any) -> dict[str, Any]:
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(data, dict):
        raise MalformedAnswerError("a credits answer needs a data object")
    return data


def _checked_key(api_key: str) -> str:
    """The key without surrounding whitespace (a Windows .env's CR); refused, never shown,
    if anything else in it cannot be in a header: httpx would quote it in its error."""
    key = api_key.strip()
    if not key:
        raise ValueError("an EvoLink API key is required (set EVOLINK_API_KEY)")
    bad = next((n for n, c in enumerate(key, 1) if not "!" <= c <= "~"), None)
    if bad is not None:
        raise ValueError(
            f"EVOLINK_API_KEY has a space, control or non-ASCII character at position {bad}; "
            "copy the key again"
        )
    return key


def _api_root(url: str, setting: str) -> str:
    """`url` without its trailing slash; refused, never shown (it may hold a password), when it
    is not an API root (`api_root_problem`)."""
    if problem := api_root_problem(url, setting):
        raise ValueError(f"{setting} {problem}")
    return url.rstrip("/")


class _BaseClient:
    """Everything both clients do; the subclasses only carry the steps out."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        files_url: str = DEFAULT_FILES_URL,
        retry: RetryPolicy | None = None,
        max_requests_per_second: float | None = None,
    ):
        key = _checked_key(api_key)
        self._headers = {"Authorization": f"Bearer {key}", **_IDENTITY}
        self._secrets = (key,) if len(key) >= _MIN_REDACTED_KEY else ()  # cut out of answers
        self.base_url = _api_root(base_url, "EVOLINK_BASE_URL")
        self.files_url = _api_root(files_url, "EVOLINK_FILES_URL")
        self.retry = retry or RetryPolicy()
        self._cap = max_requests_per_second
        _bucket(self.base_url, self._cap, "POST")  # a bad cap is refused here, not at a call
        self._emulator_origin = _loopback_origin(self.base_url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _uploaded(self, payload: Any) -> UploadedFile:
        """An upload answer whose `file_url` may be sent to the vendor in a paid request."""
        uploaded = _upload_answer(payload)
        allowed = _loopback_origin(self.files_url)  # the emulator's own files
        if problem := url_problem(uploaded.file_url, allow_origin=allowed):
            raise MalformedAnswerError(f"its file_url {problem}")
        return uploaded

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Request:
        return self._http.build_request(method, url, headers=self._headers, **kwargs)

    def _retrying(
        self,
        attempt: Callable[[], _Steps[T]],
        what: Callable[[], str],
        deadline: float | None = None,
    ) -> _Steps[T]:
        """Run `attempt` until it returns, or the retry policy (or `deadline`) gives up.

        `what` names the request for the log, when a retry is logged (built only then).
        """
        waited = 0.0
        for n in itertools.count(1):
            try:
                return (yield from attempt())
            except SeedanceError as error:
                delay = self.retry.next_delay(error, n, waited)
                if delay is None or (deadline is not None and time.monotonic() + delay > deadline):
                    raise
                where = what()
                said = str(error) if str(error).startswith(where) else f"{where}: {error}"
                log.warning("%s; retry %d in %.1fs", said, n, delay)
                waited += delay
                yield _Sleep(delay)
        raise AssertionError("unreachable")

    def _call(
        self,
        request: httpx.Request,
        parse: Callable[[Any], T],
        *,
        creates: bool = False,
        hidden: tuple[str, ...] = (),
        before_send: Callable[[], None] | None = None,
    ) -> _Steps[T]:
        """An API call: paced, retried, its answer capped, parsed and checked by `parse`; the
        key and `hidden` (secrets the request carries) are cut out of its answers.
        `before_send` is called just before each try goes out, once it is its turn; what it
        raises ends the call unsent."""
        hidden = (*self._secrets, *hidden)
        return self._retrying(
            lambda: self._attempt(request, parse, creates, hidden, before_send),
            lambda: _where(request),
        )

    def _attempt(
        self,
        request: httpx.Request,
        parse: Callable[[Any], T],
        creates: bool,
        hidden: tuple[str, ...],
        before_send: Callable[[], None] | None = None,
    ) -> _Steps[T]:
        """One try of an API call.

        A create must never be sent twice for one task: only a refused connection or a
        documented refusal (`_NO_TASK_MADE`) proves that none was made. Any other failure after
        sending (5xx, an undocumented status, a lost or garbled answer) raises
        `OutcomeUnknownError`.
        """
        bucket = _bucket(self.base_url, self._cap, request.method)
        while (wait := bucket.take()) > 0:
            if wait > self.retry.max_total_wait and bucket.pausing():  # Retry-After: an hour
                raise RateLimitError(
                    429,
                    "rate_limit_exceeded",
                    f"the API asked for a pause of {wait:.0f} s more (Retry-After), beyond the "
                    f"{self.retry.max_total_wait:.0f} s this call may wait; not sent",
                    retry_after=wait,
                )
            yield _Sleep(wait)
        if before_send is not None:
            before_send()
        sent_at = time.monotonic()
        yield _Deadline(sent_at + ANSWER_SECONDS, ANSWER_SECONDS, download=False)
        try:
            response = yield request
            body = yield from _read_answer(response)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, request, creates) from None
        refused = response.status_code == 429
        bucket.answered(sent_at, refused, _retry_after(response) if refused else None)
        if not response.is_success:
            error = api_error(response, body.data, hidden)
            if creates and response.status_code not in _NO_TASK_MADE:
                raise OutcomeUnknownError(
                    f"{_where(request)} answered {error}; the vendor may have created the task, "
                    "so it is not resubmitted"
                ) from error
            raise error
        try:
            if encoding := _encoding(response):
                raise MalformedAnswerError(
                    f"it is compressed (Content-Encoding: {plain(encoding, 40)}) though "
                    "Accept-Encoding: identity was asked"
                )
            if body.overflow:
                raise MalformedAnswerError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
            try:
                # A gateway, or the API, echoing the key or the request: it goes no further.
                payload = _loads(body.data, hidden)
            except (ValueError, RecursionError):  # RecursionError: arrays nested too deep
                raise MalformedAnswerError("the answer is not JSON") from None
            return parse(payload)
        except MalformedAnswerError as exc:
            what = f"{_where(request)} answered {response.status_code} but {exc}"
            if creates:
                raise OutcomeUnknownError(
                    f"{what}; a task may have been created and is not resubmitted"
                ) from None
            raise MalformedAnswerError(what) from None

    def _create(
        self,
        request: GenerationRequest | Mapping[str, Any],
        before_send: Callable[[], None] | None = None,
    ) -> _Steps[Task]:
        body = request.to_body() if isinstance(request, GenerationRequest) else dict(request)
        http = self._request("POST", f"{self.base_url}/v1/videos/generations", json=body)
        media = [u for f in ("image_urls", "video_urls", "audio_urls") for u in body.get(f) or ()]
        hidden = _capabilities(body.get("callback_url"), media)
        return self._call(
            http, Task.from_json, creates=True, hidden=hidden, before_send=before_send
        )

    def _get_task(self, task_id: str) -> _Steps[Task]:
        def parse(payload: Any) -> Task:
            task = Task.from_json(payload)
            if task.id != task_id:
                raise MalformedAnswerError(f"it describes task {task.id!r}, not {task_id!r}")
            return task

        return self._call(self._request("GET", f"{self.base_url}/v1/tasks/{task_id}"), parse)

    def _download(
        self, url: str, dest: str | os.PathLike, max_bytes: int, deadline_seconds: float
    ) -> _Steps[Download]:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        deadline = _Deadline(time.monotonic() + deadline_seconds, deadline_seconds, download=True)
        yield deadline
        try:
            sha256, size = yield from self._retrying(
                lambda: self._download_attempt(url, tmp, max_bytes, deadline),
                lambda: _where(httpx.Request("GET", url)),
                deadline.at,
            )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return Download(str(dest), sha256, size)

    def _download_attempt(
        self, url: str, tmp: Path, max_bytes: int, deadline: _Deadline
    ) -> _Steps[tuple[str, int]]:
        """One try: follow up to `MAX_REDIRECTS` redirects, each hop checked, into `tmp`."""
        for hop in range(MAX_REDIRECTS + 1):
            if problem := url_problem(url, allow_origin=self._emulator_origin):
                what = "result link" if not hop else f"result link's redirect {hop}"
                raise UnsafeLinkError(f"{what} refused: {problem}")
            remaining = deadline.at - time.monotonic()
            if remaining <= 0:
                raise deadline.late(_where(httpx.Request("GET", url)))
            # No API key: result links are pre-signed and their hosts are not the vendor's.
            request = self._http.build_request(
                "GET",
                url,
                headers=_IDENTITY,
                timeout=min(remaining, _DOWNLOAD_READ_SECONDS),
            )
            try:
                response = yield request
                if response.next_request is not None:
                    url = str(response.next_request.url)
                    yield _Read(response)
                    continue
                return (yield from self._save_body(request, response, tmp, max_bytes, deadline))
            except httpx.HTTPError as exc:
                if time.monotonic() >= deadline.at:
                    raise deadline.late(_where(request)) from None
                raise _transport_error(exc, request, creates=False) from None
        raise UnsafeLinkError(f"result link redirects more than {MAX_REDIRECTS} times")

    def _save_body(
        self,
        request: httpx.Request,
        response: httpx.Response,
        tmp: Path,
        max_bytes: int,
        deadline: _Deadline,
    ) -> _Steps[tuple[str, int]]:
        where = functools.partial(_where, request)  # for an error only: it parses the URL
        if response.status_code in (403, 404, 410):
            yield _Read(response)
            raise LinkExpiredError(
                f"{where()} answered {response.status_code}: the result link has expired or is "
                "invalid"
            )
        if not response.is_success:
            body = yield from _read_answer(response)
            raise api_error(response, body.data, _capabilities(None, [str(request.url)]))
        if encoding := _encoding(response):
            yield _Read(response)
            raise DownloadError(
                f"{where()} sent a compressed body (Content-Encoding: {plain(encoding, 40)}) "
                "though none was asked; it is not inflated"
            )
        if response.headers.get("content-type", "").lower().startswith("text/html"):
            yield _Read(response)
            raise DownloadError(f"{where()} answered a web page (text/html), not a video")
        if int(response.headers.get("content-length") or 0) > max_bytes:
            yield _Read(response)
            raise _too_large(where(), max_bytes)
        with tmp.open("wb") as out:
            sink = _FileSink(out, max_bytes, deadline.at)
            yield _Read(response, sink)
            out.flush()
            os.fsync(out.fileno())
        if sink.overflow:
            raise _too_large(where(), max_bytes)
        if sink.late:
            raise deadline.late(where())
        return sink.digest.hexdigest(), sink.size


class _NoCookies(http.cookiejar.CookieJar):
    """A jar that keeps no cookie, so none is ever sent: the API takes a bearer key, and result
    links are pre-signed on hosts trusted with nothing."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass


def _too_large(where: str, max_bytes: int) -> DownloadTooLargeError:
    return DownloadTooLargeError(
        f"{where} is larger than {max_bytes} bytes (SEEDANCE_MAX_VIDEO_BYTES); "
        "raise that setting if such videos are expected"
    )


class Client(_BaseClient):
    """Blocking client.

    Args:
        api_key: the EvoLink bearer token; kept out of every repr, log line and exception.
        base_url: API host (`EVOLINK_BASE_URL`). On loopback (the emulator), result links
            on exactly its origin may be plain http.
        files_url: file upload host (`EVOLINK_FILES_URL`).
        timeout: httpx timeout for each request.
        retry: retry policy for 429, 5xx and connection failures.
        max_requests_per_second: the most POSTs and the most queries per second to send,
            whatever the adaptive pacing learns (shared by every client of `base_url` in this
            process); None: as fast as the API's 429s allow.
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
        # Downloads have a pool of their own: no result host's connection is in the API's.
        self._http, self._downloads = (
            httpx.Client(timeout=timeout, transport=transport, verify=_tls(), cookies=_NoCookies())
            for _ in range(2)
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._downloads.close()

    def _run(
        self,
        steps: _Steps[T],
        cut_off_at: float | None = None,
        halt: threading.Event | None = None,
    ) -> T:
        """Carry a call's steps out; with `cut_off_at` (`time.monotonic()`), the call ends by
        then whatever it is doing (waiting its turn or a retry, connecting, sending, reading)
        and raises `CallCutOff`. Once `halt` is set, no further try is sent: a wait for one
        ends at once, and `CallHalted` is raised."""
        opened: list[httpx.Response] = []
        pool = self._http
        try:
            step = next(steps)
            while True:
                result = None
                try:
                    if isinstance(step, _Deadline):
                        if cut_off_at is not None and cut_off_at < step.at:
                            step = replace(step, at=cut_off_at)
                        _DEADLINE.step = step
                        pool = self._downloads if step.download else self._http
                    elif isinstance(step, _Sleep):
                        if cut_off_at is not None and time.monotonic() + step.seconds > cut_off_at:
                            raise CallCutOff("its deadline comes before its turn")
                        if halt is None:
                            time.sleep(step.seconds)
                        elif halt.wait(step.seconds):
                            raise CallHalted("halted while waiting to be sent")
                    elif isinstance(step, _Read):
                        if step.sink and step.response.is_stream_consumed:
                            step.sink(step.response.content)  # made read: a test's Response
                        elif step.sink:
                            for chunk in step.response.iter_raw():
                                if not step.sink(chunk):
                                    break
                        step.response.close()
                    else:
                        if halt is not None and halt.is_set():
                            raise CallHalted("halted before it was sent")
                        if cut_off_at is not None:
                            _cut_timeouts(step, cut_off_at)
                        step.extensions["trace"] = self._trace(step, pool)
                        result = pool.send(step, stream=True)
                        opened.append(result)
                except (httpx.HTTPError, UnsafeLinkError) as exc:  # UnsafeLinkError: _PublicPeer
                    if cut_off_at is not None and time.monotonic() >= cut_off_at:
                        # the deadline's doing, not the host's: no retry, nor its log line
                        raise CallCutOff("its deadline passed before its answer came") from None
                    step = steps.throw(exc)
                else:
                    step = steps.send(result)
        except StopIteration as done:
            return done.value
        except SeedanceError:
            if cut_off_at is not None and time.monotonic() >= cut_off_at:
                raise CallCutOff("its deadline passed before its answer came") from None
            raise
        finally:
            _DEADLINE.step = None
            steps.close()
            for response in opened:
                response.close()

    def _trace(
        self, request: httpx.Request, pool: httpx.Client
    ) -> Callable[[str, dict[str, Any]], None]:
        """The `trace` extension of `request`: every read bounded, and a result link's
        connection checked to reach a public address, unless it is on the emulator's own
        origin (on loopback, as `url_problem(allow_origin=...)` allows)."""
        if pool is self._downloads and origin(str(request.url)) != self._emulator_origin:
            return _PublicPeer(request.url.raw_host.decode("ascii"))
        return _bound_reads

    def create_task(
        self,
        request: GenerationRequest | Mapping[str, Any],
        *,
        before_send: Callable[[], None] | None = None,
        halt: threading.Event | None = None,
    ) -> Task:
        """Submit a generation request; `before_send` is called just before each try goes
        out (after any wait for its turn), and what it raises ends the call unsent. Once
        `halt` is set, no further try goes out, even one waiting out a 429 (a try is only
        ever repeated after an answer proving that no task was made).

        Raises:
            OutcomeUnknownError: the request went out and the answer does not say whether a
                task was made (lost, 5xx, or not a task); it is never resent.
            CallHalted: `halt` was set before a try went out.
        """
        return self._run(self._create(request, before_send), halt=halt)

    def get_task(self, task_id: str, *, deadline: float | None = None) -> Task:
        """The task's current state; with `deadline` (`time.monotonic()`), by then.

        Raises:
            MalformedAnswerError: the answer is not this task's state.
            CallCutOff: `deadline` came first.
        """
        return self._run(self._get_task(task_id), deadline)

    def get_credits(self) -> dict[str, Any]:
        """The account balance (`GET /v1/credits`); also the cheap way to check a key."""
        return self._run(
            self._call(self._request("GET", f"{self.base_url}/v1/credits"), _credits_answer)
        )

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
            return self._run(self._call(request, self._uploaded))

    def upload_url(self, url: str) -> UploadedFile:
        """Have the files API fetch `url` and host it."""
        request = self._request(
            "POST", f"{self.files_url}/api/v1/files/upload/url", json={"file_url": url}
        )
        return self._run(self._call(request, self._uploaded))

    def download(
        self,
        url: str,
        dest: str | os.PathLike,
        *,
        max_bytes: int = DEFAULT_MAX_VIDEO_BYTES,
        deadline_seconds: float = DEFAULT_DOWNLOAD_SECONDS,
    ) -> Download:
        """Stream a result link to `dest` in constant memory, hashing as it goes.

        Result links are untrusted: the link and every redirect (at most `MAX_REDIRECTS`)
        must be https on a public host, each connection must reach a public address (unless
        through a proxy), and the API key is never sent. The file appears at `dest` only once
        complete; no temporary file is left behind on failure.

        Args:
            max_bytes: stop and fail past this many bytes (SEEDANCE_MAX_VIDEO_BYTES).
            deadline_seconds: the whole download (redirects, headers, body and retries) ends
                within this, however slowly a host sends.

        Raises:
            UnsafeLinkError: a link or redirect not allowed to be fetched (never retried).
            LinkExpiredError: the link answered 403, 404 or 410.
            DownloadTooLargeError: the file is larger than `max_bytes`.
            DownloadTimeoutError: the deadline passed.
            DownloadError: an HTML page came instead of a video.
        """
        return self._run(self._download(url, dest, max_bytes, deadline_seconds))


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
            timeout=timeout,
            transport=transport,
            limits=limits or httpx.Limits(max_connections=32),
            verify=_tls(),
            cookies=_NoCookies(),
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, steps: _Steps[T]) -> T:
        opened: list[httpx.Response] = []
        deadline: _Deadline | None = None
        try:
            step = next(steps)
            while True:
                result = None
                try:
                    if isinstance(step, _Deadline):
                        deadline = step
                    elif isinstance(step, _Sleep):
                        await asyncio.sleep(step.seconds)
                    else:
                        left = None if deadline is None else deadline.at - time.monotonic()
                        try:
                            async with asyncio.timeout(left):
                                if isinstance(step, _Read):
                                    await self._read(step)
                                else:
                                    result = await self._http.send(step, stream=True)
                                    opened.append(result)
                        except TimeoutError:
                            if deadline is None:
                                raise
                            raise httpx.ReadTimeout(deadline.cut_off) from None
                except httpx.HTTPError as exc:
                    step = steps.throw(exc)
                else:
                    step = steps.send(result)
        except StopIteration as done:
            return done.value
        finally:
            steps.close()
            for response in opened:
                await response.aclose()

    @staticmethod
    async def _read(step: _Read) -> None:
        if step.sink and step.response.is_stream_consumed:
            step.sink(step.response.content)  # made read: a test's Response
        elif step.sink:
            async for chunk in step.response.aiter_raw():
                if not step.sink(chunk):
                    break
        await step.response.aclose()

    async def create_task(self, request: GenerationRequest | Mapping[str, Any]) -> Task:
        """Submit a generation request (see `Client.create_task`)."""
        return await self._run(self._create(request))

    async def get_task(self, task_id: str) -> Task:
        """The task's current state (see `Client.get_task`)."""
        return await self._run(self._get_task(task_id))
