"""A day whose submission was stopped: its tasks sent are paid for, and their links die a day
after, so the stopped_day_videos sensor has their videos stored while the day waits for its
user. It sends nothing, and it never lets the day be sent on."""

import time

import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    build_sensor_context,
    instance_for_test,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id

from seedance_pipeline.definitions import DOMAINS
from seedance_pipeline.defs.generation import assets as generation_assets
from seedance_pipeline.defs.generation import sensors
from seedance_pipeline.defs.generation.assets import submitted_tasks
from seedance_pipeline.defs.generation.sensors import (
    MAX_VIDEO_RUNS,
    PARTITION_TAG,
    STORE_AFTER_SECONDS,
    stopped_day_videos,
    task_poller,
)
from seedance_pipeline.defs.generation.storing import store_videos_of_stopped_day
from seedance_pipeline.defs.resources import EvoLinkResource, PipelineResource
from seedance_pipeline.ledger import Ledger, PollUpdate
from seedance_pipeline.media import measure_video_output
from seedance_pipeline.statuses import Status

from .pipeline_support import (
    DAY,
    copy_sample_data,
    emulator_tasks,
    make_resources,
    submit,
    wait_for_tasks,
)

NEXT_DAY = "2026-11-21"
BODY = {"model": "seedance-2.0-fast-text-to-video", "prompt": "waves", "duration": 4}
# The two prompts sent before the stop, and what the vendor's guide says each video is:
# 720p 16:9 is 1280x720, 480p 9:16 is 496x864; both asked for sound.
SENT = {
    "d1-t2v-city-launch": {"width": 1280, "height": 720, "duration_s": 5.0, "has_audio": True},
    "d1-fast-t2v-tea-zh": {"width": 496, "height": 864, "duration_s": 4.0, "has_audio": True},
}


def store_requests(instance, resources) -> list:
    context = build_sensor_context(instance=instance, resources=resources)
    return list(stopped_day_videos(context).run_requests)


def test_a_stopped_days_paid_videos_are_stored_and_nothing_more_is_sent(
    tmp_path, emulator, api_key, monkeypatch
):
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, emulator, api_key)
    sending = generation_assets.submit_all

    def interrupted(ledger, client, partition, items, *args):
        sending(ledger, client, partition, [i for i in items if i.prompt_id in SENT], *args)
        raise KeyboardInterrupt  # Terminate in the UI, once two were sent

    monkeypatch.setattr(generation_assets, "submit_all", interrupted)
    with DagsterInstance.ephemeral() as instance:
        result = submit(resources, instance=instance)
        assert not result.success and len(emulator_tasks(emulator)) == 2
        failure = next(e for e in result.all_events if e.is_step_failure)
        message = failure.step_failure_data.user_failure_data.description
        assert "stopped_day_videos sensor stores their videos once they end" in message
        wait_for_tasks(resources)  # the task_poller's polls

        [request] = store_requests(instance, resources)
        assert request.partition_key == DAY and request.asset_selection is None
        # The job the sensor names, as the code location defines it (`dagster dev` launched it
        # so and stored the videos: checked by hand, 2026-11-27).
        location = Definitions.merge(DOMAINS, Definitions(resources=resources))
        job = location.resolve_job_def(stopped_day_videos.job_name)
        stored = job.execute_in_process(partition_key=DAY, instance=instance, tags=request.tags)
        assert stored.success

        rows = resources["pipeline"].ledger().rows(DAY)
        assert {r.prompt_id: r.status for r in rows} == dict.fromkeys(SENT, Status.COMPLETED)
        for row in rows:
            video = data / row.video_uri
            assert video.is_file() and measure_video_output(video) == SENT[row.prompt_id]
        assert not (data / "warehouse" / "generated_videos" / f"{DAY}.parquet").exists()
        assert store_requests(instance, resources) == []  # done for this state
        tick = task_poller(build_sensor_context(instance=instance, resources=resources))
        assert tick.run_requests == []  # the day stays its user's to send on
    assert len(emulator_tasks(emulator)) == 2


