"""A sensor tick with many outstanding tasks, a tick over a long history of finished days,
and the ledger's write cost per task, on SQLite and on PostgreSQL (a throwaway server started
here).

Run: python benchmarks/sensor_tick.py [--tasks 10000] [--rounds 3] [--backends sqlite,postgres]
    [--history-days 365] [--history-rows 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# The history's days (from 2024-01-01) are partitions only from here; read as the assets are
# defined, so before they are imported.
os.environ.setdefault("SEEDANCE_PARTITIONS_START", "2024-01-01")

from dagster import DagsterRunStatus, build_sensor_context, instance_for_test  # noqa: E402
from dagster._core.storage.dagster_run import DagsterRun  # noqa: E402
from dagster._core.utils import make_new_run_id  # noqa: E402

from seedance_pipeline.defs.generation.sensors import (  # noqa: E402
    NEWEST_DAYS,
    STATE_TAG,
    ledger_state,
    state_tag,
    stopped_day_videos,
    task_poller,
)
from seedance_pipeline.defs.resources import EvoLinkResource, PipelineResource  # noqa: E402
from seedance_pipeline.emulator import DEFAULT_API_KEY, EmulatorConfig, running_emulator  # noqa: E402
from seedance_pipeline.ledger import LEDGER_URL_ENV, Ledger, PollUpdate  # noqa: E402
from seedance_pipeline.ledger.database import sql  # noqa: E402
from seedance_pipeline.polling import BATCH, poll_round  # noqa: E402
from seedance_pipeline.seedance import Client  # noqa: E402
from seedance_pipeline.statuses import Status  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' PostgreSQL helper
from seedance_pipeline_tests.postgres import new_database, running_postgres  # noqa: E402

BODY = {"model": "seedance-2.0-fast-text-to-video", "prompt": "waves", "duration": 4}


def write_cost(ledger: Ledger, tasks: int) -> float:
    """Milliseconds of ledger writes per task: claim, task id, a poll's answer, stored video."""
    started = time.perf_counter()
    for i in range(tasks):
        ledger.claim("writes", f"w{i}", BODY, 1.0)
        ledger.record_submitted("writes", f"w{i}", f"task-w-{i}", 0, credits_reserved=1.0)
    ledger.record_polls(
        [PollUpdate(f"task-w-{i}", status=Status.COMPLETED, result_url="u") for i in range(tasks)]
    )
    for i in range(tasks):
        ledger.record_video("writes", f"w{i}", f"videos/w{i}.mp4", "0" * 64, 1, {})
    return 1000 * (time.perf_counter() - started) / tasks


def tick_figures(ledger: Ledger, url: str, tasks: int, rounds: int) -> None:
    started = time.perf_counter()
    with Client(DEFAULT_API_KEY, base_url=url, files_url=url) as client:
        for i in range(tasks):
            ledger.claim("bench", f"p{i}", BODY, None)
            ledger.record_submitted("bench", f"p{i}", client.create_task(BODY).id, 0)
    print(f"  created {tasks} outstanding tasks in {time.perf_counter() - started:.0f} s")
    evolink = EvoLinkResource(api_key=DEFAULT_API_KEY, base_url=url, files_url=url)
    for limit in (BATCH, tasks):
        times = []
        for _ in range(rounds):
            with ledger.db.transaction() as db:  # make every task due again
                db.execute(sql("UPDATE tasks SET next_poll_at = 0"))
            started = time.perf_counter()
            summary = poll_round(ledger, evolink.poll_client, limit=limit)
            times.append(time.perf_counter() - started)
        print(
            f"  tick polling {summary.polled} of {tasks} outstanding: median "
            f"{statistics.median(times):.2f} s, max {max(times):.2f} s ({rounds} rounds, "
            f"{summary.errors} poll errors)"
        )
    started = time.perf_counter()
    idle = poll_round(ledger, evolink.poll_client)
    print(f"  tick with none due: {time.perf_counter() - started:.3f} s ({idle.polled} polled)")


