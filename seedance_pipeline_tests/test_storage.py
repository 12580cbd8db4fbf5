"""The local stores (the embedded default) and how the pipeline resource picks its stores."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from seedance_pipeline.defs.resources import PipelineResource
from seedance_pipeline.ledger.database import sql
from seedance_pipeline.publishing import VendorUploadPublisher
from seedance_pipeline.records import record_versions
from seedance_pipeline.s3 import S3Bucket, S3Publisher, S3TableStore, S3VideoStore, s3_client
from seedance_pipeline.seedance import Client
from seedance_pipeline.storage import LocalVideoStore
from seedance_pipeline.tables import LocalTableStore, read_table

from .pipeline_support import (
    DAY,
    copy_sample_data,
    make_resources,
    run_day,
    save_videos,
    submit,
    wait_for_tasks,
)


def test_local_video_put_is_a_rename_to_a_key_relative_to_the_data_dir(tmp_path):
    store = LocalVideoStore(tmp_path / "data")
    scratch = store.scratch_path(DAY, "p1")
    assert scratch.parent == tmp_path / "data" / "videos" / DAY  # same disk: rename is atomic
    scratch.write_bytes(b"video")

    key = store.put(scratch, DAY, "p1")

    assert key == f"videos/{DAY}/p1.mp4"
    assert not scratch.exists() and store.stored_size(key) == len(b"video")
    assert store.uri(key) == str(tmp_path / "data" / "videos" / DAY / "p1.mp4")
    # Rows recorded before keys were relative hold absolute paths; they still resolve.
    assert store.stored_size(store.uri(key)) == len(b"video")
    assert store.uri(store.uri(key)) == store.uri(key)
    assert store.stored_size(f"videos/{DAY}/p2.mp4") is None


def test_a_stored_video_and_a_written_table_have_their_names_made_durable(tmp_path, monkeypatch):
    """The file's data was fsynced, its rename was not: after a power cut the ledger (synced
    at each commit) says stored while the folder may not hold the name. Each rename is now
    followed by an fsync of its folder."""
    synced = []
    fsync = os.fsync

    def recording(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    store = LocalVideoStore(tmp_path / "data")
    scratch = store.scratch_path(DAY, "p1")
    scratch.write_bytes(b"video")
    store.put(scratch, DAY, "p1")
    LocalTableStore(tmp_path / "data").write(pd.DataFrame({"a": [1]}), "generated_videos", DAY)
    assert synced == [
        str(tmp_path / "data" / "videos" / DAY),
        str(tmp_path / "data" / "warehouse" / "generated_videos"),
    ]

    # A file system that cannot sync a folder (SMB answers EINVAL) keeps the file all the same.
    def refusing(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", refusing)
    scratch = store.scratch_path(DAY, "p2")
    scratch.write_bytes(b"video")
    assert store.stored_size(store.put(scratch, DAY, "p2")) == len(b"video")


def test_local_tables_round_trip_and_a_missing_one_names_the_asset(tmp_path):
    tables = LocalTableStore(tmp_path)
    frame = pd.DataFrame({"prompt_id": ["a"], "credits": [1.5]})
    assert tables.write(frame, "generated_videos", DAY) == str(
        tmp_path / "warehouse" / "generated_videos" / f"{DAY}.parquet"
    )
    pd.testing.assert_frame_equal(tables.read("generated_videos", DAY), frame)
    assert tables.write_file("chart.png", b"png") == str(tmp_path / "warehouse" / "chart.png")
    assert sorted(p.name for p in (tmp_path / "warehouse").rglob("*")) == [
        f"{DAY}.parquet",
        "chart.png",
        "generated_videos",
    ]
    with pytest.raises(FileNotFoundError, match="materialise generation_costs for 2026-11-22"):
        tables.read("generation_costs", "2026-11-22")


def test_a_table_another_writer_keeps_replacing_is_read_whole(tmp_path):
    """Two runs of a day: one reads the day's record while the other writes it again. A
    half-old, half-new read made a healthy record look damaged, and the run refused to go on."""
    tables = LocalTableStore(tmp_path)

    def frame(rows: int) -> pd.DataFrame:
        return pd.DataFrame({"rows": [rows] * rows, "text": [f"prompt {i}" for i in range(rows)]})

    tables.write(frame(10), "submitted_tasks", DAY)
    stop = threading.Event()

    def keep_writing() -> None:
        rows = 10
        while not stop.is_set():
            rows = 10 + (rows * 7) % 300
            tables.write(frame(rows), "submitted_tasks", DAY)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        reads = [tables.read("submitted_tasks", DAY) for _ in range(400)]
    finally:
        stop.set()
        writer.join()
    assert all((read.rows == len(read)).all() for read in reads)
    assert len({len(read) for read in reads}) > 1  # it was written again while read


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_conditional_write_refuses_a_table_written_since_its_version_was_read(
    where, tmp_path, request
):
    """How two workers write one day's record: each reads its version, then the ledger, then
    writes if the version is unchanged. The later one must not put an older record over the
    other's."""
    if where == "s3":
        bucket = request.getfixturevalue("s3_bucket")  # first: it sets the AWS_* variables
        tables = S3TableStore(S3Bucket(s3_client(), bucket, "t"))
    else:
        tables = LocalTableStore(tmp_path)

    def table(*prompt_ids: str) -> pd.DataFrame:
        return pd.DataFrame({"prompt_id": list(prompt_ids)})

    assert tables.version("generated_videos", DAY) is None
    assert tables.write_if(table("p1"), "generated_videos", DAY, None)
    first = tables.version("generated_videos", DAY)
    assert not tables.write_if(table("p9"), "generated_videos", DAY, None)  # not new any more
    assert tables.write_if(table("p1", "p2"), "generated_videos", DAY, first)
    assert not tables.write_if(table("p1"), "generated_videos", DAY, first)  # an older read
    assert tables.version("generated_videos", DAY) not in (None, first)
    assert list(tables.read("generated_videos", DAY).prompt_id) == ["p1", "p2"]


