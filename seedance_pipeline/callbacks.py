"""The callback receiver: the vendor's POST for a finished task, confirmed with the API.

A callback is unsigned, so it is only a hint. Its URL carries a per-attempt secret token
(only its SHA-256 is stored) that names one ledger row; the body only names the task to ask
about; the API's answer to that query is recorded exactly as a poll's. A callback for an
`unknown` row (a create whose answer was lost) attaches its task, so the row carries on as if
the answer had arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from .ledger import Ledger, LedgerBusy, LedgerRow
from .polling import PollPolicy, interpret
from .resolving import mismatch
from .seedance import (
    SAFE_TASK_ID,
    AsyncClient,
    InvalidRequestError,
    NotFoundError,
    SeedanceError,
    Task,
)
from .seedance._rules import _is_loopback_url
from .seedance._urls import origin, url_problem
from .serving import in_thread
from .settings import SettingError
from .statuses import WAITING, Status

log = logging.getLogger(__name__)

CALLBACK_URL_ENV = "SEEDANCE_CALLBACK_URL"
PATH = "/callbacks/"
REDACTED = "REDACTED"
MAX_BODY_BYTES = 64 * 1024  # a task answer is well under 2 KB
MAX_URL_CHARS = 2048  # the vendor's limit on callback_url
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32); fullmatch only
# A connection sends a request's headers, and a request its body, within this, or is closed.
REQUEST_SECONDS = 10.0
_CLOSE = {"Connection": "close"}  # after a body left unread: the connection is done
# h11 bounds headers only while they are incomplete: a block sent in one write may be larger.
MAX_HEADER_BYTES = 16 * 1024
# A callback is answered within this, 500 if it could not be noted: the vendor waits 10 s for
# an answer, and sends again only what it saw fail. The note waits at most NOTE_LOCK_WAIT_SECONDS
# for another writer's lock.
REPLY_WITHIN_SECONDS = 8.0
NOTE_LOCK_WAIT_SECONDS = 5.0
# A callback may beat the create's answer home: wait this long for the answer (or its loss) to
# be recorded. A create's answer may take the client's ANSWER_SECONDS per try, tries on a refused
# connection or a 429 go on for the client's retry budget, and a claim whose owner died lasts its
# lease.
SUBMITTING_WAIT_SECONDS = 300.0
# A callback is acknowledged once its task is noted in the ledger; confirming it is tried
# again this often (the API or the ledger may be down, the receiver may restart) for as long
# as the result link lives.
RETRY_SECONDS = 15.0
KEPT_SECONDS = 24 * 3600.0
_POLICY = PollPolicy()


# --- the setting ----------------------------------------------------------------------------


def callback_base(api_base_url: str, value: str | None = None) -> str | None:
    """The receiver's base URL from `SEEDANCE_CALLBACK_URL` (or `value`), checked; None if unset.

    Against the real API it must be https on a public host; plain http on loopback is
    accepted only when the API (`EVOLINK_BASE_URL`) is on loopback too (the emulator).

    Raises:
        SettingError: the setting cannot work; the message names the variable.
    """
    if value is None:
        value = os.environ.get(CALLBACK_URL_ENV, "")
    value = value.strip()
    if not value:
        return None
    parts = urlsplit(value)
    local = _is_loopback_url(api_base_url) and _is_loopback_url(value)
    problem = url_problem(value, allow_origin=origin(value) if local else None)
    if problem is None and (parts.query or parts.fragment):
        problem = "must not have a query or fragment"
    if problem is None and len(value) + len(PATH) + 43 > MAX_URL_CHARS:
        problem = f"is too long: callback URLs may have at most {MAX_URL_CHARS} characters"
    if problem:
        hint = (
            "the public https base URL of `seedance-pipeline callbacks` (plain http on "
            "loopback only while EVOLINK_BASE_URL is loopback too)"
        )
        raise SettingError(f"{CALLBACK_URL_ENV} {problem}; set it to {hint}")
    return value.rstrip("/")


# --- tokens in request bodies ---------------------------------------------------------------


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def with_callback(body: dict, base: str | None) -> tuple[dict, dict, str | None]:
    """The body to send, the body to store, and the new token's SHA-256 (None: no token).

    A catalog row's own `callback_url` always wins. Ours carries a fresh secret token; the
    stored body has it redacted, so the raw token exists only in the request on the wire.
    """
    own = body.get("callback_url")
    if own and not own.endswith(PATH + REDACTED):
        return body, body, None
    plain = {k: v for k, v in body.items() if k != "callback_url"}
    if base is None:
        return plain, plain, None
    token = secrets.token_urlsafe(32)
    return (
        {**plain, "callback_url": f"{base}{PATH}{token}"},
        {**plain, "callback_url": f"{base}{PATH}{REDACTED}"},
        token_sha256(token),
    )


# --- confirming a callback ------------------------------------------------------------------


def _task_id(body: bytes) -> str | None:
    """The task id a callback body names, or None when it is not a task answer."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than json allows
        return None
    task_id = data.get("id") if isinstance(data, dict) else None
    return task_id if isinstance(task_id, str) and SAFE_TASK_ID.fullmatch(task_id) else None


