"""A download's deadline bounds the whole download, headers included, whatever a host does.

httpx's timeouts bound each socket read: a host that sends its headers a byte at a time
would hold a download for as long as it likes. Real sockets on loopback, both clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import pytest

from seedance_pipeline.seedance import AsyncClient, Client, DownloadTimeoutError

from .client_support import KEY

PACE = 0.2  # seconds between two bytes of a trickle
GIVE_UP = 8.0  # a host stops trickling after this: a regression fails instead of hanging
DEADLINE = 1.5
MARGIN = 1.0
SIGNED = "?X-Signature=secret-signature"


class _Trickler(http.server.BaseHTTPRequestHandler):
    """Sends the server's `head` at once, then its `drip()` a byte every `pace` seconds until
    it ends, the client hangs up, or `GIVE_UP` seconds pass."""

    def do_GET(self):
        until = time.monotonic() + GIVE_UP
        with contextlib.suppress(OSError):
            self.wfile.write(self.server.head)
            for byte in self.server.drip():
                if time.monotonic() > until:
                    break
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(self.server.pace)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def host(head: bytes, drip: Callable[[], Iterable[int]], pace: float = PACE) -> Iterator[str]:
    """A threaded HTTP host on loopback that answers every GET so (see `_Trickler`); its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickler)
    server.daemon_threads = True
    server.head, server.drip, server.pace = head, drip, pace
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


TRICKLES = {
    # Headers that never end, from the first byte of the status line.
    "headers": (b"", lambda: itertools.chain(b"HTTP/1.1 200 OK\r\nX-Pad: ", itertools.repeat(97))),
    # Whole headers, then a body without a length that never ends.
    "body": (
        b"HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nConnection: close\r\n\r\n",
        lambda: itertools.repeat(120),
    ),
}


VIDEO = bytes(range(256)) * 2
SLOW_BUT_WHOLE = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(VIDEO), VIDEO)


def sync_download(url: str, dest, seconds: float):
    with Client(KEY, base_url=url) as client:
        return client.download(f"{url}/results/v.mp4{SIGNED}", dest, deadline_seconds=seconds)


def async_download(url: str, dest, seconds: float):
    async def go():
        async with AsyncClient(KEY, base_url=url) as client:
            return await client.download(
                f"{url}/results/v.mp4{SIGNED}", dest, deadline_seconds=seconds
            )

    return asyncio.run(go())


DRIVERS = {"sync": sync_download, "async": async_download}


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("trickled", TRICKLES)
def test_a_trickling_host_is_cut_off_at_the_deadline(driver, trickled, tmp_path):
    with host(*TRICKLES[trickled]) as url:
        started = time.monotonic()
        with pytest.raises(DownloadTimeoutError) as info:
            DRIVERS[driver](url, tmp_path / "v.mp4", DEADLINE)
        took = time.monotonic() - started
    assert took < DEADLINE + MARGIN
    message = str(info.value)
    assert "/results/v.mp4" in message and "a later try may succeed" in message
    assert "secret-signature" not in message
    assert list(tmp_path.iterdir()) == []  # neither the video nor a partial file


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_slow_host_that_finishes_in_time_is_saved_whole(driver, tmp_path):
    with host(b"", lambda: SLOW_BUT_WHOLE, pace=0.002) as url:
        saved = DRIVERS[driver](url, tmp_path / "v.mp4", 10.0)
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    assert saved.sha256 == hashlib.sha256(VIDEO).hexdigest()
