"""The httpx clients against `httpx.MockTransport`: errors, retries, answers, secrets, pacing.

No network and no real sleeping: the client module's clock is fake (`client_support`).
The async client is driven with `asyncio.run` (pytest-asyncio is not a dependency).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import gzip
import json
import logging
import time
import tracemalloc
from collections.abc import Callable

import httpx
import pytest

from seedance_pipeline.seedance import (
    TERMINAL_STATUSES,
    AccessDeniedError,
    APIError,
    AsyncClient,
    AuthenticationError,
    Client,
    InsufficientQuotaError,
    InvalidRequestError,
    MalformedAnswerError,
    NotFoundError,
    OutcomeUnknownError,
    RateLimitError,
    RetryPolicy,
    SeedanceError,
    ServerError,
    Task,
    TaskStatus,
    TransportError,
    _client,
)
from seedance_pipeline.statuses import SETTLED, WAITING, Status

from . import client_support
from .client_support import KEY, Recorder

MAX_ANSWER_BYTES = _client.MAX_ANSWER_BYTES

# The fixtures of `client_support`, for pytest to find here.
clock, sleeps, fresh_pacing = (
    client_support.clock,
    client_support.sleeps,
    client_support.fresh_pacing,
)

BASE = "https://api.test.invalid"
FILES = "https://files.test.invalid"
TASK_ID = "task-unified-1774857405-abc12345"

TASK = {
    "id": TASK_ID,
    "object": "video.generation.task",
    "created": 1774857405,
    "model": "seedance-2.0-text-to-video",
    "status": "pending",
    "progress": 0,
    "type": "video",
    "task_info": {"can_cancel": True, "estimated_time": 165, "video_duration": 5},
    "usage": {"billing_rule": "per_second", "credits_reserved": 67.5, "user_group": "default"},
}
BODY = {"model": "seedance-2.0-text-to-video", "prompt": "a cat plays the piano", "duration": 5}

STATUS_CASES = [
    (400, InvalidRequestError, "invalid_request", "duration: 4..15", "invalid_request_error"),
    (401, AuthenticationError, "unauthorized", "Invalid or expired token", "authentication_error"),
    (402, InsufficientQuotaError, "insufficient_quota", "Please top up", "insufficient_quota"),
    (403, AccessDeniedError, "model_access_denied", "no access to model", "invalid_request_error"),
    (404, NotFoundError, "resource_not_found", "Task not found", "invalid_request_error"),
    (413, InvalidRequestError, "request_too_large", "body exceeds 64MB", "invalid_request_error"),
    (429, RateLimitError, "rate_limit_exceeded", "Too many requests", "rate_limit_error"),
    (500, ServerError, "internal_error", "Internal server error", "api_error"),
    (502, ServerError, "upstream_error", "Upstream unavailable", "api_error"),
    (503, ServerError, "service_unavailable", "Temporarily unavailable", "api_error"),
]
NOT_RETRIED = [400, 401, 402, 403]


def error_response(status: int, code: object, message: str, kind: str | None = None, **headers):
    error = {"code": code, "message": message}
    if kind:
        error["type"] = kind
    return httpx.Response(status, json={"error": error}, headers=headers)


def client(handler, **retry) -> Client:
    policy = RetryPolicy(**({"max_attempts": 4, "base_delay": 0.5} | retry))
    return Client(
        KEY, base_url=BASE, files_url=FILES, transport=httpx.MockTransport(handler), retry=policy
    )


def aclient(handler, **retry) -> AsyncClient:
    policy = RetryPolicy(**({"max_attempts": 4, "base_delay": 0.5} | retry))
    return AsyncClient(
        KEY, base_url=BASE, files_url=FILES, transport=httpx.MockTransport(handler), retry=policy
    )


def run_async(handler, call: str, *args, **retry):
    async def go():
        async with aclient(handler, **retry) as c:
            return await getattr(c, call)(*args)

    return asyncio.run(go())


def call_sync(handler, call: str, *args, **retry):
    with client(handler, **retry) as c:
        return getattr(c, call)(*args)


DRIVERS = {"sync": call_sync, "async": run_async}
CALLS = {"create_task": (BODY,), "get_task": (TASK_ID,)}


# ---- status codes -> exceptions ------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("status", "cls", "code", "message", "kind"), STATUS_CASES)
def test_status_maps_to_exception_with_vendor_code_and_message(
    sleeps, driver, status, cls, code, message, kind
):
    handler = Recorder(error_response(status, code, message, kind))
    with pytest.raises(cls) as info:
        DRIVERS[driver](handler, "get_task", TASK_ID, max_attempts=1)
    err = info.value
    assert isinstance(err, APIError)
    assert (err.status, err.code, err.message, err.type) == (status, code, message, kind)
    assert str(status) in str(err) and code in str(err) and message in str(err)
    assert err.retryable == (status in (429, 500, 502, 503))
    assert len(handler) == 1


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("status", "cls", "_code", "message", "_kind"), STATUS_CASES)
def test_integer_code_is_kept_as_text(sleeps, driver, status, cls, _code, message, _kind):
    handler = Recorder(error_response(status, status, message))
    with pytest.raises(cls) as info:
        DRIVERS[driver](handler, "get_task", TASK_ID, max_attempts=1)
    assert info.value.code == str(status)
    assert info.value.message == message


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(500, text="<html>Bad Gateway</html>"),
        httpx.Response(500, json=["not", "an", "object"]),
        httpx.Response(500, json={"error": "just a string"}),
        httpx.Response(500),
    ],
)
def test_unusual_error_bodies_still_give_a_server_error(sleeps, response):
    with pytest.raises(ServerError) as info:
        call_sync(Recorder(response), "get_task", TASK_ID, max_attempts=1)
    assert info.value.status == 500
    assert info.value.message


def test_unknown_4xx_is_a_plain_api_error(sleeps):
    with pytest.raises(APIError) as info:
        call_sync(Recorder(error_response(409, "conflict", "busy")), "get_task", TASK_ID)
    assert type(info.value) is APIError
    assert info.value.code == "conflict"


# ---- retries -----------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("call", CALLS)
def test_429_retry_after_is_honoured_then_succeeds(sleeps, driver, call):
    handler = Recorder(
        error_response(429, "rate_limit_exceeded", "slow down", **{"Retry-After": "7"}),
        httpx.Response(200, json=TASK),
    )
    task = DRIVERS[driver](handler, call, *CALLS[call])
    assert isinstance(task, Task) and task.id == TASK_ID
    assert len(handler) == 2
    assert sleeps[0] >= 7  # then, maybe, a pause of the learned pacing


def test_429_retry_after_as_http_date(sleeps):
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    handler = Recorder(
        error_response(429, "rate_limit_exceeded", "slow down", **{"Retry-After": when}),
        httpx.Response(200, json=TASK),
    )
    assert call_sync(handler, "get_task", TASK_ID).id == TASK_ID
    assert 17 <= sleeps[0] <= 21


def test_429_retry_after_carried_on_the_exception(sleeps):
    handler = Recorder(error_response(429, "rate_limit_exceeded", "x", **{"Retry-After": "12"}))
    with pytest.raises(RateLimitError) as info:
        call_sync(handler, "get_task", TASK_ID, max_attempts=1)
    assert info.value.retry_after == 12


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    ("call", "status"),
    [("create_task", 429), *(("get_task", status) for status in (429, 500, 502, 503))],
)
def test_max_attempts_is_respected(clock, driver, call, status):
    handler = Recorder(error_response(status, "busy", "try later"))
    with pytest.raises((RateLimitError, ServerError)):
        DRIVERS[driver](handler, call, *CALLS[call], max_attempts=3)
    assert len(handler) == 3
    assert len(clock.sleeps) >= 2


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("status", "code"), [(500, "internal_error"), (502, "upstream_error")])
def test_create_answered_5xx_is_outcome_unknown_and_never_resent(sleeps, driver, status, code):
    handler = Recorder(
        error_response(status, code, "gateway trouble"), httpx.Response(200, json=TASK)
    )
    with pytest.raises(OutcomeUnknownError) as info:
        DRIVERS[driver](handler, "create_task", BODY)
    assert len(handler) == 1 and sleeps == []
    assert f"HTTP {status} {code}" in str(info.value) and "not resubmitted" in str(info.value)
    assert isinstance(info.value.__cause__, ServerError)


@pytest.mark.parametrize("driver", DRIVERS)
def test_max_total_wait_is_respected(sleeps, driver):
    handler = Recorder(error_response(429, "rate_limit_exceeded", "x", **{"Retry-After": "50"}))
    with pytest.raises(RateLimitError):
        DRIVERS[driver](handler, "get_task", TASK_ID, max_attempts=10, max_total_wait=120)
    assert len(handler) == 3  # waits 50 + 50; a third wait would pass 120 s
    assert sum(sleeps) <= 120 + 2 * 2  # the retries, and the learned pacing after each 429


@pytest.mark.parametrize("driver", DRIVERS)
def test_retry_after_beyond_the_budget_gives_up_at_once(sleeps, driver):
    handler = Recorder(error_response(429, "rate_limit_exceeded", "x", **{"Retry-After": "600"}))
    with pytest.raises(RateLimitError):
        DRIVERS[driver](handler, "create_task", BODY, max_total_wait=180)
    assert len(handler) == 1 and sleeps == []


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("pause", ["3600", "Wed, 21 Oct 2099 07:28:00 GMT"])
def test_a_pause_beyond_the_budget_fails_later_calls_at_once_unsent(sleeps, driver, pause):
    """One 429 asking for an hour (a quota, a server clock ahead) parked every later call of
    the process for the hour, with no word."""
    refused = error_response(429, "rate_limit_exceeded", "x", **{"Retry-After": pause})
    handler = Recorder(refused, httpx.Response(200, json=TASK))
    for _ in range(2):
        with pytest.raises(RateLimitError):
            DRIVERS[driver](handler, "get_task", TASK_ID)
    assert len(handler) == 1 and sleeps == []  # the second was not sent, nor waited for


@pytest.mark.parametrize("pause", ["1000000000", "Thu, 01 Jan 2099 00:00:00 GMT"])
def test_a_pause_of_years_holds_the_process_back_minutes_not_years(clock, pause):
    """One 429 asking for years refused every later call of the process unsent, so nothing
    could learn the pause was over: the sensor's code server polled nothing until restarted,
    and the day's links died (helper-70)."""
    refused = error_response(429, "rate_limit_exceeded", "x", **{"Retry-After": pause})
    handler = Recorder(refused, httpx.Response(200, json=TASK))
    with pytest.raises(RateLimitError):
        call_sync(handler, "get_task", TASK_ID)
    clock.now += _client._Bucket.MAX_PAUSE_SECONDS + 1
    assert call_sync(handler, "get_task", TASK_ID).id == TASK_ID
    assert len(handler) == 2


