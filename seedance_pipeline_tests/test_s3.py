"""Videos, tables and media on S3, against moto's S3 server running as a real process."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pandas as pd
import pytest
from botocore.exceptions import ClientError

from seedance_pipeline.catalog import file_digest
from seedance_pipeline.cli import main
from seedance_pipeline.ledger import Ledger, PollUpdate
from seedance_pipeline.media import MediaError, measure_video_output
from seedance_pipeline.publishing import PublishError, sendable
from seedance_pipeline.s3 import (
    SETTINGS_HINT,
    S3Bucket,
    S3Error,
    S3Media,
    S3Publisher,
    S3Refused,
    S3TableStore,
    S3VideoStore,
    s3_client,
)
from seedance_pipeline.seedance import Client
from seedance_pipeline.statuses import Status
from seedance_pipeline.submission import Planned, SubmissionStopped, submit_all
from seedance_pipeline.videos import store_video

from .pipeline_support import (
    DAY,
    SAMPLE,
    copy_sample_data,
    make_resources,
    run_day,
    save_costs,
)
from .s3_server import running_moto

PREFIX = "team/seedance"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLE-session-token"
MEDIA_FIELDS = ("image_urls", "video_urls", "audio_urls")


def objects(bucket: str) -> dict[str, bytes]:
    """Every object of the bucket, by key."""
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_tables_round_trip_and_a_missing_one_names_the_asset(s3_bucket):
    tables = S3TableStore(S3Bucket(s3_client(), s3_bucket, PREFIX))
    frame = pd.DataFrame({"prompt_id": ["a", "b"], "credits": [1.5, 2.0]})
    uri = tables.write(frame, "generated_videos", DAY)
    tables.write(frame.head(1), "generated_videos", "2026-11-21")

    assert uri == f"s3://{s3_bucket}/{PREFIX}/warehouse/generated_videos/{DAY}.parquet"
    pd.testing.assert_frame_equal(tables.read("generated_videos", DAY), frame)
    assert len(tables.read_all("generated_videos")) == 3
    assert tables.read_all("generation_costs").empty
    with pytest.raises(FileNotFoundError, match="materialise generation_costs for 2026-11-22"):
        tables.read("generation_costs", "2026-11-22")


def test_a_reader_never_sees_half_a_table(s3_bucket):
    tables = S3TableStore(S3Bucket(s3_client(), s3_bucket, PREFIX))
    versions = [pd.DataFrame({"version": [v] * 20_000}) for v in range(8)]
    tables.write(versions[0], "generated_videos", DAY)
    seen: list[pd.DataFrame] = []
    writer = threading.Thread(
        target=lambda: [tables.write(v, "generated_videos", DAY) for v in versions[1:]]
    )
    writer.start()
    while writer.is_alive():
        seen.append(tables.read("generated_videos", DAY))
    writer.join()
    assert seen
    for frame in seen:
        assert len(frame) == 20_000 and frame.version.nunique() == 1


def test_video_put_uploads_and_removes_the_scratch_file(s3_bucket, tmp_path):
    store = S3VideoStore(S3Bucket(s3_client(), s3_bucket, PREFIX))
    scratch = store.scratch_path(DAY, "p1")
    data_dir = tmp_path / "data"
    assert not scratch.is_relative_to(data_dir)
    payload = b"\x00mp4" * 3_000_000  # 12 MB: a multipart upload
    scratch.write_bytes(payload)

    key = store.put(scratch, DAY, "p1")

    assert key == f"videos/{DAY}/p1.mp4"
    assert not scratch.exists()
    assert store.stored_size(key) == len(payload)
    assert store.stored_size(f"videos/{DAY}/p2.mp4") is None
    assert store.uri(key) == f"s3://{s3_bucket}/{PREFIX}/videos/{DAY}/p1.mp4"
    assert objects(s3_bucket)[f"{PREFIX}/{key}"] == payload


def test_credentials_short_of_a_permission_are_told_which(tmp_path, monkeypatch):
    """moto enforcing IAM (after its first four calls, the admin's set-up), for a key that may
    only put tables: writing one works; storing a video, checking it, reading a table and
    listing the tables each name the permission the key lacks, not only 'Forbidden'."""
    bucket = "seedance-tables-only"
    with running_moto(tmp_path / "moto.log", INITIAL_NO_AUTH_ACTION_COUNT="4") as url:
        admin = {"endpoint_url": url, "region_name": "us-east-1"}
        admin |= {"aws_access_key_id": "admin", "aws_secret_access_key": "admin"}
        boto3.client("s3", **admin).create_bucket(Bucket=bucket)
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="writer")
        tables_only = f"arn:aws:s3:::{bucket}/{PREFIX}/warehouse/*"
        allowed = {"Effect": "Allow", "Action": "s3:PutObject", "Resource": tables_only}
        iam.put_user_policy(
            UserName="writer",
            PolicyName="tables-only",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allowed]}),
        )
        key = iam.create_access_key(UserName="writer")["AccessKey"]
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        objects = S3Bucket(s3_client(), bucket, PREFIX)
        videos, tables = S3VideoStore(objects), S3TableStore(objects)
        scratch = videos.scratch_path(DAY, "p1")
        scratch.write_bytes(b"\x00mp4")
        tables.write(pd.DataFrame({"prompt_id": ["p1"]}), "generated_videos", DAY)

        with pytest.raises(S3Error) as checked:
            videos.stored_size(f"videos/{DAY}/p1.mp4")
        with pytest.raises(S3Error, match="upload refused .*need s3:PutObject on bucket"):
            videos.put(scratch, DAY, "p1")
        with pytest.raises(S3Error, match="GET refused .*need s3:GetObject, and s3:List"):
            tables.read("generated_videos", DAY)
        with pytest.raises(S3Error, match=f"LIST refused .*need s3:ListBucket on bucket {bucket}"):
            tables.partitions("generated_videos")
    where = f"s3://{bucket}/{PREFIX}/videos/{DAY}/p1.mp4: HEAD refused"
    assert str(checked.value).startswith(where)
    assert "the credentials need s3:GetObject, and s3:ListBucket" in str(checked.value)
    assert str(checked.value).endswith(SETTINGS_HINT)  # a wrong key is refused alike
    assert key["SecretAccessKey"] not in str(checked.value)
    scratch.unlink()


def test_published_media_are_uploaded_once_and_sent_presigned(s3_bucket):
    publisher = S3Publisher(S3Bucket(s3_client(), s3_bucket, PREFIX))
    path = SAMPLE / "media" / "aud_jingle_3s.mp3"

    first, second = publisher.publish(path), publisher.publish(path)

    assert len([k for k in objects(s3_bucket) if k.startswith(f"{PREFIX}/media/")]) == 1
    assert first == second == f"s3://{s3_bucket}/{PREFIX}/media/{file_digest(path)}/{path.name}"
    body = {"prompt": "a jingle", "audio_urls": [first, "https://example.com/a.mp3"]}
    sent = sendable(body)
    assert body["audio_urls"][0] == first  # the stored body keeps the URI
    url, other = sent["audio_urls"]
    assert other == "https://example.com/a.mp3"
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=172800" in url
    assert httpx.get(url).content == path.read_bytes()


def test_a_published_medium_cut_short_in_the_bucket_is_uploaded_again(s3_bucket):
    """Its key names the file's digest: an object there of another size (a copy put back cut
    short) was taken for the file and sent to the vendor as the reference."""
    publisher = S3Publisher(S3Bucket(s3_client(), s3_bucket, PREFIX))
    path = SAMPLE / "media" / "aud_jingle_3s.mp3"
    key = f"{PREFIX}/media/{file_digest(path)}/{path.name}"
    s3_client().put_object(Bucket=s3_bucket, Key=key, Body=path.read_bytes()[:1000])

    publisher.publish(path)

    assert objects(s3_bucket)[key] == path.read_bytes()


def test_publishing_to_a_missing_bucket_names_the_file_and_the_settings(s3_bucket):
    publisher = S3Publisher(S3Bucket(s3_client(), "no-such-bucket", PREFIX))
    path = SAMPLE / "media" / "aud_jingle_3s.mp3"
    with pytest.raises(PublishError) as raised:
        publisher.publish(path)
    assert str(path) in str(raised.value) and "SEEDANCE_S3_BUCKET" in str(raised.value)


def test_s3_catalog_media_are_measured_from_the_object(s3_bucket):
    media = SAMPLE / "media"
    s3 = boto3.client("s3")
    s3.upload_file(str(media / "vid_square_640x640_24fps_3s.mp4"), s3_bucket, "in/clip.mp4")
    s3.upload_file(str(media / "aud_jingle_3s.mp3"), s3_bucket, "in/not-a-video.mp4")
    reader = S3Media(s3_client)

    facts = reader.facts(f"s3://{s3_bucket}/in/clip.mp4", "video")

    assert (facts.width, facts.height, facts.fps) == (640, 640, 24)
    assert facts.duration_s == pytest.approx(3, abs=0.1)
    with pytest.raises(MediaError, match=f"s3://{s3_bucket}/in/not-a-video.mp4"):
        reader.facts(f"s3://{s3_bucket}/in/not-a-video.mp4", "video")
    with pytest.raises(MediaError, match="AWS_ENDPOINT_URL"):
        reader.facts(f"s3://{s3_bucket}/in/missing.png", "image")


def _add_s3_media_rows(data: Path, bucket: str) -> None:
    """Two catalog rows whose media live in S3: one fine, one too small to be accepted."""
    s3 = boto3.client("s3")
    s3.upload_file(str(data / "media" / "img_wide_1280x720.webp"), bucket, "catalog/wide.webp")
    s3.upload_file(str(data / "media" / "img_tiny_200x200.png"), bucket, "catalog/tiny.png")
    with (data / "catalog" / "media.csv").open("a", encoding="utf-8") as fh:
        fh.write(f"s3_wide,image,s3://{bucket}/catalog/wide.webp,,,,,\n")
        fh.write(f"s3_tiny,image,s3://{bucket}/catalog/tiny.png,,,,,\n")
    with (data / "catalog" / "prompts.csv").open("a", encoding="utf-8") as fh:
        for pid, media_id in (("d1-s3-wide", "s3_wide"), ("d1-s3-tiny", "s3_tiny")):
            fh.write(
                f"{pid},{DAY},seedance-2.0-image-to-video,The scene comes alive,{media_id},,,"
                "4,480p,16:9,false,false,,s3\n"
            )


def test_sample_day_on_s3_leaves_no_videos_or_tables_on_disk(
    tmp_path, emulator, api_key, s3_bucket, moto_server, monkeypatch, capsys
):
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)  # temporary credentials
    data = copy_sample_data(tmp_path / "data")
    _add_s3_media_rows(data, s3_bucket)
    resources = make_resources(data, emulator, api_key, s3_bucket=s3_bucket, s3_prefix=PREFIX)
    tables = resources["pipeline"].tables()

    run_day(resources)
    assert save_costs(resources).success

    stored = objects(s3_bucket)
    for asset in ("generation_requests", "generated_videos", "generation_costs"):
        assert f"{PREFIX}/warehouse/{asset}/{DAY}.parquet" in stored
    assert f"{PREFIX}/warehouse/generation_costs_by_day.png" in stored

    requests = tables.read("generation_requests", DAY).set_index("prompt_id")
    assert "300..6000 px" in " ".join(requests.loc["d1-s3-tiny", "errors"])
    s3_image = json.loads(requests.loc["d1-s3-wide", "request_json"])["image_urls"][0]
    assert s3_image == f"s3://{s3_bucket}/catalog/wide.webp"
    # Local media went to the bucket; requests name them by URI, and the API gets presigned
    # URLs the emulator can fetch.
    bodies = [json.loads(b) for b in requests.request_json.dropna()]
    urls = {f: {u for b in bodies for u in b.get(f, [])} for f in ("video_urls", "audio_urls")}
    assert urls["video_urls"] and urls["audio_urls"]
    published = {u for b in bodies for f in MEDIA_FIELDS for u in b.get(f, [])} - {s3_image}
    assert published and all(u.startswith(f"s3://{s3_bucket}/{PREFIX}/media/") for u in published)
    with Client(api_key, base_url=emulator, files_url=emulator) as client:
        for uri in published:
            hosted = client.upload_url(sendable({"image_urls": [uri]})["image_urls"][0])
            assert httpx.get(hosted.file_url).content == stored[uri.split("/", 3)[3]]
    # The session token that signed them is in no table, report, ledger or other file.
    in_ledger = resources["pipeline"].ledger().rows(DAY)
    assert {u for r in in_ledger for f in MEDIA_FIELDS for u in r.request.get(f, [])} == {
        s3_image,
        *published,
    }
    kept = [*stored.values(), *(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())]
    assert not [b for b in kept if SESSION_TOKEN.encode() in b or b"X-Amz-" in b]

    videos = tables.read("generated_videos", DAY)
    completed = videos[videos.status == "completed"]
    assert len(completed) == (requests.status == "accepted").sum() > 0
    for row in completed.itertuples():
        key = f"{PREFIX}/videos/{DAY}/{row.prompt_id}.mp4"
        assert row.video_uri == f"s3://{s3_bucket}/{key}"
        assert hashlib.sha256(stored[key]).hexdigest() == row.video_sha256
        assert row.video_bytes == len(stored[key])
        local = tmp_path / f"{row.prompt_id}.mp4"
        local.write_bytes(stored[key])
        measured = measure_video_output(local)
        assert (row.width, row.height, row.has_audio) == (
            measured["width"],
            measured["height"],
            measured["has_audio"],
        )
        # The emulator learns an `adaptive` ratio only from media it hosts itself.
        if row.aspect_ratio != "adaptive":
            assert (row.width, row.height) == (row.expected_width, row.expected_height)

    assert not (data / "videos").exists() and not (data / "warehouse").exists()
    made_here = [
        p
        for p in data.rglob("*")
        if p.is_file() and p.parts[len(data.parts)] not in ("catalog", "media", "state")
    ]
    assert made_here == []
    scratch = Path(tempfile.gettempdir()) / "seedance-videos" / DAY
    assert not list(scratch.glob(f".*.{os.getpid()}.*"))

    # The cost report reads the same tables from the bucket.
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    monkeypatch.setenv("SEEDANCE_S3_BUCKET", s3_bucket)
    monkeypatch.setenv("SEEDANCE_S3_PREFIX", PREFIX)
    capsys.readouterr()
    assert main(["costs", "--json"]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert total["tasks"] == len(videos) and total["completed"] == len(completed)
    assert total["credits_charged"] == pytest.approx(completed.credits_charged.sum())


def test_each_attempt_is_sent_presigned_and_the_ledger_keeps_the_uri(
    s3_bucket, tmp_path, monkeypatch
):
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="in/cat.png", Body=b"a png")
    uri = f"s3://{s3_bucket}/in/cat.png"
    body = {"model": "seedance-2.0-image-to-video", "prompt": "the cat", "image_urls": [uri]}
    sent: list[dict] = []

    def vendor(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        task_id = f"task-unified-1774857405-{len(sent):08d}"
        return httpx.Response(200, json={"id": task_id, "status": "pending", "model": "m"})

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    with Client(
        "k", base_url="https://api.test.invalid", transport=httpx.MockTransport(vendor)
    ) as c:
        assert submit_all(ledger, c, DAY, [Planned("p1", body, 10.0)]).submitted == 1
        first = ledger.rows(DAY)[0]
        ledger.record_polls([PollUpdate(first.task_id, Status.FAILED, error_code="service_error")])
        assert submit_all(ledger, c, DAY, [Planned("p1", body, 10.0)], 2).resubmitted == 1

        assert len(sent) == 2
        for request in sent:  # each attempt a URL signed with the session token, fetchable
            url = request["image_urls"][0]
            assert url.startswith(f"{os.environ['AWS_ENDPOINT_URL']}/{s3_bucket}/in/cat.png?")
            assert "X-Amz-Security-Token=" in url and httpx.get(url).content == b"a png"
        (row,) = ledger.rows(DAY)
        assert row.attempt == 2 and row.request["image_urls"] == [uri]

        # A URI that cannot be signed stops submission before anything is claimed or sent.
        bad = body | {"image_urls": [f"s3://{s3_bucket}"]}
        with pytest.raises(SubmissionStopped, match=f"s3://{s3_bucket}.*AWS settings"):
            submit_all(ledger, c, DAY, [Planned("p2", bad, 10.0)])
        assert len(sent) == 2 and [r.prompt_id for r in ledger.rows(DAY)] == ["p1"]


@pytest.fixture
def s3_that_hangs_up(monkeypatch) -> Iterator[str]:
    """An S3 endpoint that reads each request and closes the connection unanswered (a proxy
    or load balancer dropping it); botocore tries once."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            with connection:
                connection.recv(65536)

    threading.Thread(target=serve, daemon=True).start()
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    yield "seedance-dropped"
    server.close()


