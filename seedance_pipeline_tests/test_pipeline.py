"""A partition end to end through real Dagster and the emulator over loopback HTTP."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest
from dagster import (
    DagsterInstance,
    DefaultScheduleStatus,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)
from sqlalchemy.exc import OperationalError

from seedance_pipeline import follow
from seedance_pipeline.definitions import defs
from seedance_pipeline.defs.generation.assets import (
    generated_videos,
    generation_requests,
    submitted_tasks,
)
from seedance_pipeline.defs.generation.sensors import task_poller
from seedance_pipeline.ledger import LedgerUnreachable
from seedance_pipeline.ledger.database import sql
from seedance_pipeline.media import measure_video_output
from seedance_pipeline.polling import PollRounds, poll_round
from seedance_pipeline.statuses import Status
from seedance_pipeline.submission import Planned, submit_all
from seedance_pipeline.tables import read_table, table_path

from .client_support import loopback_server
from .pipeline_support import (
    DAY,
    copy_sample_data,
    emulator_tasks,
    make_resources,
    plan_requests,
    save_videos,
    submit,
    videos_table,
    wait_for_tasks,
)

CONTRACT_COLUMNS = [
    "prompt_id",
    "scheduled_date",
    "campaign",
    "model",
    "prompt",
    "duration",
    "quality",
    "aspect_ratio",
    "generate_audio",
    "web_search",
    "task_id",
    "status",
    "error_code",
    "error_message",
    "submitted_at",
    "completed_at",
    "credits_reserved",
    "credits_charged",
    "video_uri",
    "video_sha256",
    "video_bytes",
    "width",
    "height",
    "duration_s",
    "has_audio",
]


@pytest.fixture
def project(tmp_path, emulator, api_key):
    data = copy_sample_data(tmp_path / "data")
    return data, emulator, make_resources(data, emulator, api_key)


def test_partition_end_to_end_lands_table_and_real_videos(project):
    data, url, resources = project
    assert submit(resources).success
    wait_for_tasks(resources)
    result = save_videos(resources)
    assert result.success

    table = read_table(data, "generated_videos", DAY)
    assert set(CONTRACT_COLUMNS) <= set(table.columns)
    assert (table.scheduled_date == DAY).all()
    requests = read_table(data, "generation_requests", DAY)
    assert list(table.prompt_id) == list(requests.prompt_id)
    completed = table[table.status == "completed"]
    assert len(completed) == (requests.status == "accepted").sum() > 0
    for row in completed.itertuples():
        measured = measure_video_output(data / "videos" / DAY / f"{row.prompt_id}.mp4")
        assert (measured["width"], measured["height"]) == (row.expected_width, row.expected_height)
        assert measured["duration_s"] == pytest.approx(row.duration, abs=0.1)
        assert measured["has_audio"] == row.generate_audio
        assert row.video_bytes > 0 and len(row.video_sha256) == 64
    # Other days are untouched.
    assert not table_path(data, "generated_videos", "2026-11-21").exists()
    assert not (data / "videos" / "2026-11-21").exists()
    # The asset check passed.
    assert [c.passed for c in result.get_asset_check_evaluations()] == [True]


def test_rejected_rows_are_never_sent_and_recorded_with_reason(project):
    data, url, resources = project
    assert submit(resources, "2026-11-21").success
    requests = read_table(data, "generation_requests", "2026-11-21")
    rejected = requests[requests.status == "rejected"]
    assert len(rejected) == 2
    assert len(emulator_tasks(url)) == (requests.status == "accepted").sum() > 0
    wait_for_tasks(resources, "2026-11-21")
    assert save_videos(resources, "2026-11-21").success
    table = read_table(data, "generated_videos", "2026-11-21").set_index("prompt_id")
    assert table.loc["d2-i2v-tiny-image", "status"] == "rejected"
    assert "300..6000 px" in table.loc["d2-i2v-tiny-image", "error_message"]
    assert pd.isna(table.loc["d2-i2v-tiny-image", "task_id"])


def test_rematerialising_submits_nothing_twice(project):
    data, url, resources = project
    assert submit(resources).success
    first = {t["id"] for t in emulator_tasks(url)}
    assert submit(resources).success
    result = submit(resources)
    assert result.success
    assert {t["id"] for t in emulator_tasks(url)} == first
    meta = result.asset_materializations_for_node("submitted_tasks")[0].metadata
    assert meta["submitted"].value == 0
    assert meta["already_submitted"].value == len(first)


def test_budget_guard_refuses_partition_before_any_request(tmp_path, emulator, api_key):
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, emulator, api_key, max_credits_per_partition=50)
    result = submit(resources)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    description = failure.step_failure_data.user_failure_data.description
    assert "exceeds the budget of 50" in description and "d1-r2v-square-jingle" in description
    assert emulator_tasks(emulator) == []


def test_sensor_polls_each_task_a_few_times_and_asks_again_only_after_a_failed_run(project):
    from dagster import DagsterRunStatus
    from dagster._core.storage.dagster_run import DagsterRun
    from dagster._core.utils import make_new_run_id

    from seedance_pipeline.defs.generation.sensors import STATE_TAG

    data, url, resources = project
    assert submit(resources).success
    requests: list = []

    def tick(instance) -> list:
        result = task_poller(build_sensor_context(instance=instance, resources=resources))
        return list(result.run_requests)

    with instance_for_test() as instance:
        for _ in range(200):
            requests += tick(instance)
            if requests:
                break
            threading.Event().wait(0.1)
        for _ in range(3):  # later ticks repeat the same run key, which Dagster drops
            requests += tick(instance)
        assert {(r.partition_key, r.run_key) for r in requests} == {(DAY, requests[0].run_key)}
        tags = requests[0].tags

        def add_run(status) -> None:
            run = DagsterRun(job_name="j", run_id=make_new_run_id(), status=status, tags=tags)
            instance.add_run(run)

        add_run(DagsterRunStatus.FAILURE)  # the day's videos run failed: asked again
        again = tick(instance)
        assert [r.run_key for r in again] == [requests[0].run_key + ":retry1"]
        assert again[0].tags[STATE_TAG] == tags[STATE_TAG]
        add_run(DagsterRunStatus.STARTED)  # ... and while that one runs, nothing more
        assert tick(instance) == []
    polls = [r.polls for r in resources["pipeline"].ledger().rows(DAY)]
    assert polls and max(polls) <= 4, polls


def test_videos_completing_while_the_day_is_submitted_are_stored_by_the_submitting_run(
    tmp_path, start_emulator, api_key
):
    """Dagster's path overlaps too: while `submitted_tasks` is still sending (slowly, at one
    create a second), the tasks the sensor finds completed get their videos stored by it."""
    url = start_emulator(rate_limit=1.0)
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, url, api_key)
    ledger, evolink = resources["pipeline"].ledger(), resources["evolink"]
    submitting = threading.Event()
    submitting.set()

    def sensor() -> None:  # the sensor's own polling, every few tenths of a second
        while submitting.is_set():
            poll_round(ledger, evolink.poll_client)
            threading.Event().wait(0.3)

    poller = threading.Thread(target=sensor)
    poller.start()
    try:
        assert submit(resources).success
    finally:
        submitting.clear()
        poller.join()
    rows = [r for r in ledger.rows(DAY) if r.task_id]
    stored = [r for r in rows if r.video_uri]
    assert len(rows) == 6 and len(stored) >= 3, [(r.prompt_id, r.status) for r in rows]
    for row in stored:
        facts = measure_video_output(resources["pipeline"].videos().uri(row.video_uri))
        assert (facts["width"], facts["height"]) == (row.width, row.height)


def test_tasks_falling_due_one_by_one_are_polled_in_a_few_rounds(
    tmp_path, emulator, api_key, monkeypatch
):
    """`run`'s follower: ten tasks due 0.1 s apart are polled in rounds at least 0.5 s apart,
    not a round (and a ledger transaction) each; every task is polled once and stored."""
    resources = make_resources(copy_sample_data(tmp_path / "data"), emulator, api_key)
    ledger, evolink = resources["pipeline"].ledger(), resources["evolink"]
    body = {"model": "seedance-2.0-fast-text-to-video", "prompt": "waves", "duration": 4}
    first_due = time.time() + 0.5  # every task has completed by then
    with evolink.client() as client:
        for i in range(10):
            ledger.claim(DAY, f"p{i}", body, 1.0)
            task = client.create_task(body)
            ledger.record_submitted(DAY, f"p{i}", task.id, first_due + 0.1 * i)
    rounds = []

    class CountedRounds(PollRounds):
        def __call__(self, ledger, **kwargs):
            rounds.append(time.time())
            return super().__call__(ledger, **kwargs)

    monkeypatch.setattr(follow, "PollRounds", CountedRounds)
    follow.follow_day(DAY, ledger, evolink, resources["pipeline"].videos(), threading.Event())

    rows = ledger.rows(DAY)
    assert [(r.status, r.polls, bool(r.video_uri)) for r in rows] == [
        (Status.COMPLETED, 1, True)
    ] * 10
    assert len(rounds) <= 4, [round(t - first_due, 2) for t in rounds]  # 10 without a gap


def test_the_follower_outlasts_a_ledger_outage_and_names_the_ledger_when_it_lasts(
    tmp_path, emulator, api_key, monkeypatch
):
    """A PostgreSQL restart under `run` killed its follower with a raw traceback, leaving every
    paid task pending; now the follower waits the outage out and stores every video."""
    resources = make_resources(copy_sample_data(tmp_path / "data"), emulator, api_key)
    ledger, evolink, store = (
        resources["pipeline"].ledger(),
        resources["evolink"],
        resources["pipeline"].videos(),
    )
    body = {"model": "seedance-2.0-fast-text-to-video", "prompt": "rain", "duration": 4}
    with evolink.client() as client:
        for i in range(3):
            ledger.claim(DAY, f"p{i}", body, 1.0)
            ledger.record_submitted(DAY, f"p{i}", client.create_task(body).id, time.time())
    day_state, down = ledger.day_state, iter([True, True])  # two reads fail, then it is back

    def restarting(*args, **kwargs):
        if next(down, False):
            raise OperationalError("SELECT", {}, Exception("the database system is starting up"))
        return day_state(*args, **kwargs)

    monkeypatch.setattr(follow, "OUTAGE_RETRY_SECONDS", 0.1)
    monkeypatch.setattr(ledger, "day_state", restarting)
    with follow.following(DAY, ledger, evolink, store):
        pass
    assert [(r.status, bool(r.video_uri)) for r in ledger.rows(DAY)] == [
        (Status.COMPLETED, True)
    ] * 3

    monkeypatch.setattr(follow, "OUTAGE_SECONDS", 0.5)
    down = iter(lambda: True, None)  # it never comes back: reads and pings fail
    monkeypatch.setattr(ledger.db, "ping", lambda: restarting())
    with (
        pytest.raises(LedgerUnreachable, match="once it works, run the day again") as raised,
        follow.following(DAY, ledger, evolink, store),
    ):
        pass
    assert ledger.db.url.split("://")[0] in str(raised.value)
    assert "(the database system is starting up)" in str(raised.value)

    # A full disk: pings (reads) answer, the follower's work fails each time, however long
    # it worked first (a poll round is up to 45 s before its one write). Each answered ping
    # restarted the outage's clock, and `run` waited for ever.
    def slow_then_failing(*args, **kwargs):
        time.sleep(0.3)  # longer than the outage limit's share: work, then the write fails
        raise OperationalError("UPDATE", {}, Exception("database or disk is full"))

    monkeypatch.setattr(ledger.db, "ping", lambda: None)
    monkeypatch.setattr(ledger, "day_state", slow_then_failing)
    with (
        pytest.raises(LedgerUnreachable, match=r"has failed for 0 s \(database or disk is full"),
        follow.following(DAY, ledger, evolink, store),
    ):
        pass


class _Silent(http.server.BaseHTTPRequestHandler):
    """Takes a request and never answers it (for 30 s)."""

    def do_GET(self):
        time.sleep(30)


def test_polls_past_the_rounds_deadlines_stay_due_for_the_next(project, api_key):
    """A slow or rate-limited API shortens a round; it never overruns a sensor tick."""
    from seedance_pipeline.polling import poll_due
    from seedance_pipeline.seedance import Client

    _, url, resources = project
    assert submit(resources).success
    ledger = resources["pipeline"].ledger()
    far_future = time.time() + 3600
    waiting = [r.task_id for r in ledger.due_tasks(far_future, 100)]
    assert len(waiting) == 6

    def round_with(start_by: float, finish_by: float | None = None, base_url: str = url):
        with Client(api_key, base_url=base_url) as client, ThreadPoolExecutor(4) as pool:
            return poll_due(ledger, client, pool, start_by=start_by, finish_by=finish_by)

    def polls():
        return [r.polls for r in ledger.rows(DAY) if r.task_id]

    with ledger.db.transaction() as db:  # every task due now
        db.execute(sql("UPDATE tasks SET next_poll_at = 0"))
    late = round_with(time.monotonic() - 1)
    assert late.polled == 0 and polls() == [0] * 6
    with loopback_server(_Silent) as silent:
        started = time.monotonic()
        stuck = round_with(
            started + 30, started + 0.5, f"http://127.0.0.1:{silent.server_address[1]}"
        )
        took = time.monotonic() - started
    # cut off at 0.5 s by the client, not abandoned after the round's margin (3 s)
    assert took < 2.0 and stuck.errors == 6 and polls() == [0] * 6, took
    assert len(ledger.due_tasks(time.time(), 100)) == 6
    on_time = round_with(time.monotonic() + 30)
    assert on_time.polled == 6 and polls() == [1] * 6


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("EVOLINK_API_KEY", "", "EVOLINK_API_KEY is not set"),
        ("SEEDANCE_MAX_CREDITS_PER_PARTITION", "lots", "='lots' is not a number"),
        ("EVOLINK_MAX_REQUESTS_PER_SECOND", "fast", "='fast' is not a number"),
        ("SEEDANCE_MAX_RESUBMISSIONS", "1.5", "='1.5' is not a whole number"),
        # sent the day, then failed storing the attempts' limit (too large for SQLite)
        ("SEEDANCE_MAX_RESUBMISSIONS", "99999999999999999999", "must be at most 10"),
        # every create answered 404 (/v1/v1/videos/generations), "run the day again"
        ("EVOLINK_BASE_URL", "http://127.0.0.1:9/v1", "ends in /v1, which each call adds"),
        ("EVOLINK_FILES_URL", "http://127.0.0.1:9/api/", "ends in /api, which each call adds"),
        # int('1' + 400 zeros) overflowed math.isfinite: a traceback
        ("SEEDANCE_MAX_RESUBMISSIONS", "1" + "0" * 400, "must be at most 10"),
        ("SEEDANCE_MAX_CREDITS_PER_PARTITION", "nan", "='nan' must be a finite number"),
        ("EVOLINK_MAX_REQUESTS_PER_SECOND", "0", "='0' must be a finite number above 0"),
        (None, "2025-12-31", "'2025-12-31' is not a day of the pipeline's partitions"),
    ],
)
def test_run_with_a_bad_day_or_setting_says_which(
    tmp_path, monkeypatch, capsys, name, value, message
):
    from seedance_pipeline.cli import main

    data = copy_sample_data(tmp_path / "data")
    env = {"SEEDANCE_DATA_DIR": str(data), "EVOLINK_API_KEY": "sk-evo-placeholder"}
    env |= {"EVOLINK_BASE_URL": "http://127.0.0.1:9", "EVOLINK_FILES_URL": "http://127.0.0.1:9"}
    setting = {name: value} if name else {}
    for key, text in (env | setting).items():
        monkeypatch.setenv(key, text)
    assert main(["run", DAY if name else value]) == 2  # 2: fix it; not a failure to retry
    err = capsys.readouterr().err
    assert message in err and (name or "") in err and "Traceback" not in err
    assert not (data / "state").exists() and not (data / "warehouse").exists()


def test_schedule_asks_for_the_day_it_runs_on():
    import datetime as dt

    context = build_schedule_context(
        scheduled_execution_time=dt.datetime(2026, 11, 21, 6, 0, tzinfo=dt.UTC)
    )
    schedule = defs().resolve_schedule_def("daily_generation_schedule")
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    requests = list(schedule.evaluate_tick(context).run_requests)
    assert [r.partition_key for r in requests] == ["2026-11-21"]


def test_two_workers_racing_on_one_partition_submit_each_prompt_once(project):
    data, url, resources = project
    assert plan_requests(resources).success
    requests = read_table(data, "generation_requests", DAY)
    items = [
        Planned(r.prompt_id, json.loads(r.request_json), r.estimated_credits)
        for r in requests[requests.status == "accepted"].itertuples()
    ]
    ledger = resources["pipeline"].ledger()
    start, results = threading.Barrier(2), []

    def worker() -> None:
        with resources["evolink"].client() as client:
            start.wait()
            results.append(submit_all(ledger, client, DAY, items))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.submitted for r in results) == len(items) > 0
    assert sum(r.already_in_ledger for r in results) == len(items)
    assert len(emulator_tasks(url)) == len(items)
    assert Counter(r.prompt_id for r in ledger.rows(DAY)) == Counter(i[0] for i in items)


def test_a_link_refused_is_tried_again_while_it_would_live_then_recorded_expired(
    tmp_path, start_emulator, api_key
):
    """A 403 or 404 from a link minutes old (a CDN still copying the file, or throttling) was
    recorded `expired` at once, and no run tried it again: a paid video lost (helper-49)."""
    url = start_emulator(link_ttl=0.01)
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, url, api_key)
    assert submit(resources).success
    wait_for_tasks(resources)
    threading.Event().wait(0.3)  # every link is now past the emulator's time to live
    first = save_videos(resources)
    table = read_table(data, "generated_videos", DAY)
    accepted = table[table.status != "rejected"]
    assert (accepted.status == "download_failed").all() and len(accepted) == 6
    assert accepted.error_message.str.contains("the result link has expired").all()
    assert accepted.error_message.str.contains("tries again while the link lives").all()
    assert [c.passed for c in first.get_asset_check_evaluations()] == [False]
    ledger = resources["pipeline"].ledger()
    with ledger.db.transaction() as db:  # sent a day ago, its completion learned of lately
        db.execute(
            sql(
                "UPDATE tasks SET submitted_at = submitted_at - 90000, next_poll_at = 0"
                " WHERE status = 'download_failed'"
            )
        )
    result = save_videos(resources)
    table = read_table(data, "generated_videos", DAY)
    accepted = table[table.status != "rejected"]
    assert (accepted.status == "expired").all() and len(accepted) == 6
    assert (accepted.error_code == "link_expired").all()
    assert [c.passed for c in result.get_asset_check_evaluations()] == [False]


def test_quota_exhaustion_stops_cleanly_leaving_the_rest_for_later(
    tmp_path, start_emulator, api_key
):
    url = start_emulator(credits=100)
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, url, api_key)
    result = submit(resources)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    said = failure.step_failure_data.user_failure_data.description
    # Said to shell and UI users alike: it said "materialise the partition" to both.
    assert "top up" in said and f"`seedance-pipeline run {DAY}`" in said, said
    rows = resources["pipeline"].ledger().rows(DAY)
    made = emulator_tasks(url)
    assert 0 < len(rows) == len(made) < 6
    assert all(r.task_id for r in rows)  # no claim left behind for the refused prompt


def test_a_day_without_rows_gives_empty_tables(project):
    data, url, resources = project
    day = "2026-11-19"
    assert submit(resources, day).success
    wait_for_tasks(resources, day)
    assert save_videos(resources, day).success
    assert read_table(data, "generated_videos", day).empty
    assert emulator_tasks(url) == []


def test_a_step_whose_requests_were_never_planned_fails_at_once_naming_them(
    tmp_path, emulator, api_key
):
    """No retry can make the missing table appear: the steps used to wait out 3 retries."""
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, emulator, api_key)
    for step in (submitted_tasks, generated_videos):
        result = materialize(
            [generation_requests, step],
            selection=[step],
            partition_key=DAY,
            resources=resources,
            instance=DagsterInstance.ephemeral(),
            raise_on_error=False,
        )
        assert not result.success
        assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        message = failure.step_failure_data.user_failure_data.description
        assert f"materialise generation_requests for {DAY}" in message


def test_an_adaptive_text_to_video_is_right_in_any_ratio_the_vendor_picks():
    """The vendor picks an `adaptive` text-to-video's ratio from the prompt: a portrait 720p
    video failed the check at ERROR severity, as the plan expects 16:9 (its own pick)."""
    from seedance_pipeline.defs.generation.assets import _check_videos

    def completed(prompt_id, model, ratio, width, height):
        return {
            "prompt_id": prompt_id,
            "model": f"seedance-2.0-{model}",
            "status": "completed",
            "quality": None,  # the default, 720p
            "aspect_ratio": ratio,
            "duration": 4,
            "generate_audio": True,
            "expected_width": 1280,
            "expected_height": 720,
            "width": width,
            "height": height,
            "duration_s": 4.0,
            "has_audio": True,
        }

    videos = videos_table(
        [
            completed("portrait", "text-to-video", "adaptive", 720, 1280),
            completed("square", "fast-text-to-video", "adaptive", 960, 960),
            completed("not-a-frame", "text-to-video", "adaptive", 700, 1280),
            completed("asked-16-9", "text-to-video", "16:9", 720, 1280),
            completed("from-its-image", "image-to-video", "adaptive", 720, 1280),
        ]
    )
    check = _check_videos(videos, [], DAY)
    problems = check.metadata["problems"].value.records
    assert sorted(p.data["prompt_id"] for p in problems) == [
        "asked-16-9",
        "from-its-image",
        "not-a-frame",
    ]
