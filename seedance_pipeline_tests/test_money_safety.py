"""Money and data safety when the world misbehaves: lost ledgers, moved or edited prompts,
odd vendor answers. Expectations are the vendor's rules and our statuses, stated here."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from dagster import DagsterInstance, RetryPolicy, build_sensor_context, materialize
from PIL import Image

from seedance_pipeline import seedance, submission
from seedance_pipeline.cli import main
from seedance_pipeline.definitions import DOMAINS
from seedance_pipeline.defs.generation import assets as generation_assets
from seedance_pipeline.defs.generation.assets import generation_requests, submitted_tasks
from seedance_pipeline.defs.generation.sensors import MAX_VIDEO_RUNS, task_poller
from seedance_pipeline.emulator.config import PRICES as EMULATOR_PRICES
from seedance_pipeline.ledger import Ledger, LedgerRow, PollUpdate
from seedance_pipeline.ledger.database import sql
from seedance_pipeline.media import measure_video_output
from seedance_pipeline.polling import PollPolicy, interpret, interpret_error, next_poll_delay
from seedance_pipeline.records import LedgerLost, check_ledger, write_record
from seedance_pipeline.reports import print_run_summary
from seedance_pipeline.seedance import (
    CallHalted,
    Client,
    NotFoundError,
    PriceTable,
    ServerError,
    Task,
)
from seedance_pipeline.seedance._client import api_error
from seedance_pipeline.statuses import Status
from seedance_pipeline.storage import LocalVideoStore, StoreError
from seedance_pipeline.submission import SUBMIT_WORKERS, Planned, submit_all
from seedance_pipeline.tables import LocalTableStore, read_table
from seedance_pipeline.videos import build_videos_table, store_video

from .fault_support import record_beaten, record_unwritable, write_catalog
from .pipeline_support import (
    DAY,
    _materialize,
    copy_sample_data,
    emulator_tasks,
    make_resources,
    plan_requests,
    run_day,
    save_videos,
    submit,
    wait_for_tasks,
)

NOW = 1_800_000_000.0
POLICY = PollPolicy(not_found_answers=3, not_found_seconds=60, missing_result_answers=3)


def _row(**changes) -> LedgerRow:
    values = {f: None for f in LedgerRow.__dataclass_fields__}
    values.update(
        partition=DAY,
        prompt_id="p1",
        request={"model": "seedance-2.0-text-to-video", "duration": 4, "quality": "480p"},
        status=Status.PENDING,
        task_id="task-unified-1-abcdefgh",
        submitted_at=NOW - 30,
        polls=0,
        poll_errors=0,
        download_attempts=0,
        attempt=1,
    )
    return LedgerRow(**{**values, **changes})


def _task(status: str, **extra) -> Task:
    return Task.from_json(
        {"id": "task-unified-1-abcdefgh", "status": status, "progress": 50, **extra}
    )


def test_an_undocumented_status_keeps_the_task_waiting_then_becomes_unknown():
    update = interpret(_row(), _task("queued"), NOW, POLICY)
    assert update.status == Status.PROCESSING and update.next_poll_at > NOW
    a_day_later = interpret(_row(submitted_at=NOW - 25 * 3600), _task("queued"), NOW, POLICY)
    assert a_day_later.status == Status.UNKNOWN and "'queued'" in a_day_later.error_message


def test_completed_without_a_result_link_is_asked_again_then_recorded_with_a_reason():
    first = interpret(_row(), _task("completed"), NOW, POLICY)
    assert first.status is None and first.poll_errors == 1 and first.next_poll_at > NOW
    last = interpret(_row(poll_errors=2), _task("completed"), NOW, POLICY)
    assert last.status == Status.DOWNLOAD_FAILED and "without a result link" in last.error_message


def test_a_row_never_given_a_link_keeps_saying_so_when_tried_again(tmp_path):
    """Retried while the vendor still gave no link, the row's code became download_failed:
    the table could no longer tell a missing link from a failed download (helper-50)."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    task_id = "task-unified-1-abcdefgh"
    ledger.claim(DAY, "p1", {"model": "seedance-2.0-text-to-video"}, 1.0)
    ledger.record_submitted(DAY, "p1", task_id, time.time())
    ledger.record_polls(
        [PollUpdate(task_id, status=Status.DOWNLOAD_FAILED, error_code="no_result_link")]
    )
    [row] = ledger.rows(DAY)
    still = {"id": task_id, "status": "completed", "progress": 100}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=still))
    with Client(
        "sk-evo-placeholder", base_url="https://api.test.invalid", transport=transport
    ) as c:
        assert store_video(row, c, LocalVideoStore(tmp_path), ledger, 1 << 20) == (
            Status.DOWNLOAD_FAILED
        )
    [row] = ledger.rows(DAY)
    assert row.error_code == "no_result_link" and row.result_url is None
    assert (
        "still answers task" in row.error_message and "without a result link" in row.error_message
    )


def test_a_404_is_believed_only_when_it_repeats_over_time():
    gone = NotFoundError(404, "resource_not_found", "Task not found or expired")
    first = interpret_error(_row(), gone, NOW, POLICY)
    assert first.status is None and first.not_found_since == NOW
    quickly = interpret_error(_row(poll_errors=5, not_found_since=NOW - 5), gone, NOW, POLICY)
    assert quickly.status is None  # many answers, but within seconds: a hiccup
    later = interpret_error(_row(poll_errors=2, not_found_since=NOW - 90), gone, NOW, POLICY)
    assert later.status == Status.FAILED and later.error_code == "task_not_found"


def test_a_gateways_404_page_is_never_believed():
    """Two minutes of a gateway's 404 pages (nginx, a CDN) ended a task the vendor was still
    making as `failed`, charged 0, never polled again: its video lost (helper-70). Then half an
    hour of them made the API's first 404 seem repeated for that long (helper-74)."""
    html = b"<html><center><h1>404 Not Found</h1></center><hr>nginx</html>"
    page = api_error(httpx.Response(404, content=html), html)
    gone = NotFoundError(404, "resource_not_found", "Task not found or expired")
    assert isinstance(page, NotFoundError) and page.code is None
    policy, row = PollPolicy(), _row()

    def answered(error: NotFoundError, at: float) -> PollUpdate:
        nonlocal row
        update = interpret_error(row, error, at, policy)
        row = dataclasses.replace(
            row, poll_errors=update.poll_errors or 0, not_found_since=update.not_found_since
        )
        return update

    for minute in range(31):  # half an hour of pages
        assert answered(page, NOW + 60 * minute).status is None
    assert answered(gone, NOW + 1860).status is None  # the API's first: its own time starts
    assert answered(gone, NOW + 1920).status is None
    assert answered(gone, NOW + 1860 + policy.not_found_seconds).status == Status.FAILED
    # A day after the task was sent, a hiccup (a few failed polls) settles nothing (helper-76)
    day_old = _row(submitted_at=NOW - policy.odd_status_seconds - 1, poll_errors=2)
    assert interpret_error(day_old, page, NOW, policy).status is None
    # but half an hour of them: settled as an undocumented status is, never as unpaid.
    day_old = _row(submitted_at=NOW - policy.odd_status_seconds - 1, poll_errors=29)
    update = interpret_error(day_old, page, NOW, policy)
    assert (update.status, update.error_code) == (Status.UNKNOWN, "task_not_found")
    assert "check the dashboard" in update.error_message and "nginx" in update.error_message


def test_a_task_polled_for_days_is_still_polled():
    """The backoff's power overflowed a float past about a thousand polls or errors (a task
    answering 502 for 17 hours): the poll round failed, every round (found by the test above)."""
    policy = PollPolicy()
    failing = interpret_error(_row(poll_errors=2000), ServerError(502, None, "x"), NOW, policy)
    assert failing.next_poll_at == NOW + policy.max_delay
    assert next_poll_delay(_row(polls=2000), policy) == policy.max_delay


def test_poll_errors_back_each_task_off_on_its_own():
    error = ServerError(502, None, "Bad Gateway")
    delays = [
        interpret_error(_row(poll_errors=n), error, NOW, POLICY).next_poll_at - NOW
        for n in range(8)
    ]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]


@pytest.fixture
def day(tmp_path, emulator, api_key):
    data = copy_sample_data(tmp_path / "data")
    return data, emulator, make_resources(data, emulator, api_key)


def ledger_rows(resources) -> list[LedgerRow]:
    return resources["pipeline"].ledger().rows(DAY)


