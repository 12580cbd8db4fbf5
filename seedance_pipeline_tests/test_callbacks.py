"""Callbacks: the receiver refuses what it cannot trust, confirms the rest with the API, and
settles lost creates; polling waits for callbacks; the setting is checked."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import socket
import threading
import time

import httpx
import pytest

from seedance_pipeline import callbacks
from seedance_pipeline.callbacks import (
    CALLBACK_URL_ENV,
    MAX_BODY_BYTES,
    PATH,
    REDACTED,
    callback_base,
    create_app,
    running_receiver,
    token_sha256,
    with_callback,
)
from seedance_pipeline.ledger import Ledger, PollUpdate
from seedance_pipeline.ledger.database import sql
from seedance_pipeline.polling import CALLBACK_GRACE_SECONDS, first_poll_at
from seedance_pipeline.reports import print_run_summary
from seedance_pipeline.seedance import AsyncClient, Client
from seedance_pipeline.statuses import WAITING, Status
from seedance_pipeline.submission import Planned, submit_all

from .fault_support import free_port
from .pipeline_support import videos_table

DAY = "2026-11-20"
BODY = {
    "model": "seedance-2.0-text-to-video",
    "prompt": "a lighthouse at dusk",
    "duration": 4,
    "quality": "480p",
    "aspect_ratio": "16:9",
    "generate_audio": False,
}


def _wait_for(condition, timeout: float = 20.0, what: str = "the callback to be recorded"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Vendor:
    """The vendor's side of a test: makes tasks on the emulator and posts their callbacks."""

    def __init__(self, emulator: str, api_key: str, ledger: Ledger, receiver: str):
        self.emulator, self.api_key, self.ledger, self.receiver = (
            emulator,
            api_key,
            ledger,
            receiver,
        )
        self.client = Client(api_key, base_url=emulator)

    def row(self, prompt_id: str, *, lost: bool = False) -> tuple[str, str]:
        """A claimed row with its own token and a real task; `lost`: its answer never came.

        Returns the token and the task id.
        """
        token = secrets.token_urlsafe(32)
        assert self.ledger.claim(
            DAY, prompt_id, BODY, 1.0, callback_token_sha256=token_sha256(token)
        )
        task = self.client.create_task(BODY)
        if lost:
            self.ledger.record_outcome_unknown(DAY, prompt_id, "answer lost", time.time() + 60)
        else:
            self.ledger.record_submitted(
                DAY,
                prompt_id,
                task.id,
                time.time() + 3600,
                status="pending",
                credits_reserved=task.credits_reserved,
                estimated_time=task.estimated_time,
            )
        return token, task.id

    def finished(self, task_id: str) -> dict:
        """The task's answer once it has ended: what the vendor's callback carries."""
        answer: dict = {}

        def done() -> bool:
            answer.update(self.client.get_task(task_id).raw)
            return answer["status"] in ("completed", "failed")

        _wait_for(done, what="the emulator's task to end")
        return answer

    def connect(self, timeout: float = 5) -> socket.socket:
        """A raw connection to the receiver, to send what no HTTP client would."""
        host, port = self.receiver.removeprefix("http://").split(":")
        return socket.create_connection((host, int(port)), timeout=timeout)

    def post(self, token: str, body: bytes | dict) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(f"{self.receiver}{PATH}{token}", content=content, timeout=10)


@pytest.fixture
def ledger(ledger_url) -> Ledger:
    return Ledger(ledger_url)


@pytest.fixture
def vendor(emulator, api_key, ledger):
    app = create_app(ledger, lambda: AsyncClient(api_key, base_url=emulator))
    with running_receiver(app) as url:
        yield Vendor(emulator, api_key, ledger, url)


def _row(ledger: Ledger, prompt_id: str):
    return next(r for r in ledger.rows(DAY) if r.prompt_id == prompt_id)