def test_a_pacing_wait_longer_than_the_budget_is_waited_not_refused():
    """Only a pause a 429 asked for fails a call unsent: at a cap of 2 calls a second with a
    0.2 s retry budget (as a poll's 3 s at a cap under 0.33), paced calls were refused."""
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=TASK))
    policy = RetryPolicy(max_attempts=1, max_total_wait=0.2)
    base = "https://slow-cap.test.invalid"  # a bucket of its own
    with Client(
        KEY, base_url=base, transport=transport, retry=policy, max_requests_per_second=2
    ) as c:
        assert [c.get_task(TASK_ID).id for _ in range(3)] == [TASK_ID] * 3


@pytest.mark.parametrize("pause", ["inf", "nan", "-inf"])
def test_a_retry_after_that_is_no_number_of_seconds_is_ignored(sleeps, pause):
    """`Retry-After: inf` ended in OverflowError, not an error of the API's."""
    refused = error_response(429, "rate_limit_exceeded", "x", **{"Retry-After": pause})
    handler = Recorder(refused, httpx.Response(200, json=TASK))
    assert call_sync(handler, "get_task", TASK_ID).id == TASK_ID
    assert len(handler) == 2 and sum(sleeps) < 5  # the usual backoff


def test_backoff_grows_and_is_capped(sleeps, monkeypatch):
    monkeypatch.setattr(_client.random, "uniform", lambda a, b: 1.0)
    handler = Recorder(error_response(503, "service_unavailable", "x"))
    with pytest.raises(ServerError):
        call_sync(handler, "get_task", TASK_ID, max_attempts=6, base_delay=1, max_delay=5)
    assert sleeps == [1, 2, 4, 5, 5]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("status", NOT_RETRIED)