def test_a_lost_ledger_stops_the_day_until_it_is_rebuilt_and_nothing_is_paid_twice(
    day, monkeypatch, capsys
):
    data, url, resources = day
    assert submit(resources).success
    paid = len(emulator_tasks(url))
    frames = {
        r.prompt_id: (r.expected_width, r.expected_height, r.campaign)
        for r in ledger_rows(resources)
    }
    assert all(width and height for width, height, _ in frames.values())
    assert any(campaign for *_, campaign in frames.values())
    (data / "state" / "ledger.sqlite3").unlink()  # the slip: the ledger is gone
    for leftover in (data / "state").glob("ledger.sqlite3-*"):
        leftover.unlink()
    again = submit(resources)
    assert not again.success and len(emulator_tasks(url)) == paid
    failure = next(e for e in again.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert "not in the ledger" in message and f"rebuild-ledger {DAY}" in message
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    assert main(["rebuild-ledger", DAY]) == 0
    assert f"{DAY}: {paid} row(s) restored" in capsys.readouterr().out
    restored = ledger_rows(resources)
    assert {
        r.prompt_id: (r.expected_width, r.expected_height, r.campaign) for r in restored
    } == frames
    assert submit(resources).success and len(emulator_tasks(url)) == paid
    wait_for_tasks(resources)
    assert save_videos(resources).success
    table = read_table(data, "generated_videos", DAY)
    assert (table[table.status != "rejected"].status == "completed").all()


def test_a_day_whose_submission_was_stopped_is_left_to_its_user(day):
    """Prompts added to a day already sent, then a submission that stopped (here: the key
    refused; Ctrl-C on `run` alike): the day stayed marked complete, so the sensor ran its
    videos 5 times, each failing on the prompts never sent, then logged an error every tick.
    Nor may the sensor send the rest on its own: the user stopped it."""
    data, url, resources = day
    run_day(resources)
    ledger = resources["pipeline"].ledger()
    assert DAY in ledger.partitions_settled()
    _move(data, "d2-t2v-skyline-1080p", DAY)  # a new prompt for the day
    assert plan_requests(resources).success
    refused = make_resources(data, url, "sk-evo-not-a-key")

    assert not submit(refused).success

    assert DAY not in ledger.partitions_settled() + ledger.partitions_incomplete()
    with DagsterInstance.ephemeral() as instance:
        tick = task_poller(build_sensor_context(instance=instance, resources=resources))
    assert [r.partition_key for r in tick.run_requests] == []
    assert submit(resources).success  # the user sends the day again: the new prompt goes
    assert DAY not in ledger.partitions_incomplete()


def _sensor_tick(instance, resources, cursor: list[str | None] | None = None) -> list:
    """The sensor's tick, each run it asks for carried out as Dagster would; their results.
    `cursor`: [the last tick's cursor], which this tick's replaces."""
    assets = {a.key: a for a in DOMAINS.assets}
    context = build_sensor_context(
        instance=instance, resources=resources, cursor=cursor[0] if cursor else None
    )
    tick = task_poller(context)
    if cursor:
        cursor[0] = tick.cursor
    return [
        materialize(
            [assets[key] for key in request.asset_selection],
            partition_key=request.partition_key,
            resources=resources,
            instance=instance,
            tags=request.tags,
            raise_on_error=False,
        )
        for request in tick.run_requests
    ]


def _cut_short(tmp_path, emulator, api_key, prompts: int) -> tuple[Path, dict]:
    """A day of `prompts` planned, whose submission was cut short before any was sent."""
    data = tmp_path / "data"
    write_catalog(data, prompts)
    resources = make_resources(data, emulator, api_key)
    assert plan_requests(resources).success
    resources["pipeline"].ledger().set_submission_complete(DAY, False)
    return data, resources


def test_a_day_the_sensor_sends_on_is_planned_again_so_deleted_prompts_are_not_paid(
    tmp_path, emulator, api_key
):
    """The sensor's run sending the rest of a day sent what the day's last plan held: prompts
    deleted from the catalog since were paid for all the same."""
    data, resources = _cut_short(tmp_path, emulator, api_key, 6)
    kept = write_catalog(data, 3)  # the user deletes three rows meanwhile
    with DagsterInstance.ephemeral() as instance:
        [result] = _sensor_tick(instance, resources)
    assert result.success
    assert sorted(r.prompt_id for r in ledger_rows(resources)) == kept
    assert len(emulator_tasks(emulator)) == 3


def test_submitted_tasks_alone_refuses_prompts_whose_catalog_rows_changed_since_planned(
    tmp_path, emulator, api_key
):
    """Materialised alone (as the stop message said), submitted_tasks sent what the day's last
    plan held: a prompt deleted from the catalog since was paid for, an edited one sent as it
    was (helper-73). Checked against the catalog itself, not a Dagster record another instance
    may lack (helper-74)."""
    data = tmp_path / "data"
    write_catalog(data, 4)
    resources = make_resources(data, emulator, api_key)
    with DagsterInstance.ephemeral() as planning, DagsterInstance.ephemeral() as sending:
        assert _materialize([generation_requests], resources, DAY, planning).success
        kept = write_catalog(data, 2)  # the user deletes two rows meanwhile
        refused = _materialize([submitted_tasks], resources, DAY, sending)
        assert not refused.success and emulator_tasks(emulator) == []
        said = _step_failure(refused)
        assert "2 prompt(s) of generation_requests were planned from catalog rows" in said
        assert "(p002, p003)" in said and "nothing was sent" in said
        assert f"materialise generation_requests and submitted_tasks together for {DAY}" in said
        assert submit(resources, DAY, sending).success  # planned again: as the catalog is now
    assert sorted(r.prompt_id for r in ledger_rows(resources)) == kept


def test_submitted_tasks_alone_refuses_a_prompt_whose_media_row_changed_since_planned(
    tmp_path, emulator, api_key
):
    """The prompt's row unchanged, the media row it names re-pointed to another image: the
    request planned with the old image was sent (helper-76)."""
    catalog = tmp_path / "data" / "catalog"
    catalog.mkdir(parents=True)
    (catalog / "prompts.csv").write_text(
        "prompt_id,scheduled_date,model,prompt,image_ids,duration,quality\n"
        f"p1,{DAY},seedance-2.0-image-to-video,A fox runs,m1,4,480p\n"
    )
    media = "media_id,kind,uri,width,height\nm1,image,https://example.com/{}.jpg,1280,720\n"
    (catalog / "media.csv").write_text(media.format("old"))
    resources = make_resources(tmp_path / "data", emulator, api_key)
    assert plan_requests(resources).success
    (catalog / "media.csv").write_text(media.format("new"))
    refused = _materialize([submitted_tasks], resources, DAY)
    assert not refused.success and emulator_tasks(emulator) == []
    assert "(p1), or from media rows (or local files) since changed" in _step_failure(refused)
    assert submit(resources).success  # planned again: the new image
    (row,) = ledger_rows(resources)
    assert row.request["image_urls"] == ["https://example.com/new.jpg"]


@pytest.mark.parametrize("when", ["after planning", "while planning"])
def test_submitted_tasks_alone_refuses_a_prompt_whose_local_image_was_replaced_in_place(
    tmp_path, emulator, api_key, monkeypatch, when
):
    """Its media row unchanged, the file it names replaced: the image uploaded when the day
    was planned, the old one, was sent (helper-77); so it was when replaced once uploaded,
    the day still planning (helper-78)."""
    catalog = tmp_path / "data" / "catalog"
    catalog.mkdir(parents=True)
    (catalog / "prompts.csv").write_text(
        "prompt_id,scheduled_date,model,prompt,image_ids,duration,quality\n"
        f"p1,{DAY},seedance-2.0-image-to-video,A fox runs,m1,4,480p\n"
    )
    (catalog / "media.csv").write_text("media_id,kind,uri\nm1,image,fox.png\n")
    Image.new("RGB", (1280, 720), "red").save(catalog / "fox.png")
    resources = make_resources(tmp_path / "data", emulator, api_key)
    publish = generation_assets.publish

    def replaced(path=catalog / "fox.png"):  # another size, whatever the clock's resolution
        Image.new("RGB", (1280, 720), "blue").save(path, compress_level=0)

    if when == "while planning":
        monkeypatch.setattr(
            generation_assets, "publish", lambda *args: (publish(*args), replaced())
        )
    assert plan_requests(resources).success
    if when == "after planning":
        replaced()
    monkeypatch.setattr(generation_assets, "publish", publish)
    refused = _materialize([submitted_tasks], resources, DAY)
    assert not refused.success and emulator_tasks(emulator) == []
    assert "(p1), or from media rows (or local files) since changed" in _step_failure(refused)


def test_submitted_tasks_alone_sends_a_day_whose_rows_are_as_planned(tmp_path, emulator, api_key):
    """Another day's rows edited meanwhile change nothing of this day's requests (a digest of
    the whole catalog refused it)."""
    data = tmp_path / "data"
    sent = write_catalog(data, 3)
    resources = make_resources(data, emulator, api_key)
    with DagsterInstance.ephemeral() as instance:
        assert _materialize([generation_requests], resources, DAY, instance).success
        catalog = data / "catalog" / "prompts.csv"
        lines = catalog.read_text().splitlines()
        catalog.write_text("\n".join([*lines, lines[-1].replace("p002", "p900", 1)]) + "\n")
        catalog.write_text(catalog.read_text().replace(f"p900,{DAY}", "p900,2026-11-27"))
        assert _materialize([submitted_tasks], resources, DAY, instance).success
    assert sorted(r.prompt_id for r in ledger_rows(resources)) == sent


def test_a_day_whose_catalog_was_broken_a_while_is_sent_on_once_it_is_fixed(
    tmp_path, emulator, api_key
):
    """The sensor's runs sending the rest of a day failed on a catalog being edited, five times
    in as many ticks, and then it never asked again, fixed or not: the day stayed unsent
    (helper-46)."""
    data, resources = _cut_short(tmp_path, emulator, api_key, 4)
    catalog = data / "catalog" / "prompts.csv"
    fixed = catalog.read_text()
    catalog.write_text(fixed + "p999,soon,seedance-2.0-text-to-video,half written\n")
    with DagsterInstance.ephemeral() as instance:
        failed = [r for _ in range(MAX_VIDEO_RUNS + 1) for r in _sensor_tick(instance, resources)]
        assert len(failed) == MAX_VIDEO_RUNS and not any(r.success for r in failed)
        catalog.write_text(fixed)
        [result] = _sensor_tick(instance, resources)
    assert result.success and len(emulator_tasks(emulator)) == 4


def test_a_new_day_interrupted_while_submitting_is_not_sent_on_by_the_sensor(day, monkeypatch):
    """Ctrl-C on `run` ends its run `failed`, not `canceled`: a day marked incomplete then was
    sent on by the sensor's next tick, after its user had stopped it."""
    data, url, resources = day
    assert plan_requests(resources).success

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generation_assets, "submit_all", interrupted)
    assert not submit(resources).success
    ledger = resources["pipeline"].ledger()
    assert DAY not in ledger.partitions_settled() + ledger.partitions_incomplete()
    with DagsterInstance.ephemeral() as instance:
        tick = task_poller(build_sensor_context(instance=instance, resources=resources))
    assert tick.run_requests == [] and emulator_tasks(url) == []


def test_a_submission_interrupted_after_sending_says_its_paid_videos_wait_for_its_user(
    day, monkeypatch
):
    """Terminated in Dagster after sending some: the sensor leaves the day to its user, so the
    videos of the tasks sent are stored only when the user materialises the day again; nothing
    said so, and their links die a day after (helper-48)."""
    data, url, resources = day
    sending = generation_assets.submit_all

    def interrupted(ledger, client, partition, items, *args):
        sending(ledger, client, partition, items[:2], *args)
        raise KeyboardInterrupt

    monkeypatch.setattr(generation_assets, "submit_all", interrupted)
    result = submit(resources)
    assert not result.success and len(emulator_tasks(url)) == 2
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert "its 2 task(s) sent and not failed are paid for" in message
    assert "materialise its generated_videos within 24 h" in message


def test_a_submission_interrupted_once_all_was_sent_does_not_ask_to_send_the_rest(day, monkeypatch):
    """Interrupted while the last creates waited for their answers: it said to run the day
    again to send the rest, when nothing was left (helper-53)."""
    data, url, resources = day
    sending = generation_assets.submit_all

    def interrupted(*args):
        sending(*args)
        raise KeyboardInterrupt

    monkeypatch.setattr(generation_assets, "submit_all", interrupted)
    result = submit(resources)
    message = _step_failure(result)
    assert "every prompt of the day was sent" in message and "send the rest" not in message


def _ctrl_c(during):
    """`during`, with the user's Ctrl-C (a real SIGINT) coming while it runs the first time."""
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the signal's handler raises here
        return during(*args, **kwargs)

    return interrupted


def _failing_once(during):
    """`during`, failing the first time as a disk or a ledger down a moment would."""
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk I/O error")
        return during(*args, **kwargs)

    return failing


@pytest.mark.parametrize("then", [None, _ctrl_c, _failing_once])
def test_ctrl_c_outside_the_steps_handler_is_not_retried_into_sending_the_day(
    day, monkeypatch, then
):
    """Dagster makes a retry of an interrupt leaving a step that has a retry policy: Ctrl-C
    while submitted_tasks checked the ledger (before its handler), or a second one while its
    handler wrote the day's record, and the retry 10 s later sent every prompt the user had
    stopped (helper-56); so did writing the record failing after the Ctrl-C, once the step
    retried by itself (helper-58). Nor did a day cut short before, stopped while checking the
    ledger, stay its user's: the sensor sent it on."""
    data, url, resources = day
    assert plan_requests(resources).success
    resources["pipeline"].ledger().set_submission_complete(DAY, False)  # cut short before
    if then:  # the first Ctrl-C once 2 are sent, then `then` as the record is written
        sending = generation_assets.submit_all

        def interrupted(ledger, client, partition, items, *args):
            sending(ledger, client, partition, items[:2], *args)
            raise KeyboardInterrupt

        monkeypatch.setattr(generation_assets, "submit_all", interrupted)
        monkeypatch.setattr(generation_assets, "write_record", then(generation_assets.write_record))
    else:
        monkeypatch.setattr(
            generation_assets, "check_ledger", _ctrl_c(generation_assets.check_ledger)
        )
    with DagsterInstance.ephemeral() as instance:
        result = submit(resources, instance=instance)
        tick = task_poller(build_sensor_context(instance=instance, resources=resources))
    assert not result.success and tick.run_requests == []
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert len(emulator_tasks(url)) == (2 if then else 0)


def test_a_submission_failing_on_its_way_is_retried_and_sends_each_prompt_once(day, monkeypatch):
    """Without a retry policy (see the test above), submitted_tasks still retries what failed
    with prompts unsent: here the ledger gone a moment after two were sent."""
    data, url, resources = day
    assert plan_requests(resources).success
    sending, calls = generation_assets.submit_all, []

    def failing_once(ledger, client, partition, items, *args):
        calls.append(1)
        if len(calls) == 1:
            sending(ledger, client, partition, items[:2], *args)
            raise OSError("database is restarting")
        return sending(ledger, client, partition, items, *args)

    monkeypatch.setattr(generation_assets, "submit_all", failing_once)
    monkeypatch.setattr(generation_assets, "SUBMIT_RETRIES", RetryPolicy(max_retries=1, delay=0.1))
    result = submit(resources)
    assert result.success and len(calls) == 2
    accepted = read_table(data, "generation_requests", DAY).status == "accepted"
    made = emulator_tasks(url)
    assert len(made) == accepted.sum() == len({t["id"] for t in made})
    assert sorted(r.task_id for r in ledger_rows(resources)) == sorted(t["id"] for t in made)


def _day_with_a_resubmission_due(tmp_path, emulator, api_key) -> dict:
    """The sample day run, resubmission on, one of its tasks then failed transiently: due for
    another attempt. Its resources."""
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, emulator, api_key, max_resubmissions=1)
    run_day(resources)
    with resources["pipeline"].ledger().db.transaction() as db:
        db.execute(
            sql(
                "UPDATE tasks SET status = 'failed', error_code = 'service_error',"
                " video_uri = NULL WHERE prompt_id = 'd1-t2v-city-launch'"
            )
        )
    return resources


def test_ctrl_c_on_a_resubmission_is_not_undone_by_the_sensor(tmp_path, emulator, api_key):
    """Every prompt had a row, so the day stayed noted complete; Ctrl-C ends a run `failed`,
    not `canceled`, so the sensor's next tick resubmitted the failed task the user had just
    stopped, while the message said every prompt was sent (helper-54)."""
    resources = _day_with_a_resubmission_due(tmp_path, emulator, api_key)
    paid = len(emulator_tasks(emulator))

    def interrupted(*args):
        raise KeyboardInterrupt

    with DagsterInstance.ephemeral() as instance, pytest.MonkeyPatch.context() as patch:
        patch.setattr(generation_assets, "submit_all", interrupted)
        message = _step_failure(submit(resources, instance=instance))
        assert "is resubmitted only by the day's next run" in message
        tick = task_poller(build_sensor_context(instance=instance, resources=resources))
    assert tick.run_requests == [] and len(emulator_tasks(emulator)) == paid