@pytest.fixture
def resources(tmp_path) -> dict:
    unused = "http://127.0.0.1:9"  # the sensor asks the API nothing
    return {
        "evolink": EvoLinkResource(api_key="sk-test", base_url=unused, files_url=unused),
        "pipeline": PipelineResource(data_dir=str(tmp_path / "data")),
    }


def sent(ledger, day: str, prompt_id: str, status: Status, **answer) -> None:
    assert ledger.claim(day, prompt_id, BODY, 1.0)
    ledger.record_submitted(day, prompt_id, f"task-{day}-{prompt_id}", time.time() + 3600)
    if status != Status.PENDING:
        update = PollUpdate(f"task-{day}-{prompt_id}", status=status, **answer)
        ledger.record_polls([update])


def day_run(instance, status: DagsterRunStatus, job_name="__ASSET_JOB", tags=(), **run) -> None:
    """A run of DAY that ended (or runs) with `status`."""
    instance.add_run(
        DagsterRun(
            job_name=job_name,
            run_id=make_new_run_id(),
            status=status,
            tags={PARTITION_TAG: DAY, **dict(tags)},
            **run,
        )
    )


def test_a_stopped_day_is_stored_once_its_tasks_ended_or_a_video_waited_an_hour(
    resources, monkeypatch
):
    ledger = resources["pipeline"].ledger()
    sent(ledger, DAY, "done", Status.COMPLETED, result_url="https://cdn.example/v.mp4")
    sent(ledger, DAY, "running", Status.PENDING)
    with instance_for_test() as instance:
        assert store_requests(instance, resources) == []  # a task still runs
        later = time.time() + STORE_AFTER_SECONDS + 1
        monkeypatch.setattr(sensors.time, "time", lambda: later)
        [request] = store_requests(instance, resources)
        assert request.partition_key == DAY and request.run_key.startswith(f"store:{DAY}:")


def test_a_day_another_run_may_store_waits_an_hour_at_most(resources, monkeypatch):
    """A run of the day under way, or one task_poller asks for (a day cut short), stores the
    videos itself; but a run whose process was killed shows as running for ever, and one
    sending on may fail before storing anything (a broken catalog): a video that waited an
    hour is stored whatever holds the day up. A settled day is task_poller's."""
    ledger = resources["pipeline"].ledger()
    sent(ledger, DAY, "done", Status.COMPLETED, result_url="https://cdn.example/v.mp4")
    sent(ledger, NEXT_DAY, "next", Status.COMPLETED, result_url="https://cdn.example/w.mp4")
    ledger.set_submission_complete(NEXT_DAY, True)  # settled: task_poller's videos run
    later = time.time() + STORE_AFTER_SECONDS + 1
    with instance_for_test() as instance:
        day_run(instance, DagsterRunStatus.STARTED)
        assert store_requests(instance, resources) == []
        monkeypatch.setattr(sensors.time, "time", lambda: later)
        assert [r.partition_key for r in store_requests(instance, resources)] == [DAY]
    monkeypatch.undo()
    ledger.set_submission_complete(DAY, False)  # cut short: task_poller sends on, and stores
    with instance_for_test() as instance:
        assert store_requests(instance, resources) == []
        day_run(instance, DagsterRunStatus.CANCELED, asset_selection={submitted_tasks.key})
        [request] = store_requests(instance, resources)  # its user stopped it: stored here
        assert request.partition_key == DAY
    with instance_for_test() as instance:
        monkeypatch.setattr(sensors.time, "time", lambda: later)
        assert [r.partition_key for r in store_requests(instance, resources)] == [DAY]


