"""The sensor's reading of finished days: one videos run per day and state, the run key a
digest of the day's rows that stays what it was before (an upgrade asks for no run again)."""

import hashlib
import json
import os
import time

import pandas as pd
import pytest
from dagster import DagsterRunStatus, build_sensor_context, instance_for_test
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from seedance_pipeline.defs.catalog.assets import prompt_catalog
from seedance_pipeline.defs.generation import sensors
from seedance_pipeline.defs.generation.assets import generation_requests, submitted_tasks
from seedance_pipeline.defs.generation.sensors import STATE_TAG, task_poller
from seedance_pipeline.defs.resources import EvoLinkResource, PipelineResource
from seedance_pipeline.ledger import PollUpdate
from seedance_pipeline.ledger.database import sql
from seedance_pipeline.records import LedgerLost, check_ledger, rebuild, write_record
from seedance_pipeline.s3 import S3Bucket
from seedance_pipeline.statuses import Status
from seedance_pipeline.tables import LocalTableStore

DAY, NEXT_DAY = "2026-11-20", "2026-11-21"
# A day sent on is planned again from its catalog first.
SEND = [prompt_catalog.key, generation_requests.key, submitted_tasks.key]
BODY = {"model": "seedance-2.0-fast-text-to-video", "prompt": "waves", "duration": 4}


@pytest.fixture
def resources(tmp_path) -> dict:
    # Nothing is due for polling in these tests: the API is never asked.
    unused = "http://127.0.0.1:9"
    return {
        "evolink": EvoLinkResource(api_key="sk-test", base_url=unused, files_url=unused),
        "pipeline": PipelineResource(data_dir=str(tmp_path / "data")),
    }


def completed(ledger, day: str, prompt_id: str, task_id: str) -> None:
    assert ledger.claim(day, prompt_id, BODY, 1.0)  # a prompt_id another day sent is refused
    ledger.record_submitted(day, prompt_id, task_id, time.time() + 3600)
    ledger.record_polls([PollUpdate(task_id, status=Status.COMPLETED, result_url="u")])


def settled_days(ledger, days: list[str]) -> None:
    for day in days:
        completed(ledger, day, f"p1-{day}", f"task-{day}")
        ledger.set_submission_complete(day, True)


def tick(instance, resources, cursor: str | None = None):
    return task_poller(build_sensor_context(instance=instance, resources=resources, cursor=cursor))


def requests(instance, resources) -> list:
    return list(tick(instance, resources).run_requests)


def serve(instance, request, status: DagsterRunStatus = DagsterRunStatus.SUCCESS) -> None:
    """A run asked for by `request` that ended with `status`."""
    instance.add_run(
        DagsterRun(job_name="run", run_id=make_new_run_id(), status=status, tags=request.tags)
    )


def test_a_days_run_is_keyed_by_the_digest_of_its_rows_as_before(resources):
    ledger = resources["pipeline"].ledger()
    completed(ledger, DAY, "b-stored", "task-b")
    ledger.record_video(DAY, "b-stored", "videos/b.mp4", "0" * 64, 10, {})
    completed(ledger, DAY, "a-lost", "task-a")
    ledger.record_download_failed(
        DAY, "a-lost", Status.DOWNLOAD_FAILED, "link_expired", "gone", retry_at=0
    )
    ledger.claim(DAY, "c-unknown", BODY, 1.0)
    ledger.record_outcome_unknown(DAY, "c-unknown", "the answer was lost")
    ledger.set_submission_complete(DAY, True)
    # The digest as the sensor has always written it, worked out by hand.
    rows = [
        ("a-lost", 1, "task-a", "download_failed"),
        ("b-stored", 1, "task-b", "completed"),
        ("c-unknown", 1, "", "unknown"),
    ]
    state = hashlib.sha256(repr([*rows, ("a-lost", 1)]).encode()).hexdigest()[:16]

    with instance_for_test() as instance:
        [request] = requests(instance, resources)

    assert request.partition_key == DAY
    assert request.run_key == f"videos:{DAY}:{state}"
    assert request.tags == {STATE_TAG: f"{DAY}:{state}"}