def test_a_second_ctrl_c_while_the_step_handles_the_first_still_holds_the_day(
    tmp_path, emulator, api_key, monkeypatch
):
    """As above, with a second Ctrl-C while the step's handler read the day, before it held
    it: the second interrupt left the step, the day stayed noted complete, and the sensor
    resubmitted (paid again for) the task its user stopped (helper-62)."""
    resources = _day_with_a_resubmission_due(tmp_path, emulator, api_key)
    paid = len(emulator_tasks(emulator))
    reading, reads = generation_assets._requests, []

    def second_ctrl_c_in_the_handler(*args):
        reads.append(1)
        if len(reads) == 2:  # the handler's read of the day's requests
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the signal's handler raises here
        return reading(*args)

    def interrupted(*args):
        raise KeyboardInterrupt

    with DagsterInstance.ephemeral() as instance, pytest.MonkeyPatch.context() as patch:
        patch.setattr(generation_assets, "submit_all", interrupted)
        patch.setattr(generation_assets, "_requests", second_ctrl_c_in_the_handler)
        message = _step_failure(submit(resources, instance=instance))
        assert "is resubmitted only by the day's next run" in message and len(reads) == 3
        patch.undo()  # what follows is the sensor's
        assert _sensor_tick(instance, resources) == []
    assert len(emulator_tasks(emulator)) == paid


def _two_sent_then_ctrl_c_before_the_retry(calls: list) -> object:
    """submit_all sending two prompts and giving up the rest as after 429s past their retries,
    with a Ctrl-C a second later, as Dagster waits to retry the step; then as it is."""
    sending = generation_assets.submit_all

    def two_sent(ledger, client, partition, items, *args):
        calls.append(1)
        if len(calls) > 1:
            return sending(ledger, client, partition, items, *args)
        summary = sending(ledger, client, partition, items[:2], *args)
        summary.not_sent = [p.prompt_id for p in items[2:]]  # released, no task made
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        return summary

    return two_sent


def test_ctrl_c_while_the_step_waits_for_its_retry_is_not_sent_on_by_the_sensor(day, monkeypatch):
    """The step noted the day incomplete and asked for a retry; Dagster raises a Ctrl-C that
    comes while it waits to retry before the step's handler, which never ran: the sensor sent
    the rest of the day its user had stopped (helper-62)."""
    data, url, resources = day
    assert plan_requests(resources).success
    calls: list = []
    monkeypatch.setattr(
        generation_assets, "submit_all", _two_sent_then_ctrl_c_before_the_retry(calls)
    )
    monkeypatch.setattr(generation_assets, "SUBMIT_RETRIES", RetryPolicy(max_retries=1, delay=3))
    with DagsterInstance.ephemeral() as instance:
        assert not submit(resources, instance=instance).success
        assert len(calls) == 1  # the retry never ran
        assert _sensor_tick(instance, resources) == []
    assert len(emulator_tasks(url)) == 2


def _run_env(monkeypatch, tmp_path: Path, data: Path, url: str, api_key: str) -> None:
    """The settings `seedance-pipeline run` reads, for `main(["run", ...])`."""
    for name, value in (
        ("SEEDANCE_DATA_DIR", str(data)),
        ("DAGSTER_HOME", str(tmp_path / "dagster_home")),
        ("EVOLINK_BASE_URL", url),
        ("EVOLINK_FILES_URL", url),
        ("EVOLINK_API_KEY", api_key),
    ):
        monkeypatch.setenv(name, value)


def test_ctrl_c_on_run_while_its_step_waits_for_its_retry_is_not_sent_on_by_the_sensor(
    day, tmp_path, api_key, monkeypatch
):
    """The same through `run`: it ended (exit 1), and `dagster dev`'s sensor sent the rest."""
    data, url, resources = day
    _run_env(monkeypatch, tmp_path, data, url, api_key)
    calls: list = []
    monkeypatch.setattr(
        generation_assets, "submit_all", _two_sent_then_ctrl_c_before_the_retry(calls)
    )
    monkeypatch.setattr(generation_assets, "SUBMIT_RETRIES", RetryPolicy(max_retries=1, delay=3))
    assert main(["run", DAY]) == 1
    assert len(calls) == 1 and len(emulator_tasks(url)) == 2
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert _sensor_tick(instance, resources) == []
    assert len(emulator_tasks(url)) == 2


def test_ctrl_c_on_run_while_it_plans_a_day_cut_short_before_is_not_sent_on_by_the_sensor(
    tmp_path, emulator, api_key, monkeypatch
):
    """Ctrl-C while `run` planned (media uploads and measuring take a while) a day cut short
    before: the run ended (exit 1), the day stayed noted incomplete, and the sensor sent it
    all (helper-62)."""
    data, resources = _cut_short(tmp_path, emulator, api_key, 4)
    _run_env(monkeypatch, tmp_path, data, emulator, api_key)
    planning = _ctrl_c(generation_assets.plan_partition)
    monkeypatch.setattr(generation_assets, "plan_partition", planning)
    assert main(["run", DAY]) == 1
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert _sensor_tick(instance, resources) == []
    assert emulator_tasks(emulator) == []


def test_run_failing_to_plan_a_day_cut_short_leaves_it_to_the_sensor(
    tmp_path, emulator, api_key, monkeypatch
):
    """Unlike a Ctrl-C (above), a planning that fails (a catalog half written) does not take the
    day from the sensor: it held the day for good, and once the catalog was fixed the sensor
    never sent it (helper-64), as it does a day whose catalog was broken a while."""
    data, resources = _cut_short(tmp_path, emulator, api_key, 4)
    catalog = data / "catalog" / "prompts.csv"
    fixed = catalog.read_text()
    catalog.write_text(fixed + "p999,soon,seedance-2.0-text-to-video,half written\n")
    _run_env(monkeypatch, tmp_path, data, emulator, api_key)
    assert main(["run", DAY]) == 1
    catalog.write_text(fixed)
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        [sent] = _sensor_tick(instance, resources)
    assert sent.success and len(emulator_tasks(emulator)) == 4


def test_a_resubmission_failing_every_retry_is_left_to_the_sensor(
    tmp_path, emulator, api_key, monkeypatch
):
    """A retry holds the day (above); its last one failing before noting the day (the client
    failing before any create) held it for good: the task due again was never resubmitted,
    and the day's tables never written (helper-64)."""
    resources = _day_with_a_resubmission_due(tmp_path, emulator, api_key)
    paid = len(emulator_tasks(emulator))

    def failing(*args):
        raise OSError("could not start the client")

    with DagsterInstance.ephemeral() as instance, pytest.MonkeyPatch.context() as patch:
        patch.setattr(generation_assets, "submit_all", failing)
        patch.setattr(generation_assets, "SUBMIT_RETRIES", RetryPolicy(max_retries=1, delay=0))
        assert not submit(resources, instance=instance).success
        patch.undo()  # fixed: what follows is the sensor's
        [resent] = _sensor_tick(instance, resources)
    assert resent.success and len(emulator_tasks(emulator)) == paid + 1


def test_a_claim_released_after_another_run_recorded_it_open_does_not_stop_the_day(day):
    """Two runs of the day at once: the other's step ended while this one's claim of p was
    open, recording it `unknown`; then this run's create was refused past its retries (no
    task), and its claim released. Its own record then refused to go backwards: the step
    failed as if the ledger were lost, the day stopped until a rebuild (helper-67)."""
    data, url, resources = day
    assert plan_requests(resources).success
    pipeline = resources["pipeline"]
    body = {"model": "seedance-2.0-fast-text-to-video", "prompt": "a cat", "duration": 4}

    def claimed_recorded_then_released(ledger, client, partition, items, *args):
        assert ledger.claim(partition, "p", body, 1.0)
        write_record(pipeline.ledger(), pipeline.tables(), partition)  # the other run's
        ledger.release(partition, "p")  # refused with 429 past its retries
        return submission.SubmitSummary(not_sent=["p"])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generation_assets, "submit_all", claimed_recorded_then_released)
        patch.setattr(generation_assets, "SUBMIT_RETRIES", RetryPolicy(max_retries=0))
        message = _step_failure(submit(resources))
    assert "could not be sent after retries (p)" in message and "was lost" not in message
    assert "p" not in set(read_table(data, "submissions", DAY).prompt_id)


def test_a_claim_that_cannot_be_released_after_an_interrupt_is_logged_with_the_fix(
    tmp_path, caplog, monkeypatch
):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    assert ledger.claim(DAY, "p1", {"model": "m"}, 1.0)

    def halted() -> None:
        raise CallHalted("the submission was stopped")

    def down(*args) -> None:
        raise OSError("disk I/O error")

    monkeypatch.setattr(ledger, "release", down)
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    with Client("k", base_url="https://api.test.invalid", transport=transport) as client:
        made = submission._submit_claimed(
            ledger,
            client,
            DAY,
            "p1",
            {"model": "m"},
            submission.SubmitSummary(),
            False,
            halted,
            threading.Event(),
        )
    assert not made and ledger.rows(DAY)[0].status == Status.SUBMITTING
    assert "no task was made for it, but the ledger could not release its claim" in caplog.text
    assert f"resolve {DAY} p1 --forget" in caplog.text


def test_moving_the_ledger_and_the_tables_at_once_is_refused_not_paid_again(
    day, s3_bucket, monkeypatch
):
    """The README's production settings (a new ledger, S3), set together on a day already
    sent: both new homes were empty, so nothing looked lost, and every task was paid again."""
    data, url, resources = day
    assert submit(resources).success
    paid = len(emulator_tasks(url))
    monkeypatch.setenv("SEEDANCE_LEDGER_URL", f"sqlite:///{data.parent / 'new' / 'l.sqlite3'}")
    moved = make_resources(data, url, resources["evolink"].api_key, s3_bucket=s3_bucket)
    again = submit(moved)
    assert not again.success and len(emulator_tasks(url)) == paid
    failure = next(e for e in again.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert f"recorded in {data / 'warehouse'}/submissions" in message, message
    assert "aws s3 sync" in message and "the same for videos" in message
    assert f"rebuild-ledger {DAY}`" in message


def test_a_ledger_rebuilt_after_the_links_died_keeps_the_videos_still_stored(
    tmp_path, start_emulator, api_key, monkeypatch
):
    """Rebuilt once the vendor's links had expired, each row was polled again, its dead link
    fetched, and the row ended `expired` without a video while the file was still stored."""
    url = start_emulator(link_ttl=6)
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, url, api_key)
    run_day(resources)
    before = read_table(data, "generated_videos", DAY).set_index("prompt_id")
    stored = before[before.status == "completed"]
    assert len(stored) == 6
    for lost in (data / "state").glob("ledger.sqlite3*"):
        lost.unlink()
    moved = data.rename(tmp_path / "moved")  # and the data directory moved meanwhile
    resources = make_resources(moved, url, api_key)
    time.sleep(6.5)  # every result link is dead now
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(moved))
    assert main(["rebuild-ledger", DAY]) == 0
    run_day(resources)
    after = read_table(moved, "generated_videos", DAY).set_index("prompt_id").loc[stored.index]
    assert (after.status == "completed").all(), after.error_message
    assert after.video_uri.str.startswith(str(moved / "videos")).all()
    columns = ["video_sha256", "width", "height", "has_audio", "completed_at"]
    pd.testing.assert_frame_equal(after[columns], stored[columns])


@pytest.mark.parametrize("cut_one", [False, True], ids=["intact", "one_cut_short"])
def test_an_older_ledger_copy_put_back_after_the_links_died_keeps_the_videos_stored(
    tmp_path, start_emulator, api_key, cut_one
):
    """The copy was taken while the day's tasks ran, and put back once their links had died:
    its tasks are the record's, so nothing was refused, and the videos run recorded `expired`
    every video still in the store, in the ledger and in the day's table (helper-59). It now
    records them again from the table, as `rebuild-ledger` does. One of them cut short in the
    store (the videos put back too, interrupted) was recorded `completed` as well, its row
    naming a hash its file no longer has: its link dead, its download fails, the check says so."""
    url = start_emulator(link_ttl=6)
    data = tmp_path / "data"
    write_catalog(data, 3)
    resources = make_resources(data, url, api_key)
    ledger_file = data / "state" / "ledger.sqlite3"
    assert submit(resources).success
    _copy_ledger(ledger_file, tmp_path / "copy")  # taken while the tasks run
    wait_for_tasks(resources)
    assert save_videos(resources).success
    stored = read_table(data, "generated_videos", DAY)
    if cut_one:
        cut = Path(stored.video_uri[0])
        cut.write_bytes(cut.read_bytes()[:1000])
    time.sleep(6.5)  # every result link is dead now
    _copy_ledger(tmp_path / "copy", ledger_file)  # the disk died; the copy is put back
    wait_for_tasks(resources)  # the sensor polls the tasks again

    [check] = save_videos(resources).get_asset_check_evaluations()

    after = read_table(data, "generated_videos", DAY)
    assert check.passed is not cut_one
    assert after.status[0] == ("download_failed" if cut_one else "completed")
    kept = slice(int(cut_one), None)
    columns = ["prompt_id", "status", "task_id", "video_sha256", "width", "height", "has_audio"]
    pd.testing.assert_frame_equal(after[columns][kept], stored[columns][kept])
    for row in after[kept].itertuples():
        assert hashlib.sha256(Path(row.video_uri).read_bytes()).hexdigest() == row.video_sha256