def test_client_errors_are_not_retried(sleeps, driver, call, status):
    handler = Recorder(error_response(status, "nope", "fix it"), httpx.Response(200, json=TASK))
    with pytest.raises(APIError):
        DRIVERS[driver](handler, call, *CALLS[call])
    assert len(handler) == 1 and sleeps == []


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.ReadError("connection reset"),
        httpx.WriteTimeout("write timed out"),
    ],
)
def test_create_with_lost_answer_is_outcome_unknown_and_never_resent(sleeps, driver, exc):
    handler = Recorder(exc, httpx.Response(200, json=TASK))
    with pytest.raises(OutcomeUnknownError) as info:
        DRIVERS[driver](handler, "create_task", BODY)
    assert len(handler) == 1 and sleeps == []
    assert not isinstance(info.value, TransportError)
    assert "/v1/videos/generations" in str(info.value)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.LocalProtocolError("Illegal header value"),  # refused before anything is written
        httpx.UnsupportedProtocol("Request URL has an unsupported protocol"),
    ],
)
def test_create_that_never_connected_is_retried(sleeps, driver, exc):
    handler = Recorder(exc, httpx.Response(200, json=TASK))
    task = DRIVERS[driver](handler, "create_task", BODY)
    assert task.id == TASK_ID and task.credits_reserved == 67.5
    assert len(handler) == 2 and len(sleeps) == 1


@pytest.mark.parametrize("driver", DRIVERS)
def test_create_connect_error_gives_transport_error_when_budget_spent(sleeps, driver):
    handler = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(TransportError):
        DRIVERS[driver](handler, "create_task", BODY, max_attempts=3)
    assert len(handler) == 3


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    "exc",
    [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof"), httpx.ConnectError("refused")],
)
def test_get_task_transport_errors_are_retried(sleeps, driver, exc):
    handler = Recorder(exc, exc, httpx.Response(200, json=TASK | {"status": "processing"}))
    task = DRIVERS[driver](handler, "get_task", TASK_ID)
    assert task.status == "processing"
    assert len(handler) == 3 and len(sleeps) == 2


@pytest.mark.parametrize("driver", DRIVERS)
def test_get_task_gives_up_with_transport_error(sleeps, driver):
    handler = Recorder(httpx.ReadTimeout("slow"))
    with pytest.raises(TransportError):
        DRIVERS[driver](handler, "get_task", TASK_ID, max_attempts=2)
    assert len(handler) == 2


# ---- requests and answers ------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_create_sends_the_body_with_the_bearer_key(sleeps, driver):
    handler = Recorder(httpx.Response(200, json=TASK))
    DRIVERS[driver](handler, "create_task", BODY)
    (request,) = handler.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/v1/videos/generations"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept-encoding"] == "identity"  # nothing to inflate
    assert json.loads(request.content) == BODY


@pytest.mark.parametrize("driver", DRIVERS)
def test_get_task_parses_a_failed_task_with_an_integer_code(sleeps, driver):
    failed = TASK | {"status": "failed", "error": {"code": 500, "message": "boom"}}
    handler = Recorder(httpx.Response(200, json=failed))
    task = DRIVERS[driver](handler, "get_task", TASK_ID)
    assert str(handler.requests[0].url) == f"{BASE}/v1/tasks/{TASK_ID}"
    assert (task.status, task.error_code, task.error_message) == ("failed", "500", "boom")
    assert task.is_terminal


def test_cancelled_in_either_form_is_terminal():
    a = Task.from_json(TASK | {"status": "cancelled"})
    b = Task.from_json(TASK | {"status": "failed", "error": {"code": "request_cancelled"}})
    assert a.is_terminal and b.is_terminal
    assert a.final_status == b.final_status == "cancelled"
    assert not Task.from_json(TASK | {"status": "queued_somewhere"}).is_terminal


def test_every_vendor_status_has_its_place_in_the_pipeline():
    """A status the vendor may send is one the ledger knows: still waiting, or settled."""
    assert set(TaskStatus) <= set(Status)
    assert set(TaskStatus) - TERMINAL_STATUSES == WAITING
    assert TERMINAL_STATUSES <= SETTLED


def test_upload_file_posts_multipart_and_returns_file_url(sleeps, tmp_path):
    path = tmp_path / "frame.png"
    path.write_bytes(b"\x89PNG fake")
    answer = {
        "success": True,
        "code": 200,
        "msg": "ok",
        "data": {"file_id": "f1", "file_url": "https://files.evolink.ai/f1.png"},
    }
    handler = Recorder(httpx.Response(200, json=answer))
    uploaded = call_sync(handler, "upload_file", path)
    assert uploaded.file_url == "https://files.evolink.ai/f1.png"
    (request,) = handler.requests
    assert str(request.url) == f"{FILES}/api/v1/files/upload/stream"
    assert b'name="file"; filename="frame.png"' in request.content
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_upload_refused_in_the_body_is_an_error(sleeps, tmp_path):
    path = tmp_path / "frame.png"
    path.write_bytes(b"x")
    answer = {"success": False, "code": 4001, "msg": "file type not allowed"}
    with pytest.raises(InvalidRequestError, match="file type not allowed"):
        call_sync(Recorder(httpx.Response(200, json=answer)), "upload_file", path)