def test_a_dropped_s3_connection_is_an_s3_error_naming_the_object_and_the_settings(
    s3_that_hangs_up, tmp_path
):
    """botocore's ConnectionClosedError carries `response = None`: reading its error code
    raised AttributeError, which ended `run` with a 100-line traceback."""
    objects = S3Bucket(s3_client(), s3_that_hangs_up, PREFIX)
    local = tmp_path / "v.mp4"
    local.write_bytes(b"\x00mp4")
    calls = {
        "upload": lambda: objects.upload(local, "videos/p1.mp4"),
        "HEAD": lambda: objects.size("videos/p1.mp4"),
        "PUT": lambda: objects.put_bytes("warehouse/t.parquet", b"x"),
    }
    for what, call in calls.items():
        with pytest.raises(S3Error) as failed:
            call()
        assert f"s3://{s3_that_hangs_up}/{PREFIX}/" in str(failed.value), what
        assert f"{what} failed" in str(failed.value) and SETTINGS_HINT in str(failed.value)


@pytest.mark.parametrize("code", ["SlowDown", "InternalError", "503", "502", "GatewayTimeout"])
def test_s3_throttling_or_failing_is_not_blamed_on_the_settings(code):
    """Said after boto's retries with "check SEEDANCE_S3_BUCKET, the AWS_* credentials…":
    nothing there was wrong (helper-75)."""

    class Busy:
        def put_object(self, **kwargs):
            raise ClientError({"Error": {"Code": code, "Message": "reduce"}}, "PutObject")

    with pytest.raises(S3Error) as failed:
        S3Bucket(Busy(), "b", PREFIX).put_bytes("warehouse/t.parquet", b"x")
    assert "S3 is throttling or failing: try again later" in str(failed.value)
    assert SETTINGS_HINT not in str(failed.value) and not isinstance(failed.value, S3Refused)