class Receiver:
    """Confirms callbacks with the API and records the answers in the ledger."""

    def __init__(self, ledger: Ledger, policy: PollPolicy):
        self.ledger = ledger
        self.policy = policy
        self.api: AsyncClient | None = None  # open while the app runs
        self._busy: set[str] = set()  # tokens being confirmed right now

    async def confirm(self, sha: str, task_id: str) -> None:
        """Ask the API about `task_id` and record its answer on the token's row; on failure
        the callback stays noted, and `retry_unconfirmed` comes back to it."""
        if sha in self._busy:
            return  # a retry of a callback being confirmed
        self._busy.add(sha)
        try:
            row = await self._answered_row(sha, task_id)
            if row is None:
                return
            if not _concerns(row, task_id):
                if row.status != Status.SUBMITTING:  # it never will: not asked about again
                    await asyncio.to_thread(self.ledger.note_callback, sha, None, None)
                return
            try:
                task = await self.api.get_task(task_id)
            except (InvalidRequestError, NotFoundError) as exc:
                # The row's own task: polling judges a 404. A page not the API's (a gateway's
                # or CDN's, no error code) says nothing of the task: asked again.
                if row.task_id == task_id or exc.code is None:
                    raise
                # An `unknown` row's: no longer asked about every 15 s, but kept on the row,
                # the only trace of a task that may have been paid for.
                log.warning("callback for %s: the API knows no such task (%s)", task_id, exc)
                await self._give_up(row, task_id, known=False)
                return
            if problem := f"is {task.id}" if task.id != task_id else mismatch(row, task):
                log.warning("callback for %s: the API's task %s; not the row's", task_id, problem)
                await asyncio.to_thread(self.ledger.note_callback, sha, None, None)
                return
            await asyncio.to_thread(self._record, row, task)
        except (SeedanceError, SQLAlchemyError) as exc:
            log.warning(
                "callback for %s: not confirmed yet (%s); trying again in %.0f s",
                task_id,
                _why(exc),
                RETRY_SECONDS,
            )
        finally:
            self._busy.discard(sha)

    async def retry_unconfirmed(self) -> None:
        """Confirm, every RETRY_SECONDS, the callbacks noted but not confirmed (runs while the
        receiver does: a confirmation failed, or the receiver stopped before it ended)."""
        running: set[asyncio.Task] = set()
        try:
            while True:
                try:
                    rows = await asyncio.to_thread(self.ledger.unconfirmed_callbacks)
                except Exception as exc:  # the ledger down, or anything: the loop must go on
                    log.warning("callbacks: the ledger cannot be read (%s)", type(exc).__name__)
                    rows = []
                since = time.time() - KEPT_SECONDS
                for row in rows:
                    if row.callback_received_at <= since:
                        await self._give_up(row, row.callback_task_id)
                    elif row.callback_token_sha256 not in self._busy:
                        job = asyncio.create_task(
                            self.confirm(row.callback_token_sha256, row.callback_task_id)
                        )
                        running.add(job)
                        job.add_done_callback(running.discard)
                await asyncio.sleep(RETRY_SECONDS)
        finally:
            for job in running:
                job.cancel()

    async def _give_up(self, row: LedgerRow, task_id: str, known: bool = True) -> None:
        """A callback not confirmed (in KEPT_SECONDS, its link dead by now; or, not `known`,
        its task unknown to the API) is no longer asked about; the task it named stays on the
        row. For an `unknown` row the way to settle it is said (a callback is unsigned: the
        dashboard confirms its task; `resolve` attaches only a task the API knows)."""
        if row.status == Status.UNKNOWN:
            settle = f"seedance-pipeline resolve {row.partition} {row.prompt_id}"
            log.warning(
                "callback for %s: not confirmed, no longer asked about; look the prompt up on "
                "the EvoLink dashboard, then: %s",
                task_id,
                f"{settle} --task-id {task_id}" if known else f"{settle} (--task-id ID | --forget)",
            )
        with contextlib.suppress(Exception):  # the ledger down: said again next round
            await asyncio.to_thread(
                self.ledger.note_callback, row.callback_token_sha256, task_id, None
            )

    async def _answered_row(self, sha: str, task_id: str) -> LedgerRow | None:
        """The token's row once its create's answer (or its loss) is recorded; a claim whose
        owner is gone is turned `unknown` here, so the callback can attach its task."""
        deadline = time.monotonic() + SUBMITTING_WAIT_SECONDS
        while True:
            row = await asyncio.to_thread(self.ledger.row_for_callback, sha)
            if row is None or row.status != Status.SUBMITTING:
                return row
            if time.monotonic() > deadline:
                attach = f"seedance-pipeline resolve {row.partition} {row.prompt_id} --task-id"
                log.warning(
                    "callback for %s: %s/%s is still being submitted after %.0f s; if its "
                    "answer is lost: %s %s",
                    task_id,
                    row.partition,
                    row.prompt_id,
                    SUBMITTING_WAIT_SECONDS,
                    attach,
                    task_id,
                )
                return row
            await asyncio.to_thread(self.ledger.resolve_abandoned_claims, row.partition)
            await asyncio.sleep(0.5)

    def _record(self, row: LedgerRow, task: Task) -> None:
        if row.status == Status.UNKNOWN:
            if not self.ledger.attach_from_callback(row.partition, row.prompt_id, task.id):
                log.warning(
                    "callback for %s: another row, or an earlier attempt, holds that task; ignored",
                    task.id,
                )
                self.ledger.note_callback(row.callback_token_sha256, None, None)
                return
            row = self.ledger.row_for_callback(row.callback_token_sha256)
        update = interpret(row, task, time.time(), self.policy)
        self.ledger.record_callback(row.partition, row.prompt_id, update)
        log.info("%s/%s: callback confirmed (%s)", row.partition, row.prompt_id, task.status)


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, SeedanceError) else f"ledger: {type(exc).__name__}"


