"""The vendor's documented requests and answers, replayed against the emulator over HTTP.

Every request body, id, field, status, code and message below is copied from the vendor's own
text: the OpenAPI document and parameter guide of `POST /v1/videos/generations`, and its task,
files and billing pages (summarised in the project's vendor notes). Each answer is validated
against `schemas/evolink.json`. Where the vendor says nothing, the test names our assumption.
"""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from seedance_pipeline.media import ffmpeg
from seedance_pipeline.seedance import TASK_ID, PriceTable

CREATE = "/v1/videos/generations"
FILES = "/api/v1/files"

# ---- the vendor's create examples (OpenAPI `requestBody.examples`) --------------------------

EXAMPLES = {
    "text_to_video": {
        "model": "seedance-2.0-text-to-video",
        "prompt": "一只猫在钢琴上弹奏月光奏鸣曲，电影感光影，特写镜头",
        "duration": 8,
        "quality": "720p",
        "aspect_ratio": "16:9",
        "generate_audio": True,
    },
    "image_to_video": {
        "model": "seedance-2.0-image-to-video",
        "prompt": "镜头缓缓推进，花瓣随风飘落",
        "image_urls": ["https://example.com/flower.jpg"],
        "duration": 5,
        "aspect_ratio": "adaptive",
        "generate_audio": True,
    },
    "reference_to_video": {
        "model": "seedance-2.0-reference-to-video",
        "prompt": (
            "全程使用视频1的第一视角构图，全程使用音频1作为背景音乐。第一人称视角果茶宣传广告..."
        ),
        "image_urls": ["https://example.com/ref1.jpg", "https://example.com/ref2.jpg"],
        "video_urls": ["https://example.com/reference.mp4"],
        "audio_urls": ["https://example.com/bgm.mp3"],
        "duration": 10,
        "quality": "720p",
        "aspect_ratio": "16:9",
        "generate_audio": True,
    },
    "fast_text_to_video": {
        "model": "seedance-2.0-fast-text-to-video",
        "prompt": "城市日落延时摄影，金色光线洒满天际线",
        "duration": 5,
        "aspect_ratio": "21:9",
        "generate_audio": True,
    },
}
# The OpenAPI document's error examples, per status: (code, message, type). The 400 example's
# message ("Invalid request parameters") is a placeholder; ours names the broken rule.
ERRORS = {
    400: ("invalid_request", None, "invalid_request_error"),
    401: ("unauthorized", "Invalid or expired token", "authentication_error"),
    402: (
        "insufficient_quota",
        "Insufficient quota. Please top up your account.",
        "insufficient_quota",
    ),
    403: (
        "model_access_denied",
        "Token does not have access to the specified model",
        "invalid_request_error",
    ),
    429: ("rate_limit_exceeded", "Too many requests, please try again later", "rate_limit_error"),
    500: ("internal_error", "Internal server error", "api_error"),
}
# The task id of the vendor's own examples (6 characters after the time); live ids carry 8.
EXAMPLE_TASK_ID = "task-unified-1774857405-abc123"
# The Mini tier (the vendor's Chinese overview): 480p and 720p; its text-to-video takes no
# model_params. Its prices are not published: the rates below are test values, not facts.
MINI = {
    "seedance-2.0-mini-text-to-video": {},
    "seedance-2.0-mini-image-to-video": {"image_urls": ["https://example.com/flower.jpg"]},
    "seedance-2.0-mini-reference-to-video": {"image_urls": ["https://example.com/ref1.jpg"]},
}
MINI_RATES = {
    "without_reference_video": {"480p": 3.0, "720p": 6.5},
    "with_reference_video": {"480p": 2.0, "720p": 4.25},
}


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def check(schema: dict, name: str, payload: object) -> dict:
    jsonschema.validate(payload, {**schema, "$ref": f"#/$defs/{name}"})
    return payload