def _copy_put_back_after_a_prompt_was_sent(tmp_path, emulator, api_key, instance, cursor):
    """The day settled by the sensor (ticking with `cursor`); the nightly copy; p003 added to
    the day and sent from the UI, a tick seeing it; the copy put back. (data, resources)."""
    data = tmp_path / "data"
    write_catalog(data, 3)
    resources = make_resources(data, emulator, api_key)
    ledger_file = data / "state" / "ledger.sqlite3"
    assert submit(resources, instance=instance).success
    wait_for_tasks(resources)
    assert len(_sensor_tick(instance, resources, cursor)) == 1  # the day's videos run
    _copy_ledger(ledger_file, tmp_path / "copy")  # the nightly copy
    write_catalog(data, 4)
    with pytest.MonkeyPatch.context() as later:
        # p003 first polled after the tick, not 1 s after it was sent: on a loaded machine the
        # tick came later, found it done and stored its video, and once the copy was put back
        # and the day rebuilt no videos run was left to ask for
        later.setattr(submission, "first_poll_at", lambda body, eta, now, **_: now + 30)
        assert submit(resources, instance=instance).success
        _sensor_tick(instance, resources, cursor)
    _copy_ledger(tmp_path / "copy", ledger_file)  # the disk died; the copy is put back
    return data, resources


_NOTICED = f"against the ledger: {DAY}: submissions recorded there are not in the ledger"


def test_an_older_ledger_copy_put_back_is_noticed_by_the_sensor_while_the_links_live(
    tmp_path, emulator, api_key, monkeypatch, capfd
):
    """The copy's state of the day is one the sensor had run videos for, so it asked for
    nothing, and nothing compared the day's record with the ledger: p003's paid task was never
    polled, its video lost once its link died (helper-62). The sensor now says so, naming the
    fix, in time to store it."""
    cursor: list[str | None] = [None]
    with DagsterInstance.ephemeral() as instance:
        data, resources = _copy_put_back_after_a_prompt_was_sent(
            tmp_path, emulator, api_key, instance, cursor
        )
        capfd.readouterr()
        for _ in range(2):  # said each tick until it is restored
            assert _sensor_tick(instance, resources, cursor) == []
            said = capfd.readouterr().err
            assert _NOTICED in said and f"`seedance-pipeline rebuild-ledger {DAY}`" in said

        monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
        assert main(["rebuild-ledger", DAY]) == 0
        wait_for_tasks(resources)
        assert [r.success for r in _sensor_tick(instance, resources, cursor)] == [True]
        assert "against the ledger" not in capfd.readouterr().err
    table = read_table(data, "generated_videos", DAY).set_index("prompt_id")
    assert table.loc["p003", "status"] == "completed"
    assert (data / "videos" / DAY / "p003.mp4").is_file()


def test_a_copy_put_back_is_noticed_when_another_day_sent_as_much_before_the_tick(
    tmp_path, emulator, api_key, capfd
):
    """The copy lacks p003 (4 tasks, 3); a run of the next day sent one before the sensor's
    next tick (4 again): a count of the whole ledger saw nothing wrong (helper-65)."""
    cursor: list[str | None] = [None]
    with DagsterInstance.ephemeral() as instance:
        data, resources = _copy_put_back_after_a_prompt_was_sent(
            tmp_path, emulator, api_key, instance, cursor
        )
        catalog = data / "catalog" / "prompts.csv"
        prompts = pd.read_csv(catalog, dtype=str, keep_default_na=False)
        added = prompts.iloc[[0]].assign(prompt_id="q000", scheduled_date="2026-11-21")
        pd.concat([prompts, added]).to_csv(catalog, index=False)
        assert submit(resources, "2026-11-21", instance=instance).success
        capfd.readouterr()
        paid = len(emulator_tasks(emulator))
        # Nothing sent; the next day's videos may be stored, its task done by then (under load)
        ran = _sensor_tick(instance, resources, cursor)
        assert len(emulator_tasks(emulator)) == paid
        assert all(r.dagster_run.tags.get("dagster/partition") == "2026-11-21" for r in ran)
    assert _NOTICED in capfd.readouterr().err


@pytest.mark.parametrize("cursor", [None, DAY], ids=["reset", "from_before_it_counted"])
def test_a_copy_put_back_is_noticed_by_a_sensor_that_kept_no_count(
    tmp_path, emulator, api_key, capfd, cursor
):
    """A cursor reset, or the first tick after the upgrade (a cursor of a day alone), with
    the copy in place: the count taken as 0, nothing was checked (helper-65)."""
    with DagsterInstance.ephemeral() as instance:
        _, resources = _copy_put_back_after_a_prompt_was_sent(
            tmp_path, emulator, api_key, instance, [None]
        )
        capfd.readouterr()
        assert _sensor_tick(instance, resources, [cursor]) == []
    assert _NOTICED in capfd.readouterr().err


@pytest.mark.parametrize(("failures", "follower_late"), [(1, 0), (5, 0), (None, 0), (None, 1)])
def test_a_ledger_write_failing_after_a_create_neither_hangs_nor_loses_the_task(
    day, monkeypatch, caplog, failures, follower_late
):
    """The vendor made (and charges) the task, then the ledger refused the write (a lock held
    past its wait, a database restarting). It is written again for as long as an outage is
    waited out (it was given up after 5 s, and a paid task ended `unknown` without its id
    after an 8 s PostgreSQL restart). Failing past that (None: every time), the row ends
    `unknown` saying why, the log names the task and the command that attaches it, and the
    step ends instead of waiting forever on a claim the process's own lease keeper kept.
    `follower_late`: the follower's read of the day lasts until the sending has ended; it
    read "sending" before and "ended" after, and returned without giving up the claim
    (helper-79)."""
    import threading

    from seedance_pipeline import follow, submission
    from seedance_pipeline.ledger import Ledger

    data, url, resources = day
    if follower_late:
        following, read_day, sending = follow.follow_day, Ledger.day_state, []

        def follow_day(partition, ledger, evolink, store, submitting, *args, **kwargs):
            sending.append(submitting)
            return following(partition, ledger, evolink, store, submitting, *args, **kwargs)

        def day_state(self, *args, **kwargs):
            if threading.current_thread().name.startswith("follow-") and sending:
                waited = time.monotonic() + 30
                while sending[0].is_set() and time.monotonic() < waited:
                    time.sleep(0.01)
            return read_day(self, *args, **kwargs)

        monkeypatch.setattr(follow, "follow_day", follow_day)
        monkeypatch.setattr(Ledger, "day_state", day_state)
    monkeypatch.setattr(submission, "RECORD_RETRY_SECONDS", 0.01)
    monkeypatch.setattr(submission, "RECORD_FOR_SECONDS", 0.5)
    real, refused = Ledger.record_submitted, []

    def failing(self, partition, prompt_id, task_id, *args, **kwargs):
        victim = refused[0][0] if refused else prompt_id
        if prompt_id == victim and (failures is None or len(refused) < failures):
            refused.append((prompt_id, task_id))
            raise RuntimeError("database is locked")
        return real(self, partition, prompt_id, task_id, *args, **kwargs)

    monkeypatch.setattr(Ledger, "record_submitted", failing)
    outcome = []

    def submitting() -> None:
        with DagsterInstance.ephemeral() as instance:  # its SQLite closed in its own thread
            outcome.append(submit(resources, instance=instance))

    worker = threading.Thread(target=submitting, daemon=True)
    worker.start()
    worker.join(120)
    assert outcome, "the submission step never ended"
    prompt_id, task_id = refused[0]
    rows = {r.prompt_id: r for r in resources["pipeline"].ledger().rows(DAY)}
    assert len(emulator_tasks(url)) == len(rows)  # each prompt paid once
    if failures is not None:
        assert outcome[0].success and rows[prompt_id].task_id == task_id
        assert len(refused) == failures
    else:  # the step's retry then finds every other prompt in the ledger
        row = rows[prompt_id]
        assert (row.status, row.task_id) == ("unknown", None)
        assert "before what the create of this prompt answered was recorded" in row.error_message
        assert f"resolve {DAY} {prompt_id} --task-id {task_id}" in caplog.text
        assert all(r.task_id for r in rows.values() if r.prompt_id != prompt_id)


def test_a_claim_settled_while_its_run_was_paused_is_not_sent_by_it(
    tmp_path, emulator, api_key, monkeypatch
):
    """A run paused past its lease (SIGSTOP, a frozen VM) had its claims settled `unknown` by
    another run; its user forgot them as the README says, a third run claimed and sent them,
    and the paused run, woken, sent them too: each paid twice (helper-45's chaos runs)."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    body = {"model": "seedance-2.0-fast-text-to-video", "prompt": "waves", "duration": 4}
    real_claim = ledger.claim

    def claim_then_pause(partition, prompt_id, *args, **kwargs):
        made = real_claim(partition, prompt_id, *args, **kwargs)
        time.sleep(0.1)  # the pause, past what a fresh claim is trusted for
        change = {
            # past its lease: settled, forgotten, and claimed by another run meanwhile
            "p1": "owner = 'worker-c/boot.1/42/abcdef01', lease_expires_at = :t + 60",
            # not past it, but with a second of it left
            "p2": "lease_expires_at = :t + 1",
        }[prompt_id]
        with ledger.db.transaction() as db:
            db.execute(
                sql(f"UPDATE tasks SET {change} WHERE prompt_id = :id"),
                {"id": prompt_id, "t": time.time()},
            )
        return made

    monkeypatch.setattr(ledger, "claim", claim_then_pause)
    monkeypatch.setattr(submission, "FRESH_CLAIM_SECONDS", 0.05)
    with Client(api_key, base_url=emulator) as client:
        summary = submit_all(ledger, client, DAY, [Planned(p, body, 1.0) for p in ("p1", "p2")])
    assert (summary.claims_lost, summary.submitted) == (["p1"], 1)
    [made] = emulator_tasks(emulator)
    rows = {r.prompt_id: r for r in ledger.rows(DAY)}
    assert rows["p2"].task_id == made["id"]
    assert (rows["p1"].status, rows["p1"].task_id) == (Status.SUBMITTING, None)  # the other's
    with ledger.db.read() as db:
        owner, lease = db.execute(
            sql("SELECT owner, lease_expires_at FROM tasks WHERE prompt_id = 'p1'")
        ).one()
    assert owner.startswith("worker-c/") and lease > time.time()
    ledger.release(DAY, "p1")  # as after its retries ran out: not this process's claim to undo
    assert "p1" in {r.prompt_id for r in ledger.rows(DAY)}


def test_a_create_answer_repeating_a_task_the_ledger_holds_ends_unknown_saying_so(tmp_path):
    """A gateway replaying its first answer: recording each repeat broke the ledger's unique
    task ids, was tried again for seconds, failed the step, and left each row `unknown` saying
    its process had stopped (it had not), with the repeated id in the log's resolve hint."""
    repeated = "task-unified-1774857405-abc12345"
    vendor = httpx.MockTransport(
        lambda request: httpx.Response(200, json={"id": repeated, "status": "pending"})
    )
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    body = {"model": "seedance-2.0-text-to-video", "prompt": "a cat", "duration": 4}
    started = time.monotonic()
    with Client("k", base_url="https://api.test.invalid", transport=vendor) as client:
        summary = submit_all(ledger, client, DAY, [Planned(f"p{i}", body, 1.0) for i in range(3)])
    assert time.monotonic() - started < 5  # not tried again: the same write fails the same way
    assert (summary.submitted, summary.unknown) == (1, 2)
    rows = ledger.rows(DAY)
    assert sorted(r.status.value for r in rows) == ["pending", "unknown", "unknown"]
    for row in rows:
        if row.status == Status.UNKNOWN:
            assert row.task_id is None
            assert f"task {repeated}, which {DAY}/p" in row.error_message
            assert "already holds (an answer repeated" in row.error_message

    # A resubmission answered with its failed first attempt's task (archived, so no row held
    # it): the new attempt was tied to the old failed task, and the task it made was lost.
    (sent,) = [r for r in rows if r.task_id]
    ledger.record_polls([PollUpdate(repeated, Status.FAILED, error_code="service_error")])
    with Client("k", base_url="https://api.test.invalid", transport=vendor) as client:
        again = submit_all(ledger, client, DAY, [Planned(sent.prompt_id, body, 1.0)], 2)
    assert (again.resubmitted, again.unknown) == (0, 1)
    row = next(r for r in ledger.rows(DAY) if r.prompt_id == sent.prompt_id)
    assert (row.status, row.task_id, row.attempt) == (Status.UNKNOWN, None, 2)
    assert f"which an earlier attempt of {DAY}/{sent.prompt_id} already holds" in (
        row.error_message
    )