def test_forged_and_malformed_callbacks_are_refused_and_change_nothing(vendor, ledger):
    token, task_id = vendor.row("p1")
    answer = vendor.finished(task_id)
    before = ledger.rows(DAY)

    assert vendor.post(secrets.token_urlsafe(32), answer).status_code == 404  # forged token
    assert vendor.post("not-a-token", answer).status_code == 404
    assert vendor.post(token, b"{not json").status_code == 400
    assert vendor.post(token, {"status": "completed"}).status_code == 400  # no task id
    assert vendor.post(token, {**answer, "id": "../v1/credits"}).status_code == 400
    # A final newline passed a `$`-anchored check: the API client then raised on its URL in
    # the background, with a traceback every 15 s for a day.
    assert vendor.post(token, {**answer, "id": f"{task_id}\n"}).status_code == 400
    assert vendor.post(f"{token}%0A", answer).status_code == 404
    assert vendor.post(token, b"[" * (MAX_BODY_BYTES + 10)).status_code == 413
    assert vendor.post(token, b"[" * (MAX_BODY_BYTES - 10)).status_code == 400  # too deep
    # A known token naming someone else's task: nothing to confirm.
    assert vendor.post(token, {**answer, "id": "task-unified-1-aaaaaaaa"}).status_code == 200

    time.sleep(0.5)  # anything wrongly scheduled would have landed by now
    assert ledger.rows(DAY) == before
    assert httpx.get(f"{vendor.receiver}/health").json() == {"status": "ok"}


def test_a_callback_is_confirmed_with_the_api_and_applied_once(vendor, ledger):
    token, task_id = vendor.row("p1")
    answer = vendor.finished(task_id)
    forged = {**answer, "results": ["https://evil.example.net/fake.mp4"]}

    first = vendor.post(token, forged)
    assert first.status_code == 202
    _wait_for(lambda: _row(ledger, "p1").status not in WAITING)
    for _ in range(3):  # the vendor's retries at 1, 2 and 4 s
        assert vendor.post(token, answer).status_code == 200

    row = _row(ledger, "p1")
    assert row.status == Status(answer["status"])
    assert row.polls == 1  # one confirming query, however many deliveries
    assert row.callback_at is not None
    if row.status == Status.COMPLETED:  # the API's link, never the callback's
        assert row.result_url == answer["results"][0]


def test_the_apis_answer_wins_over_the_callbacks_body(start_emulator, api_key, ledger):
    slow = start_emulator(time_scale=1.0)  # the task runs for a minute
    app = create_app(ledger, lambda: AsyncClient(api_key, base_url=slow))
    with running_receiver(app) as url:
        vendor = Vendor(slow, api_key, ledger, url)
        token, task_id = vendor.row("p1")
        claim = {"id": task_id, "status": "completed", "results": ["https://x.example.net/a.mp4"]}
        assert vendor.post(token, claim).status_code == 202
        _wait_for(lambda: _row(ledger, "p1").polls == 1)
    row = _row(ledger, "p1")
    assert row.status in WAITING and row.result_url is None


def test_a_callback_settles_an_unknown_row(vendor, ledger):
    token, task_id = vendor.row("lost", lost=True)
    assert _row(ledger, "lost").status == Status.UNKNOWN
    answer = vendor.finished(task_id)

    assert vendor.post(token, answer).status_code == 202
    _wait_for(lambda: _row(ledger, "lost").task_id == task_id)
    _wait_for(lambda: _row(ledger, "lost").status not in WAITING)
    row = _row(ledger, "lost")
    assert row.status == Status(answer["status"])
    assert row.credits_reserved == answer["usage"]["credits_reserved"]  # so costs are known
    assert row.submitted_at is not None and row.error_code is None


def test_a_callback_for_a_claim_whose_run_died_attaches_its_task(vendor, ledger):
    """The run that sent the create died before its answer came. Once the claim's lease is
    out, the receiver turns it `unknown` and attaches the task the callback confirmed (it used
    to give up after 30 s, and the row stayed unknown with no task: paid, never stored)."""
    token = secrets.token_urlsafe(32)
    assert ledger.claim(DAY, "p1", BODY, 1.0, callback_token_sha256=token_sha256(token))
    with ledger.db.transaction() as db:
        db.execute(
            sql("UPDATE tasks SET owner = :o, lease_expires_at = :l"),
            {"o": "worker-b/ffffffff-0000.1/4242/abcdef01", "l": time.time() + 1},
        )
    task_id = vendor.client.create_task(BODY).id
    answer = vendor.finished(task_id)
    assert vendor.post(token, answer).status_code == 202
    _wait_for(lambda: _row(ledger, "p1").task_id == task_id)
    _wait_for(lambda: _row(ledger, "p1").status not in WAITING)
    row = _row(ledger, "p1")
    assert row.status.value == answer["status"] and row.callback_at is not None


