"""The EvoLink emulator over real loopback HTTP, with raw httpx and the project's Client."""

from __future__ import annotations

import base64
import socket
import subprocess
import time
from importlib.resources import files
from pathlib import Path

import httpx
import jsonschema
import pytest

from seedance_pipeline.cli import main
from seedance_pipeline.emulator import EmulatorConfig, EmulatorState, running_emulator
from seedance_pipeline.emulator.state import TaskRecord
from seedance_pipeline.media import ffmpeg, measure, measure_video_output
from seedance_pipeline.seedance import (
    AccessDeniedError,
    AuthenticationError,
    Client,
    InsufficientQuotaError,
    InvalidRequestError,
    LinkExpiredError,
    NotFoundError,
    OutcomeUnknownError,
    PriceTable,
    RetryPolicy,
    Task,
)

T2V = "seedance-2.0-text-to-video"
I2V = "seedance-2.0-image-to-video"
R2V = "seedance-2.0-reference-to-video"
FAST_T2V = "seedance-2.0-fast-text-to-video"
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay=0.01, max_total_wait=10)


def body(**fields) -> dict:
    return {"model": T2V, "prompt": "a red fox in snow", "duration": 4, "quality": "480p", **fields}


def client(url: str, key: str, **kwargs) -> Client:
    kwargs.setdefault("retry", FAST_RETRY)
    return Client(key, base_url=url, files_url=url, **kwargs)


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def check(schema: dict, name: str, payload: dict) -> dict:
    jsonschema.validate(payload, {**schema, "$ref": f"#/$defs/{name}"})
    return payload


def make_media(path: Path, source: str, *args: str) -> Path:
    cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", source]
    subprocess.run([*cmd, *args, str(path)], check=True, capture_output=True)
    return path


def image(tmp_path: Path, w: int, h: int) -> Path:
    return make_media(tmp_path / f"img{w}x{h}.png", f"testsrc2=size={w}x{h}", "-frames:v", "1")


def video(tmp_path: Path, seconds: int = 3) -> Path:
    src = f"testsrc2=size=640x640:rate=24:duration={seconds}"
    return make_media(tmp_path / "ref.mp4", src, "-c:v", "libx264", "-preset", "ultrafast")


def wait_terminal(c: Client, task_id: str, timeout: float = 15.0) -> Task:
    deadline = time.monotonic() + timeout
    while True:
        task = c.get_task(task_id)
        if task.is_terminal or time.monotonic() > deadline:
            return task
        time.sleep(0.05)


def ledger(url: str) -> dict:
    return httpx.get(f"{url}/emulator/ledger").json()


def test_missing_or_wrong_key_is_401(emulator, api_key, evolink_schema):
    for headers in ({}, auth("sk-evo-wrong")):
        r = httpx.post(f"{emulator}/v1/videos/generations", json=body(), headers=headers)
        assert r.status_code == 401
        assert check(evolink_schema, "ErrorResponse", r.json())["error"] == {
            "code": "unauthorized",
            "message": "Invalid or expired token",
            "type": "authentication_error",
        }
    with client(emulator, "sk-evo-wrong") as c, pytest.raises(AuthenticationError) as exc:
        c.get_credits()
    assert (exc.value.status, exc.value.code) == (401, "unauthorized")
    # The scheme's case does not matter (RFC 9110); a client written from the docs may send it so.
    lower = {"Authorization": auth(api_key)["Authorization"].replace("Bearer", "bearer")}
    assert httpx.get(f"{emulator}/v1/credits", headers=lower).status_code == 200