def png(tmp_path: Path, w: int = 400, h: int = 300) -> bytes:
    path = tmp_path / f"img{w}x{h}.png"
    cmd = [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"]
    subprocess.run(
        [*cmd, "-i", f"testsrc2=size={w}x{h}", "-frames:v", "1", str(path)],
        check=True,
        capture_output=True,
    )
    return path.read_bytes()


def assert_error(schema: dict, response: httpx.Response, status: int) -> dict:
    """A generation-API error with the OpenAPI example's code, message and type."""
    assert response.status_code == status, response.text
    error = check(schema, "ErrorResponse", response.json())["error"]
    code, message, kind = ERRORS[status]
    assert (error["code"], error["type"]) == (code, kind)
    # The emulator's 402 goes on to say how many credits the task needs.
    assert error["message"].startswith((message or "").rstrip("."))
    return error


def assert_files_error(schema: dict, response: httpx.Response, status: int) -> dict:
    """A files-API error: `{success: false, code, msg}`, the code equal to the status."""
    assert response.status_code == status, response.text
    answer = check(schema, "FilesError", response.json())
    assert answer["code"] == status and answer["msg"]
    return answer


@pytest.fixture
def http(emulator, api_key):
    with httpx.Client(base_url=emulator, headers=auth(api_key), timeout=30) as client:
        yield client


# ---- creating and querying tasks -----------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_documented_create_examples_answer_a_pending_task(http, evolink_schema, name):
    request = EXAMPLES[name]
    r = http.post(CREATE, json=request)
    assert r.status_code == 200, r.text
    task = check(evolink_schema, "TaskCreated", r.json())
    assert TASK_ID.match(task["id"])
    assert (task["object"], task["type"], task["status"], task["progress"]) == (
        "video.generation.task",
        "video",
        "pending",
        0,
    )
    assert task["model"] == request["model"]
    assert task["task_info"]["video_duration"] == request["duration"]
    assert task["task_info"]["can_cancel"] is True
    assert task["usage"]["billing_rule"] == "per_second"
    # The example's reference video is not reachable: its length counts as the table's 5 s.
    expected = PriceTable.load().estimate_credits(request, [None])
    assert task["usage"]["credits_reserved"] == expected
    queried = http.get(f"/v1/tasks/{task['id']}")
    assert check(evolink_schema, "TaskQueryResponse", queried.json())["id"] == task["id"]


def test_a_task_runs_to_completed_with_result_links(http, evolink_schema):
    task_url = f"/v1/tasks/{http.post(CREATE, json=EXAMPLES['fast_text_to_video']).json()['id']}"
    deadline = time.monotonic() + 30
    while (task := http.get(task_url).json())["status"] != "completed":
        assert time.monotonic() < deadline, task
        time.sleep(0.02)
    check(evolink_schema, "TaskQueryResponse", task)
    assert task["progress"] == 100 and task["task_info"]["can_cancel"] is False
    video = httpx.get(task["results"][0])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"


@pytest.mark.parametrize(
    "task_id",
    [EXAMPLE_TASK_ID, "task-unified-1761313744-abcd1234", "task-unified-1761313744-a1"],
)
def test_unknown_task_ids_are_404_whatever_their_suffix_length(http, evolink_schema, task_id):
    r = http.get(f"/v1/tasks/{task_id}")
    assert r.status_code == 404
    error = check(evolink_schema, "ErrorResponse", r.json())["error"]
    assert (error["code"], error["message"]) == ("resource_not_found", "Task not found or expired")


@pytest.mark.parametrize("task_id", ["not-a-task", "task-unified-abc-abc123", "12345"])
def test_ids_that_cannot_be_task_ids_are_400(http, evolink_schema, task_id):
    r = http.get(f"/v1/tasks/{task_id}")
    assert r.status_code == 400
    error = check(evolink_schema, "ErrorResponse", r.json())["error"]
    assert (error["code"], error["type"]) == ("invalid_task_id", "invalid_request_error")
    assert task_id in error["message"]


def test_credits_answer_the_documented_balance(http, evolink_schema):
    http.post(CREATE, json=EXAMPLES["text_to_video"])
    answer = check(evolink_schema, "CreditsResponse", http.get("/v1/credits").json())
    assert answer["success"] is True
    user, token = answer["data"]["user"], answer["data"]["token"]
    assert user["remaining_credits"] == 100000 - 8 * 13.5  # 8 s of 720p standard held
    assert token["unlimited_credits"] is False
    assert user["remaining_credits"] == round(user["remaining_credits"], 4)


# ---- the documented errors -------------------------------------------------------------------


def test_invalid_request_example(http, evolink_schema):
    r = http.post(CREATE, json={**EXAMPLES["text_to_video"], "duration": 3})
    assert "duration:" in assert_error(evolink_schema, r, 400)["message"]


def test_unauthenticated_example(emulator, evolink_schema):
    for headers in ({}, auth("sk-evo-not-the-key")):
        r = httpx.post(f"{emulator}{CREATE}", json=EXAMPLES["text_to_video"], headers=headers)
        assert_error(evolink_schema, r, 401)


def test_insufficient_quota_and_access_denied_examples(start_emulator, api_key, evolink_schema):
    url = start_emulator(credits=60.0, denied_models=("seedance-2.0-fast-text-to-video",))
    with httpx.Client(base_url=url, headers=auth(api_key)) as http:
        assert_error(evolink_schema, http.post(CREATE, json=EXAMPLES["text_to_video"]), 402)
        assert_error(evolink_schema, http.post(CREATE, json=EXAMPLES["fast_text_to_video"]), 403)
        assert http.get("/emulator/ledger").json()["tasks"] == []


def test_rate_limited_example_with_retry_after(start_emulator, api_key, evolink_schema):
    url = start_emulator(rate_limit=0.1)  # creates: one per 10 s
    with httpx.Client(base_url=url, headers=auth(api_key)) as http:
        answers = [http.post(CREATE, json=EXAMPLES["text_to_video"]) for _ in range(2)]
    assert answers[0].status_code == 200
    assert_error(evolink_schema, answers[1], 429)
    assert int(answers[1].headers["Retry-After"]) >= 1


# ---- JSON in the right envelope on every route and status ---------------------------------

ROUTES = [
    ("POST", CREATE),
    ("GET", f"/v1/tasks/{EXAMPLE_TASK_ID}"),
    ("GET", "/v1/credits"),
    ("POST", f"{FILES}/upload/stream"),
    ("POST", f"{FILES}/upload/base64"),
    ("POST", f"{FILES}/upload/url"),
    ("GET", f"{FILES}/list?page=1&pageSize=20"),
    ("GET", f"{FILES}/quota"),
    ("DELETE", f"{FILES}/file_0123456789abcdef"),
]


def assert_envelope(schema: dict, path: str, response: httpx.Response, status: int) -> None:
    if path.startswith(FILES):
        assert_files_error(schema, response, status)
    else:
        assert_error(schema, response, status)


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_bad_key_answers_401_in_each_apis_envelope(emulator, evolink_schema, method, path):
    r = httpx.request(method, f"{emulator}{path}", headers=auth("sk-evo-wrong"))
    assert_envelope(evolink_schema, path, r, 401)
    if path.startswith(FILES):
        assert r.json()["msg"] == "Invalid or expired token"


def test_injected_server_errors_answer_json_on_every_route(start_emulator, api_key, evolink_schema):
    url = start_emulator(error_rate=1.0)
    for method, path in ROUTES:
        r = httpx.request(method, f"{url}{path}", headers=auth(api_key))
        assert_envelope(evolink_schema, path, r, 500)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/nothing", 404),
        ("GET", CREATE, 405),
        ("POST", "/v1/credits", 405),
        ("GET", f"{FILES}/no/such/route", 404),
        ("GET", FILES, 404),
        ("GET", f"{FILES}/upload/stream", 405),
        ("GET", f"{FILES}/file_0123456789abcdef", 405),
        ("POST", f"{FILES}/quota", 405),
        ("DELETE", f"{FILES}/file_0123456789abcdef", 404),
    ],
)
def test_unknown_routes_and_methods_answer_json(http, evolink_schema, method, path, status):
    r = http.request(method, path)
    assert r.headers["content-type"] == "application/json"
    if path.startswith(FILES):
        assert_files_error(evolink_schema, r, status)
    else:
        assert r.status_code == status
        check(evolink_schema, "ErrorResponse", r.json())