@pytest.mark.parametrize(
    "file_url",
    [
        "http://169.254.169.254/latest/meta-data/",  # the cloud's metadata service
        "https://10.0.0.7/f1.png",
        "http://files.evolink.ai/f1.png",
        "https://files.evolink.ai/f1.png\r\nX-Evil: 1",
    ],
)
def test_an_uploaded_file_url_the_vendor_may_not_be_sent_is_refused(sleeps, tmp_path, file_url):
    """The files API's `file_url` went unchecked into the paid requests' media fields (and the
    published cache, for 48 h)."""
    path = tmp_path / "frame.png"
    path.write_bytes(b"x")
    answer = {"success": True, "data": {"file_id": "f1", "file_url": file_url}}
    with pytest.raises(MalformedAnswerError, match="answered 200 but its file_url "):
        call_sync(Recorder(httpx.Response(200, json=answer)), "upload_file", path)


def test_an_upload_refusals_words_are_made_plain(sleeps, tmp_path):
    """Its `msg` reached the terminal as sent: escapes that clear the screen and forge lines."""
    path = tmp_path / "frame.png"
    path.write_bytes(b"x")
    forged = "\x1b[2J\x1b[H[2026-11-20] 6 task(s) sent\n[2026-11-20] 6 videos stored\x1b[8m"
    answer = {"success": False, "code": {"nested": ["x"]}, "msg": forged}
    with pytest.raises(InvalidRequestError) as refused:
        call_sync(Recorder(httpx.Response(200, json=answer)), "upload_file", path)
    said = str(refused.value)
    assert "\x1b" not in said and "\n" not in said and "nested" not in said
    assert "[2026-11-20] 6 task(s) sent [2026-11-20] 6 videos stored" in said


@pytest.mark.parametrize("status", [301, 408, 409, 425, 499, 520])
def test_a_create_answered_with_an_undocumented_status_is_never_resent(sleeps, status):
    """Only the vendor's documented refusals prove no task was made. A gateway's 408 after the
    vendor had made the task was released as 'not sent', and the step's retry paid again."""
    handler = Recorder(error_response(status, "gateway", "<html>timeout</html>"))
    with pytest.raises(OutcomeUnknownError, match="not resubmitted"):
        call_sync(handler, "create_task", BODY)
    assert len(handler.requests) == 1


@pytest.mark.parametrize(
    "task_id", ["../credits", "x?y=1", "x#frag", "a\r\nX-Evil: 1", "t\x1b[2J", "x" * 129]
)
def test_a_task_id_that_is_not_a_path_segment_is_not_a_task(sleeps, task_id):
    """A create answer's id went into /v1/tasks/{id} as it was (`../credits` fetched another
    endpoint with the key; a newline raised InvalidURL) and into every log line and table."""
    answer = httpx.Response(200, json=TASK | {"id": task_id})
    with pytest.raises(OutcomeUnknownError) as created:
        call_sync(Recorder(answer), "create_task", BODY)
    assert "is not letters, digits, - and _" in str(created.value)
    assert "\x1b" not in str(created.value) and "\n" not in str(created.value)
    with pytest.raises(MalformedAnswerError):
        call_sync(Recorder(httpx.Response(200, json=TASK | {"id": task_id})), "get_task", TASK_ID)


@pytest.mark.parametrize(("call", "status"), [("create_task", 200), ("create_task", 502),
                                             ("get_task", 200), ("get_task", 500),
                                             ("get_credits", 200)])  # fmt: skip
def test_json_nested_past_the_parsers_depth_is_an_answer_that_is_not_json(sleeps, call, status):
    """A RecursionError left the client past its error classes: the step failed, a row's
    reason was wrong, and `run` ended in a traceback."""
    deep = httpx.Response(status, content=b"[" * 200_000 + b"]" * 200_000)
    expected = OutcomeUnknownError if call == "create_task" else SeedanceError
    with pytest.raises(expected):
        call_sync(Recorder(deep), call, *CALLS.get(call, ()))


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_key_echoed_back_in_an_answer_is_kept_out_of_what_the_client_returns(driver, sleeps):
    """A gateway or the API repeating the Authorization header: the key reached the ledger,
    the tables, Dagster's run database and the terminal."""
    refused = error_response(400, "invalid_request", f"rejected: Authorization: Bearer {KEY}")
    with pytest.raises(InvalidRequestError) as error:
        DRIVERS[driver](Recorder(refused), "create_task", BODY)
    assert KEY not in str(error.value) and KEY not in repr(error.value.__dict__)
    failed = TASK | {"status": "failed", "error": {"code": "x", "message": f"bad token {KEY}"}}
    task = DRIVERS[driver](Recorder(httpx.Response(200, json=failed)), "get_task", TASK_ID)
    assert KEY not in repr(task) and KEY not in json.dumps(task.raw)
    assert task.error_message == "bad token ***"


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_key_the_answer_escaped_is_kept_out_too(driver, sleeps):
    """JSON may write any character as \\uXXXX: `sk\\u002devo…` passed the cut on the answer's
    bytes, and the key reached stderr and Dagster's run database."""
    escaped = KEY.replace("-", "\\u002d")
    body = '{"error": {"code": "invalid_api_key", "message": "key ' + escaped + ' is invalid"}}'
    refused = httpx.Response(401, content=body.encode())
    with pytest.raises(AuthenticationError) as error:
        DRIVERS[driver](Recorder(refused), "get_task", TASK_ID)
    assert KEY not in str(error.value) and error.value.message == "key *** is invalid"
    # A gateway's own shape, with no error.message: its body was kept as sent, escapes and all.
    gateway = httpx.Response(401, content=('{"detail": "key ' + escaped + ' is invalid"}').encode())
    with pytest.raises(AuthenticationError) as error:
        DRIVERS[driver](Recorder(gateway), "get_task", TASK_ID)
    assert error.value.message == '{"detail": "key *** is invalid"}'
    # The key across the 200 characters kept of such an answer: its start was left.
    padded = ('{"detail": "' + "x" * 180 + " key " + escaped + '"}').encode()
    with pytest.raises(AuthenticationError) as error:
        DRIVERS[driver](Recorder(httpx.Response(401, content=padded)), "get_task", TASK_ID)
    assert KEY[:12] not in error.value.message and error.value.message.endswith(" key ***")


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_key_a_task_answer_escaped_is_kept_out_too(driver, sleeps):
    """On a 200 answer only the bytes were cut: an escaped key came through decoded, in a
    failed task's message (to the ledger, the table and the summary) and in the message
    quoting a refused task id (a create's, stored as its row's error) (helper-70)."""
    escaped = KEY.replace("-", "\\u002d")
    failed = (
        '{"id": "' + TASK_ID + '", "status": "failed", "error": {"code": "service_error", '
        '"message": "gateway saw Authorization: Bearer ' + escaped + '"}}'
    )
    task = DRIVERS[driver](
        Recorder(httpx.Response(200, content=failed.encode())), "get_task", TASK_ID
    )
    assert task.error_message == "gateway saw Authorization: Bearer ***"
    assert KEY not in str(task.raw)
    named = '{"id": "Bearer ' + escaped + '", "status": "pending"}'
    with pytest.raises(OutcomeUnknownError) as error:
        DRIVERS[driver](Recorder(httpx.Response(200, content=named.encode())), "create_task", BODY)
    assert KEY not in str(error.value) and "***" in str(error.value)