async def _within(deadline: float, call: Callable, *args: Any) -> Any:
    """`call(*args)` on a worker thread, given up (TimeoutError) at `deadline` (the loop's
    clock), however long the threads' queue or the database holds it up."""
    remaining = deadline - asyncio.get_running_loop().time()
    return await asyncio.wait_for(asyncio.to_thread(call, *args), max(0.0, remaining))


def _concerns(row: LedgerRow, task_id: str) -> bool:
    """Whether a callback naming `task_id` may still change `row`."""
    if row.status == Status.UNKNOWN:
        return row.task_id is None
    return row.status in WAITING and row.task_id == task_id


def create_app(
    ledger: Ledger, client: Callable[[], AsyncClient], policy: PollPolicy = _POLICY
) -> Starlette:
    """The receiver: `POST /callbacks/{token}` and `GET /health`."""
    receiver = Receiver(ledger, policy)

    async def callback(request: Request) -> JSONResponse:
        token = request.path_params["token"]
        deadline = asyncio.get_running_loop().time() + REPLY_WITHIN_SECONDS
        row = None
        try:
            if _TOKEN.fullmatch(token):
                row = await _within(deadline, ledger.row_for_callback, token_sha256(token))
        except (TimeoutError, SQLAlchemyError) as exc:
            log.warning("callback: the ledger did not answer in time (%s); answered 500", _why(exc))
            return JSONResponse({"error": "not recorded; send it again"}, status_code=500)
        if row is None:
            return JSONResponse({"error": "unknown callback"}, status_code=404)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"error": "body too large"}, 413, _CLOSE)
        body = b""
        try:
            async with asyncio.timeout(REQUEST_SECONDS):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        return JSONResponse({"error": "body too large"}, 413, _CLOSE)
        except TimeoutError:
            return JSONResponse({"error": "body not sent in time"}, 408, _CLOSE)
        except ClientDisconnect:  # gone mid-body: no one to answer, nothing to note
            return JSONResponse({"error": "disconnected"}, 400)
        task_id = _task_id(body)
        if task_id is None:
            return JSONResponse({"error": "not a task answer with an id"}, status_code=400)
        if not _concerns(row, task_id) and row.status != Status.SUBMITTING:
            return JSONResponse({"status": "nothing to change"})
        # Kept before the 2xx that ends the vendor's retries; if it cannot be, a 500 says so.
        try:
            await _within(
                deadline,
                ledger.note_callback,
                row.callback_token_sha256,
                task_id,
                time.time(),
                NOTE_LOCK_WAIT_SECONDS,
            )
        except (TimeoutError, LedgerBusy, SQLAlchemyError) as exc:
            log.warning("callback for %s: not noted (%s); answered 500", task_id, _why(exc))
            return JSONResponse({"error": "not recorded; send it again"}, status_code=500)
        return JSONResponse(
            {"status": "accepted"},
            status_code=202,
            background=BackgroundTask(receiver.confirm, row.callback_token_sha256, task_id),
        )

    async def health(request: Request) -> JSONResponse:
        try:
            await asyncio.to_thread(ledger.db.ping)
        except Exception as exc:  # any database error: this receiver cannot record
            log.error("health: ledger unreachable: %s", type(exc).__name__)
            return JSONResponse({"status": "ledger unreachable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app):
        async with client() as api:
            receiver.api = api
            retrying = asyncio.create_task(receiver.retry_unconfirmed())
            try:
                yield
            finally:
                retrying.cancel()

    return Starlette(
        routes=[
            Route(PATH + "{token}", callback, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        middleware=[Middleware(_PlainlyFramed)],
        lifespan=lifespan,
    )


class _PlainlyFramed:
    """Answers 400 and closes the connection for a request whose headers exceed
    MAX_HEADER_BYTES, or that gives both Content-Length and Transfer-Encoding: framed two ways
    (RFC 9112, 6.3), a proxy reading the other framing could have a second request smuggled
    past it on the same connection."""

    def __init__(self, app: Callable):
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            names = {name for name, _ in headers}
            if sum(len(n) + len(v) + 4 for n, v in headers) > MAX_HEADER_BYTES:
                refused = "headers too large"
            elif b"content-length" in names and b"transfer-encoding" in names:
                refused = "both Content-Length and Transfer-Encoding"
            else:
                refused = None
            if refused:
                return await JSONResponse({"error": refused}, 400, _CLOSE)(scope, receive, send)
        await self.app(scope, receive, send)


# --- serving --------------------------------------------------------------------------------


class _Deadlined(H11Protocol):
    """uvicorn's h11 protocol, whose parser bounds a request's headers (httptools, which
    uvicorn prefers, let one grow by a gigabyte), closing a connection that has not sent a
    request's headers within REQUEST_SECONDS of opening or of its last answer: uvicorn sets no
    such limit, so a client sending nothing, or a byte at a time, held its connection (and a
    file descriptor) forever, and a few thousand of them shut the receiver."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._deadline.cancel()
        self._arm()  # the next request's headers are due from now

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(REQUEST_SECONDS, self._close_if_idle)

    def _close_if_idle(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # a request being answered: the app bounds its own time
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        super().connection_lost(exc)


def _server(app: Starlette, host: str, port: int, log_level: str) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            http=_Deadlined,
            log_level=log_level,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
    )


def serve(app: Starlette, host: str, port: int) -> None:
    """Serve until interrupted. No access log: request paths carry the secret tokens."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        _server(app, host, port, "info").run()


@contextlib.contextmanager
def running_receiver(app: Starlette, host: str = "127.0.0.1") -> Iterator[str]:
    """Run the receiver in a background thread on a free port; yields its base URL."""
    server = _server(app, host, 0, "warning")
    with in_thread(server, "callback receiver"):
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://{host}:{port}"


@contextlib.contextmanager
def receiving(ledger: Ledger, api_key: str, api_url: str) -> Iterator[str]:
    """A receiver in this process for the API at `api_url`, with `SEEDANCE_CALLBACK_URL`
    pointing at it while it runs (the demo's wiring); yields its URL."""
    app = create_app(ledger, lambda: AsyncClient(api_key, base_url=api_url))
    with running_receiver(app) as url:
        before = os.environ.get(CALLBACK_URL_ENV)
        os.environ[CALLBACK_URL_ENV] = url
        try:
            yield url
        finally:
            if before is None:
                os.environ.pop(CALLBACK_URL_ENV, None)
            else:
                os.environ[CALLBACK_URL_ENV] = before


def summary(rows: list[LedgerRow]) -> str:
    """Polls per task and how many rows callbacks settled, for people."""
    tasks = [r for r in rows if r.task_id]
    polls = sum(r.polls for r in tasks)
    settled = sum(r.callback_at is not None for r in tasks)
    per_task = polls / len(tasks) if tasks else 0.0
    return (
        f"{len(tasks)} task(s): {polls} status queries ({per_task:.2f} per task); "
        f"callbacks settled {settled}"
    )