def test_only_days_without_a_run_for_their_state_are_asked_for(resources):
    ledger = resources["pipeline"].ledger()
    settled_days(ledger, [DAY, NEXT_DAY])

    with instance_for_test() as instance:
        first = {r.partition_key: r for r in requests(instance, resources)}
        assert set(first) == {DAY, NEXT_DAY}
        serve(instance, first[DAY])
        assert [r.partition_key for r in requests(instance, resources)] == [NEXT_DAY]

        completed(ledger, DAY, "p2", "task-late")  # the day changed: its videos are asked again
        again = {r.partition_key: r for r in requests(instance, resources)}
    assert set(again) == {DAY, NEXT_DAY}
    assert again[DAY].tags != first[DAY].tags


def test_older_days_are_read_in_turn_when_a_tick_has_no_time_for_all(resources, monkeypatch):
    monkeypatch.setattr(sensors, "NEWEST_DAYS", 2)
    monkeypatch.setattr(sensors, "HISTORY_SECONDS", -1.0)  # no time: one older day a tick
    ledger = resources["pipeline"].ledger()
    days = [f"2026-11-0{d}" for d in range(1, 7)]  # two newest, four older
    settled_days(ledger, days)

    with instance_for_test() as instance:
        asked, cursor = [], None
        for _ in range(6):
            result = tick(instance, resources, cursor)
            asked.append(sorted(r.partition_key for r in result.run_requests))
            cursor = result.cursor
            for request in result.run_requests:  # each run asked for is served
                serve(instance, request)
            if len(asked) == 5:
                completed(ledger, "2026-11-02", "p2", "task-late")  # an old day changes
        # The newest two and the oldest; then one older day a tick; the fifth tick reads the
        # oldest again (served: nothing to ask); the sixth finds the change.
        assert asked == [
            ["2026-11-01", "2026-11-05", "2026-11-06"],
            ["2026-11-02"],
            ["2026-11-03"],
            ["2026-11-04"],
            [],
            ["2026-11-02"],
        ]
        assert json.loads(cursor)["read_last"] == "2026-11-02"


def test_a_tick_with_time_reads_every_settled_day(resources, monkeypatch):
    monkeypatch.setattr(sensors, "NEWEST_DAYS", 2)
    ledger = resources["pipeline"].ledger()
    days = [f"2026-11-0{d}" for d in range(1, 7)]
    settled_days(ledger, days)

    with instance_for_test() as instance:
        result = tick(instance, resources, "2026-11-02")

    assert sorted(r.partition_key for r in result.run_requests) == days
    # read round to the day it started after (a cursor from before it was JSON)
    assert json.loads(result.cursor)["read_last"] == "2026-11-02"


@pytest.mark.parametrize("kind", ["submit", "resubmit"])
def test_a_days_submission_that_failed_is_asked_for_again_a_bounded_number_of_times(
    resources, kind, capfd
):
    """`submit`: the last submission step could not send every prompt (the API was down) and
    ran out of retries; `resubmit`: a failed task is due for another attempt. Either way the
    completed tasks' videos are stored only once the day is complete, so a failed run must not
    end the matter (a failed run's key used to be asked for again, and Dagster skipped it)."""
    ledger = resources["pipeline"].ledger()
    completed(ledger, DAY, "p1", "task-1")
    if kind == "submit":
        ledger.set_submission_complete(DAY, False)
    else:
        ledger.claim(DAY, "p2", BODY, 1.0)
        ledger.record_submitted(DAY, "p2", "task-2", time.time() + 3600)
        ledger.record_polls([PollUpdate("task-2", Status.FAILED, error_code="service_error")])
        ledger.set_submission_complete(DAY, True)
    pipeline = resources["pipeline"]
    resources = {
        **resources,
        "pipeline": PipelineResource(
            data_dir=pipeline.data_dir, max_resubmissions=int(kind == "resubmit")
        ),
    }

    keys = []
    with instance_for_test() as instance:
        for _ in range(sensors.MAX_VIDEO_RUNS + 1):
            asked = requests(instance, resources)
            if not asked:
                break
            [request] = asked
            assert request.partition_key == DAY
            assert request.asset_selection == SEND
            keys.append(request.run_key)
            serve(instance, request, DagsterRunStatus.FAILURE)
    assert len(keys) == sensors.MAX_VIDEO_RUNS == len(set(keys))
    assert keys[0].startswith(f"{kind}:{DAY}:") and keys[1] == f"{keys[0]}:retry1"
    assert (
        "prompt_catalog, generation_requests, submitted_tasks failed 5 times"
        in capfd.readouterr().err
    )