TOKEN = "Zm9vYmFyLXRoZS1jYWxsYmFjay10b2tlbi0wMTIzNDU2Nzg"
SIGNED = (
    "https://bucket.s3.amazonaws.com/in/cat.png?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261126%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Signature=" + "ab12" * 16 + "&X-Amz-Security-Token=" + "FwoGZXIvYXdzE" * 8
)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("status", [400, 502])
@pytest.mark.parametrize("escape", [False, True])
def test_an_answer_repeating_the_request_keeps_its_token_and_signatures_out(
    driver, sleeps, status, escape
):
    """A vendor's 400 (or a gateway's 502) quoting the body it was sent: the callback token
    and the presigned media URL's credential and signature were stored in the ledger and the
    tables, where a reader could confirm any task of the model onto the row."""
    sent = {
        "model": "seedance-2.0-image-to-video",
        "prompt": "a cat",
        "image_urls": [SIGNED],
        "callback_url": f"https://hooks.example.com/callbacks/{TOKEN}",
    }
    quoted = json.dumps(sent)
    if escape:  # as PHP and others write JSON: every slash escaped
        quoted = quoted.replace("/", "\\/")
    answer = error_response(status, "invalid_request", f"invalid request body: {quoted}")
    expected = InvalidRequestError if status == 400 else OutcomeUnknownError
    with pytest.raises(expected) as error:
        DRIVERS[driver](Recorder(answer), "create_task", sent)
    said = str(error.value)
    for secret in (TOKEN, "AKIAIOSFODNN7EXAMPLE", "ab12" * 16, "FwoGZXIvYXdzE" * 8):
        assert secret not in said, said
    assert "hooks.example.com" in said and "a cat" in said  # the rest is kept
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in said  # public: it explains the link


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_failed_task_quoting_its_media_link_keeps_the_links_signature_out(driver, sleeps):
    """The status answer's `error.message` ("cannot fetch <url>") was stored whole: the
    presigned link's credential, signature and session token in the ledger and the tables."""
    said = f"cannot fetch {SIGNED}; callback https://hooks.example.com/callbacks/{TOKEN} failed"
    failed = TASK | {"status": "failed", "error": {"code": "media_unreachable", "message": said}}
    task = DRIVERS[driver](Recorder(httpx.Response(200, json=failed)), "get_task", TASK_ID)
    for secret in (TOKEN, "AKIAIOSFODNN7EXAMPLE", "ab12" * 16, "FwoGZXIvYXdzE" * 8):
        assert secret not in task.error_message
    assert task.error_message.startswith("cannot fetch https://bucket.s3.amazonaws.com/in/cat")
    assert "X-Amz-Signature=***" in task.error_message


# ---- the API key stays secret --------------------------------------------------------------


def test_key_is_required():
    with pytest.raises(ValueError, match="EVOLINK_API_KEY"):
        Client("")


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_key_with_a_trailing_line_break_is_sent_without_it(sleeps, driver):
    """A Windows .env leaves "\\r\\n" after the key; h11 would refuse (and quote) it."""
    handler = Recorder(httpx.Response(200, json=TASK))
    transport = httpx.MockTransport(handler)
    if driver == "sync":
        with Client(f" {KEY}\r\n", base_url=BASE, transport=transport) as c:
            c.create_task(BODY)
    else:

        async def go():
            async with AsyncClient(f" {KEY}\r\n", base_url=BASE, transport=transport) as c:
                await c.create_task(BODY)

        asyncio.run(go())
    assert handler.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("odd", ["\r", "\x00", "\x1b", " ", "\u00e9", "\x7f"])
def test_a_key_with_a_character_no_header_may_carry_is_refused_without_showing_it(odd):
    key = f"{KEY[:10]}{odd}{KEY[10:]}"
    for cls in (Client, AsyncClient):
        with pytest.raises(ValueError, match="EVOLINK_API_KEY") as info:
            cls(key, base_url=BASE)
        assert "position 11" in str(info.value)
        assert KEY[:10] not in str(info.value) and KEY[10:] not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:SECRET@api.test.invalid",
        "https://api.test.invalid/?api_key=SECRET",
        "https://api.test.invalid/#SECRET",
        "ftp://api.test.invalid/SECRET",
        "SECRET",
    ],
)
def test_an_api_url_with_a_password_query_or_odd_scheme_is_refused_without_showing_it(url):
    for cls in (Client, AsyncClient):
        for setting, given in (
            ("EVOLINK_BASE_URL", {"base_url": url}),
            ("EVOLINK_FILES_URL", {"files_url": url}),
        ):
            with pytest.raises(ValueError, match=f"{setting} must be an http") as info:
                cls(KEY, **given)
            assert "SECRET" not in str(info.value)


def test_key_not_in_repr():
    c = client(Recorder(httpx.Response(200, json=TASK)))
    a = aclient(Recorder(httpx.Response(200, json=TASK)))
    for obj in (c, a, c.retry):
        assert KEY not in repr(obj) and KEY not in str(obj)
    c.close()
    asyncio.run(a.aclose())