def test_a_create_answer_whose_row_was_forgotten_meanwhile_is_logged_not_counted(tmp_path, caplog):
    """`resolve --forget` while the answer's write was retried (a ledger outage): the late
    write changed no row, the task (charged) was counted as submitted, and no line named it."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    task_id = "task-unified-1774857405-abc12345"

    def vendor(request: httpx.Request) -> httpx.Response:
        with ledger.db.transaction() as db:  # forgotten by hand while the create was out
            db.execute(sql("DELETE FROM tasks WHERE prompt_id = 'p1'"))
        return httpx.Response(200, json={"id": task_id, "status": "pending"})

    body = {"model": "seedance-2.0-text-to-video", "prompt": "a cat", "duration": 4}
    transport = httpx.MockTransport(vendor)
    with Client("k", base_url="https://api.test.invalid", transport=transport) as client:
        summary = submit_all(ledger, client, DAY, [Planned("p1", body, 1.0)])
    assert (summary.submitted, summary.credits_reserved) == (0, 0.0)
    assert ledger.rows(DAY) == []
    assert f"{DAY}/p1: task {task_id} was made (and is charged) but {DAY}/p1 was forgotten" in (
        caplog.text
    )


def test_a_days_budget_counts_what_it_sent_for_prompts_it_no_longer_has(
    tmp_path, emulator, api_key
):
    """Four prompts sent (4 s of 480p at 6.251 credits a second: 25.004 each, 100.016 of a
    110 budget), then two renamed: the day would hold six tasks, 150.024 credits."""
    path = tmp_path / "data" / "catalog" / "prompts.csv"
    write_catalog(tmp_path / "data", 4)
    resources = make_resources(tmp_path / "data", emulator, api_key, max_credits_per_partition=110)
    assert submit(resources).success and len(emulator_tasks(emulator)) == 4
    path.write_text(path.read_text().replace("p000,", "p000-v2,").replace("p001,", "p001-v2,"))
    again = submit(resources)
    assert not again.success and len(emulator_tasks(emulator)) == 4
    failure = next(e for e in again.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert "estimated 150.024 credits, 50.008 of them by tasks already sent" in message


def test_a_days_budget_counts_prompts_already_sent_at_what_they_hold_not_todays_price(
    tmp_path, emulator, api_key, monkeypatch
):
    """Four prompts sent (100.016 credits of a 110 budget), then the price table doubled:
    the day, with nothing left to send, was refused at 200.032 credits."""
    write_catalog(tmp_path / "data", 4)
    resources = make_resources(tmp_path / "data", emulator, api_key, max_credits_per_partition=110)
    assert submit(resources).success and len(emulator_tasks(emulator)) == 4
    prices = json.loads((Path(seedance.__file__).parent / "prices.json").read_text())
    for tier in prices["credits_per_second"].values():
        for column in tier.values():
            column.update({quality: 2 * rate for quality, rate in column.items()})
    (tmp_path / "prices.json").write_text(json.dumps(prices))
    monkeypatch.setenv("SEEDANCE_PRICE_TABLE", str(tmp_path / "prices.json"))
    again = submit(resources)
    assert again.success, _step_failure(again)
    assert len(emulator_tasks(emulator)) == 4


def test_a_days_budget_leaves_out_prompts_already_paid_on_another_day(tmp_path, emulator, api_key):
    """Four prompts of the 20th sent (25.004 each); two of them then move to the 21st, which
    has four prompts of its own: it will send 4 (100.016 credits), within a budget of 110.
    Counting the two moved ones (150.024) refused the day."""
    data = tmp_path / "data"
    write_catalog(data, 4)
    resources = make_resources(data, emulator, api_key, max_credits_per_partition=110)
    assert submit(resources).success
    path = data / "catalog" / "prompts.csv"
    rows = path.read_text().splitlines()
    new_day = [r.replace(DAY, "2026-11-21").replace("p00", "q00") for r in rows[1:]]
    moved = [r.replace(DAY, "2026-11-21") for r in rows[1:3]]
    path.write_text("\n".join([rows[0], *moved, *rows[3:], *new_day]) + "\n")
    result = submit(resources, "2026-11-21")
    assert result.success, _step_failure(result)
    assert len(emulator_tasks(emulator)) == 8


def _step_failure(result) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    return failure.step_failure_data.user_failure_data.description


def test_a_store_refusing_every_video_fails_the_videos_step_once_naming_the_fix(day, monkeypatch):
    """S3 refusing the credentials or the bucket (provoked against moto in test_s3): the step
    was retried three times, re-downloading every video, and failed with a traceback."""
    from seedance_pipeline.s3 import S3Refused
    from seedance_pipeline.storage import LocalVideoStore

    data, url, resources = day
    refusal = "s3://b/videos/x.mp4: upload refused (AccessDenied); the credentials need ..."

    def refuse(self, local_path, partition, prompt_id):
        raise S3Refused(refusal)

    assert submit(resources).success
    wait_for_tasks(resources)
    monkeypatch.setattr(LocalVideoStore, "put", refuse)
    result = save_videos(resources)
    assert not result.success and _step_failure(result) == refusal
    started = [e for e in result.all_events if e.event_type_value == "STEP_START"]
    assert len(started) == 1  # no retry: every video would be refused alike
    rows = ledger_rows(resources)
    assert {r.status for r in rows} == {Status.COMPLETED} and not any(r.video_uri for r in rows)


def test_a_store_refusing_every_video_stops_sending_the_rest_of_the_day(
    tmp_path, start_emulator, api_key, monkeypatch
):
    """A day grew after its first tasks completed, and the store then refused every video: the
    whole day was still sent and paid, each video left to die with its link. Sending stops at
    the refusal, the sensor leaves the rest alone, and once the store works the day is sent
    on, each prompt once, and every video is stored."""
    from seedance_pipeline.s3 import S3Refused

    url = start_emulator(rate_limit=5.0)  # 27 more creates take over 5 s
    data = tmp_path / "data"
    write_catalog(data, 3)
    resources = make_resources(data, url, api_key)
    assert submit(resources).success
    wait_for_tasks(resources)
    write_catalog(data, 30)  # the same three, and 27 more
    refusal = "s3://b/videos/x.mp4: upload refused (AccessDenied); the credentials need ..."

    made_by_then: list[int] = []

    def refuse(self, local_path, partition, prompt_id):
        made_by_then.append(len(emulator_tasks(url)))
        raise S3Refused(refusal)

    with monkeypatch.context() as refusing:
        refusing.setattr(LocalVideoStore, "put", refuse)
        result = submit(resources)
    assert not result.success
    message = _step_failure(result)
    assert message.startswith(refusal) and "prompt(s) were not sent" in message
    assert "materialise generation_requests and submitted_tasks" in message
    sent = len(emulator_tasks(url))
    # Those under way when the refusal came, and one more the refusal's own count may miss.
    assert sent <= made_by_then[0] + SUBMIT_WORKERS + 1 < 30, (made_by_then, sent)
    assert DAY not in resources["pipeline"].ledger().partitions_incomplete()
    assert Status.SUBMITTING not in {r.status for r in ledger_rows(resources)}

    assert submit(resources).success
    wait_for_tasks(resources)
    assert save_videos(resources).success
    rows = ledger_rows(resources)
    assert len(rows) == len(emulator_tasks(url)) == 30 and all(r.video_uri for r in rows)


def test_a_store_refusal_on_a_day_with_a_prompt_another_day_sent_names_the_right_fix(
    tmp_path, emulator, api_key, monkeypatch
):
    """p000 was sent on the 19th, then moved to the 20th: the refusal's message counted it as
    not sent and said to send the rest, though the day had nothing left to send."""
    from seedance_pipeline.s3 import S3Refused

    data = tmp_path / "data"
    write_catalog(data, 3)
    _move(data, "p000", "2026-11-19")
    resources = make_resources(data, emulator, api_key)
    assert submit(resources, "2026-11-19").success
    _move(data, "p000", DAY)
    assert submit(resources).success
    wait_for_tasks(resources)

    def refuse(self, local_path, partition, prompt_id):
        raise S3Refused("s3://b/videos/x.mp4: upload refused (AccessDenied)")

    monkeypatch.setattr(LocalVideoStore, "put", refuse)
    result = submit(resources)
    assert not result.success
    message = _step_failure(result)
    assert message.endswith(f"fix the settings, then materialise generated_videos for {DAY}")
    assert DAY not in resources["pipeline"].ledger().partitions_incomplete()


def test_run_stops_sending_once_the_store_refuses_the_first_video(
    tmp_path, start_emulator, api_key, monkeypatch, capsys
):
    """`run` follows the day itself: its first completed task's video was refused while
    submission went on to the end of the day."""
    from seedance_pipeline.s3 import S3Refused

    url = start_emulator(rate_limit=2.0)  # 20 creates take 10 s; the first task ends in 1
    data = tmp_path / "data"
    write_catalog(data, 20)
    _run_env(monkeypatch, tmp_path, data, url, api_key)
    made_by_then: list[int] = []

    def refuse(self, local_path, partition, prompt_id):
        made_by_then.append(len(emulator_tasks(url)))
        raise S3Refused("s3://b/videos/x.mp4: upload refused (AccessDenied)")

    monkeypatch.setattr(LocalVideoStore, "put", refuse)
    assert main(["run", DAY]) == 1
    err = capsys.readouterr().err
    assert "upload refused (AccessDenied); no video can be stored, so nothing more was" in err
    assert len(emulator_tasks(url)) <= made_by_then[0] + SUBMIT_WORKERS + 1 < 20  # as above


def test_a_day_whose_submission_was_stopped_says_its_videos_wait_for_the_rest_to_be_sent(day):
    """A submission terminated half way: the videos step said the sensor would materialise the
    day once its prompts finished, which it never does for prompts never sent."""
    data, url, resources = day
    assert plan_requests(resources).success
    requests = read_table(data, "generation_requests", DAY)
    accepted = requests[requests.status == "accepted"]
    sent = [Planned(r.prompt_id, json.loads(r.request_json), r.estimated_credits) for r in
            accepted.head(2).itertuples()]  # fmt: skip
    with resources["evolink"].client() as client:
        assert submit_all(resources["pipeline"].ledger(), client, DAY, sent).submitted == 2
    wait_for_tasks(resources)
    result = save_videos(resources)
    assert not result.success
    message = _step_failure(result)
    assert f"{len(accepted) - 2} accepted prompt(s) of {DAY} were never sent" in message
    assert f"generation_requests and submitted_tasks for {DAY}" in message
    assert "sensor" not in message


def test_a_claim_recorded_open_stops_the_day_once_the_ledger_is_lost(tmp_path):
    """A run killed after its create was accepted leaves its claim open, and another run's
    record lists it `unknown`. Exempted as a claim released since (it made no task), that row
    alone did not stop the day once the ledger was lost, and the prompt was paid twice
    (helper-61). Only the ledger could prove the release; so it counts."""
    ledger, tables = Ledger(tmp_path / "ledger.sqlite3"), LocalTableStore(tmp_path)
    assert ledger.claim(DAY, "p1", {"model": "m"}, 1.0)
    write_record(ledger, tables, DAY)  # by another run, the claim open
    lost = Ledger(tmp_path / "new.sqlite3")
    with pytest.raises(LedgerLost, match=f"rebuild-ledger {DAY}`"):
        check_ledger(lost, tables, DAY, sending={"p1"})
    with pytest.raises(LedgerLost, match=f"rebuild-ledger {DAY}`"):
        check_ledger(lost, tables, "2026-11-21", sending={"p1"})  # moved there since


def test_a_truncated_record_stops_the_day_saying_what_to_do(day, monkeypatch, capsys):
    """A record cut short (a full disk, a copy interrupted) stopped the day with pyarrow's
    words only, and the step was retried for nothing (helper-59)."""
    data, url, resources = day
    assert submit(resources).success
    paid = len(emulator_tasks(url))
    record = data / "warehouse" / "submissions" / f"{DAY}.parquet"
    record.write_bytes(record.read_bytes()[:100])
    again = submit(resources)
    assert not again.success and len(emulator_tasks(url)) == paid
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in again.all_events)
    said = f"{record}: the day's record of submissions cannot be read"
    assert _step_failure(again).startswith(said)
    assert "move the file away, and the day's next run writes it again" in _step_failure(again)
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    assert main(["rebuild-ledger", DAY]) == 2
    assert f"\nerror: {said}" in capsys.readouterr().err


def test_a_lost_ledger_stops_another_day_a_prompt_moved_to(day, monkeypatch, capsys):
    """The 20th's record lists what was paid; the new ledger knows no day: submitting the
    21st, to which one of those prompts moved, would pay for it a second time."""
    data, url, resources = day
    assert submit(resources).success
    paid = len(emulator_tasks(url))
    moved = resources["pipeline"].ledger().rows(DAY)[0].prompt_id
    for ledger_file in (data / "state").glob("ledger.sqlite3*"):
        ledger_file.unlink()
    _move(data, moved, "2026-11-21")
    refused = submit(resources, "2026-11-21")
    assert not refused.success and len(emulator_tasks(url)) == paid
    message = _step_failure(refused)
    assert f"day(s) with recorded submissions ({DAY})" in message
    assert f"rebuild-ledger {DAY}`" in message
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    assert main(["rebuild-ledger", DAY]) == 0
    result = submit(resources, "2026-11-21")
    assert result.success
    (submitted,) = [m.metadata for m in result.asset_materializations_for_node("submitted_tasks")]
    assert submitted["sent_on_other_days"].value == 1
    accepted = read_table(data, "generation_requests", "2026-11-21").status == "accepted"
    assert len(emulator_tasks(url)) == paid + accepted.sum() - 1  # all but the moved one


def test_an_older_ledger_copy_stops_another_day_a_prompt_sent_since_moved_to(
    tmp_path, emulator, api_key, monkeypatch
):
    """The copy put back knows the 20th, but not the prompt sent on it after the copy was
    taken: moved to the 21st, that prompt was paid again, as only days the ledger knew nothing
    of were checked (helper-59)."""
    data = tmp_path / "data"
    write_catalog(data, 3)
    resources = make_resources(data, emulator, api_key)
    ledger_file = data / "state" / "ledger.sqlite3"
    assert submit(resources).success
    _copy_ledger(ledger_file, tmp_path / "copy")  # the nightly copy
    write_catalog(data, 4)  # p003 added to the 20th, and sent
    assert submit(resources).success and len(emulator_tasks(emulator)) == 4
    _copy_ledger(tmp_path / "copy", ledger_file)  # the disk died; the copy is put back
    _move(data, "p003", "2026-11-21")
    refused = submit(resources, "2026-11-21")
    assert not refused.success and len(emulator_tasks(emulator)) == 4
    message = _step_failure(refused)
    assert f"{DAY}: recorded as sent there, and in the ledger on no day: p003" in message
    assert f"rebuild-ledger {DAY}`" in message
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    assert main(["rebuild-ledger", DAY]) == 0
    assert submit(resources, "2026-11-21").success and len(emulator_tasks(emulator)) == 4


@pytest.mark.parametrize("settled_first", [True, False])
def test_a_claim_a_crashed_run_left_is_settled_recorded_and_never_paid_again(
    day, monkeypatch, capsys, settled_first
):
    """A run on another host died after its create was sent; its claim outlived the rerun's
    submission. The sensor settles it once its lease is out, the day's record lists it, and a
    ledger lost after that does not pay for it again. Nor does one lost before: the record the
    rerun wrote left the open claim out, so the rebuilt ledger sent it again (helper-59)."""
    data, url, resources = day
    assert plan_requests(resources).success
    requests = read_table(data, "generation_requests", DAY)
    crashed = requests[requests.status == "accepted"].iloc[0]
    body = json.loads(crashed.request_json)
    ledger = resources["pipeline"].ledger()
    with resources["evolink"].client() as client:
        client.create_task(body)  # sent (and paid) by the run that died before the answer
    assert ledger.claim(DAY, crashed.prompt_id, body, crashed.estimated_credits)
    with ledger.db.transaction() as db:
        db.execute(
            sql("UPDATE tasks SET owner = :o, lease_expires_at = :l WHERE prompt_id = :id"),
            {"o": "worker-b/0/4242/abcdef01", "l": time.time() + 2, "id": crashed.prompt_id},
        )
    assert submit(resources).success  # the rerun: the claim's lease is still live
    paid = len(emulator_tasks(url))
    if settled_first:
        wait_for_tasks(resources)
        time.sleep(2)
        task_poller(build_sensor_context(instance=DagsterInstance.ephemeral(), resources=resources))
        assert save_videos(resources).success
    record = read_table(data, "submissions", DAY).set_index("prompt_id")
    assert record.loc[crashed.prompt_id, "status"] == "unknown"

    for ledger_file in (data / "state").glob("ledger.sqlite3*"):
        ledger_file.unlink()
    assert not submit(resources).success
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    assert main(["rebuild-ledger", DAY]) == 0
    assert submit(resources).success and len(emulator_tasks(url)) == paid
    (row,) = [r for r in ledger.rows(DAY) if r.prompt_id == crashed.prompt_id]
    assert row.status == Status.UNKNOWN and row.task_id is None


def test_a_ledger_restored_from_an_older_copy_is_refused_then_brought_up_to_date(
    tmp_path, start_emulator, api_key, monkeypatch, capsys
):
    """The copy was taken before the transient failures were resubmitted: it has every
    prompt, but at attempt 1, failed. Trusted, it would resubmit (and pay for) them again. Nor
    may a videos run or a `resolve` on it write the day's record back to it: that record is
    what tells the ledger is old (helper-59)."""
    from seedance_pipeline.ledger import RESUBMITTABLE_CODES

    url = start_emulator(task_failure_rate=0.6, seed=11)
    data = tmp_path / "data"
    write_catalog(data, 6)
    resources = make_resources(data, url, api_key, max_resubmissions=1)
    ledger_file = data / "state" / "ledger.sqlite3"
    assert submit(resources).success
    wait_for_tasks(resources)
    ledger = resources["pipeline"].ledger()
    transient = {r.prompt_id for r in ledger.rows(DAY) if r.error_code in RESUBMITTABLE_CODES}
    assert transient, "the seeded emulator fails some tasks with service_error"
    _copy_ledger(ledger_file, tmp_path / "copy")  # the nightly copy
    assert submit(resources).success  # attempt 2 of each transient failure
    wait_for_tasks(resources)
    paid = len(emulator_tasks(url))
    latest = {r.prompt_id: r.task_id for r in ledger.rows(DAY) if r.prompt_id in transient}
    _copy_ledger(tmp_path / "copy", ledger_file)  # the disk died; the copy is put back

    record = read_table(data, "submissions", DAY)
    videos = save_videos(resources)
    assert not videos.success and f"rebuild-ledger {DAY}`" in _step_failure(videos)
    monkeypatch.setenv("SEEDANCE_DATA_DIR", str(data))
    first = sorted(transient)[0]
    assert main(["resolve", DAY, first, "--forget"]) == 2
    assert f"rebuild-ledger {DAY}`" in capsys.readouterr().err
    pd.testing.assert_frame_equal(read_table(data, "submissions", DAY), record)
    refused = submit(resources)
    assert not refused.success and len(emulator_tasks(url)) == paid
    message = _step_failure(refused)
    assert f"{len(transient)} submission(s) recorded" in message
    assert "only at an earlier attempt" in message and f"rebuild-ledger {DAY}`" in message
    assert main(["rebuild-ledger", DAY]) == 0
    assert submit(resources).success and len(emulator_tasks(url)) == paid
    rows = {r.prompt_id: r for r in ledger.rows(DAY) if r.prompt_id in transient}
    assert {p: (r.attempt, r.task_id) for p, r in rows.items()} == {
        p: (2, task_id) for p, task_id in latest.items()
    }


@pytest.mark.parametrize("checking", ["check_ledger", "write_record"])
def test_a_record_another_worker_writes_while_it_is_read_is_not_ahead_of_the_ledger(
    tmp_path, checking
):
    """The ledger was read before the record: another worker sending the day and recording it
    in between (a slow S3 read) made a healthy ledger look lost, and the run stopped telling
    its user to rebuild it (helper-75)."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    other = Ledger(tmp_path / "ledger.sqlite3")

    class Slow(LocalTableStore):
        def read(self, asset: str, partition: str) -> pd.DataFrame:
            if asset == "submissions" and not other.rows(DAY):  # meanwhile, the other sends
                for prompt_id in ("p000", "p001"):
                    assert other.claim(DAY, prompt_id, {"prompt": prompt_id}, 10.0)
                    other.record_submitted(DAY, prompt_id, f"task-{prompt_id}", time.time())
                write_record(other, LocalTableStore(tmp_path), DAY)
            return super().read(asset, partition)

    check = {"check_ledger": check_ledger, "write_record": write_record}[checking]
    check(ledger, Slow(tmp_path), DAY)  # no LedgerLost
    assert len(read_table(tmp_path, "submissions", DAY)) == 2