def test_a_days_submission_waits_while_one_runs_and_after_one_was_terminated(resources):
    """A run submitting the day (started by hand, untagged) may still send its prompts; a run
    terminated from the UI was its user stopping the spending: only they start it again."""
    ledger = resources["pipeline"].ledger()
    completed(ledger, DAY, "p1", "task-1")
    ledger.set_submission_complete(DAY, False)

    def day_run(instance, status: DagsterRunStatus) -> None:
        instance.add_run(
            DagsterRun(
                job_name="run",
                run_id=make_new_run_id(),
                status=status,
                tags={sensors.PARTITION_TAG: DAY},
                asset_selection=frozenset({submitted_tasks.key}),
            )
        )

    with instance_for_test() as instance:
        day_run(instance, DagsterRunStatus.STARTED)
        assert requests(instance, resources) == []
    with instance_for_test() as instance:
        day_run(instance, DagsterRunStatus.CANCELED)
        assert requests(instance, resources) == []
        day_run(instance, DagsterRunStatus.FAILURE)  # materialised again by hand, and failed
        [request] = requests(instance, resources)
        assert request.run_key.startswith(f"submit:{DAY}:")


def test_a_task_completed_without_a_result_link_does_not_stop_the_sensor(resources):
    """Such a row ends download_failed with no retry time; each tick compared that None with
    the clock and failed, so no videos run was asked for any day."""
    ledger = resources["pipeline"].ledger()
    ledger.claim(DAY, "no-link", BODY, 1.0)
    ledger.record_submitted(DAY, "no-link", "task-no-link", time.time() + 3600)
    ledger.record_polls(
        [PollUpdate("task-no-link", status=Status.DOWNLOAD_FAILED, error_code="no_result_link")]
    )
    settled_days(ledger, [NEXT_DAY])
    ledger.set_submission_complete(DAY, True)
    with instance_for_test() as instance:
        assert sorted(r.partition_key for r in requests(instance, resources)) == [DAY, NEXT_DAY]


def test_a_ledger_day_before_the_partitions_start_is_named_not_fatal(resources, caplog):
    """SEEDANCE_PARTITIONS_START moved past a day the ledger holds: asking for its run raised
    DagsterUnknownPartitionError, and no day got its videos run."""
    settled_days(resources["pipeline"].ledger(), ["2026-10-20", DAY])
    with instance_for_test() as instance:
        context = build_sensor_context(instance=instance, resources=resources)
        context.log.addHandler(caplog.handler)  # the sensor's log: not under the root logger
        assert [r.partition_key for r in task_poller(context).run_requests] == [DAY]
    assert "outside the partitions, whose runs cannot be asked for: 2026-10-20" in caplog.text
    assert "SEEDANCE_PARTITIONS_START is 2026-11-01: set it to 2026-10-20 or before" in caplog.text


def test_a_download_retry_planned_by_a_clock_a_day_fast_is_due_now(resources):
    """Planned while the clock was a day fast, the retry waited a day once the clock was put
    right: past the video's link."""
    ledger = resources["pipeline"].ledger()
    completed(ledger, DAY, "p1", "task-1")
    ledger.record_download_failed(
        DAY, "p1", Status.DOWNLOAD_FAILED, "http_error", "HTTP 503", retry_at=time.time() + 86400
    )
    ledger.set_submission_complete(DAY, True)
    assert [r.prompt_id for r in ledger.rows_to_store(DAY, time.time())] == ["p1"]
    assert ledger.day_state(DAY, time.time()).to_store == 1
    with instance_for_test() as instance:
        assert [r.partition_key for r in requests(instance, resources)] == [DAY]