def _completed_row(ledger: Ledger, client: Client):
    """A task made on the emulator, completed, as the ledger holds it."""
    body = {"model": "seedance-2.0-text-to-video", "prompt": "a cat", "duration": 4}
    task = client.create_task(body)
    assert ledger.claim(DAY, "p1", body, 1.0)
    ledger.record_submitted(DAY, "p1", task.id, time.time())
    while (done := client.get_task(task.id)).status != "completed":
        time.sleep(0.05)
    ledger.record_polls([PollUpdate(task.id, Status.COMPLETED, result_url=done.results[0])])
    (row,) = ledger.rows(DAY)
    return row


def test_a_video_s3_cannot_take_ends_download_failed_and_is_tried_again(
    s3_that_hangs_up, tmp_path, emulator, api_key
):
    """An upload that failed ended `run` (23 of 30 rows left `completed` without a video, no
    table written): it is a video not stored, like a full disk, tried again by the next run."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    store = S3VideoStore(S3Bucket(s3_client(), s3_that_hangs_up, PREFIX))
    with Client(api_key, base_url=emulator) as client:
        row = _completed_row(ledger, client)
        assert store_video(row, client, store, ledger, 10**9) == Status.DOWNLOAD_FAILED

    (row,) = ledger.rows(DAY)
    assert row.status == Status.DOWNLOAD_FAILED and row.video_uri is None
    assert f"s3://{s3_that_hangs_up}/{PREFIX}/videos/{DAY}/p1.mp4: upload failed" in (
        row.error_message
    )
    assert "a run from 5 minutes on tries again while the link lives" in row.error_message
    assert not store.scratch_path(DAY, "p1").exists()


def test_a_bucket_that_refuses_every_call_stops_the_work_and_leaves_the_row_to_store(
    s3_bucket, tmp_path, emulator, api_key
):
    """A missing bucket (or credentials refused): each row was downloaded, thrown away and
    left `download_failed`, retried until its link died; `run` exited 0."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    store = S3VideoStore(S3Bucket(s3_client(), f"{s3_bucket}-gone", PREFIX))
    with Client(api_key, base_url=emulator) as client:
        row = _completed_row(ledger, client)
        with pytest.raises(S3Refused, match=f"s3://{s3_bucket}-gone/.*NoSuchBucket"):
            store_video(row, client, store, ledger, 10**9)
    (row,) = ledger.rows(DAY)
    assert (row.status, row.video_uri, row.error_code) == (Status.COMPLETED, None, None)
    assert not store.scratch_path(DAY, "p1").exists()