def test_a_callback_accepted_while_the_api_was_down_is_confirmed_after_a_restart(
    emulator, api_key, ledger
):
    """The vendor sends a callback once it gets a 2xx: the receiver must not lose one it
    acknowledged when its confirming query fails (it did, and a lost create stayed unknown:
    paid for, its video never stored), even if it stops before the API answers again."""
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: the API is unreachable
    with running_receiver(create_app(ledger, lambda: AsyncClient(api_key, base_url=down))) as url:
        vendor = Vendor(emulator, api_key, ledger, url)
        token, task_id = vendor.row("lost", lost=True)
        assert vendor.post(token, vendor.finished(task_id)).status_code == 202
    assert _row(ledger, "lost").status == Status.UNKNOWN and _row(ledger, "lost").task_id is None

    with running_receiver(create_app(ledger, lambda: AsyncClient(api_key, base_url=emulator))):
        _wait_for(lambda: _row(ledger, "lost").status not in (Status.UNKNOWN, *WAITING))
    row = _row(ledger, "lost")
    assert row.task_id == task_id and row.status == Status.COMPLETED and row.callback_at
    assert row.polls == 1  # confirmed once, by the receiver that restarted


def test_a_callback_not_confirmed_in_a_day_is_dropped_naming_its_task_for_resolve(
    emulator, api_key, ledger, caplog
):
    """It was dropped without a word: the only trace of the task a lost create made."""
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens: the API is unreachable
    with running_receiver(create_app(ledger, lambda: AsyncClient(api_key, base_url=down))) as url:
        vendor = Vendor(emulator, api_key, ledger, url)
        token, task_id = vendor.row("lost", lost=True)
        assert vendor.post(token, vendor.finished(task_id)).status_code == 202
    with ledger.db.transaction() as db:  # a day and an hour later
        db.execute(sql("UPDATE tasks SET callback_received_at = :t"), {"t": time.time() - 90000})

    with running_receiver(create_app(ledger, lambda: AsyncClient(api_key, base_url=down))):
        _wait_for(lambda: not ledger.unconfirmed_callbacks(), what="the note to be dropped")
    row = _row(ledger, "lost")
    assert (row.status, row.callback_task_id) == (Status.UNKNOWN, task_id)  # kept on the row
    assert f"seedance-pipeline resolve {DAY} lost --task-id {task_id}" in caplog.text


def test_a_callback_never_gives_an_unknown_row_another_rows_task(vendor, ledger):
    _, task_id = vendor.row("p1")
    token, _ = vendor.row("lost", lost=True)
    answer = vendor.finished(task_id)

    vendor.post(token, answer)  # a task another row holds
    _wait_for(lambda: not ledger.unconfirmed_callbacks(), what="the note to be dropped")
    row = _row(ledger, "lost")
    assert row.status == Status.UNKNOWN and row.task_id is None
    # The note is dropped, not asked about every 15 s for a day.
    assert (row.callback_task_id, row.callback_at) == (None, None)


def test_a_callback_never_gives_an_unknown_row_a_task_made_before_its_claim(vendor, ledger):
    """With a row's token (leaked, say), any task of the same model no row held could be
    confirmed onto it: an earlier task, made for nothing the row asked, counted as its video."""
    older = vendor.client.create_task(BODY)  # made before the row was claimed
    token, _ = vendor.row("lost", lost=True)
    with ledger.db.transaction() as db:  # claimed an hour after the older task was made
        db.execute(
            sql("UPDATE tasks SET claimed_at = :t WHERE prompt_id = 'lost'"),
            {"t": time.time() + 3600},
        )

    assert vendor.post(token, vendor.finished(older.id)).status_code == 202
    _wait_for(lambda: not ledger.unconfirmed_callbacks(), what="the note to be dropped")
    row = _row(ledger, "lost")
    assert (row.status, row.task_id) == (Status.UNKNOWN, None)