def test_a_prompt_forgotten_by_resolve_is_sent_by_the_sensor(resources):
    """`resolve --forget` said "the next run submits it"; the day stayed noted complete, so the
    sensor asked for its videos run, which failed on the prompt never sent, five times."""
    ledger = resources["pipeline"].ledger()
    completed(ledger, DAY, "p1", "task-1")
    assert ledger.claim(DAY, "p2", BODY, 1.0)
    ledger.record_outcome_unknown(DAY, "p2", "the create's answer was lost")
    ledger.set_submission_complete(DAY, True)
    ledger.resolve(DAY, "p2", None)  # --forget
    with instance_for_test() as instance:
        [request] = requests(instance, resources)
    assert request.partition_key == DAY and request.asset_selection == SEND


def test_a_tick_whose_polls_failed_says_why(resources, capfd):
    """The tick's log said only `1 poll error(s)`: the reason (the API down) was on the
    daemon's stderr, not in the UI's tick history."""
    ledger = resources["pipeline"].ledger()
    assert ledger.claim(DAY, "p1", BODY, 1.0)
    ledger.record_submitted(DAY, "p1", "task-unified-1-abcdefgh", time.time() - 1)  # due
    with instance_for_test() as instance:
        tick(instance, resources)
    said = capfd.readouterr().err
    assert "1 poll error(s); the first: GET http://127.0.0.1:9/v1/tasks/" in said, said
    assert "ConnectError" in said


def _records_of(ledger, tables, days: list[str]) -> None:
    for day in days:
        write_record(ledger, tables, day)


def _lost_from_the_ledger(ledger, day: str) -> None:
    """As a copy of the ledger from before the day was sent, put back."""
    with ledger.db.transaction() as db:
        db.execute(sql("DELETE FROM tasks WHERE partition = :p"), {"p": day})
        db.execute(sql("DELETE FROM partitions WHERE partition = :p"), {"p": day})


def _slow_records(monkeypatch) -> list[str]:
    """Each read of a record takes 50 ms, as an S3 GET; the days read, in order."""
    reads = []
    read = LocalTableStore.read

    def slow(self, asset, partition):
        if asset == "submissions":
            reads.append(partition)
            time.sleep(0.05)
        return read(self, asset, partition)

    monkeypatch.setattr(LocalTableStore, "read", slow)
    return reads


def _said_lost(day: str) -> str:
    return f"{day}: submissions recorded there are not in the ledger"


@pytest.mark.parametrize("kept", [True, False], ids=["checked_before", "reset"])
def test_checking_the_records_against_the_ledger_keeps_within_a_tick(
    resources, monkeypatch, capfd, kept
):
    """The newest of 150 days lost from the ledger (a copy put back). Every tick read every
    day's record, with no end, until the ledger was restored: on S3, two years of days pass
    Dagster's 60 s sensor timeout, and a tick that fails asks for no run for any day
    (helper-65). Now only records written since they agreed, or of days the ledger holds
    fewer tasks of, are read; with nothing kept (a reset), the newest first, for
    HISTORY_SECONDS."""
    pipeline = resources["pipeline"]
    ledger, tables = pipeline.ledger(), pipeline.tables()
    days = [str(d.date()) for d in pd.date_range("2026-06-01", periods=150)]
    settled_days(ledger, days)
    _records_of(ledger, tables, days)
    with instance_for_test() as instance:
        cursor = tick(instance, resources).cursor if kept else None
        _lost_from_the_ledger(ledger, days[-1])
        reads = _slow_records(monkeypatch)
        started = time.monotonic()
        tick(instance, resources, cursor)
        took = time.monotonic() - started
    assert took < sensors.HISTORY_SECONDS + 2
    assert reads[0] == days[-1] and (len(reads) == 1 if kept else len(reads) < len(days))
    assert _said_lost(days[-1]) in capfd.readouterr().err


