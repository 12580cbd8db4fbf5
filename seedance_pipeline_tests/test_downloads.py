"""`Client.download`: result links are untrusted.

Every hop is checked (https on a public host; on an emulator's own origin, http), the key
never leaves for a result host, size and time are capped, and nothing half-written is left.
`httpx.MockTransport` plays the result hosts; the client's clock is fake (`client_support`).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib

import httpx
import pytest

from seedance_pipeline.seedance import (
    AsyncClient,
    Client,
    DownloadError,
    DownloadTimeoutError,
    DownloadTooLargeError,
    LinkExpiredError,
    RateLimitError,
    RetryPolicy,
    SeedanceError,
    TransportError,
    UnsafeLinkError,
)

from . import client_support
from .client_support import KEY, Recorder

# The fixtures of `client_support`, for pytest to find here.
clock, sleeps, fresh_pacing = (
    client_support.clock,
    client_support.sleeps,
    client_support.fresh_pacing,
)

BASE = "https://api.test.invalid"
RESULT = "https://cdn.results-example.com/results/video.mp4?X-Signature=abc123"
EMULATOR = "http://127.0.0.1:8790"


def call_sync(handler, call: str, *args, base_url: str = BASE, **retry):
    policy = RetryPolicy(**({"max_attempts": 4, "base_delay": 0.5} | retry))
    transport = httpx.MockTransport(handler)
    with Client(KEY, base_url=base_url, transport=transport, retry=policy) as c:
        return getattr(c, call)(*args)


def download(handler, url: str, dest, base_url: str = BASE, **options):
    transport = httpx.MockTransport(handler)
    policy = RetryPolicy(max_attempts=4, base_delay=0.5)
    with Client(KEY, base_url=base_url, transport=transport, retry=policy) as c:
        return c.download(url, dest, **options)


def error_response(status: int, code: str, message: str, **headers) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"code": code, "message": message}}, headers=headers
    )


PAYLOAD = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MB, several chunks


class ChunkStream(httpx.SyncByteStream):
    """Yields `data` in 256 KB chunks, optionally failing after `fail_after` chunks."""

    def __init__(self, data: bytes, fail_after: int | None = None):
        self.data, self.fail_after, self.taken = data, fail_after, 0

    def __iter__(self):
        size = 256 * 1024
        for i, start in enumerate(range(0, len(self.data), size)):
            if self.fail_after is not None and i >= self.fail_after:
                raise httpx.ReadError("connection reset mid-body")
            self.taken += size
            yield self.data[start : start + size]


def ok_download(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, stream=ChunkStream(PAYLOAD))


def broken_download(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, stream=ChunkStream(PAYLOAD, fail_after=3))


def test_download_streams_to_file_with_sha256_and_size(sleeps, tmp_path):
    handler = Recorder(ok_download)
    dest = tmp_path / "videos" / "2026-11-20" / "p1.mp4"
    result = call_sync(handler, "download", RESULT, dest)
    assert dest.read_bytes() == PAYLOAD
    assert result.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert result.bytes == len(PAYLOAD)
    assert result.path == str(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["p1.mp4"]


def test_download_does_not_send_the_key(sleeps, tmp_path):
    handler = Recorder(ok_download)
    call_sync(handler, "download", RESULT, tmp_path / "v.mp4")
    (request,) = handler.requests
    assert "authorization" not in request.headers
    assert KEY not in str(request.headers) and KEY not in str(request.url)


def test_download_failure_leaves_no_partial_file(sleeps, tmp_path):
    handler = Recorder(broken_download)
    dest = tmp_path / "v.mp4"
    with pytest.raises(TransportError):
        call_sync(handler, "download", RESULT, dest, max_attempts=2)
    assert len(handler) == 2
    assert list(tmp_path.iterdir()) == []


def test_download_failure_keeps_a_previous_complete_file(sleeps, tmp_path):
    dest = tmp_path / "v.mp4"
    dest.write_bytes(b"previous complete file")
    with pytest.raises(TransportError):
        call_sync(Recorder(broken_download), "download", RESULT, dest, max_attempts=1)
    assert dest.read_bytes() == b"previous complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_download_retries_a_broken_stream_then_succeeds(sleeps, tmp_path):
    handler = Recorder(broken_download, ok_download)
    dest = tmp_path / "v.mp4"
    result = call_sync(handler, "download", RESULT, dest)
    assert len(handler) == 2 and len(sleeps) == 1
    assert result.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]


def test_download_retries_5xx(sleeps, tmp_path):
    handler = Recorder(httpx.Response(503, text="busy"), ok_download)
    result = call_sync(handler, "download", RESULT, tmp_path / "v.mp4")
    assert result.bytes == len(PAYLOAD) and len(handler) == 2


@pytest.mark.parametrize("status", [403, 404, 410])
def test_expired_link_is_link_expired_error(sleeps, tmp_path, status):
    handler = Recorder(httpx.Response(status, text="AccessDenied: Request has expired"))
    with pytest.raises(LinkExpiredError) as info:
        call_sync(handler, "download", RESULT, tmp_path / "v.mp4")
    assert str(status) in str(info.value)
    assert "X-Signature" not in str(info.value)  # the signed query is not echoed
    assert len(handler) == 1 and sleeps == []
    assert list(tmp_path.iterdir()) == []


def test_download_retry_budget_respects_max_total_wait(sleeps, tmp_path):
    handler = Recorder(error_response(429, "rate_limit_exceeded", "x", **{"Retry-After": "50"}))
    with pytest.raises(RateLimitError):
        call_sync(
            handler, "download", RESULT, tmp_path / "v.mp4", max_attempts=10, max_total_wait=120
        )
    assert sum(sleeps) <= 120
    assert len(handler) == 3


# ---- every hop is checked, and the key stays home ------------------------------------------


def redirect(to: str, status: int = 302) -> httpx.Response:
    return httpx.Response(status, headers={"Location": to})


def test_redirects_are_followed_by_hand_each_hop_without_the_key(sleeps, tmp_path):
    hops = [f"https://cdn{n}.results-example.com/v.mp4?sig={n}" for n in range(5)]
    handler = Recorder(*(redirect(hop) for hop in hops), ok_download)
    saved = download(handler, RESULT, tmp_path / "v.mp4")
    assert saved.bytes == len(PAYLOAD)
    assert [str(r.url) for r in handler.requests] == [RESULT, *hops]
    for request in handler.requests:
        assert "authorization" not in request.headers
        assert KEY not in str(request.headers)


def test_the_clients_send_back_no_cookie_the_api_sets(sleeps):
    """Neither client keeps cookies: the API takes a bearer key (result links' requests never
    read a jar: they are built by the API's client and sent by the downloads' one)."""
    task = {"id": "task-unified-1774857405-abc123", "status": "pending", "progress": 0}
    handler = Recorder(
        lambda request: httpx.Response(200, json=task, headers={"Set-Cookie": "s=1; Path=/"})
    )
    with Client(KEY, base_url=BASE, transport=httpx.MockTransport(handler)) as client:
        client.get_task(task["id"])
        client.get_task(task["id"])

    async def twice() -> None:
        async with AsyncClient(KEY, base_url=BASE, transport=httpx.MockTransport(handler)) as c:
            await c.get_task(task["id"])
            await c.get_task(task["id"])

    asyncio.run(twice())
    assert [r.headers.get("cookie") for r in handler.requests] == [None] * 4


def test_more_than_five_redirects_is_an_unsafe_link_never_retried(sleeps, tmp_path):
    handler = Recorder(lambda request: redirect(f"{request.url}x"))
    with pytest.raises(UnsafeLinkError, match="more than 5"):
        download(handler, RESULT, tmp_path / "v.mp4")
    assert len(handler) == 6 and sleeps == []
    assert list(tmp_path.iterdir()) == []


UNSAFE = [
    "http://cdn.results-example.com/v.mp4",  # plain http
    "https://169.254.169.254/latest/meta-data/",  # cloud metadata
    "https://10.0.0.7/v.mp4",
    "https://[::ffff:127.0.0.1]/v.mp4",
    "https://[64:ff9b:1::a9fe:a9fe]/v.mp4",  # local-use NAT64 of the metadata address
    "https://0x7f.1/v.mp4",
    "https://storage.internal/v.mp4",
    "https://user:pw@cdn.results-example.com/v.mp4",
    "http://127.0.0.1:8790/results/t.mp4",  # the emulator's origin, but this API is public
]


@pytest.mark.parametrize("url", UNSAFE)
def test_an_unsafe_result_link_is_never_fetched(sleeps, tmp_path, url):
    handler = Recorder(ok_download)
    with pytest.raises(UnsafeLinkError) as info:
        download(handler, url, tmp_path / "v.mp4")
    assert len(handler) == 0 and not info.value.retryable
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", UNSAFE)
def test_a_redirect_to_an_unsafe_link_is_not_followed(sleeps, tmp_path, url):
    handler = Recorder(redirect(url), ok_download)
    # the refusal names the redirect: "result link refused" blamed the link itself (helper-49)
    with pytest.raises(UnsafeLinkError, match="^result link's redirect 1 refused: "):
        download(handler, RESULT, tmp_path / "v.mp4")
    assert [str(r.url) for r in handler.requests] == [RESULT]


def test_an_emulator_s_own_origin_may_be_plain_http(sleeps, tmp_path):
    handler = Recorder(ok_download)
    url = f"{EMULATOR}/results/task-1.mp4"
    saved = download(handler, url, tmp_path / "v.mp4", base_url=EMULATOR)
    assert saved.bytes == len(PAYLOAD)
    assert "authorization" not in handler.requests[0].headers


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8791/results/t.mp4",  # another port
        "http://127.0.0.2:8790/results/t.mp4",  # another loopback address
        "http://localhost:8790/results/t.mp4",  # another spelling of the host
        "https://127.0.0.1:8790/results/t.mp4",  # another scheme
    ],
)
def test_only_exactly_the_emulator_s_origin_is_excepted(sleeps, tmp_path, url):
    handler = Recorder(ok_download)
    with pytest.raises(UnsafeLinkError):
        download(handler, url, tmp_path / "v.mp4", base_url=EMULATOR)
    assert len(handler) == 0


# ---- size, time and content ------------------------------------------------------------------


def test_a_file_past_max_bytes_stops_there_and_names_the_setting(sleeps, tmp_path):
    handler = Recorder(ok_download)  # no Content-Length: found out while reading
    with pytest.raises(DownloadTooLargeError) as info:
        download(handler, RESULT, tmp_path / "v.mp4", max_bytes=1_000_000)
    assert "1000000" in str(info.value) and "SEEDANCE_MAX_VIDEO_BYTES" in str(info.value)
    assert "X-Signature" not in str(info.value)
    assert len(handler) == 1 and not info.value.retryable
    assert list(tmp_path.iterdir()) == []


def test_a_declared_length_past_max_bytes_is_not_read(sleeps, tmp_path):
    stream = ChunkStream(PAYLOAD)
    handler = Recorder(
        lambda request: httpx.Response(
            200, stream=stream, headers={"Content-Length": str(len(PAYLOAD))}
        )
    )
    with pytest.raises(DownloadTooLargeError):
        download(handler, RESULT, tmp_path / "v.mp4", max_bytes=len(PAYLOAD) - 1)
    assert stream.taken == 0


class Drip(httpx.SyncByteStream):
    """One byte every 10 s of the fake clock, for ever."""

    def __init__(self, clock):
        self.clock, self.taken = clock, 0

    def __iter__(self):
        while True:
            self.clock.now += 10
            self.taken += 1
            yield b"x"


def test_a_trickle_fails_at_the_deadline(clock, tmp_path):
    drip = Drip(clock)
    handler = Recorder(lambda request: httpx.Response(200, stream=drip))
    start = clock.now
    with pytest.raises(DownloadTimeoutError) as info:
        download(handler, RESULT, tmp_path / "v.mp4", deadline_seconds=60)
    assert clock.now - start <= 60 + 10
    assert info.value.retryable  # a later try may succeed, but not within this deadline
    assert len(handler) == 1
    assert list(tmp_path.iterdir()) == []


def test_retries_stop_at_the_deadline(sleeps, tmp_path):
    handler = Recorder(httpx.Response(503, text="busy"))
    with pytest.raises(SeedanceError):
        download(handler, RESULT, tmp_path / "v.mp4", deadline_seconds=1.0)
    assert sum(sleeps) <= 1.0


@pytest.mark.parametrize("kind", ["text/html", "TEXT/HTML; charset=UTF-8"])
def test_a_web_page_instead_of_a_video_is_refused(sleeps, tmp_path, kind):
    page = httpx.Response(200, text="<html>Sign in</html>", headers={"Content-Type": kind})
    with pytest.raises(DownloadError, match="text/html") as info:
        download(Recorder(page), RESULT, tmp_path / "v.mp4")
    assert type(info.value) is DownloadError
    assert list(tmp_path.iterdir()) == []


def test_a_compressed_body_is_refused_not_inflated(sleeps, tmp_path):
    """A host that ignores `Accept-Encoding: identity`: its gzip would be inflated in memory,
    a whole chunk at a time, before `max_bytes` saw it (a few KB of nested gzip are GBs)."""
    stream = ChunkStream(gzip.compress(PAYLOAD))
    gzipped = {"Content-Encoding": "gzip"}
    handler = Recorder(lambda request: httpx.Response(200, stream=stream, headers=gzipped))
    with pytest.raises(DownloadError, match="compressed body .*gzip.* none was asked") as info:
        download(handler, RESULT, tmp_path / "v.mp4")
    assert type(info.value) is DownloadError and not info.value.retryable
    assert handler.requests[0].headers["accept-encoding"] == "identity"
    assert stream.taken == 0 and len(handler) == 1
    assert list(tmp_path.iterdir()) == []