def test_every_answer_is_json_in_its_api_envelope(emulator, api_key, evolink_schema):
    unknown = httpx.get(f"{emulator}/v2/nothing-here")
    assert unknown.status_code == 404
    assert check(evolink_schema, "ErrorResponse", unknown.json())["error"]["code"] == (
        "resource_not_found"
    )
    wrong_method = httpx.delete(f"{emulator}/v1/credits", headers=auth(api_key))
    assert wrong_method.status_code == 405 and "GET" in wrong_method.headers["allow"]
    assert (
        "DELETE" in check(evolink_schema, "ErrorResponse", wrong_method.json())["error"]["message"]
    )
    files = f"{emulator}/api/v1/files/upload/base64"
    for r, status in [
        (httpx.post(files, json={}, headers=auth("sk-evo-wrong")), 401),
        (httpx.get(files, headers=auth(api_key)), 405),
        (httpx.get(f"{emulator}/api/v1/files/no/such/route", headers=auth(api_key)), 404),
        (httpx.get(f"{emulator}/api/v1/files/file_0123", headers=auth(api_key)), 405),
        (httpx.delete(f"{emulator}/api/v1/files/file_0123", headers=auth(api_key)), 404),
        (httpx.get(f"{emulator}/api/v1/files/list?page=0", headers=auth(api_key)), 400),
        (httpx.get(f"{emulator}/api/v1/files/list?pageSize=x", headers=auth(api_key)), 400),
    ]:
        assert r.status_code == status
        answer = check(evolink_schema, "FilesError", r.json())
        assert answer["success"] is False and answer["code"] == status and answer["msg"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": FAST_T2V, "quality": "1080p"}, "quality"),
        (
            {
                "model": I2V,
                "image_urls": ["https://x.test/a.png"],
                "model_params": {"web_search": True},
            },
            "model_params.web_search",
        ),
        ({"image_urls": ["https://x.test/a.png"]}, "image_urls"),
        ({"model": I2V, "image_urls": [f"https://x.test/{i}.png" for i in range(3)]}, "image_urls"),
        ({"duration": 3}, "duration"),
        ({"duration": 16}, "duration"),
        ({"aspect_ratio": "2:1"}, "aspect_ratio"),
        ({"callback_url": "https://127.0.0.1/hook"}, "callback_url"),
        ({"callback_url": "http://example.com/hook"}, "callback_url"),
        ({"model": R2V, "audio_urls": ["https://x.test/a.mp3"]}, "image_urls"),
    ],
)
def test_rule_violations_are_400_naming_the_field(emulator, api_key, evolink_schema, fields, field):
    r = httpx.post(f"{emulator}/v1/videos/generations", json=body(**fields), headers=auth(api_key))
    assert r.status_code == 400
    error = check(evolink_schema, "ErrorResponse", r.json())["error"]
    assert error["code"] == "invalid_request"
    assert error["type"] == "invalid_request_error"
    assert f"{field}:" in error["message"]
    assert ledger(emulator)["tasks"] == []


def test_uploaded_small_image_breaks_pixel_limit(emulator, api_key, tmp_path):
    with client(emulator, api_key) as c:
        uploaded = c.upload_file(image(tmp_path, 200, 200))
        with pytest.raises(InvalidRequestError) as exc:
            c.create_task(body(model=I2V, image_urls=[uploaded.file_url]))
    assert exc.value.code == "invalid_request"
    assert "image_urls[0]: is 200x200 px" in exc.value.message


def test_client_maps_each_status_to_its_error(start_emulator, api_key, evolink_schema):
    url = start_emulator(credits=60.0, denied_models=(FAST_T2V,))
    cases = [
        (lambda c: c.create_task(body(duration=3)), InvalidRequestError, 400, "invalid_request"),
        (
            lambda c: c.create_task(body(duration=15)),
            InsufficientQuotaError,
            402,
            "insufficient_quota",
        ),
        (
            lambda c: c.create_task(body(model=FAST_T2V)),
            AccessDeniedError,
            403,
            "model_access_denied",
        ),
        (
            lambda c: c.get_task("task-unified-1700000000-abcd1234"),
            NotFoundError,
            404,
            "resource_not_found",
        ),
        (lambda c: c.get_task("not-a-task"), InvalidRequestError, 400, "invalid_task_id"),
    ]
    with client(url, api_key) as c:
        for call, cls, status, code in cases:
            with pytest.raises(cls) as exc:
                call(c)
            assert (type(exc.value), exc.value.status, exc.value.code) == (cls, status, code)
            assert exc.value.message
    r = httpx.get(f"{url}/v1/tasks/task-unified-1700000000-abcd1234", headers=auth(api_key))
    assert check(evolink_schema, "ErrorResponse", r.json())["error"]["message"] == (
        "Task not found or expired"
    )
    assert ledger(url)["tasks"] == []