def test_a_conditional_put_answered_404_is_a_failure_unless_the_object_was_read():
    """S3 answers If-None-Match: * with 412 or 409, never 404: a 404 there is the endpoint's or
    the bucket's. It was taken for another worker's write, and after five the record's writer
    blamed other workers, not the settings (helper-80). To If-Match, a 404 is the object
    deleted since it was read: written meanwhile."""

    class NotFound:
        def put_object(self, **kwargs):
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "PutObject")

    objects = S3Bucket(NotFound(), "b", PREFIX)
    with pytest.raises(S3Error) as failed:
        objects.put_bytes_if("warehouse/t.parquet", b"x", None)
    assert "PUT failed" in str(failed.value) and SETTINGS_HINT in str(failed.value)
    assert not objects.put_bytes_if("warehouse/t.parquet", b"x", '"read"')


def test_a_store_without_conditional_writes_has_the_etag_checked_just_before_its_put():
    """An S3-compatible store answering `NotImplemented` to If-Match: the record was put over
    whatever another worker had written since its ETag was read (helper-80)."""

    class NoConditionalWrites:
        def __init__(self):
            self.etag, self.puts = '"another-workers"', []

        def head_object(self, **kwargs):
            return {"ETag": self.etag, "ContentLength": 1}

        def put_object(self, Body, IfMatch=None, IfNoneMatch=None, **kwargs):
            if IfMatch or IfNoneMatch:
                error = {"Code": "NotImplemented", "Message": "If-Match"}
                raise ClientError({"Error": error}, "PutObject")
            self.puts.append(Body)

    store = NoConditionalWrites()
    objects = S3Bucket(store, "b", PREFIX)
    assert not objects.put_bytes_if("warehouse/t.parquet", b"older", '"read-before"')
    assert objects.put_bytes_if("warehouse/t.parquet", b"newer", '"another-workers"')
    assert store.puts == [b"newer"]