@pytest.mark.parametrize("driver", DRIVERS)
def test_key_in_no_exception_and_no_log_record(sleeps, driver, caplog):
    caplog.set_level(logging.DEBUG)
    failures = [
        *(error_response(s, c, m, k) for s, _, c, m, k in STATUS_CASES),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("eof"),
    ]
    raised: list[BaseException] = []
    for failure in failures:
        for call, args in CALLS.items():
            handler = Recorder(failure, failure, httpx.Response(200, json=TASK))
            try:
                DRIVERS[driver](handler, call, *args, max_attempts=2)
            except SeedanceError as exc:
                raised.append(exc)
    assert raised
    for exc in raised:
        chain = [exc, exc.__cause__, exc.__context__]
        assert all(KEY not in repr(e) and KEY not in str(e) for e in chain if e is not None)
        assert KEY not in repr(vars(exc))
    assert caplog.records  # the retries were logged
    for record in caplog.records:
        assert KEY not in record.getMessage()
        assert KEY not in repr(record.args)
    assert KEY not in caplog.text


# ---- answers that prove nothing, and answers too large to read -----------------------------


def ok(**content) -> Callable[[httpx.Request], httpx.Response]:
    """A fresh 200 answer for each request (a response's body can be read once)."""
    return lambda request: httpx.Response(200, **content)


NOT_A_TASK = [  # (answer, what the error says)
    pytest.param(ok(text="<html>gateway</html>"), "not JSON", id="html"),
    pytest.param(ok(json=["a"]), "JSON object", id="list"),
    pytest.param(ok(json={"id": TASK_ID}), "id and status", id="no-status"),
    pytest.param(ok(json=TASK | {"results": "x"}), "results", id="results"),
    pytest.param(ok(json=TASK | {"status": 5}), "status", id="status"),
    pytest.param(ok(content=b" " * (MAX_ANSWER_BYTES + 1)), "larger than", id="huge"),
]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    "odd",
    [
        {"created": 1774857405.5},
        {"created": "2026-11-20T10:00:00Z"},
        {"model": 7},
        {"usage": []},
        {"task_info": {"estimated_time": "165"}, "progress": "5"},
        {"error": {"code": {"nested": 1}, "message": ["x"]}},
    ],
)
def test_a_task_answer_with_an_odd_field_the_pipeline_can_do_without_is_kept(sleeps, driver, odd):
    """A float or ISO `created` made the whole answer malformed: a create's answer lost (the
    task paid for, its video never stored), a poll's answer never taken (the run hung)."""
    for call, args in CALLS.items():
        task = DRIVERS[driver](Recorder(ok(json=TASK | odd)), call, *args)
        assert task.id == TASK_ID and task.status == TASK["status"]
    if "task_info" in odd:
        assert (task.estimated_time, task.progress) == (165, 5)
    if "created" in odd:
        assert task.created in (1774857405, None)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("answer", "why"), NOT_A_TASK)
def test_create_answered_with_something_not_a_task_is_outcome_unknown(sleeps, driver, answer, why):
    handler = Recorder(answer, httpx.Response(200, json=TASK))
    with pytest.raises(OutcomeUnknownError, match=why) as info:
        DRIVERS[driver](handler, "create_task", BODY)
    assert len(handler) == 1 and sleeps == []
    assert "a task may have been created" in str(info.value)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("answer", "why"), NOT_A_TASK)
def test_poll_answered_with_something_not_a_task_is_malformed(sleeps, driver, answer, why):
    handler = Recorder(answer)
    with pytest.raises(MalformedAnswerError, match=why) as info:
        DRIVERS[driver](handler, "get_task", TASK_ID, max_attempts=2)
    assert len(handler) == 2  # a gateway's glitch may pass: retried within the policy
    assert f"/v1/tasks/{TASK_ID}" in str(info.value)


NUMBERS_THAT_CANNOT_BE = [  # (answer's field, what the task says: progress, credits, estimate)
    pytest.param({"progress": float("nan")}, (0, 67.5, 165), id="progress-nan"),
    pytest.param({"progress": 10**25}, (0, 67.5, 165), id="progress-25-digits"),
    pytest.param({"usage": {"credits_reserved": -1e5}}, (0, None, 165), id="credits-negative"),
    pytest.param({"usage": {"credits_reserved": float("inf")}}, (0, None, 165), id="credits-inf"),
    pytest.param({"task_info": {"estimated_time": float("nan")}}, (0, 67.5, None), id="eta-nan"),
]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("odd", "says"), NUMBERS_THAT_CANNOT_BE)
def test_a_create_answer_with_a_number_that_cannot_be_keeps_its_task(
    sleeps, driver, odd, says, caplog
):
    """The task was made and is charged: its id must reach the ledger, the number must not
    (an `inf` charge, or a progress no ledger column holds)."""
    answer = httpx.Response(200, content=json.dumps(TASK | odd))  # NaN, Infinity as they come
    task = DRIVERS[driver](Recorder(answer), "create_task", BODY)
    assert task.id == TASK_ID
    assert (task.progress, task.credits_reserved, task.estimated_time) == says
    assert "ignored" in caplog.text


@pytest.mark.parametrize("driver", DRIVERS)
def test_an_error_answer_whose_message_is_not_text_says_what_the_body_says(sleeps, driver):
    answer = {"error": {"code": {"n": 1}, "message": {"text": "duration: 4..15"}}}
    handler = Recorder(httpx.Response(400, json=answer))
    with pytest.raises(InvalidRequestError) as info:
        DRIVERS[driver](handler, "create_task", BODY)
    assert info.value.code is None
    assert isinstance(info.value.message, str) and "duration: 4..15" in info.value.message


def test_poll_answer_about_another_task_is_malformed(sleeps):
    other = TASK | {"id": "task-unified-1774857405-zzzzzzzz"}
    with pytest.raises(MalformedAnswerError, match="zzzzzzzz"):
        call_sync(Recorder(httpx.Response(200, json=other)), "get_task", TASK_ID, max_attempts=1)