def test_a_callback_naming_a_task_the_api_does_not_know_is_kept_not_retried_all_day(
    vendor, ledger, caplog
):
    """Kept on the row (the only trace of a task that may be paid for), but no longer asked
    about every 15 s for a day; the log says to look the prompt up (`resolve --task-id` of a
    task the API does not know is refused)."""
    token, _ = vendor.row("lost", lost=True)
    named = "task-unified-doesnotexist"
    assert vendor.post(token, {"id": named}).status_code == 202
    _wait_for(lambda: not ledger.unconfirmed_callbacks(), what="the note to be settled")
    row = _row(ledger, "lost")
    assert (row.status, row.task_id, row.callback_task_id) == (Status.UNKNOWN, None, named)
    assert "the API knows no such task" in caplog.text
    assert f"seedance-pipeline resolve {DAY} lost (--task-id ID | --forget)" in caplog.text
    assert "trying again" not in caplog.text


def test_a_gateways_404_page_while_confirming_a_lost_tasks_callback_is_asked_again(
    emulator, api_key, ledger, caplog
):
    """One nginx 404 page while confirming the callback of an `unknown` row gave the task up
    for good: never asked again nor attached, and the log offered `resolve --forget`, which
    would pay for the prompt again (helper-72)."""
    page = b"<html><center><h1>404 Not Found</h1></center><hr>nginx</html>"
    gateway = httpx.MockTransport(lambda request: httpx.Response(404, content=page))
    app = create_app(ledger, lambda: AsyncClient(api_key, base_url=emulator, transport=gateway))
    with running_receiver(app) as url:
        vendor = Vendor(emulator, api_key, ledger, url)
        token, task_id = vendor.row("lost", lost=True)
        assert vendor.post(token, {"id": task_id}).status_code == 202
        _wait_for(lambda: "trying again" in caplog.text, what="the confirmation to fail")
    assert [r.callback_task_id for r in ledger.unconfirmed_callbacks()] == [task_id]
    assert "the API knows no such task" not in caplog.text


def test_a_callback_never_gives_a_retry_the_failed_task_of_its_earlier_attempt(vendor, ledger):
    """The earlier attempt's task is held by no row once archived: attached to the retry's
    `unknown` row it would end it `failed` (and, with resubmission on, pay for a third)."""
    _, first = vendor.row("p1")
    answer = vendor.finished(first)
    ledger.record_polls(
        [PollUpdate(first, Status.FAILED, error_code="service_error", error_message="busy")]
    )
    token = secrets.token_urlsafe(32)
    assert ledger.claim_resubmission(DAY, "p1", 2, callback_token_sha256=token_sha256(token))
    ledger.record_outcome_unknown(DAY, "p1", "answer lost", time.time() + 60)

    assert vendor.post(token, answer).status_code == 202
    _wait_for(lambda: not ledger.unconfirmed_callbacks(), what="the note to be dropped")
    row = _row(ledger, "p1")
    assert (row.status, row.task_id, row.attempt) == (Status.UNKNOWN, None, 2)


def _exchange(sock: socket.socket, request: bytes) -> int:
    """Send one HTTP/1.1 request on `sock` and read its whole answer; its status code."""
    sock.sendall(request)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, f"closed before answering: {answer!r}"
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
    while len(body) < length:
        body += sock.recv(4096)
    return int(head.split()[1])