def test_a_terminated_resubmission_has_its_videos_stored(tmp_path):
    """The day was fully sent, so its row says complete; a failed task due again keeps it
    from settling, so task_poller's videos run never came (helper-51)."""
    resources = {
        "evolink": EvoLinkResource(
            api_key="sk-test", base_url="http://127.0.0.1:9", files_url="http://127.0.0.1:9"
        ),
        "pipeline": PipelineResource(data_dir=str(tmp_path / "data"), max_resubmissions=2),
    }
    ledger = resources["pipeline"].ledger()
    sent(ledger, DAY, "done", Status.COMPLETED, result_url="https://cdn.example/v.mp4")
    sent(ledger, DAY, "due", Status.FAILED, error_code="service_error")
    ledger.set_submission_complete(DAY, True)
    with instance_for_test() as instance:
        day_run(instance, DagsterRunStatus.CANCELED, asset_selection={submitted_tasks.key})
        assert task_poller(build_sensor_context(instance=instance, resources=resources)) and (
            DAY not in ledger.partitions_settled(resources["pipeline"].max_attempts)
        )
        [request] = store_requests(instance, resources)
        assert request.partition_key == DAY


def test_many_store_runs_never_hide_that_its_user_stopped_the_day(resources):
    """Each failed download makes a store run: with 50 of them the day's last submission,
    terminated, fell out of the runs read, and task_poller sent on the day (helper-51)."""
    ledger = resources["pipeline"].ledger()
    sent(ledger, DAY, "done", Status.COMPLETED, result_url="https://cdn.example/v.mp4")
    ledger.set_submission_complete(DAY, False)
    with instance_for_test() as instance:
        day_run(instance, DagsterRunStatus.CANCELED, asset_selection={submitted_tasks.key})
        for _ in range(120):
            day_run(instance, DagsterRunStatus.FAILURE, store_videos_of_stopped_day.name)
        tick = task_poller(build_sensor_context(instance=instance, resources=resources))
        assert tick.run_requests == []


def test_a_store_run_that_succeeded_does_not_release_a_day_its_user_stopped(resources):
    """The day's last run is then the store run: taken for the last submission, it would say
    the day was no longer stopped, and task_poller would send on what its user stopped."""
    ledger = resources["pipeline"].ledger()
    sent(ledger, DAY, "done", Status.COMPLETED, result_url="https://cdn.example/v.mp4")
    ledger.set_submission_complete(DAY, False)
    with instance_for_test() as instance:
        day_run(instance, DagsterRunStatus.CANCELED, asset_selection={submitted_tasks.key})
        [request] = store_requests(instance, resources)
        day_run(
            instance,
            DagsterRunStatus.SUCCESS,
            job_name=store_videos_of_stopped_day.name,
            tags=request.tags,
        )
        tick = task_poller(build_sensor_context(instance=instance, resources=resources))
        assert tick.run_requests == []


def test_a_failing_store_run_is_asked_for_again_then_given_up_naming_the_job(resources, capfd):
    ledger = resources["pipeline"].ledger()
    sent(ledger, DAY, "done", Status.COMPLETED, result_url="https://cdn.example/v.mp4")
    keys = []
    with instance_for_test() as instance:
        for _ in range(MAX_VIDEO_RUNS + 1):
            if asked := store_requests(instance, resources):
                [request] = asked
                keys.append(request.run_key)
                day_run(
                    instance,
                    DagsterRunStatus.FAILURE,
                    store_videos_of_stopped_day.name,
                    request.tags,
                )
    assert len(keys) == MAX_VIDEO_RUNS == len(set(keys))
    said = capfd.readouterr().err
    assert f"{DAY}: store_videos_of_stopped_day failed {MAX_VIDEO_RUNS} times" in said
    assert "launch that job for the day by hand (materialising the day would send" in said