@pytest.mark.parametrize("cursor", [None, json.dumps({"read_last": None, "tasks_made": 1})])
def test_a_reset_cursor_leaves_no_recorded_day_unchecked_for_good(
    resources, monkeypatch, capfd, cursor
):
    """With nothing kept (a reset, or a cursor of this stop's first form), a tick checked the
    newest records for HISTORY_SECONDS and took the rest as agreeing: an older day sent today
    (a backfill, its links alive), lost from the ledger, was never checked (helper-66)."""
    pipeline = resources["pipeline"]
    ledger, tables = pipeline.ledger(), pipeline.tables()
    days = [str(d.date()) for d in pd.date_range("2026-11-01", periods=20)]
    settled_days(ledger, days)
    _records_of(ledger, tables, days)
    _lost_from_the_ledger(ledger, days[0])
    _slow_records(monkeypatch)
    monkeypatch.setattr(sensors, "HISTORY_SECONDS", 0.2)  # about 4 records a tick
    with instance_for_test() as instance:
        for _ in range(12):
            cursor = tick(instance, resources, cursor).cursor
    assert _said_lost(days[0]) in capfd.readouterr().err


def test_a_copy_put_back_before_the_sensor_saw_a_days_tasks_is_noticed(resources, capfd):
    """The next day sent and recorded while no tick ran (the daemon down, or `run` alone),
    then the copy from before it put back: no count of that day had fallen, so its record was
    never read, its paid tasks never polled (helper-66). A record written since it was last
    found to agree is read."""
    pipeline = resources["pipeline"]
    ledger, tables = pipeline.ledger(), pipeline.tables()
    settled_days(ledger, [DAY])
    _records_of(ledger, tables, [DAY])
    with instance_for_test() as instance:
        cursor = tick(instance, resources).cursor
        settled_days(ledger, [NEXT_DAY])  # sent with no tick between
        _records_of(ledger, tables, [NEXT_DAY])
        _lost_from_the_ledger(ledger, NEXT_DAY)
        capfd.readouterr()
        for _ in range(2):  # said each tick
            cursor = tick(instance, resources, cursor).cursor
            assert _said_lost(NEXT_DAY) in capfd.readouterr().err


def test_an_unreadable_record_does_not_hide_a_day_the_ledger_lost(resources, capfd):
    """The check stopped at a truncated record of an old day: the days it had found lacking
    were dropped, and each tick named only the file (helper-66)."""
    pipeline = resources["pipeline"]
    ledger, tables = pipeline.ledger(), pipeline.tables()
    days = ["2026-11-10", DAY]
    settled_days(ledger, days)
    _records_of(ledger, tables, days)
    tables.path("submissions", days[0]).write_bytes(b"PAR1 truncated")
    _lost_from_the_ledger(ledger, DAY)
    with instance_for_test() as instance:
        capfd.readouterr()
        tick(instance, resources)
    said = capfd.readouterr().err
    assert "the day's record of submissions cannot be read" in said and _said_lost(DAY) in said


def test_records_that_cannot_be_listed_do_not_fail_the_tick(resources, monkeypatch, capfd):
    """A warehouse not answering (S3 down) failed every tick, asking for no run of any day
    (helper-66)."""
    settled_days(resources["pipeline"].ledger(), [DAY])

    def unlisted(self, asset):
        raise OSError("the warehouse cannot be listed")

    monkeypatch.setattr(LocalTableStore, "versions", unlisted)
    with instance_for_test() as instance:
        assert len(tick(instance, resources).run_requests) == 1
    assert "the warehouse cannot be listed" in capfd.readouterr().err


@pytest.mark.parametrize("kept", [True, False], ids=["checked_before", "reset"])
def test_an_unknown_row_lost_with_a_copy_put_back_is_noticed(resources, capfd, kept):
    """p2's create answer was lost (`unknown`: it may have made a paid task); the copy put
    back is from before p2 was claimed. Counting tasks only, the day's count did not fall, and
    its record was not read again (helper-67): rows are counted too."""
    pipeline = resources["pipeline"]
    ledger, tables = pipeline.ledger(), pipeline.tables()
    settled_days(ledger, [DAY])
    assert ledger.claim(DAY, "p2", BODY, 1.0)
    ledger.record_outcome_unknown(DAY, "p2", "the answer was lost")
    write_record(ledger, tables, DAY)
    with instance_for_test() as instance:
        cursor = tick(instance, resources).cursor if kept else None
        assert _said_lost(DAY) not in capfd.readouterr().err  # they agreed
        with ledger.db.transaction() as db:
            db.execute(sql("DELETE FROM tasks WHERE prompt_id = 'p2'"))
        tick(instance, resources, cursor)
    assert _said_lost(DAY) in capfd.readouterr().err