def test_a_day_another_worker_first_sends_while_the_records_are_listed_is_not_lost(tmp_path):
    """The ledger's days were read before the other days' records: one another worker sent
    first, and recorded, in between seemed a day the ledger knew nothing of (helper-75)."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    other = Ledger(tmp_path / "ledger.sqlite3")

    class Slow(LocalTableStore):
        def partitions(self, asset: str) -> list[str]:
            if asset == "submissions" and not other.rows("2026-11-21"):
                assert other.claim("2026-11-21", "p1", {"prompt": "p1"}, 10.0)
                other.record_submitted("2026-11-21", "p1", "task-p1", time.time())
                write_record(other, LocalTableStore(tmp_path), "2026-11-21")
            return super().partitions(asset)

    check_ledger(ledger, Slow(tmp_path), DAY, sending={"p2"})  # no LedgerLost


def _sends(ledger: Ledger, prompt_id: str) -> None:
    assert ledger.claim(DAY, prompt_id, {"prompt": prompt_id}, 10.0)
    ledger.record_submitted(DAY, prompt_id, f"task-{prompt_id}", time.time())


def test_a_record_another_worker_writes_just_before_this_ones_lands_is_not_overwritten(
    tmp_path,
):
    """Each worker read the record's version and the ledger, then wrote: one whose write landed
    just after another's (a slow upload) put its older record over the newer one, which lost
    the other's task from the day's record (helper-77). The write is conditional now."""
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    other = Ledger(tmp_path / "ledger.sqlite3")
    _sends(ledger, "p000")

    class Overtaken(LocalTableStore):
        def write_if(self, frame, asset, partition, version) -> bool:
            if not other.rows(DAY)[1:]:  # meanwhile, the other sends p001 and records it
                _sends(other, "p001")
                write_record(other, LocalTableStore(tmp_path), DAY)
            return super().write_if(frame, asset, partition, version)

    assert [r.prompt_id for r in write_record(ledger, Overtaken(tmp_path), DAY)] == [
        "p000",
        "p001",
    ]
    assert sorted(read_table(tmp_path, "submissions", DAY).prompt_id) == ["p000", "p001"]


def test_a_record_other_workers_keep_writing_is_given_up_naming_why(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    other = Ledger(tmp_path / "ledger.sqlite3")
    _sends(ledger, "p000")
    sent = iter(f"p{n:03d}" for n in range(1, 100))

    class Busy(LocalTableStore):
        def write_if(self, frame, asset, partition, version) -> bool:
            _sends(other, next(sent))
            write_record(other, LocalTableStore(tmp_path), DAY)
            return super().write_if(frame, asset, partition, version)

    with pytest.raises(StoreError, match="other workers wrote the day's record of submissions 5"):
        write_record(ledger, Busy(tmp_path), DAY)
    assert len(read_table(tmp_path, "submissions", DAY)) == 6  # each other worker's record


@pytest.mark.parametrize("record_write", [record_beaten, record_unwritable])
def test_a_record_not_written_does_not_hide_why_submission_stopped(day, monkeypatch, record_write):
    """The record is written as the step ends, however it ends: failing there (other workers
    writing it, S3 away, a local disk refusing) replaced the refusal that stopped sending, a
    wrong key here, and the step was retried as for an outage (helper-80, helper-81)."""
    data, url, resources = day
    assert plan_requests(resources).success
    monkeypatch.setattr(LocalTableStore, "write_if", record_write)
    wrong_key = make_resources(data, url, "sk-evo-wrong-key")
    result = _materialize([submitted_tasks], wrong_key, DAY)
    assert not result.success and emulator_tasks(url) == []
    (failure,) = [e.step_failure_data for e in result.all_events if e.is_step_failure]
    assert "EVOLINK_API_KEY" in failure.user_failure_data.description


def test_a_store_refusing_videos_is_not_hidden_by_the_record_it_refuses_too(
    tmp_path, start_emulator, api_key, monkeypatch
):
    """The videos' store refused (S3: the bucket gone, the credentials' rights taken away), and
    the record, in the same bucket, was refused too: its error replaced the refusal, the step
    was retried as for an outage, and once no retry was left the day was noted incomplete, so
    the sensor sent the rest, each a paid task no one could store (helper-81)."""
    from dagster import RetryPolicy

    from seedance_pipeline.s3 import S3Refused

    url = start_emulator(rate_limit=5.0)
    data = tmp_path / "data"
    write_catalog(data, 3)
    resources = make_resources(data, url, api_key)
    assert submit(resources).success
    wait_for_tasks(resources)
    write_catalog(data, 30)
    refusal = "s3://b/videos/x.mp4: upload refused (AccessDenied)"

    def refuse(*args, **kwargs):
        raise S3Refused(refusal)

    monkeypatch.setattr(generation_assets, "SUBMIT_RETRIES", RetryPolicy(max_retries=0))
    with monkeypatch.context() as refusing:
        refusing.setattr(LocalVideoStore, "put", refuse)
        refusing.setattr(LocalTableStore, "write_if", refuse)
        result = submit(resources)
    assert not result.success and len(emulator_tasks(url)) < 30
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    assert failure.user_failure_data.description.startswith(refusal)
    assert DAY not in resources["pipeline"].ledger().partitions_incomplete()  # held


def test_a_record_the_disk_fails_to_read_is_not_called_damaged(tmp_path):
    """An I/O error (EIO, a stale NFS handle) was reported as a damaged record, to restore
    from a backup or move away (helper-77)."""

    class Failing(LocalTableStore):
        def read(self, asset: str, partition: str) -> pd.DataFrame:
            raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError) as failed:
        check_ledger(Ledger(tmp_path / "ledger.sqlite3"), Failing(tmp_path), DAY)
    assert failed.type is OSError and failed.value.errno == errno.EIO


def test_commands_refuse_to_start_an_empty_data_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEEDANCE_DATA_DIR", raising=False)
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-evo-placeholder")
    assert main(["run", DAY]) == 2
    assert "set SEEDANCE_DATA_DIR" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _copy_ledger(source: Path, to: Path) -> None:
    """A copy of a SQLite ledger (a nightly backup, or the backup put back)."""
    with sqlite3.connect(source) as live, sqlite3.connect(to) as copy:
        live.backup(copy)


def _move(data, prompt_id: str, to_day: str, **edits: str) -> None:
    path = data / "catalog" / "prompts.csv"
    catalog = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column, value in {"scheduled_date": to_day, **edits}.items():
        catalog.loc[catalog.prompt_id == prompt_id, column] = value
    catalog.to_csv(path, index=False)


def test_a_prompt_moved_to_another_day_is_not_paid_again_and_keeps_its_charge(day):
    data, url, resources = day
    run_day(resources)
    before = read_table(data, "generated_videos", DAY).set_index("prompt_id")
    moved = before[(before.status == "completed") & before.campaign.notna()].index[0]
    paid = len(emulator_tasks(url))
    _move(data, moved, "2026-11-21")
    result = submit(resources, "2026-11-21")
    assert result.success
    (submitted,) = [m.metadata for m in result.asset_materializations_for_node("submitted_tasks")]
    assert submitted["sent_on_other_days"].value == 1
    accepted = read_table(data, "generation_requests", "2026-11-21").status == "accepted"
    assert paid + accepted.sum() - 1 == len(emulator_tasks(url))  # all but the moved one
    assert plan_requests(resources).success  # the 20th again: the moved row's charge stays
    assert save_videos(resources).success
    after = read_table(data, "generated_videos", DAY).set_index("prompt_id")
    assert after.loc[moved, "status"] == "completed" and not after.loc[moved, "in_catalog"]
    assert after.loc[moved, "campaign"] == before.loc[moved, "campaign"]  # its spend's owner
    assert after.credits_charged.sum() == pytest.approx(before.credits_charged.sum())
    wait_for_tasks(resources, "2026-11-21")
    assert save_videos(resources, "2026-11-21").success
    new_day = read_table(data, "generated_videos", "2026-11-21").set_index("prompt_id")
    assert new_day.loc[moved, "error_code"] == "sent_on_other_day"
    assert new_day.loc[moved, "credits_charged"] == 0 and DAY in new_day.loc[moved, "error_message"]


def test_a_day_pruned_from_the_catalog_keeps_its_campaigns_and_charges(day):
    """Its rows deleted from the catalog after the day was sent, a run of the day wrote its
    table again with every campaign empty: the spend moved to `(none)` in `costs`."""
    data, url, resources = day
    run_day(resources)
    before = read_table(data, "generated_videos", DAY).set_index("prompt_id")
    sent = before[before.status != "rejected"]
    assert sent.campaign.notna().any()
    path = data / "catalog" / "prompts.csv"
    catalog = pd.read_csv(path, dtype=str, keep_default_na=False)
    catalog[catalog.scheduled_date != DAY].to_csv(path, index=False)
    assert plan_requests(resources).success and save_videos(resources).success
    after = read_table(data, "generated_videos", DAY).set_index("prompt_id").loc[sent.index]
    assert not after.in_catalog.any()
    pd.testing.assert_series_equal(after.campaign, sent.campaign)
    assert after.credits_charged.sum() == pytest.approx(sent.credits_charged.sum())


def test_an_edited_prompt_is_flagged_beside_the_video_of_what_was_sent(day, capsys):
    data, url, resources = day
    assert submit(resources).success
    wait_for_tasks(resources)
    first = read_table(data, "generation_requests", DAY)
    edited = first[first.status == "accepted"].prompt_id.iloc[0]
    sent_text = first.set_index("prompt_id").loc[edited, "prompt"]
    _move(data, edited, DAY, prompt="A completely different shot of a lighthouse at night")
    paid = len(emulator_tasks(url))
    again = submit(resources)
    assert again.success and len(emulator_tasks(url)) == paid  # never resent
    (done,) = again.asset_materializations_for_node("submitted_tasks")
    assert done.metadata["edited_after_sending"].value == 1  # and the step's log says which
    replanned = read_table(data, "generation_requests", DAY).set_index("prompt_id")
    assert json.loads(replanned.loc[edited, "request_json"])["prompt"] == sent_text  # as sent
    assert save_videos(resources).success
    table = read_table(data, "generated_videos", DAY).set_index("prompt_id")
    assert table.loc[edited, "request_changed"] and table.loc[edited, "prompt"] == sent_text
    assert not table.drop(index=edited).request_changed.fillna(False).any()
    capsys.readouterr()
    print_run_summary(DAY, table.reset_index())  # `run` said only "0 task(s) sent"
    said = f"{DAY}: 1 prompt(s) edited after they were sent, not sent again ({edited})"
    assert said in capsys.readouterr().out


def test_a_prompt_edited_to_another_quality_is_checked_against_what_was_sent(day):
    """The video is of the request sent; the edited row's new frame size must not fail it."""
    data, url, resources = day
    assert submit(resources).success
    wait_for_tasks(resources)
    first = read_table(data, "generation_requests", DAY).set_index("prompt_id")
    edited = first[first.status == "accepted"].index[0]
    sent = tuple(first.loc[edited, ["expected_width", "expected_height"]])
    _move(data, edited, DAY, quality="720p" if first.loc[edited, "quality"] == "480p" else "480p")
    assert submit(resources).success
    result = save_videos(resources)
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.metadata["problems"]
    assert check.metadata["day"].value == DAY  # the check is not partitioned: it says its day
    (done,) = result.asset_materializations_for_node("generated_videos")
    assert done.metadata["check_problems"].value == 0  # kept with the day's materialisation
    row = read_table(data, "generated_videos", DAY).set_index("prompt_id").loc[edited]
    assert row.request_changed and (row.expected_width, row.expected_height) == sent
    assert (row.width, row.height) == sent


