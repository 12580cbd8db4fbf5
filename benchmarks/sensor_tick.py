"""Sensor tick time with 1,000 outstanding tasks: one `poll_round` against the emulator.

Run: python benchmarks/sensor_tick.py [--tasks 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from seedance_pipeline.defs.generation.sensors import BATCH, poll_round
from seedance_pipeline.defs.resources import EvoLinkResource
from seedance_pipeline.emulator import DEFAULT_API_KEY, EmulatorConfig, running_emulator
from seedance_pipeline.ledger import Ledger
from seedance_pipeline.seedance import Client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sensor-bench-"))
    # time_scale 100: no task finishes during the benchmark, every one stays outstanding.
    config = EmulatorConfig(port=0, time_scale=100, state_dir=tmp / "emu", credits=1e9)
    with running_emulator(config) as url:
        ledger = Ledger(tmp / "ledger.sqlite3")
        body = {
            "model": "seedance-2.0-fast-text-to-video",
            "prompt": "waves",
            "duration": 4,
            "quality": "480p",
        }
        started = time.perf_counter()
        with Client(DEFAULT_API_KEY, base_url=url, files_url=url) as client:
            for i in range(args.tasks):
                ledger.claim("bench", f"p{i}", body, None)
                ledger.record_submitted("bench", f"p{i}", client.create_task(body), 0)
        print(f"created {args.tasks} tasks in {time.perf_counter() - started:.1f} s")
        evolink = EvoLinkResource(api_key=DEFAULT_API_KEY, base_url=url, files_url=url)
        for limit in (BATCH, args.tasks):
            times = []
            for _ in range(args.rounds):
                with ledger._transaction() as db:  # make every task due again
                    db.execute("UPDATE tasks SET next_poll_at=0")
                started = time.perf_counter()
                summary = poll_round(ledger, evolink, limit=limit)
                times.append(time.perf_counter() - started)
            print(
                f"tick polling {summary.polled} of {args.tasks} outstanding tasks: "
                f"median {statistics.median(times):.2f} s, max {max(times):.2f} s "
                f"({args.rounds} rounds, {summary.errors} poll errors)"
            )
        started = time.perf_counter()
        idle = poll_round(ledger, evolink)
        print(
            f"tick with {args.tasks} outstanding, none due: {time.perf_counter() - started:.3f} s "
            f"({idle.polled} polled)"
        )


if __name__ == "__main__":
    main()