@pytest.mark.parametrize("store", ["local", "s3"])
def test_a_record_that_cannot_be_fetched_does_not_fail_the_tick(
    tmp_path, resources, monkeypatch, capfd, request, store
):
    """The warehouse lists, but reading a record fails (S3's GET past its retries, a file the
    sensor may not read): the tick failed, asking for no run of any day (helper-67)."""
    if store == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        resources["pipeline"] = PipelineResource(data_dir=str(tmp_path / "s3"), s3_bucket=bucket)
        monkeypatch.setattr(S3Bucket, "get_bytes", _refused)
    else:
        monkeypatch.setattr(LocalTableStore, "read", _refused)
    pipeline = resources["pipeline"]
    settled_days(pipeline.ledger(), [DAY])
    frame = pd.DataFrame([{"prompt_id": "p1", "attempt": 1}])
    pipeline.tables().write(frame, "submissions", DAY)
    with instance_for_test() as instance:
        assert len(tick(instance, resources).run_requests) == 1
    assert "refused: the record cannot be fetched" in capfd.readouterr().err


def _refused(self, *args):
    raise OSError("refused: the record cannot be fetched")


def test_a_submission_recorded_while_the_day_is_checked_is_no_false_alarm(
    resources, monkeypatch, capfd
):
    """The check read the ledger's rows, then the record: a step of another run ending between
    the two (its task made, the record written) left the record ahead of the rows read, and an
    error said the ledger was lost (helper-67). The record is read first."""
    pipeline = resources["pipeline"]
    ledger, tables = pipeline.ledger(), pipeline.tables()
    completed(ledger, DAY, "p1", "task-1")
    _records_of(ledger, tables, [DAY])
    rows, raced = ledger.rows, []

    def racing(partition):
        found = rows(partition)
        if not raced:  # another run's step ends just after
            raced.append(partition)
            completed(ledger, DAY, "p2", "task-2")
            write_record(ledger, tables, DAY)
        return found

    monkeypatch.setattr(ledger, "rows", racing)
    monkeypatch.setattr(type(pipeline), "ledger", lambda self: ledger)
    with instance_for_test() as instance:
        capfd.readouterr()
        tick(instance, resources)
    assert raced == [DAY] and _said_lost(DAY) not in capfd.readouterr().err


def test_a_record_rewritten_at_the_same_mtime_is_read_again(resources, capfd):
    """Its version was its mtime alone: written again within the file system's timestamp
    granularity (1 s on some), or its mtime kept by a copy, the new record was taken for the
    one that agreed, and a copy of the ledger put back went unnoticed (helper-67)."""
    pipeline = resources["pipeline"]
    ledger, tables = pipeline.ledger(), pipeline.tables()
    completed(ledger, DAY, "p1", "task-1")
    _records_of(ledger, tables, [DAY])
    record = tables.path("submissions", DAY)
    with instance_for_test() as instance:
        cursor = tick(instance, resources).cursor
        first = record.stat().st_mtime_ns
        completed(ledger, DAY, "p2", "task-2")
        _records_of(ledger, tables, [DAY])
        os.utime(record, ns=(first, first))
        with ledger.db.transaction() as db:  # the copy from before p2, put back: as many rows
            db.execute(sql("DELETE FROM tasks WHERE prompt_id = 'p2'"))
        completed(ledger, DAY, "p3", "task-3")  # and a task sent since: as many tasks
        capfd.readouterr()
        tick(instance, resources, cursor)
    assert _said_lost(DAY) in capfd.readouterr().err