def test_an_image_replaced_under_its_name_does_not_fail_the_adaptive_video_sent_before(day):
    """An `adaptive` frame follows its image: once the 4:3 image is replaced by a 3:4 one of
    the same name, today's plan expects a portrait video. The video made from the image sent
    is landscape, and is checked against the frame expected when it was sent (the ledger's)."""
    data, url, resources = day
    assert submit(resources).success
    wait_for_tasks(resources)
    prompt_id = "d1-i2v-product-spin"
    sent = read_table(data, "generation_requests", DAY).set_index("prompt_id").loc[prompt_id]
    assert sent.aspect_ratio == "adaptive" and sent.expected_width > sent.expected_height
    Image.new("RGB", (600, 800), "orange").save(data / "media" / "img_product_800x600.png")
    assert plan_requests(resources).success
    now = read_table(data, "generation_requests", DAY).set_index("prompt_id").loc[prompt_id]
    assert now.expected_width < now.expected_height  # today's plan: portrait

    result = save_videos(resources)

    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed, check.metadata["problems"]
    row = read_table(data, "generated_videos", DAY).set_index("prompt_id").loc[prompt_id]
    expected = (sent.expected_width, sent.expected_height)
    assert (row.expected_width, row.expected_height) == (row.width, row.height) == expected


def test_odd_poll_answers_neither_lose_a_paid_video_nor_end_a_task_early(
    tmp_path, start_emulator, api_key
):
    url = start_emulator(
        poll_fault_rate=1.0,
        poll_faults=("queued", "completed_without_results", "transient_404"),
        poll_fault_polls=2,
    )
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, url, api_key)
    assert submit(resources).success
    wait_for_tasks(resources, timeout=120)
    assert save_videos(resources).success
    table = read_table(data, "generated_videos", DAY)
    sent = table[table.status != "rejected"]
    assert (sent.status == "completed").all(), sent[["prompt_id", "status", "error_message"]]
    served = [t["poll_faults_served"] for t in emulator_tasks(url)]
    assert sum(served) >= len(sent)  # every task did answer oddly first


def test_bad_result_links_leave_rows_download_failed_then_a_later_run_stores_them(
    tmp_path, start_emulator, api_key, monkeypatch
):
    monkeypatch.setenv("SEEDANCE_MAX_VIDEO_BYTES", str(5 * 1024 * 1024))
    url = start_emulator(
        link_fault_rate=1.0,
        link_faults=("html", "truncated", "foreign_host", "private_redirect", "oversize"),
        link_fault_heal_after=1,
    )
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, url, api_key)
    assert submit(resources).success
    wait_for_tasks(resources)
    first = save_videos(resources)
    assert first.success  # the day's table is written whatever the links did
    table = read_table(data, "generated_videos", DAY)
    sent = table[table.status != "rejected"]
    faults = {t["id"]: t["link_fault"] for t in emulator_tasks(url)}
    assert len(set(faults.values())) >= 3
    assert (sent.status == "download_failed").all(), sent[["status", "error_message"]]
    assert sent.error_message.str.len().gt(20).all()
    assert (sent.credits_charged == sent.credits_reserved).all()  # the vendor charged them
    assert sent.video_uri.isna().all() and not list((data / "videos").rglob("*.mp4"))
    assert [c.passed for c in first.get_asset_check_evaluations()] == [False]
    ledger = resources["pipeline"].ledger()
    with ledger.db.transaction() as db:  # the retry delay has passed
        db.execute(sql("UPDATE tasks SET next_poll_at = 0 WHERE status = 'download_failed'"))
    assert save_videos(resources).success
    table = read_table(data, "generated_videos", DAY)
    sent = table[table.status != "rejected"]
    assert (sent.status == "completed").all(), sent[["status", "error_message"]]
    for row in sent.itertuples():
        assert measure_video_output(row.video_uri)["width"] == row.expected_width


def test_a_task_that_gave_no_link_is_asked_for_one_again_and_its_video_stored(
    tmp_path, start_emulator, api_key
):
    """Polls that failed (the API down a while) counted as answers without a link, so a single
    such answer ended the row download_failed with no link, which no run ever tried again: a
    paid video lost (helper-48)."""
    url = start_emulator(
        poll_fault_rate=1.0, poll_faults=("completed_without_results",), poll_fault_polls=1
    )
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, url, api_key)
    assert submit(resources).success
    deadline = time.monotonic() + 60
    while any(t["status"] != "completed" for t in emulator_tasks(url)):
        assert time.monotonic() < deadline, emulator_tasks(url)
        time.sleep(0.2)
    ledger = resources["pipeline"].ledger()
    with ledger.db.transaction() as db:  # four polls failed while the API was down
        db.execute(sql("UPDATE tasks SET poll_errors = 4, next_poll_at = 0"))
    wait_for_tasks(resources)
    sent = [r for r in ledger.rows(DAY) if r.task_id]
    assert {(r.status, r.error_code, r.result_url) for r in sent} == {
        (Status.DOWNLOAD_FAILED, "no_result_link", None)
    }
    assert all("asked for one again" in r.error_message for r in sent)

    assert save_videos(resources).success

    table = read_table(data, "generated_videos", DAY)
    stored = table[table.status != "rejected"]
    assert len(stored) == len(sent)
    assert (stored.status == "completed").all(), stored[["status", "error_message"]]
    for row in stored.itertuples():
        assert measure_video_output(row.video_uri)["width"] == row.expected_width
    assert [t["poll_faults_served"] for t in emulator_tasks(url)] == [1] * len(sent)


def _sample_day_saved(tmp_path, url: str, api_key: str):
    """The sample day submitted, its tasks waited for and its videos saved: the save's result
    and the day's `generated_videos` table."""
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, url, api_key)
    assert submit(resources).success
    wait_for_tasks(resources)
    return save_videos(resources), read_table(data, "generated_videos", DAY)