def history_tick(ledger_url: str, url: str, days: int, rows: int, rounds: int) -> None:
    """A tick of the sensor once `days` finished days of `rows` tasks each are in the ledger,
    every one with its videos run done (nothing due, nothing to ask for): its cost is reading
    what the days are."""
    os.environ[LEDGER_URL_ENV] = ledger_url  # the sensor's resource opens this ledger
    ledger = Ledger(ledger_url)
    first = datetime.date(2024, 1, 1)
    partitions = [str(first + datetime.timedelta(days=d)) for d in range(days)]
    request = json.dumps(BODY | {"prompt": "waves on a black sand beach at dusk " * 6})
    with ledger.db.transaction() as db:  # written directly: the claims path would take hours
        for partition in partitions:
            db.execute(
                sql("INSERT INTO partitions (partition, submission_complete) VALUES (:p, 1)"),
                {"p": partition},
            )
            db.execute(
                sql(
                    "INSERT INTO tasks (partition, prompt_id, request_json, status, claimed_at,"
                    " task_id, video_uri) VALUES (:p, :id, :r, 'completed', 0, :t, :v)"
                ),
                [
                    {
                        "p": partition,
                        "id": f"p{i}",
                        "r": request,
                        "t": f"{partition}-{i}",
                        "v": f"videos/{partition}/p{i}.mp4",
                    }
                    for i in range(rows)
                ],
            )
    resources = {
        "evolink": EvoLinkResource(api_key=DEFAULT_API_KEY, base_url=url, files_url=url),
        "pipeline": PipelineResource(data_dir=tempfile.mkdtemp(prefix="sensor-bench-")),
    }
    with instance_for_test() as instance:
        for partition in partitions:
            state = state_tag(partition, ledger_state(ledger.state_rows(partition)))
            instance.add_run(
                DagsterRun(
                    job_name="videos",
                    run_id=make_new_run_id(),
                    status=DagsterRunStatus.SUCCESS,
                    tags={STATE_TAG: state},
                )
            )
        times, cursors = [], [None]
        for _ in range(rounds):
            started = time.perf_counter()
            context = build_sensor_context(
                instance=instance, resources=resources, cursor=cursors[-1]
            )
            asked = task_poller(context)
            times.append(time.perf_counter() - started)
            assert not asked.run_requests, "every day's videos run is done: nothing to ask"
            cursors.append(asked.cursor)
        storing = []
        for _ in range(rounds):
            started = time.perf_counter()
            context = build_sensor_context(instance=instance, resources=resources)
            assert not stopped_day_videos(context).run_requests, "every video is stored"
            storing.append(time.perf_counter() - started)
    older = partitions[:-NEWEST_DAYS]
    per_tick = older.index(cursors[1]) + 1 if older else 1  # the first tick starts at the oldest
    tick = statistics.median(times)
    print(
        f"  tick with {days} settled days of {rows} tasks: median {tick:.2f} s, max "
        f"{max(times):.2f} s ({rounds} ticks); each reads the {NEWEST_DAYS} newest days and "
        f"{per_tick:.0f} of the {len(older)} older ones (a turn of them takes "
        f"{-(-len(older) // per_tick):.0f} ticks)"
    )
    print(
        f"  stopped_day_videos tick over the same days (every video stored): median "
        f"{statistics.median(storing) * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--history-days", type=int, default=365)
    parser.add_argument("--history-rows", type=int, default=1000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sensor-bench-"))
    with contextlib.ExitStack() as stack:
        urls = {"sqlite": f"sqlite:///{tmp / 'ledger.sqlite3'}"}
        histories = {"sqlite": f"sqlite:///{tmp / 'history.sqlite3'}"}
        if "postgres" in args.backends:
            server = stack.enter_context(running_postgres())
            urls["postgres"], histories["postgres"] = new_database(server), new_database(server)
        # time_scale 100: no task finishes during the benchmark, every one stays outstanding.
        config = EmulatorConfig(port=0, time_scale=100, state_dir=tmp / "emu", credits=1e9)
        url = stack.enter_context(running_emulator(config))
        for backend in args.backends.split(","):
            ledger = Ledger(urls[backend])
            print(f"{backend}: ledger writes {write_cost(ledger, args.writes):.2f} ms per task")
            tick_figures(ledger, url, args.tasks, args.rounds)
            history_tick(histories[backend], url, args.history_days, args.history_rows, args.rounds)


if __name__ == "__main__":
    main()