def test_unknown_links_answer_json(emulator, evolink_schema):
    for path in ("/results/task-unified-1774857405-abc123.mp4", "/files/file_00/a.png"):
        r = httpx.get(f"{emulator}{path}")
        assert r.status_code == 404
        check(evolink_schema, "ErrorResponse", r.json())


# ---- the files API, as the vendor's client uses it -----------------------------------------


def test_vendor_client_stream_upload_with_camel_case_fields(http, evolink_schema, tmp_path):
    image = png(tmp_path)
    r = http.post(
        f"{FILES}/upload/stream",
        files={"file": ("photo.png", image, "image/png")},
        data={"uploadPath": "seedance/refs", "fileName": "first-frame.png"},
    )
    data = check(evolink_schema, "UploadResponse", r.json())["data"]
    assert (data["upload_path"], data["file_name"], data["original_name"]) == (
        "seedance/refs",
        "first-frame.png",
        "photo.png",
    )
    assert (data["file_size"], data["mime_type"]) == (len(image), "image/png")
    assert httpx.get(data["file_url"]).content == image
    # `data.file_url` goes into `image_urls`, as the vendor's guide says.
    request = {**EXAMPLES["image_to_video"], "image_urls": [data["file_url"]]}
    assert http.post(CREATE, json=request).status_code == 200