def test_a_vendor_reserving_more_than_our_table_shows_as_drift_in_the_cost_tables(
    tmp_path, start_emulator, api_key
):
    # The vendor's standard 720p rate without reference video is 15.0 here, ours 13.5 (NOTES.md):
    # each such 5 s video is reserved 7.5 credits more than estimated; nothing else drifts.
    ours = PriceTable.load(EMULATOR_PRICES)  # the bundled table, and an assumed mini tier
    theirs = json.loads(json.dumps(ours.credits_per_second))
    theirs["standard"]["without_reference_video"]["720p"] = 15.0
    url = start_emulator(price_table=PriceTable(theirs, ours.money_per_credit))
    result, table = _sample_day_saved(tmp_path, url, api_key)
    sent = table[table.task_id.notna()]
    no_reference_video = sent.request_json.map(lambda body: "video_urls" not in json.loads(body))
    standard = ~sent.model.str.contains("fast")
    drifting = sent[standard & (sent.quality == "720p") & no_reference_video]
    assert len(drifting) >= 1
    drift = (sent.credits_reserved - sent.credits_estimated).round(4)
    assert drift[drifting.index].tolist() == [1.5 * d for d in drifting.duration]
    assert (drift.drop(drifting.index) == 0).all()
    (videos,) = [m.metadata for m in result.asset_materializations_for_node("generated_videos")]
    assert videos["credits_drift"].value == pytest.approx(1.5 * drifting.duration.sum())


def test_a_whole_video_of_the_wrong_size_is_kept_but_fails_the_videos_check(
    tmp_path, start_emulator, api_key, capsys
):
    """Kept (paid for, and perhaps of use) and named by the check; `run`'s summary said only
    "N completed" and exited 0 (helper-42's chaos runs)."""
    from seedance_pipeline.reports import print_run_summary

    url = start_emulator(link_fault_rate=1.0, link_faults=("wrong_video",))
    result, table = _sample_day_saved(tmp_path, url, api_key)
    done = table[table.status == "completed"]
    assert len(done) == len(table[table.task_id.notna()])  # delivered, charged, measured
    assert (done.has_audio != done.generate_audio).all()  # the emulator flipped the audio
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["mismatched"].value == len(done)
    (videos,) = result.asset_materializations_for_node("generated_videos")
    assert videos.metadata["check_problems"].value == len(done)  # on the day's own record
    capsys.readouterr()
    print_run_summary(DAY, table)
    said = capsys.readouterr().out
    assert f"{DAY}: {len(done)} stored video(s) are not what was asked" in said
    first = done.iloc[0]
    asked = f"asked {first.expected_width}x{first.expected_height} {first.duration}s"
    assert f"  {first.prompt_id}: got {first.width}x{first.height}" in said and asked in said


@pytest.mark.parametrize("ctrl_cs", [1, 2])
def test_an_interrupted_submission_sends_no_more_and_records_what_it_sent(tmp_path, ctrl_cs):
    """Terminate in the UI, or Ctrl-C on `run`, arrives as an interrupt in the main thread.
    The prompts still waiting for a submit thread used to be sent anyway: all of them. Then a
    second Ctrl-C while the first waited for the creates under way ended that wait: the run
    closed its client under them (tasks made but `unknown`), and the follower gave up claims
    being released (`unknown` with no task) (helper-56)."""
    sent: list[int] = []
    lock = threading.Lock()

    def vendor(request: httpx.Request) -> httpx.Response:
        with lock:
            sent.append(1)
            n = len(sent)
        if n == 5:
            for _ in range(ctrl_cs):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.3)
        time.sleep(1 if ctrl_cs > 1 else 0.05)  # the second comes while creates are answered
        task = {"id": f"task-unified-1774857405-{n:08d}", "status": "pending", "model": "m"}
        return httpx.Response(200, json=task)

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    body = {"model": "seedance-2.0-text-to-video", "prompt": "a cat", "duration": 4}
    planned = [Planned(f"p{i:02d}", body, 25.004) for i in range(40)]
    transport = httpx.MockTransport(vendor)
    with (
        Client("k", base_url="https://api.test.invalid", transport=transport) as client,
        pytest.raises(KeyboardInterrupt),
    ):
        submit_all(ledger, client, DAY, planned)
    assert 5 <= len(sent) <= 5 + SUBMIT_WORKERS  # those under way when it came, no more
    rows = ledger.rows(DAY)  # as it returns: every create sent is recorded with its task
    assert len(rows) == len(sent) and all(r.task_id and r.status == "pending" for r in rows)


def test_a_create_answer_holding_text_no_database_stores_is_recorded_with_its_task(tmp_path):
    """A lone surrogate in a create's status failed the write of its task: retried as a ledger
    outage for two minutes, then the run crashed, the paid task left `unknown` (helper-70)."""

    def vendor(request: httpx.Request) -> httpx.Response:
        task = {"id": "task-unified-1774857405-00000001", "status": "pend\ud800ing"}
        return httpx.Response(200, text=json.dumps(task))  # the surrogate escaped, as JSON may

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    body = {"model": "seedance-2.0-text-to-video", "prompt": "a cat", "duration": 4}
    with Client(
        "k", base_url="https://api.test.invalid", transport=httpx.MockTransport(vendor)
    ) as c:
        submit_all(ledger, c, DAY, [Planned("p1", body, 25.004)])
    (row,) = ledger.rows(DAY)
    assert (row.status, row.task_id) == ("pending", "task-unified-1774857405-00000001")


def test_running_out_of_credits_counts_the_tasks_answered_after_it(tmp_path):
    """The 402's message counted the tasks sent before it, while creates were still on the
    wire: "stopped after 0 new task(s)" with 3 more paid (helper-71)."""
    arrived = [0]
    lock, answered = threading.Lock(), threading.Event()

    def vendor(request: httpx.Request) -> httpx.Response:
        with lock:
            arrived[0] += 1
            n = arrived[0]
        if n >= SUBMIT_WORKERS:  # the last of those sent at once: the credits ran out
            # (and stay out: a create sent while the 402 is being handled is refused too)
            answered.set()
            error = {"code": "insufficient_quota", "message": "Please top up", "type": "x"}
            return httpx.Response(402, json={"error": error})
        answered.wait(10)  # the others answer after it
        if n == 1:  # one through a gateway that lost the answer
            return httpx.Response(502, text="Bad Gateway")
        task = {"id": f"task-unified-1774857405-{n:08d}", "status": "pending"}
        return httpx.Response(200, json={**task, "usage": {"credits_reserved": 333.3333}})

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    body = {"model": "seedance-2.0-text-to-video", "prompt": "a cat", "duration": 4}
    planned = [Planned(f"p{i:02d}", body, 25.004) for i in range(10)]
    with (
        Client(
            "k", base_url="https://api.test.invalid", transport=httpx.MockTransport(vendor)
        ) as c,
        pytest.raises(submission.SubmissionStopped) as stopped,
    ):
        submit_all(ledger, c, DAY, planned)
    made = [r for r in ledger.rows(DAY) if r.task_id]
    assert len(made) == SUBMIT_WORKERS - 2
    said = str(stopped.value)  # 2 x 333.3333, as the vendor's answers said
    assert (
        f"stopped after {len(made)} new task(s), reserving 666.6666 credits, and 1 request(s) "
        "whose answer was lost (each may have made a task); top up"
    ) in said


def test_an_interrupt_while_the_creates_are_queued_sends_none_of_those_queued(
    tmp_path, start_emulator, api_key, monkeypatch
):
    """The prompts were queued for the submit threads outside the step's guard: an interrupt
    then neither halted the creates nor emptied the queue, and every prompt queued was sent,
    each waiting its turn (helper-56)."""

    class InterruptedAtTheNinth(submission.ThreadPoolExecutor):
        queued = 0

        def submit(self, *args, **kwargs):
            InterruptedAtTheNinth.queued += 1
            if InterruptedAtTheNinth.queued == 9:
                raise KeyboardInterrupt
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(submission, "ThreadPoolExecutor", InterruptedAtTheNinth)
    url = start_emulator(rate_limit=1.0)  # a create a second: the others wait their turn
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    body = {"model": "seedance-2.0-fast-text-to-video", "prompt": "a cat", "duration": 4}
    planned = [Planned(f"p{i:02d}", body, 25.004) for i in range(40)]
    with Client(api_key, base_url=url) as client, pytest.raises(KeyboardInterrupt):
        submit_all(ledger, client, DAY, planned)
    made = emulator_tasks(url)
    assert len(made) <= SUBMIT_WORKERS  # those on the wire, at most
    assert sorted(r.task_id for r in ledger.rows(DAY)) == sorted(t["id"] for t in made)


def test_an_interrupted_submission_ends_at_once_and_sends_no_create_waiting_out_a_429(
    tmp_path, start_emulator, api_key
):
    """Ctrl-C while the submit threads waited out the API's 429s: they went on trying, and
    each made a paid task after the interrupt (helper-53). Then they gave up only once their
    wait was over: the run took that long to end, and a second Ctrl-C meanwhile killed it with
    their claims open (`unknown`, to resolve by hand). A create refused with a 429 made no
    task: once interrupted, it gives up at once."""
    url = start_emulator(rate_limit=0.05)  # a create every 20 s: the others wait their turn
    interrupted: list[tuple[float, int]] = []

    def interrupt_once_one_is_made() -> None:
        while not emulator_tasks(url):
            time.sleep(0.05)
        time.sleep(0.5)  # the other creates were refused and wait for their retry
        interrupted.append((time.monotonic(), len(emulator_tasks(url))))
        os.kill(os.getpid(), signal.SIGINT)

    ledger = Ledger(tmp_path / "ledger.sqlite3")
    body = {"model": "seedance-2.0-fast-text-to-video", "prompt": "a cat", "duration": 4}
    planned = [Planned(f"p{i:02d}", body, 25.004) for i in range(8)]
    threading.Thread(target=interrupt_once_one_is_made, daemon=True).start()
    with Client(api_key, base_url=url) as client, pytest.raises(KeyboardInterrupt):
        submit_all(ledger, client, DAY, planned)
    (at, made_then), made = interrupted[0], emulator_tasks(url)
    assert time.monotonic() - at < 12  # not the 20 s the waits had left
    assert len(made) <= made_then + 1  # one on the wire when it came, at most
    rows = ledger.rows(DAY)  # every task made is recorded; no claim is left open
    assert sorted(r.task_id for r in rows) == sorted(t["id"] for t in made)
    assert all(r.status != Status.SUBMITTING for r in rows)


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        # A fixed ratio: the sent body says the frame (480p 16:9), whatever the row now asks.
        ({"quality": "480p", "aspect_ratio": "16:9"}, (864, 496)),
        # `adaptive` follows its image, which only the plan measured (portrait: 720x1280).
        ({"quality": "720p", "aspect_ratio": "adaptive", "image_urls": ["https://x/a.png"]}, None),
    ],
)
def test_an_edited_rows_videos_are_checked_against_the_frame_that_was_sent(
    tmp_path, sent, expected
):
    planned = (720, 1280)  # the edited row's plan: 720p of a portrait image
    request = {
        "prompt_id": "p1",
        "scheduled_date": DAY,
        "campaign": None,
        "model": "seedance-2.0-image-to-video",
        "prompt": "edited after it was sent",
        "duration": 4,
        "quality": "720p",
        "aspect_ratio": "adaptive",
        "generate_audio": True,
        "web_search": False,
        "status": "accepted",
        "errors": [],
        "estimated_credits": 1.0,
        "expected_width": planned[0],
        "expected_height": planned[1],
        "request_sha256": "new",
    }
    row = _row(
        request={"model": "seedance-2.0-image-to-video", "duration": 4, **sent},
        request_sha256="old",
        status=Status.COMPLETED,
    )
    videos = build_videos_table(
        pd.DataFrame([request]), [row], LocalVideoStore(tmp_path), DAY, {}
    ).iloc[0]
    assert videos.request_changed
    assert (videos.expected_width, videos.expected_height) == (expected or planned)


def test_a_completed_task_no_answer_reported_usage_for_is_charged_its_estimate(tmp_path):
    """The vendor puts `usage` on "some answers": a task completed without one was charged 0
    in generated_videos and in the cost roll-up, hiding what it cost."""
    from seedance_pipeline.costs import rollup

    request = {
        "prompt_id": "p1",
        "scheduled_date": DAY,
        "campaign": None,
        "model": "seedance-2.0-text-to-video",
        "prompt": "a cat",
        "duration": 5,
        "quality": "720p",
        "aspect_ratio": "16:9",
        "generate_audio": True,
        "web_search": False,
        "status": "accepted",
        "errors": [],
        "estimated_credits": 67.5,
        "expected_width": 1280,
        "expected_height": 720,
        "request_sha256": None,
    }
    row = _row(status=Status.COMPLETED, estimated_credits=67.5, credits_reserved=None)
    videos = build_videos_table(pd.DataFrame([request]), [row], LocalVideoStore(tmp_path), DAY, {})
    assert videos.credits_charged.tolist() == [67.5]
    (costs,) = rollup(videos, []).itertuples()
    assert (costs.credits_charged, costs.credits_reserved, costs.credits_drift) == (67.5, 0, 0)