def test_a_claim_released_after_another_run_recorded_it_open_is_no_lasting_alarm(resources, capfd):
    """Two runs of the day: A's step records B's open claim of p2 `unknown`; B's create
    provably made no task, and B releases the claim. The record stayed ahead of the ledger
    for good: B's own record refused to go backwards (LedgerLost, the day stopped), and the
    sensor said each tick that the ledger was lost (helper-67). B's record now leaves out
    what B released."""
    pipeline = resources["pipeline"]
    ledger, tables = pipeline.ledger(), pipeline.tables()
    other = pipeline.ledger()  # run B
    completed(ledger, DAY, "p1", "task-1")
    assert other.claim(DAY, "p2", BODY, 1.0)
    write_record(ledger, tables, DAY)  # run A's step ends
    other.release(DAY, "p2")
    write_record(other, tables, DAY)  # run B's step ends
    with instance_for_test() as instance:
        capfd.readouterr()
        tick(instance, resources)
    assert _said_lost(DAY) not in capfd.readouterr().err
    assert set(tables.read("submissions", DAY).prompt_id) == {"p1"}


def test_a_released_claim_another_worker_recorded_open_last_stops_no_process(
    resources, monkeypatch, capfd
):
    """B reads the ledger while A's claim of p2 is open; A's create provably makes no task,
    A releases the claim and records the day; B's record lands last, listing the claim
    `unknown`. Only A's process knew the claim was released: every later run of the day
    refused to send (LedgerLost, on a healthy ledger) until `rebuild-ledger`, which put the
    claim back `unknown`, then `resolve --forget` (helper-75). The ledger keeps it now."""
    pipeline = resources["pipeline"]
    run_a, run_b, later = pipeline.ledger(), pipeline.ledger(), pipeline.ledger()
    tables = pipeline.tables()
    completed(run_b, DAY, "p1", "task-1")
    assert run_a.claim(DAY, "p2", BODY, 1.0)
    seen_by_b = run_b.rows(DAY)
    run_a.release(DAY, "p2")
    write_record(run_a, tables, DAY)
    monkeypatch.setattr(run_b, "rows", lambda partition: seen_by_b)
    write_record(run_b, tables, DAY)  # B's upload, last
    monkeypatch.undo()
    assert "p2" in set(tables.read("submissions", DAY).prompt_id)
    check_ledger(later, tables, DAY)  # no LedgerLost, in any process
    with instance_for_test() as instance:
        capfd.readouterr()
        tick(instance, resources)
    assert _said_lost(DAY) not in capfd.readouterr().err
    assert rebuild(later, tables, DAY, pipeline.videos()) == 0  # nor is it put back
    assert [r.prompt_id for r in later.rows(DAY)] == ["p1"]


def test_a_record_write_straddling_resolve_forget_does_not_put_the_prompt_back(
    resources, monkeypatch
):
    """A worker read the ledger with p2 `unknown`; `resolve --forget p2` then deleted it and
    wrote the record without it; the worker wrote p2 back, and every later check of the day
    said the ledger was lost (helper-77). A record written meanwhile is read again."""
    pipeline = resources["pipeline"]
    worker, user = pipeline.ledger(), pipeline.ledger()
    tables = pipeline.tables()
    completed(worker, DAY, "p1", "task-1")
    assert worker.claim(DAY, "p2", BODY, 1.0)
    worker.record_outcome_unknown(DAY, "p2", "the answer was lost")
    write_record(worker, tables, DAY)
    rows, forgot = worker.rows, []

    def rows_then_forget(partition):
        found = rows(partition)
        if not forgot:
            forgot.append(partition)
            user.resolve(DAY, "p2", None)
            write_record(user, tables, DAY, ["p2"])
        return found

    monkeypatch.setattr(worker, "rows", rows_then_forget)
    write_record(worker, tables, DAY)
    assert forgot and set(tables.read("submissions", DAY).prompt_id) == {"p1"}
    check_ledger(pipeline.ledger(), tables, DAY)  # no LedgerLost


def _released_by_b_then_sent_by_c(resources) -> tuple:
    """Run B's claim of p2 refused past its retries (no task) and released; run C's ledger."""
    pipeline = resources["pipeline"]
    run_b, run_c = pipeline.ledger(), pipeline.ledger()
    completed(run_b, DAY, "p1", "task-1")
    assert run_b.claim(DAY, "p2", BODY, 1.0)
    run_b.release(DAY, "p2")
    return run_b, run_c, pipeline.tables()


