"""A sensor tick with many outstanding tasks, and the ledger's write cost per task, on SQLite
and on PostgreSQL (a throwaway server started here).

Run: python benchmarks/sensor_tick.py [--tasks 10000] [--rounds 3] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from seedance_pipeline.defs.resources import EvoLinkResource
from seedance_pipeline.emulator import DEFAULT_API_KEY, EmulatorConfig, running_emulator
from seedance_pipeline.ledger import Ledger, PollUpdate
from seedance_pipeline.ledger.database import sql
from seedance_pipeline.polling import BATCH, poll_round
from seedance_pipeline.seedance import Client
from seedance_pipeline.statuses import Status

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
            summary = poll_round(ledger, evolink.async_client, limit=limit)
            times.append(time.perf_counter() - started)
        print(
            f"  tick polling {summary.polled} of {tasks} outstanding: median "
            f"{statistics.median(times):.2f} s, max {max(times):.2f} s ({rounds} rounds, "
            f"{summary.errors} poll errors)"
        )
    started = time.perf_counter()
    idle = poll_round(ledger, evolink.async_client)
    print(f"  tick with none due: {time.perf_counter() - started:.3f} s ({idle.polled} polled)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sensor-bench-"))
    with contextlib.ExitStack() as stack:
        urls = {"sqlite": f"sqlite:///{tmp / 'ledger.sqlite3'}"}
        if "postgres" in args.backends:
            urls["postgres"] = new_database(stack.enter_context(running_postgres()))
        # time_scale 100: no task finishes during the benchmark, every one stays outstanding.
        config = EmulatorConfig(port=0, time_scale=100, state_dir=tmp / "emu", credits=1e9)
        url = stack.enter_context(running_emulator(config))
        for backend in args.backends.split(","):
            ledger = Ledger(urls[backend])
            print(f"{backend}: ledger writes {write_cost(ledger, args.writes):.2f} ms per task")
            tick_figures(ledger, url, args.tasks, args.rounds)


if __name__ == "__main__":
    main()