def test_a_local_tables_version_is_not_given_again_where_times_are_kept_to_the_second(
    tmp_path, monkeypatch
):
    """The version was inode, time and size. The next file written in a folder gets the
    replaced one's inode number (280 of 300 times on ext4 here), a record kept its size, and
    where a file system keeps times to the second (ext3, ext4 with 128-byte inodes, many NFS
    exports) a version came back: a worker holding it wrote over a newer record (helper-80)."""
    fsync = os.fsync

    def to_the_second(fd: int) -> None:  # the time such a file system keeps
        fsync(fd)
        st = os.fstat(fd)
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns // 10**9 * 10**9))

    monkeypatch.setattr(os, "fsync", to_the_second)
    tables = LocalTableStore(tmp_path)

    def table(prompt_id: str) -> pd.DataFrame:  # of one size
        return pd.DataFrame({"prompt_id": [prompt_id]})

    for _ in range(20):
        tables.write(table("pA"), "submissions", DAY)
        read_by_a = tables.version("submissions", DAY)  # A then reads the ledger, slowly
        checked = record_versions(tables, since=0)[DAY]  # as the sensor's check saw it
        assert tables.write_if(table("pB"), "submissions", DAY, read_by_a)  # B writes
        assert tables.write_if(
            table("pC"), "submissions", DAY, tables.version("submissions", DAY)
        )  # C writes
        assert not tables.write_if(table("pA"), "submissions", DAY, read_by_a)
        assert list(tables.read("submissions", DAY).prompt_id) == ["pC"]
        assert record_versions(tables, since=0)[DAY] != checked  # so checked again


def test_the_resource_picks_local_stores_by_default_and_s3_with_a_bucket(tmp_path):
    local = PipelineResource(data_dir=str(tmp_path))
    s3 = PipelineResource(data_dir=str(tmp_path), s3_bucket="videos", s3_prefix="team")
    with Client("sk-test", base_url="https://api.invalid") as client:
        assert isinstance(local.videos(), LocalVideoStore)
        assert isinstance(local.tables(), LocalTableStore)
        assert isinstance(local.publisher(client), VendorUploadPublisher)
        assert isinstance(s3.videos(), S3VideoStore)
        assert isinstance(s3.tables(), S3TableStore)
        assert isinstance(s3.publisher(client), S3Publisher)
    assert s3.tables().location == "s3://videos/team/warehouse"