def _b_ends_once_the_ledger_lost_p2(run_b, tables) -> pd.DataFrame:
    """The ledger put back from before p2 was claimed again; B's step ends: its record keeps
    what the ledger lost, refusing to go backwards, and the day is stopped. The record."""
    with run_b.db.transaction() as db:
        db.execute(sql("DELETE FROM tasks WHERE prompt_id = 'p2'"))
    with pytest.raises(LedgerLost):
        write_record(run_b, tables, DAY)
    with pytest.raises(LedgerLost):
        check_ledger(run_b, tables, DAY)
    return tables.read("submissions", DAY)


def test_a_released_prompt_sent_since_by_another_run_stays_in_the_record(resources):
    """Then C sends p2 (a paid task) and records it, and the ledger is put back from before
    C's claim. B's record left out any recorded row of a prompt it released, task-2 with it:
    the record no longer stopped the day's next run, which paid for p2 again (helper-68).
    Only the open claim another run recorded at the attempt released is left out."""
    run_b, run_c, tables = _released_by_b_then_sent_by_c(resources)
    completed(run_c, DAY, "p2", "task-2")
    write_record(run_c, tables, DAY)
    recorded = _b_ends_once_the_ledger_lost_p2(run_b, tables)
    assert "task-2" in set(recorded.task_id)


def test_a_released_prompt_sent_by_another_run_while_the_record_is_written_is_kept(
    resources, monkeypatch
):
    """C sends p2 and records it between B's read of the ledger and its write: B wrote its
    older rows over C's record, task-2 left out with no word (helper-68). B then refused to
    write, the ledger taken for lost (helper-75); it reads the ledger again instead."""
    run_b, run_c, tables = _released_by_b_then_sent_by_c(resources)
    rows, raced = run_b.rows, []

    def racing(partition):
        found = rows(partition)
        if not raced:
            raced.append(partition)
            completed(run_c, DAY, "p2", "task-2")
            write_record(run_c, tables, DAY)
        return found

    monkeypatch.setattr(run_b, "rows", racing)
    write_record(run_b, tables, DAY)
    assert raced and "task-2" in set(tables.read("submissions", DAY).task_id)


def test_a_lost_row_is_noticed_though_the_days_counts_are_unchanged(resources, capfd):
    """A copy taken while p2's claim was open, put back after p2 was released and p3 sent
    with an unknown outcome: as many rows and tasks as the cursor kept, and the record
    unchanged, so the loss of p3 went unnoticed (helper-68). A digest of the day's
    submissions is kept instead."""
    pipeline = resources["pipeline"]
    ledger, tables = pipeline.ledger(), pipeline.tables()
    completed(ledger, DAY, "p1", "task-1")
    assert ledger.claim(DAY, "p2", BODY, 1.0)
    ledger.release(DAY, "p2")
    assert ledger.claim(DAY, "p3", BODY, 1.0)
    ledger.record_outcome_unknown(DAY, "p3", "the answer was lost")
    write_record(ledger, tables, DAY)
    with instance_for_test() as instance:
        cursor = tick(instance, resources).cursor
        assert _said_lost(DAY) not in capfd.readouterr().err  # they agree
        with ledger.db.transaction() as db:  # the copy put back: p1, and p2's claim open
            db.execute(sql("DELETE FROM tasks WHERE prompt_id = 'p3'"))
        assert ledger.claim(DAY, "p2", BODY, 1.0)
        tick(instance, resources, cursor)
    assert _said_lost(DAY) in capfd.readouterr().err


def test_another_runs_open_claim_at_the_released_attempt_stays_in_the_record(resources):
    """B releases p2 (attempt 1 deleted); C claims p2 again, also at attempt 1, and is killed
    after its create went out (paid); D's step records C's claim open; the ledger is put back
    from before C's claim. B's record dropped C's claim, taken for the one B released, and the
    next run paid for p2 again (helper-69). The claim is told by when it was made."""
    run_b, run_c, tables = _released_by_b_then_sent_by_c(resources)
    run_d = resources["pipeline"].ledger()
    completed(run_d, DAY, "p3", "task-3")
    assert run_c.claim(DAY, "p2", BODY, 1.0)
    write_record(run_d, tables, DAY)
    recorded = _b_ends_once_the_ledger_lost_p2(run_b, tables)
    assert "p2" in set(recorded.prompt_id)