def test_the_days_with_videos_to_store(ledger_url):
    """Read by walking the days' index: a completed video not stored, or a failed download due
    again; not one whose retry is planned later."""
    ledger, url = Ledger(ledger_url), {"result_url": "https://cdn.example/v.mp4"}
    sent(ledger, "2026-11-18", "stored", Status.COMPLETED, **url)
    ledger.record_video("2026-11-18", "stored", "videos/k.mp4", "ab" * 32, 10, {})
    sent(ledger, "2026-11-19", "later", Status.COMPLETED, **url)
    ledger.record_download_failed(
        "2026-11-19", "later", Status.DOWNLOAD_FAILED, "download_failed", "a 503", time.time() + 300
    )
    sent(ledger, DAY, "waiting", Status.COMPLETED, **url)
    sent(ledger, NEXT_DAY, "complete", Status.COMPLETED, **url)
    ledger.set_submission_complete(NEXT_DAY, True)
    sent(ledger, "2026-11-22", "cut-short", Status.COMPLETED, **url)
    ledger.set_submission_complete("2026-11-22", False)
    now = time.time()
    assert sorted(ledger.partitions_unstored(now)) == [DAY, NEXT_DAY, "2026-11-22"]
    later = ledger.partitions_unstored(now + 3600)
    assert sorted(later) == ["2026-11-19", DAY, NEXT_DAY, "2026-11-22"]
    assert abs(ledger.partitions_unstored(now)[DAY] - now) < 60


def test_a_killed_store_run_holds_the_day_back_an_hour_at_most(resources, monkeypatch):
    """A run whose process was killed shows as running for ever: a store run counted so, the
    day's videos were never asked for again (helper-52)."""
    ledger = resources["pipeline"].ledger()
    sent(ledger, DAY, "done", Status.COMPLETED, result_url="https://cdn.example/v.mp4")
    with instance_for_test() as instance:
        [request] = store_requests(instance, resources)
        day_run(instance, DagsterRunStatus.STARTED, store_videos_of_stopped_day.name, request.tags)
        assert store_requests(instance, resources) == []  # the run under way stores it
        later = time.time() + STORE_AFTER_SECONDS + 1
        monkeypatch.setattr(sensors.time, "time", lambda: later)
        [again] = store_requests(instance, resources)
        assert again.run_key == f"{request.run_key}:retry1"


def test_a_store_run_is_asked_for_by_the_videos_to_store_not_by_every_change_of_the_day(
    resources, monkeypatch
):
    """Past the hour, each task of the day going from pending to processing made a new run key:
    a store run every tick, all running at once (helper-52)."""
    ledger = resources["pipeline"].ledger()
    sent(ledger, DAY, "done", Status.COMPLETED, result_url="https://cdn.example/v.mp4")
    sent(ledger, DAY, "running", Status.PENDING)
    later = time.time() + STORE_AFTER_SECONDS + 1
    monkeypatch.setattr(sensors.time, "time", lambda: later)
    with instance_for_test() as instance:
        [first] = store_requests(instance, resources)
        ledger.record_polls([PollUpdate(f"task-{DAY}-running", status=Status.PROCESSING)])
        [second] = store_requests(instance, resources)
    assert second.run_key == first.run_key  # Dagster launches a run key once


def test_a_stopped_day_outside_the_partitions_is_named_with_the_fix(resources, capfd):
    ledger = resources["pipeline"].ledger()
    sent(ledger, "2026-10-01", "old", Status.COMPLETED, result_url="https://cdn.example/v.mp4")
    with instance_for_test() as instance:
        assert store_requests(instance, resources) == []
    said = capfd.readouterr().err
    assert "days outside the partitions, whose runs cannot be asked for: 2026-10-01" in said
    assert "set it to 2026-10-01 or before" in said


def test_a_settled_day_whose_videos_runs_gave_up_has_its_videos_stored(resources):
    """A videos run failing before it stores anything (the day's requests table missing) was
    asked for five times, then the paid videos were left to die (helper-52)."""
    ledger = resources["pipeline"].ledger()
    sent(ledger, DAY, "done", Status.COMPLETED, result_url="https://cdn.example/v.mp4")
    ledger.set_submission_complete(DAY, True)
    with instance_for_test() as instance:
        assert store_requests(instance, resources) == []  # task_poller's videos runs store it
        [videos] = list(
            task_poller(build_sensor_context(instance=instance, resources=resources)).run_requests
        )
        for _ in range(MAX_VIDEO_RUNS):
            day_run(instance, DagsterRunStatus.FAILURE, tags=videos.tags)
        [request] = store_requests(instance, resources)
        assert request.partition_key == DAY
