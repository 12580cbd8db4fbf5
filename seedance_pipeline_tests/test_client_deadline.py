"""A download's deadline bounds the whole download, and an API answer's the whole answer,
headers included, whatever a host does.

httpx's timeouts bound each socket read: a host that sends its headers a byte at a time
would hold a download or an API call for as long as it likes. Real sockets on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import itertools
import time
from collections.abc import Callable, Iterable, Iterator

import pytest

from seedance_pipeline.seedance import (
    AsyncClient,
    CallCutOff,
    Client,
    DownloadTimeoutError,
    OutcomeUnknownError,
    RetryPolicy,
    TransportError,
    _client,
)

from .client_support import KEY, loopback_server

PACE = 0.2  # seconds between two bytes of a trickle
GIVE_UP = 8.0  # a host stops trickling after this: a regression fails instead of hanging
DEADLINE = 1.5
MARGIN = 1.0
SIGNED = "?X-Signature=secret-signature"

# An answer: bytes sent at once, then bytes sent one at a time, `pace` seconds apart.
Answer = tuple[bytes, Callable[[], Iterable[int]]]


class _Trickler(http.server.BaseHTTPRequestHandler):
    """Gives the n-th GET or POST the server's n-th answer (the last one from then on), until the
    answer ends, the client hangs up, or `GIVE_UP` seconds pass; keeps connections alive."""

    protocol_version = "HTTP/1.1"

    def handle(self):
        self.server.connections += 1
        super().handle()

    def do_GET(self):
        answers = self.server.answers
        head, drip = answers[min(self.server.requests, len(answers) - 1)]
        self.server.requests += 1
        until = time.monotonic() + GIVE_UP
        with contextlib.suppress(OSError):
            self.wfile.write(head)
            for byte in drip():
                if time.monotonic() > until:
                    self.close_connection = True
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(self.server.pace)

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def host(*answers: Answer, pace: float = PACE) -> Iterator[http.server.ThreadingHTTPServer]:
    """A threaded HTTP host on loopback that answers GETs so (see `_Trickler`)."""
    state = {"answers": answers, "pace": pace, "requests": 0, "connections": 0}
    with loopback_server(_Trickler, **state) as server:
        server.url = f"http://127.0.0.1:{server.server_address[1]}"
        yield server


VIDEO = bytes(range(256)) * 2
WHOLE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(VIDEO), VIDEO)
TRICKLES: dict[str, Answer] = {
    # Headers that never end, from the first byte of the status line.
    "headers": (b"", lambda: itertools.chain(b"HTTP/1.1 200 OK\r\nX-Pad: ", itertools.repeat(97))),
    # Whole headers, then a body without a length that never ends.
    "body": (
        b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nConnection: close\r\n\r\n",
        lambda: itertools.repeat(120),
    ),
}


def link(url: str) -> str:
    return f"{url}/results/v.mp4{SIGNED}"


def download(url: str, dest, seconds: float):
    with Client(KEY, base_url=url) as client:
        return client.download(link(url), dest, deadline_seconds=seconds)


def assert_cut_off(info: pytest.ExceptionInfo, took: float, folder) -> None:
    assert took < DEADLINE + MARGIN
    message = str(info.value)
    assert "/results/v.mp4" in message and "a later try may succeed" in message
    assert "secret-signature" not in message
    assert list(folder.iterdir()) == []  # neither the video nor a partial file


@pytest.mark.parametrize("trickled", TRICKLES)
def test_a_trickling_host_is_cut_off_at_the_deadline(trickled, tmp_path):
    with host(TRICKLES[trickled]) as server:
        started = time.monotonic()
        with pytest.raises(DownloadTimeoutError) as info:
            download(server.url, tmp_path / "v.mp4", DEADLINE)
        assert_cut_off(info, time.monotonic() - started, tmp_path)


def test_a_kept_alive_connection_that_starts_trickling_is_cut_off_too(tmp_path):
    with (
        host((WHOLE, lambda: b""), TRICKLES["headers"]) as server,
        Client(KEY, base_url=server.url) as c,
    ):
        c.download(link(server.url), tmp_path / "first.mp4")
        (tmp_path / "first.mp4").unlink()
        started = time.monotonic()
        with pytest.raises(DownloadTimeoutError) as info:
            c.download(link(server.url), tmp_path / "v.mp4", deadline_seconds=DEADLINE)
        assert_cut_off(info, time.monotonic() - started, tmp_path)
        assert (server.requests, server.connections) == (2, 1)


def test_a_slow_host_that_finishes_in_time_is_saved_whole(tmp_path):
    with host((b"", lambda: WHOLE), pace=0.002) as server:
        saved = download(server.url, tmp_path / "v.mp4", 10.0)
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    assert saved.sha256 == hashlib.sha256(VIDEO).hexdigest()


# ---- API answers ---------------------------------------------------------------------------

API_CALLS = {
    "get_task": ("task-unified-1774857405-abc12345",),
    "create_task": ({"model": "seedance-2.0-text-to-video", "prompt": "a cat"},),
}


def call_api(driver: str, url: str, call: str):
    """`call` with the sync or async client, tried once."""
    options = {"base_url": url, "retry": RetryPolicy(max_attempts=1)}
    if driver == "sync":
        with Client(KEY, **options) as c:
            return getattr(c, call)(*API_CALLS[call])

    async def go():
        async with AsyncClient(KEY, **options) as c:
            return await getattr(c, call)(*API_CALLS[call])

    return asyncio.run(go())


@pytest.mark.parametrize("driver", ["sync", "async"])
@pytest.mark.parametrize("trickled", TRICKLES)
@pytest.mark.parametrize(
    ("call", "raised", "says"),
    [
        ("get_task", TransportError, f"did not come whole within {DEADLINE:g} s"),
        ("create_task", OutcomeUnknownError, "a task may have been created"),
    ],
)
def test_a_trickled_api_answer_is_cut_off_at_its_deadline(
    monkeypatch, driver, trickled, call, raised, says
):
    monkeypatch.setattr(_client, "ANSWER_SECONDS", DEADLINE)
    with host(TRICKLES[trickled]) as server:
        started = time.monotonic()
        with pytest.raises(raised, match=says) as info:
            call_api(driver, server.url, call)
        took = time.monotonic() - started
        assert server.requests == 1  # a create is never resent
    assert took < DEADLINE + MARGIN
    assert info.value.retryable == (call == "get_task")


SERVICE_UNAVAILABLE = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize(
    "answer",
    [*TRICKLES.values(), (SERVICE_UNAVAILABLE, lambda: b"")],
    ids=[*TRICKLES, "503 then a retry past it"],
)
def test_a_poll_given_a_deadline_ends_by_it_having_learned_nothing(answer, caplog):
    """A poll round's deadline (the sensor tick's end) cuts a poll whatever it is doing, and
    says so apart from an answer: its task stays due, not backed off as if it had failed; nor
    is a cut read announced as a trickling host's, to be retried (16 such lines a tick)."""
    with host(answer) as server, Client(KEY, base_url=server.url) as c:
        started = time.monotonic()
        with pytest.raises(CallCutOff):
            c.get_task(API_CALLS["get_task"][0], deadline=started + DEADLINE)
        took = time.monotonic() - started
    assert took < DEADLINE + 0.5, took
    if answer in TRICKLES.values():  # a 503 is retried while the deadline leaves time
        assert "retry" not in caplog.text, caplog.text
