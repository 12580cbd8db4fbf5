"""Opt-in resubmission of failed tasks: transient failures only, each attempt recorded."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import Counter
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus, build_sensor_context, instance_for_test
from dagster._core.utils import make_new_run_id
from dagster._record import copy

from seedance_pipeline.defs.catalog.assets import prompt_catalog
from seedance_pipeline.defs.generation import assets as generation_assets
from seedance_pipeline.defs.generation.assets import generation_requests, submitted_tasks
from seedance_pipeline.defs.generation.sensors import task_poller
from seedance_pipeline.ledger import RESUBMITTABLE_CODES, Ledger
from seedance_pipeline.ledger.database import sql
from seedance_pipeline.statuses import WAITING
from seedance_pipeline.tables import read_table

from .fault_support import write_catalog
from .pipeline_support import (
    DAY,
    copy_sample_data,
    emulator_tasks,
    make_resources,
    save_videos,
    submit,
    wait_for_tasks,
)


def test_transient_failures_are_resubmitted_up_to_the_limit(tmp_path, start_emulator, api_key):
    url = start_emulator(task_failure_rate=0.6, seed=11)
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, url, api_key, max_resubmissions=2)
    ledger = resources["pipeline"].ledger()
    assert submit(resources).success
    wait_for_tasks(resources)
    first = {r.prompt_id: r for r in ledger.rows(DAY)}
    transient = [r for r in first.values() if r.error_code in RESUBMITTABLE_CODES]
    assert transient, "the seeded emulator should fail some tasks with service_error"

    with instance_for_test() as instance:  # the sensor asks for a resubmission run
        result = task_poller(build_sensor_context(instance=instance, resources=resources))
    assert [(r.partition_key, r.asset_selection) for r in result.run_requests] == [
        (DAY, [prompt_catalog.key, generation_requests.key, submitted_tasks.key])
    ]
    for _ in range(2):
        assert submit(resources).success
        wait_for_tasks(resources)

    rows = {r.prompt_id: r for r in ledger.rows(DAY)}
    history = Counter(a["prompt_id"] for a in ledger.attempts(DAY))
    for prompt_id, row in rows.items():
        assert row.attempt == 1 + history[prompt_id] <= 3
        if first[prompt_id].status == "failed" and first[prompt_id].error_code not in (
            RESUBMITTABLE_CODES
        ):
            assert row.attempt == 1  # "fix the input" failures are never resubmitted
        if row.status == "failed" and row.error_code in RESUBMITTABLE_CODES:
            assert row.attempt == 3  # gave up only at the limit
    assert all(a["status"] == "failed" for a in ledger.attempts(DAY))
    assert len(emulator_tasks(url)) == sum(r.attempt for r in rows.values())

    assert save_videos(resources).success
    table = read_table(data, "generated_videos", DAY).set_index("prompt_id")
    for prompt_id, row in rows.items():
        assert table.loc[prompt_id, "attempts"] == row.attempt
        assert table.loc[prompt_id, "status"] == row.status


def test_a_failed_prompt_removed_from_the_catalog_is_not_resubmitted(
    tmp_path, start_emulator, api_key
):
    """Removed after its task failed transiently: resubmitting it would pay for a video the
    user no longer wants. Its row says so, and the day is settled (its videos run is due)."""
    url = start_emulator(task_failure_rate=0.6, seed=11)
    data = tmp_path / "data"
    write_catalog(data, 6)
    resources = make_resources(data, url, api_key, max_resubmissions=1)
    ledger = resources["pipeline"].ledger()
    assert submit(resources).success
    wait_for_tasks(resources)
    removed = {r.prompt_id for r in ledger.rows(DAY) if r.error_code in RESUBMITTABLE_CODES}
    assert removed, "the seeded emulator fails some tasks with service_error"
    catalog = data / "catalog" / "prompts.csv"
    lines = catalog.read_text().splitlines(keepends=True)
    catalog.write_text("".join(x for x in lines if x.split(",")[0] not in removed))
    paid = len(emulator_tasks(url))
    assert submit(resources).success and len(emulator_tasks(url)) == paid
    for row in ledger.rows(DAY):
        if row.prompt_id in removed:
            assert (row.status, row.attempt) == ("failed", 1)
            assert "not resubmitted: the prompt is no longer among" in row.error_message
    assert ledger.partitions_to_resubmit(2) == [] and ledger.partitions_settled(2) == [DAY]


@pytest.mark.parametrize("tasks_running", [False, True])
def test_ctrl_c_on_run_while_it_follows_the_day_is_not_undone_by_the_sensor(
    tmp_path, start_emulator, api_key, monkeypatch, capsys, tasks_running
):
    """Ctrl-C while `run` followed the day (most of its time) came outside the submission
    step: the day stayed noted complete with a transient failure due, and the sensor's next
    tick resubmitted it, paid, after its user had stopped the day (helper-55). So it did with
    a task failing after the Ctrl-C, when one was still generating then (helper-57)."""
    from seedance_pipeline import runner
    from seedance_pipeline.cli import main

    # Tasks taking seconds, so that some still generate when the submission step ends.
    url = start_emulator(task_failure_rate=0.6, seed=11, time_scale=0.1 if tasks_running else 0.002)
    data = _shell_on(tmp_path, url, api_key, monkeypatch)
    following = runner.following
    resources = make_resources(data, url, api_key, max_resubmissions=2)
    ledger = resources["pipeline"].ledger()

    @contextlib.contextmanager
    def interrupted(*args, **kwargs):
        with following(*args, **kwargs) as stop:
            yield stop
            if tasks_running:  # Ctrl-C as the follower waits for the tasks, the step over
                assert any(r.status in WAITING for r in ledger.rows(DAY))
                threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
        if not tasks_running:
            raise KeyboardInterrupt  # Ctrl-C as the follower ends

    monkeypatch.setattr(runner, "following", interrupted)
    assert main(["run", DAY]) == 1
    said = capsys.readouterr().err
    assert f"error: {DAY}: stopped while following the day; what was sent is in the ledger" in said
    assert "resubmitted only by the day's next run, and the day's tables wait for it" in said
    assert ("its tasks still generating are paid for: run the day again" in said) == tasks_running
    wait_for_tasks(resources, timeout=120)  # as the sensor polls them after the Ctrl-C
    assert ledger.resubmittable(DAY, 3), "the seeded emulator fails some tasks transiently"
    paid = len(emulator_tasks(url))
    with instance_for_test() as instance:
        result = task_poller(build_sensor_context(instance=instance, resources=resources))
    assert result.run_requests == [] and len(emulator_tasks(url)) == paid


def _shell_on(tmp_path, url: str, api_key: str, monkeypatch) -> Path:
    """The sample data, and the settings of a shell running `seedance-pipeline run` on them,
    with 2 resubmissions: the data folder."""
    data = copy_sample_data(tmp_path / "data")
    for name, value in {
        "SEEDANCE_DATA_DIR": str(data),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "EVOLINK_API_KEY": api_key,
        "EVOLINK_BASE_URL": url,
        "EVOLINK_FILES_URL": url,
        "SEEDANCE_MAX_RESUBMISSIONS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    return data


def test_the_sensor_sends_nothing_while_a_shell_run_resubmits_the_day(
    tmp_path, start_emulator, api_key, monkeypatch
):
    """`run`'s runs name no asset selection (`materialize()` makes a job of its assets), and
    the sensor took them for runs that never submit: it asked for a resubmission of the day
    while the shell run resubmitted it (helper-57)."""
    from seedance_pipeline.cli import main
    from seedance_pipeline.defs.generation import assets as generation_assets

    url = start_emulator(task_failure_rate=0.6, seed=11)
    data = _shell_on(tmp_path, url, api_key, monkeypatch)
    resources = make_resources(data, url, api_key, max_resubmissions=2)
    ledger, sending, asked = resources["pipeline"].ledger(), generation_assets.submit_all, []

    def submit_all(*args, **kwargs):
        if ledger.resubmittable(DAY, 3):  # the shell run's resubmitting step, under way
            with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
                tick = task_poller(build_sensor_context(instance=instance, resources=resources))
            asked.extend(r.run_key for r in tick.run_requests)
        return sending(*args, **kwargs)

    monkeypatch.setattr(generation_assets, "submit_all", submit_all)
    main(["run", DAY])
    assert len(ledger.attempts(DAY)) > 0, "the seeded emulator fails some tasks transiently"
    assert asked == []


@pytest.mark.parametrize("status", [DagsterRunStatus.STARTED, DagsterRunStatus.CANCELED])
def test_a_shell_runs_tables_run_left_unfinished_does_not_hold_the_day(
    tmp_path, start_emulator, api_key, monkeypatch, status
):
    """Only `run`'s submitting runs hold the day: its tables run killed with the process (it
    shows as started for ever) or terminated in the UI held it too, and the sensor never sent
    the day on again (helper-58)."""
    from seedance_pipeline.cli import main

    url = start_emulator()
    data = _shell_on(tmp_path, url, api_key, monkeypatch)
    assert main(["run", DAY]) == 0
    resources = make_resources(data, url, api_key, max_resubmissions=2)
    ledger = resources["pipeline"].ledger()
    forgotten = ledger.rows(DAY)[0].prompt_id  # later, an unknown row forgotten: to send again
    with ledger.db.transaction() as db:
        db.execute(
            sql("UPDATE tasks SET status = 'unknown', task_id = NULL WHERE prompt_id = :p"),
            {"p": forgotten},
        )
    ledger.resolve(DAY, forgotten, None)
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        tables = instance.get_runs(limit=1)[0]  # the newest: run's tables run
        instance.add_run(copy(tables, run_id=make_new_run_id(), status=status))
        tick = task_poller(build_sensor_context(instance=instance, resources=resources))
    assert [r.run_key.split(":")[:2] for r in tick.run_requests] == [["submit", DAY]]


def test_run_resubmits_the_day_as_its_catalog_is_now(
    tmp_path, start_emulator, api_key, monkeypatch
):
    """`run` resubmitted what its first plan held: a prompt the user deleted while the day ran
    was paid for again; and, once a submission checked its plan against the catalog, any edit
    of the catalog failed the run's resubmissions (helper-74)."""
    from seedance_pipeline.cli import main

    url = start_emulator(task_failure_rate=0.6, seed=11)
    data = _shell_on(tmp_path, url, api_key, monkeypatch)
    catalog = data / "catalog" / "prompts.csv"
    sending, edited = generation_assets.submit_all, []

    def submit_all(*args, **kwargs):
        if not edited:  # while the day's first submission runs, the user deletes the day
            catalog.write_text(
                "".join(x for x in catalog.read_text().splitlines(True) if DAY not in x)
            )
            edited.append(1)
        return sending(*args, **kwargs)

    monkeypatch.setattr(generation_assets, "submit_all", submit_all)
    assert main(["run", DAY]) == 0
    rows = Ledger(data / "state" / "ledger.sqlite3").rows(DAY)
    assert any(r.error_code in RESUBMITTABLE_CODES for r in rows), "the seed fails some"
    assert all(r.attempt == 1 for r in rows) and len(emulator_tasks(url)) == len(rows)