def test_a_callback_the_ledger_cannot_note_in_time_is_answered_500_for_the_vendor_to_resend(
    vendor, ledger, monkeypatch
):
    """The vendor waits 10 s for an answer; the note waited up to 60 s for a locked ledger, so
    the promised 500 came after the vendor had given up on that try. The vendor's next try
    comes on the same connection: a slow answer must not get it closed under it."""
    monkeypatch.setattr(callbacks, "NOTE_LOCK_WAIT_SECONDS", 0.7)
    monkeypatch.setattr(callbacks, "REQUEST_SECONDS", 0.4)
    token, task_id = vendor.row("p1")
    body = json.dumps(vendor.finished(task_id)).encode()
    request = (
        f"POST {PATH}{token} HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    locked, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with ledger.db.transaction() as db:  # another writer, on the same row
            db.execute(sql("UPDATE tasks SET polls = polls WHERE prompt_id = 'p1'"))
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    with vendor.connect(timeout=10) as sock:
        try:
            locked.wait(10)
            started = time.monotonic()
            refused = _exchange(sock, request)
            waited = time.monotonic() - started
        finally:
            release.set()
            holder.join()
        assert refused == 500 and waited < 5, (refused, waited)
        time.sleep(0.2)  # past a deadline counted from before the slow answer
        assert _exchange(sock, request) == 202  # the vendor's next try
    _wait_for(lambda: _row(ledger, "p1").status not in WAITING)


def test_a_callback_is_answered_500_in_time_whatever_holds_the_ledger_up(
    vendor, ledger, monkeypatch
):
    """Each ledger call was bounded, not the request: callbacks queued for the worker threads,
    or a slow database, answered past the vendor's 10 s."""
    monkeypatch.setattr(callbacks, "REPLY_WITHIN_SECONDS", 0.3)
    token, task_id = vendor.row("p1")
    answer = vendor.finished(task_id)
    found = ledger.row_for_callback
    monkeypatch.setattr(ledger, "row_for_callback", lambda sha: time.sleep(1) or found(sha))
    started = time.monotonic()
    assert vendor.post(token, answer).status_code == 500
    assert time.monotonic() - started < 0.9


def test_connections_that_send_no_request_in_time_are_closed(vendor, monkeypatch):
    """uvicorn sets no limit: a socket that sent nothing, or headers a byte at a time, was held
    open forever, and about `ulimit -n` of them shut the receiver."""
    monkeypatch.setattr(callbacks, "REQUEST_SECONDS", 0.5)
    silent, slow = vendor.connect(), vendor.connect()
    slow.sendall(b"POST /callbacks/x HTTP/1.1\r\nHost: a\r\nX-Slow: ")
    for sock in (silent, slow):
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the receiver
        assert time.monotonic() - started < 3
        sock.close()
    assert httpx.get(f"{vendor.receiver}/health").status_code == 200


def test_headers_past_the_parsers_limit_are_refused_at_once(vendor):
    """httptools, which uvicorn prefers, took a gigabyte of headers without a word."""
    with vendor.connect() as sock:
        sock.sendall(b"POST /callbacks/x HTTP/1.1\r\nHost: a\r\n")
        with contextlib.suppress(OSError):  # the receiver may close before all is sent
            sock.sendall(b"".join(b"X-%d: v\r\n" % i for i in range(20_000)))
        assert sock.recv(100).startswith(b"HTTP/1.1 400")


def test_headers_sent_whole_past_16_kb_are_refused_too(vendor):
    """h11 bounds headers only while they are incomplete: 100 KB in one write were taken."""
    with vendor.connect() as sock:
        head = b"GET /health HTTP/1.1\r\nHost: a\r\nX-Big: " + b"v" * 100_000 + b"\r\n\r\n"
        assert _exchange(sock, head) == 400
        assert sock.recv(100) == b""  # and the connection is closed
    with vendor.connect() as sock:
        assert _exchange(sock, b"GET /health HTTP/1.1\r\nHost: a\r\nX-Fine: v\r\n\r\n") == 200


def test_a_request_framed_two_ways_is_refused_and_its_connection_closed(vendor):
    """Content-Length with Transfer-Encoding (RFC 9112, 6.3): it was answered, and a request
    hidden in its body was answered on the same connection, as a proxy reading the length
    would not have seen it (request smuggling)."""
    token, _ = vendor.row("p1")
    smuggled = b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n"
    request = (
        f"POST {PATH}{token} HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    ).encode()
    with vendor.connect(timeout=10) as sock:
        assert _exchange(sock, request + smuggled) == 400
        assert sock.recv(100) == b""  # closed: the hidden request is not answered


def test_a_body_not_sent_in_time_is_answered_408(vendor, monkeypatch):
    monkeypatch.setattr(callbacks, "REQUEST_SECONDS", 0.5)
    token, _ = vendor.row("p1")
    with vendor.connect() as sock:
        sock.sendall(
            f"POST {PATH}{token} HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{{".encode()
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 408")


def test_a_vendor_gone_mid_body_is_dropped_quietly_and_answers_name_no_server(vendor):
    """A client that went away mid-body logged starlette's ClientDisconnect with a traceback
    (uvicorn's "Exception in ASGI application"), and every answer said `server: uvicorn`."""
    token, _ = vendor.row("p1")
    logged = []
    handler = logging.Handler()
    handler.emit = logged.append
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(handler)
    try:
        with vendor.connect() as sock:
            sock.sendall(
                f"POST {PATH}{token} HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{{".encode()
            )
        time.sleep(0.3)  # the receiver sees the connection go
        answer = httpx.get(f"{vendor.receiver}/health")  # after the dropped one
    finally:
        uvicorn_log.removeHandler(handler)
    assert answer.status_code == 200 and "server" not in answer.headers
    assert [r.getMessage() for r in logged if r.levelno >= logging.WARNING] == []


def test_polling_defers_to_callbacks():
    now = 1000.0
    with_callback_at = first_poll_at(BODY, 40, now, callback=True)
    assert with_callback_at >= now + 40 + CALLBACK_GRACE_SECONDS
    assert first_poll_at(BODY, 40, now) <= now + 40


@pytest.mark.parametrize(
    ("api", "value", "accepted"),
    [
        ("https://api.evolink.ai", "https://hooks.acme-video.com/seedance", True),
        ("http://127.0.0.1:8790", "http://127.0.0.1:8791", True),
        ("https://api.evolink.ai", "http://127.0.0.1:8791", False),  # real API: https, public
        ("https://api.evolink.ai", "https://10.0.0.7/hooks", False),
        ("https://api.evolink.ai", "https://receiver.internal/hooks", False),
        ("https://api.evolink.ai", "http://hooks.acme-video.com", False),
        ("https://api.evolink.ai", "https://hooks.acme-video.com/?a=1", False),
        ("https://api.evolink.ai", "https://user:pw@hooks.acme-video.com", False),
        ("http://127.0.0.1:8790", "ftp://127.0.0.1:8791", False),
    ],
)
def test_the_callback_setting_is_checked(api, value, accepted):
    if accepted:
        assert callback_base(api, value) == value.rstrip("/")
        return
    with pytest.raises(ValueError, match=CALLBACK_URL_ENV) as caught:
        callback_base(api, value)
    assert "pw" not in str(caught.value)


def test_unset_means_no_callbacks(monkeypatch):
    monkeypatch.delenv(CALLBACK_URL_ENV, raising=False)
    assert callback_base("https://api.evolink.ai") is None


def test_each_attempt_gets_its_own_token_and_the_ledger_never_holds_it():
    sent, stored, sha = with_callback(BODY, "https://hooks.acme-video.com")
    token = sent["callback_url"].rsplit("/", 1)[1]
    assert token_sha256(token) == sha and token not in json.dumps(stored)
    assert stored["callback_url"].endswith(PATH + REDACTED)
    again, _, sha2 = with_callback(stored, "https://hooks.acme-video.com")  # a resubmission
    assert sha2 != sha and again["callback_url"] != sent["callback_url"]
    own = {**BODY, "callback_url": "https://mine.acme-video.com/hook"}
    assert with_callback(own, "https://hooks.acme-video.com") == (own, own, None)


class _VendorSide(httpx.HTTPTransport):
    """Real HTTP to the emulator; remembers each create's callback URL, as the vendor does."""

    def __init__(self):
        super().__init__()
        self.callback_urls: list[str] = []
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/videos/generations":
            body = json.loads(request.content)
            with self.lock:
                self.callback_urls.append(body.pop("callback_url"))
            request = httpx.Request(
                request.method,
                request.url,
                headers={k: v for k, v in request.headers.items() if k.lower() != "content-length"},
                json=body,
            )
        return super().handle_request(request)


def test_submission_sends_a_secret_callback_url_and_polling_waits_for_it(emulator, api_key, ledger):
    vendor_side = _VendorSide()
    base = "https://hooks.acme-video.com/seedance"
    planned = [Planned(f"p{i}", BODY, 1.0) for i in range(3)]
    with Client(api_key, base_url=emulator, transport=vendor_side) as client:
        summary = submit_all(ledger, client, DAY, planned, callback_base=base)
    assert summary.submitted == 3
    tokens = [u.rsplit("/", 1)[1] for u in vendor_side.callback_urls]
    assert len(set(tokens)) == 3 and all(
        u.startswith(base + PATH) for u in vendor_side.callback_urls
    )
    rows = ledger.rows(DAY)
    for row in rows:
        assert row.callback_token_sha256 in {token_sha256(t) for t in tokens}
        assert all(t not in json.dumps(row.request) for t in tokens)
        # Not polled before the callback is overdue.
        assert row.next_poll_at >= row.submitted_at + CALLBACK_GRACE_SECONDS
    assert ledger.due_tasks(time.time() + CALLBACK_GRACE_SECONDS / 2, 10) == []


def test_a_day_with_lost_create_answers_ends_settled_paid_once_and_barely_polled(
    tmp_path, monkeypatch, ledger_url
):
    """30 % of create answers cut after the task was made, callbacks on (each first delivery
    fails, so the emulator's retries carry them): no `unknown` row, one task per prompt, and
    about one query per task."""
    from seedance_pipeline.emulator import DEFAULT_API_KEY, EmulatorConfig
    from seedance_pipeline.runner import run_partition
    from seedance_pipeline.tables import read_table

    from .fault_support import Emulator, write_catalog
    from .pipeline_support import emulator_tasks

    data = tmp_path / "data"
    prompts = write_catalog(data, 30)
    config = EmulatorConfig(
        port=0,
        time_scale=0.002,
        seed=11,
        state_dir=tmp_path / "emulator",
        drop_rate=0.3,
        allow_loopback_callbacks=True,
        callback_fail_first=1,
        callback_retry_scale=0.1,
    )
    with Emulator(config) as emulator:
        for name, value in {
            "SEEDANCE_DATA_DIR": str(data),
            "SEEDANCE_LEDGER_URL": ledger_url,
            "EVOLINK_BASE_URL": emulator.url,
            "EVOLINK_FILES_URL": emulator.url,
            "EVOLINK_API_KEY": DEFAULT_API_KEY,
        }.items():
            monkeypatch.setenv(name, value)
        app = create_app(
            Ledger(ledger_url), lambda: AsyncClient(DEFAULT_API_KEY, base_url=emulator.url)
        )
        with running_receiver(app) as receiver:
            monkeypatch.setenv(CALLBACK_URL_ENV, receiver)
            with open(tmp_path / "progress.txt", "w") as progress:
                run_partition(DAY, out=progress)
        tasks = emulator_tasks(emulator.url)

    lost = [t for t in tasks if t["answer_dropped"]]
    assert len(lost) >= 5  # the fault really happened
    assert all(len(t["callback"]["attempts"]) == 2 for t in tasks)  # first failed, retry landed
    table = read_table(data, "generated_videos", DAY)
    assert sorted(table.prompt_id) == prompts
    assert set(table.status) <= {"completed", "failed"}  # nothing left unknown
    assert len(tasks) == len({t["prompt"] for t in tasks}) == len(prompts)  # each sent once
    assert table.task_id.nunique() == len(prompts)
    charged = sum(t.get("credits_charged") or 0 for t in tasks)
    assert table.credits_charged.sum() == pytest.approx(charged)
    # About one query per task: the receiver's confirmation. A callback retry that a loaded
    # machine delivers after its task's callback is overdue adds one fallback poll (34 of 30
    # seen in CI); polling as the main path would ask each task at least twice.
    assert emulator.counts["poll"] <= len(prompts) * 1.25


def test_run_refuses_a_callback_url_the_real_api_cannot_reach(monkeypatch, tmp_path):
    from seedance_pipeline.runner import PipelineStopped, run_partition

    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-evo-test")
    monkeypatch.delenv("EVOLINK_BASE_URL", raising=False)  # the real API
    monkeypatch.setenv(CALLBACK_URL_ENV, "http://127.0.0.1:8791")
    with pytest.raises(PipelineStopped, match=CALLBACK_URL_ENV):
        run_partition(DAY)
    assert not (tmp_path / "warehouse").exists()  # stopped before anything was planned or sent


def test_the_receiver_command_serves_health_and_refuses_forgeries(emulator, api_key, tmp_path):
    import os
    import subprocess
    import sys

    port = free_port()
    env = {
        **os.environ,
        "SEEDANCE_DATA_DIR": str(tmp_path),
        "EVOLINK_API_KEY": api_key,
        "EVOLINK_BASE_URL": emulator,
    }
    env.pop("SEEDANCE_LEDGER_URL", None)
    command = [sys.executable, "-m", "seedance_pipeline.cli", "callbacks", "--port", str(port)]
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as receiver:
        try:
            url = f"http://127.0.0.1:{port}"

            def up() -> bool:
                try:
                    return httpx.get(f"{url}/health").status_code == 200
                except httpx.TransportError:
                    return False

            _wait_for(up, timeout=60, what="the receiver to start")
            token = secrets.token_urlsafe(32)
            forged = httpx.post(f"{url}{PATH}{token}", json={"id": "task-unified-1-aaaaaaaa"})
            assert forged.status_code == 404
        finally:
            receiver.terminate()
            logs = receiver.communicate(timeout=30)[1]
    assert token not in logs  # no access log: paths carry the secret tokens


def test_a_resubmission_gets_a_new_token_and_the_old_one_stops_working(ledger):

    old, new = token_sha256("a" * 43), token_sha256("b" * 43)
    ledger.claim(DAY, "p1", BODY, 1.0, callback_token_sha256=old)
    ledger.record_submitted(DAY, "p1", "task-1", time.time())
    ledger.note_callback(old, "task-1", time.time())  # came while the row waited; unconfirmed
    failed = PollUpdate("task-1", status=Status.FAILED, error_code="service_error")
    ledger.record_polls([failed])
    assert ledger.claim_resubmission(DAY, "p1", 2, callback_token_sha256=new)

    assert ledger.row_for_callback(old) is None  # the first attempt's callback changes nothing
    assert ledger.row_for_callback(new).attempt == 2
    # Nor does its note: retried, it would give the new attempt the old, failed task.
    assert ledger.unconfirmed_callbacks() == []


def test_a_first_poll_planned_minutes_ahead_waits_for_its_time(ledger, emulator, api_key):
    """A callback-deferred first poll (minutes ahead) is not mistaken for a clock step back;
    one planned hours ahead still is."""
    from seedance_pipeline.polling import poll_round

    now = time.time()
    for prompt_id, first_poll in (("deferred", now + 300), ("clock_step", now + 3 * 3600)):
        ledger.claim(DAY, prompt_id, BODY, 1.0)
        ledger.record_submitted(DAY, prompt_id, f"task-{prompt_id}", first_poll)

    summary = poll_round(ledger, lambda: Client(api_key, base_url=emulator))
    assert summary.polled == 1
    assert _row(ledger, "deferred").polls == 0


@pytest.mark.parametrize("callbacks", [False, True])
def test_runs_summary_says_a_late_callback_still_needs_run_to_store_its_video(callbacks, capsys):
    """With callbacks, `run` stops waiting for them after a while; one that comes later gets
    its task attached, but only another `run` (or the sensor) stores the video."""
    videos = videos_table(
        [{"prompt_id": "lost", "status": Status.UNKNOWN.value, "credits_estimated": 43.74}]
    )
    print_run_summary(DAY, videos, callbacks=callbacks)
    said = capsys.readouterr().out
    assert f"seedance-pipeline resolve {DAY} lost (--task-id ID | --forget)" in said
    assert (f"`seedance-pipeline run {DAY}` stores their videos" in said) == callbacks