def _cut_short(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


@pytest.mark.parametrize("lose", [Path.unlink, _cut_short], ids=["deleted", "cut_short"])
def test_a_video_gone_from_the_store_is_stored_again_while_its_link_lives(
    tmp_path, emulator, api_key, lose
):
    """It stayed listed as stored, and the day's check passed, with its file gone (or cut
    short: a copy put back, interrupted)."""
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, emulator, api_key)
    run_day(resources)
    completed = read_table(data, "generated_videos", DAY).query("status == 'completed'")
    gone = completed.iloc[0]
    others = {Path(u): Path(u).stat().st_mtime_ns for u in completed.video_uri[1:]}
    lose(Path(gone.video_uri))

    assert save_videos(resources).success

    assert hashlib.sha256(Path(gone.video_uri).read_bytes()).hexdigest() == gone.video_sha256
    again = read_table(data, "generated_videos", DAY).set_index("prompt_id")
    assert again.loc[gone.prompt_id, "status"] == "completed"
    assert again.loc[gone.prompt_id, "video_sha256"] == gone.video_sha256
    assert {p: p.stat().st_mtime_ns for p in others} == others  # the rest not fetched again

    # Past its link's lifetime it cannot be fetched again: its record stays, for a restore.
    # Counted from the submission: completed_at is when the pipeline learned of it, which for a
    # row settled late (`resolve` after an outage) is now; the record was forgotten, and the
    # download of its dead link failed.
    with resources["pipeline"].ledger().db.transaction() as db:
        db.execute(
            sql("UPDATE tasks SET submitted_at = :t WHERE prompt_id = :id"),
            {"t": time.time() - 2 * 86400, "id": gone.prompt_id},
        )
    lose(Path(gone.video_uri))
    result = save_videos(resources)
    assert result.success
    left = Path(gone.video_uri)  # as it was left: nothing to fetch it again from
    assert left.stat().st_size == 1000 if lose is _cut_short else not left.exists()
    kept = read_table(data, "generated_videos", DAY).set_index("prompt_id").loc[gone.prompt_id]
    assert (kept.status, kept.video_sha256) == ("completed", gone.video_sha256)
    # ... and the day's check says so (it passed, with the video nowhere).
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    problems = check.metadata["problems"].value.records
    said = {r.data["prompt_id"]: r.data["problem"] for r in problems}
    restore = "its stored video is gone from the store or cut short: restore it"
    assert said == {gone.prompt_id: restore}


def test_a_completed_video_without_its_measurements_fails_the_days_check(
    tmp_path, emulator, api_key
):
    """A ledger from before measurements were recorded has NULLs there: compared with NA,
    a mismatch was never seen, and the check passed."""
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, emulator, api_key)
    run_day(resources)
    unmeasured = read_table(data, "generated_videos", DAY).query("status == 'completed'").iloc[0]
    with resources["pipeline"].ledger().db.transaction() as db:
        db.execute(
            sql("UPDATE tasks SET width = NULL, height = NULL WHERE prompt_id = :id"),
            {"id": unmeasured.prompt_id},
        )
    result = save_videos(resources)
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.metadata["mismatched"].value == 1


def test_moving_the_data_directory_keeps_stored_videos(tmp_path, emulator, api_key):
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, emulator, api_key)
    run_day(resources)
    moved = tmp_path / "moved"
    shutil.move(data, moved)
    written = {p.name: p.stat().st_mtime_ns for p in (moved / "videos" / DAY).iterdir()}

    assert save_videos(make_resources(moved, emulator, api_key)).success

    table = read_table(moved, "generated_videos", DAY)
    completed = table[table.status == "completed"]
    assert len(completed) == (table.status != "rejected").sum() > 0
    assert all(uri.startswith(str(moved / "videos" / DAY)) for uri in completed.video_uri)
    # Found where they now are, not downloaded again.
    assert {p.name: p.stat().st_mtime_ns for p in (moved / "videos" / DAY).iterdir()} == written


def test_a_video_store_that_cannot_be_written_fails_each_download_with_the_reason(
    tmp_path, emulator, api_key
):
    """`data/videos` a file (or a full or read-only disk): the OSError escaped the download
    thread and `run` ended in a raw traceback."""
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, emulator, api_key)
    assert submit(resources).success
    wait_for_tasks(resources)
    (data / "videos").write_text("not a folder")
    assert save_videos(resources).success
    table = read_table(data, "generated_videos", DAY)
    sent = table[table.status != "rejected"]
    assert (sent.status == "download_failed").all() and len(sent) == 6
    assert sent.error_message.str.contains("cannot write the video .*Not a directory").all()