def test_rate_limit_answers_429_and_client_retries(start_emulator, api_key, evolink_schema):
    url = start_emulator(rate_limit=1.0, poll_rate_limit=1.0)
    answers = [httpx.get(f"{url}/v1/credits", headers=auth(api_key)) for _ in range(3)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited, [r.status_code for r in answers]
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert check(evolink_schema, "ErrorResponse", limited[0].json())["error"]["code"] == (
        "rate_limit_exceeded"
    )
    with client(url, api_key) as c:
        assert c.get_credits()["user"]["remaining_credits"] == 100000.0


def test_rate_limits_are_per_route_class(start_emulator, api_key):
    """Creates at --rate-limit; queries at 5 x that by default; uploads apart from creates."""
    url = start_emulator(rate_limit=0.1)
    creates = [
        httpx.post(f"{url}/v1/videos/generations", json=body(), headers=auth(api_key))
        for _ in range(2)
    ]
    assert [r.status_code for r in creates] == [200, 429]
    assert 8 <= int(creates[1].headers["Retry-After"]) <= 10
    task_id = creates[0].json()["id"]
    polls = [httpx.get(f"{url}/v1/tasks/{task_id}", headers=auth(api_key)) for _ in range(2)]
    assert [r.status_code for r in polls] == [200, 429]
    assert 1 <= int(polls[1].headers["Retry-After"]) <= 2  # 2 s a query, less time passed
    credits = httpx.get(f"{url}/v1/credits", headers=auth(api_key))
    assert credits.status_code == 429  # the credit balance shares the query bucket
    upload = httpx.post(
        f"{url}/api/v1/files/upload/base64", json={"base64_data": "eA=="}, headers=auth(api_key)
    )
    assert upload.status_code == 200 and upload.json()["success"] is False  # not a 429
    again = httpx.post(
        f"{url}/api/v1/files/upload/base64", json={"base64_data": "eA=="}, headers=auth(api_key)
    )
    assert again.status_code == 429 and again.json()["code"] == 429


def test_error_rate_gives_500_and_never_creates_a_task(start_emulator, api_key, evolink_schema):
    url = start_emulator(error_rate=1.0)
    r = httpx.post(f"{url}/v1/videos/generations", json=body(), headers=auth(api_key))
    assert r.status_code == 500
    assert check(evolink_schema, "ErrorResponse", r.json())["error"]["type"] == "api_error"
    # A 5xx does not prove that no task was made: the client never resends a create after one.
    with client(url, api_key) as c, pytest.raises(OutcomeUnknownError) as exc:
        c.create_task(body())
    assert (exc.value.__cause__.status, exc.value.__cause__.code) == (500, "internal_error")
    assert ledger(url)["tasks"] == []


def test_dropped_answer_is_outcome_unknown_and_task_exists(start_emulator, api_key):
    url = start_emulator(drop_rate=1.0)
    timeout = httpx.Timeout(0.5, connect=2.0)
    with client(url, api_key, timeout=timeout) as c, pytest.raises(OutcomeUnknownError):
        c.create_task(body())
    tasks = ledger(url)["tasks"]
    assert len(tasks) == 1
    assert tasks[0]["credits_reserved"] == PriceTable.load().estimate_credits(body())


@pytest.mark.parametrize(
    ("ratio", "quality", "audio", "pixels"),
    [("16:9", "720p", True, (1280, 720)), ("9:16", "480p", False, (496, 864))],
)
def test_lifecycle_to_a_real_mp4(
    emulator, api_key, evolink_schema, tmp_path, ratio, quality, audio, pixels
):
    request = body(aspect_ratio=ratio, quality=quality, generate_audio=audio)
    r = httpx.post(f"{emulator}/v1/videos/generations", json=request, headers=auth(api_key))
    created = check(evolink_schema, "TaskCreated", r.json())
    expected = PriceTable.load().estimate_credits(request)
    assert created["usage"] == {
        "billing_rule": "per_second",
        "credits_reserved": expected,
        "user_group": "default",
    }
    assert created["task_info"]["video_duration"] == 4
    seen = set()
    with client(emulator, api_key) as c:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            raw = httpx.get(f"{emulator}/v1/tasks/{created['id']}", headers=auth(api_key)).json()
            seen.add(check(evolink_schema, "TaskQueryResponse", raw)["status"])
            if raw["status"] == "completed":
                break
            time.sleep(0.01)
        task = c.get_task(created["id"])
        assert task.status == "completed" and task.progress == 100
        saved = c.download(task.results[0], tmp_path / "out.mp4")
        credits = check(
            evolink_schema,
            "CreditsResponse",
            httpx.get(f"{emulator}/v1/credits", headers=auth(api_key)).json(),
        )["data"]["user"]
    assert "completed" in seen
    facts = measure_video_output(saved.path)
    assert (facts["width"], facts["height"]) == pixels
    assert facts["duration_s"] == pytest.approx(4, abs=0.1)
    assert facts["has_audio"] is audio
    assert credits == {"remaining_credits": 100000.0 - expected, "used_credits": expected}
    assert ledger(emulator)["credits_charged_total"] == expected


def test_progress_rises_through_processing(start_emulator, api_key):
    url = start_emulator(time_scale=0.05)
    with client(url, api_key) as c:
        task = c.create_task(body())
        assert task.estimated_time == 2
        progress = []
        while not task.is_terminal:
            task = c.get_task(task.id)
            progress.append((task.status, task.progress))
            time.sleep(0.05)
    statuses = [s for s, _ in progress]
    assert "processing" in statuses and statuses[-1] == "completed"
    values = [p for _, p in progress]
    assert values == sorted(values)


def test_failed_tasks_carry_an_error_and_cost_nothing(start_emulator, api_key, evolink_schema):
    url = start_emulator(task_failure_rate=1.0)
    with client(url, api_key) as c:
        ids = [c.create_task(body()).id for _ in range(3)]
        tasks = [wait_terminal(c, task_id) for task_id in ids]
    for task in tasks:
        assert task.status == "failed"
        assert task.error_code in ("generation_failed_no_content", "service_error")
        assert task.error_message and not task.results
        check(evolink_schema, "TaskQueryResponse", dict(task.raw))
    book = ledger(url)
    assert book["credits_charged_total"] == 0
    assert book["credits_remaining"] == 100000.0
    assert {t["credits_charged"] for t in book["tasks"]} == {0}


def test_expired_link_raises_link_expired(start_emulator, api_key, tmp_path):
    url = start_emulator(link_ttl=0.05)
    with client(url, api_key) as c:
        task = wait_terminal(c, c.create_task(body()).id)
        time.sleep(0.1)
        r = httpx.get(task.results[0])
        assert r.status_code == 403 and "expired" in r.json()["error"]["message"]
        with pytest.raises(LinkExpiredError):
            c.download(task.results[0], tmp_path / "late.mp4")
    assert not (tmp_path / "late.mp4").exists()


def test_restart_keeps_tasks_and_credits(api_key, tmp_path):
    config = EmulatorConfig(port=0, time_scale=0.002, state_dir=tmp_path / "kept")
    with running_emulator(config) as url, client(url, api_key) as c:
        task_id = c.create_task(body()).id
        before = c.get_credits()["user"]
    with running_emulator(config) as url, client(url, api_key) as c:
        assert wait_terminal(c, task_id).status == "completed"
        after = c.get_credits()["user"]
    cost = PriceTable.load().estimate_credits(body())
    assert before == {"remaining_credits": 100000.0 - cost, "used_credits": 0.0}
    assert after == {"remaining_credits": 100000.0 - cost, "used_credits": cost}
    state = EmulatorState(config.state_dir, config.credits)
    try:
        assert state.charged_total() == cost
        assert [t.id for t in state.tasks()] == [task_id]
    finally:
        state.close()


def test_balance_settles_tasks_in_end_order_as_time_passes(tmp_path):
    """The running totals agree with summing every task, at each moment and after reopening."""
    state = EmulatorState(tmp_path / "balance", credits=1000.0)
    t0 = time.time()
    ends = {"a": (5.0, None), "b": (1.0, "service_error"), "c": (3.0, None), "d": (9.0, "x")}
    for name, (seconds, failure) in ends.items():
        task = TaskRecord(
            id=f"task-unified-{int(t0)}-{name * 8}",
            created=t0,
            model=T2V,
            duration=4,
            quality="480p",
            width=864,
            height=496,
            audio=False,
            run_seconds=seconds,
            credits_reserved=10.5,
            error_code=failure,
        )
        assert state.reserve_task(task) is None
    try:
        expected = [(0.5, 958.0, 0.0), (2, 968.5, 0.0), (4, 968.5, 10.5), (6, 968.5, 21.0)]
        for dt, remaining, charged in expected:
            assert (state.credits_remaining(t0 + dt), state.charged_total(t0 + dt)) == (
                remaining,
                charged,
            )
    finally:
        state.close()
    reopened = EmulatorState(tmp_path / "balance", credits=1000.0)
    try:
        assert reopened.credits_remaining(t0 + 10) == 979.0
        assert reopened.charged_total(t0 + 10) == 21.0
    finally:
        reopened.close()


def test_uploads_round_trip(emulator, api_key, evolink_schema, tmp_path):
    png = image(tmp_path, 400, 300)
    with client(emulator, api_key) as c:
        streamed = c.upload_file(png, upload_path="refs")
        fetched = c.upload_url(streamed.file_url)
        with pytest.raises(InvalidRequestError):
            c.upload_url("https://example.com/cat.png")
    r = httpx.post(
        f"{emulator}/api/v1/files/upload/base64",
        json={"base64_data": base64.b64encode(png.read_bytes()).decode(), "file_name": "b.png"},
        headers=auth(api_key),
    )
    encoded = check(evolink_schema, "UploadResponse", r.json())["data"]
    assert encoded["file_name"] == "b.png" and encoded["mime_type"] == "image/png"
    for uploaded in (streamed.file_url, fetched.file_url, encoded["file_url"]):
        assert httpx.get(uploaded).content == png.read_bytes()
    assert streamed.mime_type == "image/png" and streamed.file_size == png.stat().st_size
    rejected = httpx.post(
        f"{emulator}/api/v1/files/upload/stream",
        files={"file": ("notes.txt", b"just text")},
        headers=auth(api_key),
    ).json()
    assert check(evolink_schema, "UploadResponse", rejected)["success"] is False
    ok = httpx.post(
        f"{emulator}/api/v1/files/upload/stream",
        files={"file": ("a.png", png.read_bytes())},
        headers=auth(api_key),
    ).json()
    check(evolink_schema, "UploadResponse", ok)


def test_list_pages_and_deleted_files_disappear(emulator, api_key, tmp_path):
    # The documented shapes are test_conformance's; here: paging, and what a delete removes.
    files = f"{emulator}/api/v1/files"
    with client(emulator, api_key) as c:
        uploaded = [c.upload_file(image(tmp_path, 300 + i, 300)) for i in range(3)]
    pages = [
        httpx.get(f"{files}/list?page={n}&pageSize=2", headers=auth(api_key)).json()["data"]
        for n in (1, 2, 3)
    ]
    assert [p["total"] for p in pages] == [3, 3, 3]
    assert [len(p["files"]) for p in pages] == [2, 1, 0]
    listed = {f["file_id"]: f["file_size"] for p in pages for f in p["files"]}
    assert listed == {u.file_id: u.file_size for u in uploaded}
    gone = uploaded[0]
    assert httpx.delete(f"{files}/{gone.file_id}", headers=auth(api_key)).status_code == 200
    assert httpx.get(gone.file_url).status_code == 404
    assert httpx.get(uploaded[1].file_url).status_code == 200
    quota = httpx.get(f"{files}/quota", headers=auth(api_key)).json()["data"]
    assert (quota["used_files"], quota["max_files"], quota["remain_files"]) == (2, 100, 98)


def test_uploads_stop_at_the_file_quota(emulator, api_key, evolink_schema, tmp_path, monkeypatch):
    monkeypatch.setattr("seedance_pipeline.emulator.files.MAX_FILES", 2)
    png = image(tmp_path, 400, 300).read_bytes()
    url = f"{emulator}/api/v1/files/upload/stream"
    answers = [
        httpx.post(url, files={"file": ("a.png", png)}, headers=auth(api_key)).json()
        for _ in range(3)
    ]
    assert [a["success"] for a in answers] == [True, True, False]
    refused = check(evolink_schema, "FilesError", answers[2])
    assert "file quota reached (2 files)" in refused["msg"] and "DELETE" in refused["msg"]
    first = answers[0]["data"]["file_id"]
    httpx.delete(f"{emulator}/api/v1/files/{first}", headers=auth(api_key))
    again = httpx.post(url, files={"file": ("a.png", png)}, headers=auth(api_key)).json()
    assert again["success"] is True


def test_reference_video_reserves_measured_seconds(emulator, api_key, tmp_path):
    ref = video(tmp_path, seconds=3)
    seconds = measure(ref, "video").duration_s
    with client(emulator, api_key) as c:
        uploaded = c.upload_file(ref)
        assert uploaded.mime_type == "video/mp4"
        request = body(model=R2V, video_urls=[uploaded.file_url], quality="720p", duration=5)
        task = c.create_task(request)
        outside = c.create_task({**request, "video_urls": ["https://example.com/r.mp4"]})
    table = PriceTable.load()
    assert task.credits_reserved == table.estimate_credits(request, [seconds])
    assert task.credits_reserved == pytest.approx((5 + 5) * 8.222)
    assert outside.credits_reserved == table.estimate_credits(request, [None])


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--error-rate", "15"], "error_rate (--error-rate) is a probability: from 0 to 1"),
        (["--drop-rate", "-0.1"], "drop_rate (--drop-rate) is a probability: from 0 to 1"),
        (["--credits", "-5"], "credits (--credits) must be at least 0"),
        (["--time-scale", "nan"], "time_scale (--time-scale) must be at least 0"),
        # A negative or infinite limit was taken: -3 limited nothing, inf refused every call.
        (["--rate-limit", "-3"], "rate_limit (--rate-limit) is requests per second: a number"),
        (["--poll-rate-limit", "inf"], "poll_rate_limit (--poll-rate-limit) is requests per"),
        # It blamed SEEDANCE_PRICE_TABLE, which was not set.
        (["--price-table", "/no/prices.json"], "cannot read price table /no/prices.json (--pr"),
        # The pipeline's own table prices no mini tier: a mini create was answered 500.
        (
            ["--price-table", str(files("seedance_pipeline.seedance").joinpath("prices.json"))],
            "the price table (--price-table) has no rate for seedance-2.0-mini-text-to-video",
        ),
    ],
)
def test_the_emulator_refuses_a_flag_out_of_range_in_one_line(capsys, flags, said):
    """`--error-rate 15` was taken, and every request got HTTP 500."""
    assert main(["emulator", "--port", "0", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}") and len(err.splitlines()) == 1, err


def test_the_emulator_on_a_port_in_use_says_so_in_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["emulator", "--port", str(port)]) == 2
    assert capsys.readouterr().err == (
        f"error: the emulator cannot start: Address already in use "
        f"(--host 127.0.0.1 --port {port})\n"
    )
