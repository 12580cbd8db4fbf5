"""Callbacks against polling: status queries per task, completion-to-recorded latency, and the
`unknown` rows a day ends with when create answers are lost.

Each scenario runs `seedance-pipeline run` for one generated day against the emulator (real
HTTP on loopback), with and without the callback receiver, with no faults and with
`--drop-rate` cutting create answers after the task was made. Latency runs from the moment
the emulator finished a task to the moment the ledger recorded it as ended (from then on the
videos asset can store it).

Run from the repository root (it borrows the tests' catalog writer and counting emulator):
    python -m benchmarks.callbacks [--prompts 30] [--time-scale 0.1] [--drop-rate 0.3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
from pathlib import Path

from seedance_pipeline.callbacks import CALLBACK_URL_ENV, receiving
from seedance_pipeline.emulator import DEFAULT_API_KEY, EmulatorConfig
from seedance_pipeline.emulator.state import EmulatorState
from seedance_pipeline.ledger import Ledger, ledger_url
from seedance_pipeline.runner import run_partition
from seedance_pipeline_tests.fault_support import Emulator, write_catalog
from seedance_pipeline_tests.pipeline_support import DAY


def scenario(root: Path, prompts: int, time_scale: float, drop: float, callbacks: bool) -> dict:
    data = root / "data"
    write_catalog(data, prompts)
    config = EmulatorConfig(
        port=0,
        time_scale=time_scale,
        seed=3,
        state_dir=root / "emulator",
        drop_rate=drop,
        allow_loopback_callbacks=True,
    )
    os.environ.pop(CALLBACK_URL_ENV, None)
    with Emulator(config) as emulator:
        os.environ.update(
            SEEDANCE_DATA_DIR=str(data),
            EVOLINK_BASE_URL=emulator.url,
            EVOLINK_FILES_URL=emulator.url,
            EVOLINK_API_KEY=DEFAULT_API_KEY,
        )
        ledger = Ledger(ledger_url(data))
        receiver = receiving(ledger, DEFAULT_API_KEY, emulator.url)
        with receiver if callbacks else contextlib.nullcontext(), open(os.devnull, "w") as quiet:
            run_partition(DAY, out=quiet)
        polls = emulator.counts["poll"]
    finished = {t.id: t.completed_at for t in EmulatorState(config.state_dir, 0).tasks()}
    rows = ledger.rows(DAY)
    latency = [r.completed_at - finished[r.task_id] for r in rows if r.task_id and r.completed_at]
    return {
        "tasks": len(finished),
        "polls_per_task": polls / len(finished),
        "latency_median": statistics.median(latency),
        "latency_max": max(latency),
        "unknown": sum(r.status == "unknown" for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--drop-rate", type=float, default=0.3)
    args = parser.parse_args()
    print(
        f"{args.prompts} prompts (4 s, 480p), emulator time scale {args.time_scale}\n"
        "scenario                     tasks  queries/task  completion->recorded  unknown at end"
        "\n                                                   median    max"
    )
    for drop in (0.0, args.drop_rate):
        for callbacks in (False, True):
            with tempfile.TemporaryDirectory(prefix="callbacks-bench-") as tmp:
                f = scenario(Path(tmp), args.prompts, args.time_scale, drop, callbacks)
            name = f"{'callbacks' if callbacks else 'polling  '}, {drop:.0%} answers lost"
            print(
                f"{name:<28}{f['tasks']:>6}{f['polls_per_task']:>14.2f}"
                f"{f['latency_median']:>11.2f} s{f['latency_max']:>6.1f} s{f['unknown']:>12}"
            )


if __name__ == "__main__":
    main()