def test_documented_snake_case_uploads(http, evolink_schema, tmp_path):
    image = png(tmp_path)
    fields = {"upload_path": "p", "file_name": "b.png"}
    streamed = http.post(f"{FILES}/upload/stream", files={"file": ("a.png", image)}, data=fields)
    data = check(evolink_schema, "UploadResponse", streamed.json())["data"]
    assert (data["upload_path"], data["file_name"]) == ("p", "b.png")
    encoded = base64.b64encode(image).decode()
    for payload in (
        {"base64_data": encoded, **fields},
        {"base64_data": f"data:image/png;base64,{encoded}", "uploadPath": "p", "fileName": "b.png"},
    ):
        answer = http.post(f"{FILES}/upload/base64", json=payload).json()
        data = check(evolink_schema, "UploadResponse", answer)["data"]
        assert (data["upload_path"], data["file_name"]) == ("p", "b.png")
        assert httpx.get(data["file_url"]).content == image
    fetched = http.post(f"{FILES}/upload/url", json={"file_url": data["file_url"]}).json()
    assert check(evolink_schema, "UploadResponse", fetched)["data"]["file_size"] == len(image)


def test_list_quota_and_delete_answer_the_vendors_shapes(http, evolink_schema, tmp_path):
    ids = []
    for i in range(3):
        upload = http.post(
            f"{FILES}/upload/stream", files={"file": ("a.png", png(tmp_path, 300 + i))}
        )
        ids.append(upload.json()["data"]["file_id"])
    listed = http.get(f"{FILES}/list?page=1&pageSize=20").json()
    files = check(evolink_schema, "FilesListResponse", listed)["data"]["files"]
    assert listed["data"]["total"] == 3 and sorted(f["file_id"] for f in files) == sorted(ids)
    assert all(set(f) == {"file_id", "file_name", "file_size", "upload_time"} for f in files)
    quota = check(evolink_schema, "FilesQuotaResponse", http.get(f"{FILES}/quota").json())["data"]
    assert (quota["used_files"], quota["remain_files"]) == (3, quota["max_files"] - 3)
    deleted = http.delete(f"{FILES}/{ids[0]}")
    assert deleted.status_code == 200
    assert check(evolink_schema, "FilesDeleteResponse", deleted.json())["success"] is True
    after = http.get(f"{FILES}/list", params={"page": 1, "pageSize": 20}).json()["data"]
    assert after["total"] == 2 and ids[0] not in {f["file_id"] for f in after["files"]}
    assert_files_error(evolink_schema, http.delete(f"{FILES}/{ids[0]}"), 404)


def test_files_refusals_are_in_the_files_envelope(http, evolink_schema):
    text = http.post(f"{FILES}/upload/stream", files={"file": ("notes.txt", b"just text")})
    answer = check(evolink_schema, "UploadResponse", text.json())
    assert answer["success"] is False and answer["data"] is None and answer["msg"]
    assert_files_error(evolink_schema, http.get(f"{FILES}/list?page=0&pageSize=20"), 400)


# ---- the Mini tier ---------------------------------------------------------------------------


@pytest.fixture
def mini_table() -> PriceTable:
    bundled = PriceTable.load()
    return PriceTable(
        credits_per_second={**bundled.credits_per_second, "mini": MINI_RATES},
        money_per_credit=bundled.money_per_credit,
    )


@pytest.mark.parametrize("model", MINI)
@pytest.mark.parametrize("quality", ["480p", "720p"])
def test_mini_models_create_tasks_priced_from_the_emulators_table(
    start_emulator, api_key, evolink_schema, mini_table, model, quality
):
    url = start_emulator(price_table=mini_table)
    request = {"model": model, "prompt": "一只猫", "duration": 4, "quality": quality, **MINI[model]}
    r = httpx.post(f"{url}{CREATE}", json=request, headers=auth(api_key))
    assert r.status_code == 200, r.text
    task = check(evolink_schema, "TaskCreated", r.json())
    assert task["model"] == model
    rate = MINI_RATES["without_reference_video"][quality]
    assert task["usage"]["credits_reserved"] == 4 * rate == mini_table.estimate_credits(request)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"model": "seedance-2.0-mini-text-to-video", "quality": "1080p"}, "quality"),
        (
            {"model": "seedance-2.0-mini-text-to-video", "model_params": {"web_search": False}},
            "model_params",
        ),
        (
            {
                "model": "seedance-2.0-mini-image-to-video",
                "quality": "1080p",
                **MINI["seedance-2.0-mini-image-to-video"],
            },
            "quality",
        ),
        ({"model": "seedance-2.0-mini-image-to-video"}, "image_urls"),
    ],
)
def test_mini_refusals_name_the_field(http, evolink_schema, fields, field):
    r = http.post(CREATE, json={"prompt": "一只猫", **fields})
    assert field + ":" in assert_error(evolink_schema, r, 400)["message"]