class Endless(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A 1.5 GB body made on demand, counting what was taken from it."""

    def __init__(self, size: int = 1_500_000_000, chunk: int = 64 * 1024):
        self.size, self.chunk, self.sent = size, chunk, 0

    def _next(self) -> bytes:
        self.sent += self.chunk
        return b" " * self.chunk

    def __iter__(self):
        while self.sent < self.size:
            yield self._next()

    async def __aiter__(self):
        while self.sent < self.size:
            yield self._next()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_huge_poll_answer_is_not_read(sleeps, driver):
    body = Endless()
    handler = Recorder(lambda request: httpx.Response(200, stream=body))
    with pytest.raises(MalformedAnswerError, match="larger than"):
        DRIVERS[driver](handler, "get_task", TASK_ID, max_attempts=1)
    assert body.sent <= MAX_ANSWER_BYTES + 64 * 1024


@functools.cache
def gzip_bomb() -> bytes:
    """A few hundred bytes of gzip in gzip that inflate to 64 MiB."""
    return gzip.compress(gzip.compress(bytes(64 * 1024 * 1024)))


class Bomb(httpx.SyncByteStream, httpx.AsyncByteStream):
    """`gzip_bomb()` as a body, counting the bytes taken from it."""

    def __init__(self):
        self.sent = 0

    def __iter__(self):
        self.sent += len(gzip_bomb())
        yield gzip_bomb()

    async def __aiter__(self):
        for chunk in self:
            yield chunk


def test_a_content_encoding_is_quoted_as_plain_text():
    """Quoted as sent, a bidirectional override in the header reversed the text of the
    `unknown` row's message in the table and the summary (helper-72)."""
    header = [(b"Content-Encoding", "br\u202e\x85x".encode())]
    handler = Recorder(lambda request: httpx.Response(200, json=TASK, headers=header))
    with pytest.raises(OutcomeUnknownError) as error:
        call_sync(handler, "create_task", BODY, max_attempts=1)
    assert "(Content-Encoding: br x)" in str(error.value) and str(error.value).isprintable()


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    ("call", "refused"), [("get_task", MalformedAnswerError), ("create_task", OutcomeUnknownError)]
)
def test_a_compressed_answer_is_refused_not_inflated(sleeps, driver, call, refused):
    body, gzipped = Bomb(), {"Content-Encoding": "gzip, gzip"}
    handler = Recorder(lambda request: httpx.Response(200, stream=body, headers=gzipped))
    gzip_bomb()  # made before memory is measured
    tracemalloc.start()
    try:
        with pytest.raises(refused, match="compressed.*gzip, gzip"):
            DRIVERS[driver](handler, call, *CALLS[call], max_attempts=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024  # the 64 MiB it inflates to were never made
    assert body.sent == 0 and len(handler) == 1


def test_task_keeps_unknown_statuses_and_completed_may_have_no_results():
    odd = Task.from_json(TASK | {"status": "queued_for_review"})
    assert odd.status == "queued_for_review" and not odd.is_terminal
    done = Task.from_json(TASK | {"status": "completed", "results": None})
    assert done.is_terminal and done.results == ()


# ---- pacing under the key's rate limit -----------------------------------------------------


class Limiter:
    """A vendor allowing `rate` calls a second (a bucket of one second's worth, like the
    emulator's), each call taking 10 ms of the fake clock; 429 without Retry-After beyond it."""

    def __init__(self, clock, rate: float):
        self.clock, self.rate = clock, rate
        self.tokens, self.stamp, self.accepted, self.refused = rate, clock.now, 0, 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.clock.now += 0.01
        elapsed, self.stamp = self.clock.now - self.stamp, self.clock.now
        self.tokens = min(self.rate, self.tokens + elapsed * self.rate)
        if self.tokens >= 1:
            self.tokens -= 1
            self.accepted += 1
            return httpx.Response(200, json=TASK)
        self.refused += 1
        return error_response(429, "rate_limit_exceeded", "slow down")


def test_adaptive_pacing_holds_just_under_the_limit(clock):
    limiter = Limiter(clock, rate=20)
    start = clock.now
    with client(limiter, max_attempts=10, base_delay=0.1) as c:
        for _ in range(2000):
            c.get_task(TASK_ID)
    share = limiter.refused / (limiter.accepted + limiter.refused)
    rate = limiter.accepted / (clock.now - start)
    # The vendor's first second's burst lets the average pass 20 by a little.
    assert share < 0.05 and 0.9 * 20 < rate < 1.05 * 20, (share, rate)


def test_without_adaptive_pacing_the_same_load_is_refused_far_more(clock, monkeypatch):
    """The control for the test above: what the same vendor does to an unpaced client."""
    monkeypatch.setattr(_client._Bucket, "answered", lambda *args: None)
    limiter = Limiter(clock, rate=20)
    with client(limiter, max_attempts=10, base_delay=0.1) as c:
        for _ in range(500):
            c.get_task(TASK_ID)
    assert limiter.refused / (limiter.accepted + limiter.refused) > 0.2


def answered_at(bucket, clock, now: float, refused: bool = False, retry_after=None) -> None:
    clock.now = now
    bucket.answered(now - 0.01, refused, retry_after)


def test_a_429_slows_to_seven_tenths_of_the_accepted_rate_and_pauses(clock):
    bucket = _client._Bucket(None)
    assert bucket.take() == 0.0 and bucket.rate is None  # unlimited until refused
    for i in range(20):  # 20 calls accepted within the last second
        answered_at(bucket, clock, 1000 + i * 0.05)
    answered_at(bucket, clock, 1001.0, refused=True, retry_after=2)
    assert bucket.rate == pytest.approx(14)
    assert bucket.take() == pytest.approx(2)  # Retry-After holds every call
    clock.now = 1003.0
    assert bucket.take() == pytest.approx(1 / 14)  # then one call every 1/14 s
    clock.now += 1 / 14
    assert bucket.take() == 0.0


def test_429s_of_calls_already_sent_slow_down_only_once(clock):
    bucket = _client._Bucket(None)
    for i in range(20):
        answered_at(bucket, clock, 1000 + i * 0.05)
    answered_at(bucket, clock, 1001.0, refused=True)
    for late in range(10):  # calls sent before the slow-down, refused after it
        clock.now = 1001.01 + late * 0.001
        bucket.answered(1000.99, True, None)
    assert bucket.rate == pytest.approx(14)
    clock.now = 1002
    bucket.answered(1001.5, True, None)  # sent after the slow-down: a new overload
    assert bucket.rate < 14 * 0.7 + 1e-9


def test_the_rate_recovers_along_a_cubic_back_to_the_refused_rate_and_beyond(clock):
    bucket = _client._Bucket(None)
    for i in range(20):
        answered_at(bucket, clock, 1000 + i * 0.05)
    answered_at(bucket, clock, 1001.0, refused=True)
    k = (20 * 0.3 / 0.4) ** (1 / 3)  # seconds until the rate is back at 20
    rates = []
    for t in (0.5, k, k + 2):
        for i in range(20):  # keep 20 calls a second accepted
            answered_at(bucket, clock, 1001 + t - 1 + i * 0.05)
        answered_at(bucket, clock, 1001 + t)
        rates.append(bucket.rate)
    assert 14 < rates[0] < 20
    assert rates[1] == pytest.approx(20)
    assert rates[2] == pytest.approx(20 + 0.4 * 8)


def test_a_configured_rate_is_a_cap(clock):
    bucket = _client._Bucket(18)
    assert bucket.rate == 18
    for i in range(18):
        answered_at(bucket, clock, 1000 + i / 18)
    answered_at(bucket, clock, 1001.0, refused=True)
    assert bucket.rate == pytest.approx(18 * 0.7)
    for i in range(200):  # a long run of successes
        answered_at(bucket, clock, 1002 + i * 0.05)
    assert bucket.rate == 18


def test_sync_and_async_clients_of_one_api_share_what_they_learned(sleeps):
    refused = error_response(429, "rate_limit_exceeded", "x", **{"Retry-After": "3"})
    call_sync(Recorder(refused, httpx.Response(200, json=TASK)), "get_task", TASK_ID)
    sleeps.clear()
    run_async(Recorder(httpx.Response(200, json=TASK)), "get_task", TASK_ID)
    assert sleeps and sleeps[0] > 0  # the async client waits its turn at the learned rate


def test_creates_refused_at_their_limit_do_not_slow_the_queries(sleeps):
    """The vendor limits creates below status queries: each kind learns its own rate."""
    refused = error_response(429, "rate_limit_exceeded", "x", **{"Retry-After": "3"})
    handler = Recorder(refused, *[httpx.Response(200, json=TASK)] * 3)
    with Client(KEY, base_url=BASE, transport=httpx.MockTransport(handler)) as c:
        c.create_task(BODY)
        assert sleeps and sleeps[0] >= 3  # the create waited out its Retry-After
        sleeps.clear()
        c.get_task(TASK_ID)
        assert sleeps == []  # the query lane learned nothing from it
        c.create_task(BODY)
        assert sleeps and sleeps[0] > 0  # the create lane still paces
    assert [r.method for r in handler.requests] == ["POST", "POST", "GET", "POST"]


def test_max_requests_per_second_must_be_positive():
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_requests_per_second"):
            Client(KEY, max_requests_per_second=bad)


def test_capped_clients_space_every_call_even_concurrent_ones_across_clients():
    """Real sleeps: 12 concurrent polls and then a blocking one, at 10 requests/s."""
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        return httpx.Response(200, json=TASK)

    base = "https://paced.test.invalid"
    transport = httpx.MockTransport(handler)

    async def polls():
        async with AsyncClient(
            KEY, base_url=base, transport=transport, max_requests_per_second=10
        ) as c:
            await asyncio.gather(*(c.get_task(TASK_ID) for _ in range(12)))

    asyncio.run(polls())
    with Client(KEY, base_url=base, transport=transport, max_requests_per_second=10) as c:
        c.get_task(TASK_ID)
    # At most a quarter second's calls (2.5) go at once; then one per 1/10 s, never sooner
    # (a busy machine may send a call late, never early).
    early = [k for k, at in enumerate(sent) if at - sent[0] < (k - 2.5) / 10 - 1e-6]
    assert len(sent) == 13 and early == [], [round(at - sent[0], 4) for at in sent]


def test_unpaced_client_does_not_wait(sleeps):
    handler = Recorder(httpx.Response(200, json=TASK))
    for _ in range(5):
        call_sync(handler, "get_task", TASK_ID)
    assert len(handler) == 5 and sleeps == []


HOSTILE = (
    "\x1b[2J\x1b[H\x1b[1;32mall videos delivered\x1b[0m\n2026-11-20: charged 0\u202e\u200b"
    "\ud800\ue000" + "x" * 900  # a lone surrogate (no database stores it), a private-use character
)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_vendors_text_is_kept_on_one_printable_line(sleeps, driver):
    """Terminal escapes and line breaks in an error message reached `run`'s summary as sent:
    they could repaint the screen and forge a line of the summary."""
    failed = TASK | {"status": "failed", "error": {"code": "x\x1bq", "message": HOSTILE}}
    as_sent = {"content": json.dumps(failed).encode()}  # \ud800 escaped, as JSON allows
    task = DRIVERS[driver](Recorder(ok(**as_sent)), "get_task", TASK_ID)
    error = {"code": "invalid_request", "message": HOSTILE}
    refused = httpx.Response(400, content=json.dumps({"error": error}).encode())
    with pytest.raises(InvalidRequestError) as info:
        DRIVERS[driver](Recorder(refused), "get_task", TASK_ID)
    for text in (task.error_message, info.value.message, str(info.value)):
        assert text.isprintable() and len(text) <= 540, repr(text[:80])
        assert "[2J[H[1;32mall videos delivered[0m 2026-11-20: charged 0xxx" in text
    assert task.error_code == "xq"
