"""A day of N prompts through `seedance-pipeline run` against a rate-limited emulator: wall
time against the rate limit's floor, 429 share, polls per task, CPU per task, peak RSS.

The floor: every create at the create limit and every query at the query limit (two separate
limits, so they overlap: the slower of the two), plus one task's generation time.
Several sizes (`--prompts 1000 5000`) also give the CPU per task beyond start-up: the slope
between the smallest and the largest.
`--by-thread` adds the CPU per task of each of its thread pools (`thread_cpu/`).
Run: python benchmarks/day.py [--prompts 1000 [5000 ...]] [--rate 20] [--pace 18] [--by-thread]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fault helpers
from seedance_pipeline.emulator import EmulatorConfig  # noqa: E402
from seedance_pipeline.emulator.render import Renderer  # noqa: E402
from seedance_pipeline.emulator.timing import vendor_seconds  # noqa: E402
from seedance_pipeline.seedance import PIXELS  # noqa: E402
from seedance_pipeline_tests.fault_support import (  # noqa: E402
    RATIOS,
    Emulator,
    cli,
    pipeline_env,
    write_catalog,
)
from seedance_pipeline_tests.pipeline_support import DAY  # noqa: E402

TIME_SCALE = 0.1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, nargs="+", default=[1000])
    parser.add_argument("--rate", type=float, default=20.0, help="the emulator's create limit")
    parser.add_argument("--pace", type=float, help="EVOLINK_MAX_REQUESTS_PER_SECOND (a cap)")
    parser.add_argument(
        "--by-thread", action="store_true", help="also the CPU per task of each thread pool"
    )
    args = parser.parse_args()
    cpu = {n: day(n, args.rate, args.pace, args.by_thread) for n in args.prompts}
    if len(cpu) > 1:
        (small, low), (large, high) = min(cpu.items()), max(cpu.items())
        per_task = (high - low) / (large - small)
        print(
            f"pipeline CPU per task beyond start-up (from {small} to {large} prompts): "
            f"{1000 * per_task:.1f} ms; start-up and fixed work {low - per_task * small:.1f} s"
        )


def day(prompts: int, rate: float, pace: float | None, by_thread: bool = False) -> float:
    """Run one day of `prompts` and print its figures; returns the pipeline's CPU seconds."""
    root = Path(tempfile.mkdtemp(prefix="day-bench-"))
    data = root / "data"
    write_catalog(data, prompts)
    config = EmulatorConfig(
        port=0,
        time_scale=TIME_SCALE,
        rate_limit=rate,
        credits=1e9,
        seed=1,
        state_dir=root / "emulator",
    )
    renderer = Renderer(config.state_dir / "renders")  # rendered now, not in the CPU figures
    for ratio in RATIOS:
        for audio in (True, False):
            renderer.video(*PIXELS[ratio]["480p"], 4, audio)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with Emulator(config) as emulator:
        env = pipeline_env(root, emulator.url, data) | {"DAGSTER_HOME": str(root / "dagster")}
        if pace:
            env["EVOLINK_MAX_REQUESTS_PER_SECOND"] = str(pace)
        threads = root / "threads.json"
        if by_thread:
            env["PYTHONPATH"] = str(Path(__file__).with_name("thread_cpu"))
            env["SEEDANCE_BENCH_THREAD_CPU"] = str(threads)
        started = time.monotonic()
        done = subprocess.run([*cli(), "run", DAY], env=env, capture_output=True, text=True)
        wall = time.monotonic() - started
        if done.returncode:
            sys.exit(done.stdout[-2000:] + done.stderr[-2000:])
        counts, refused = dict(emulator.counts), dict(emulator.refused)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = usage.ru_utime - before.ru_utime, usage.ru_stime - before.ru_stime
    cpu = user + system
    poll_rate = config.poll_rate_limit or 5 * rate
    generation = vendor_seconds("seedance-2.0-text-to-video", 4, "480p") * TIME_SCALE
    floor = max(prompts / rate, prompts / poll_rate) + generation
    calls = sum(n for k, n in counts.items() if k in ("create", "poll"))
    print(
        f"{prompts} prompts, create limit {rate}/s, pace "
        f"{pace or 'adaptive (none set)'}: wall {wall:.0f} s = {wall / floor:.2f}x the "
        f"floor ({floor:.0f} s); 429 share {sum(refused.values()) / max(1, calls):.1%} "
        f"({refused}); polls per task {counts.get('poll', 0) / prompts:.2f}; "
        f"pipeline CPU {1000 * cpu / prompts:.1f} ms per task ({user:.1f} s user, "
        f"{system:.1f} s system); peak RSS {usage.ru_maxrss / 1024:.0f} MB",
        flush=True,
    )
    if by_thread:
        measured = json.loads(threads.read_text())
        spent, collected = measured["threads"], measured["gc"]
        rest = "after exit handlers (the interpreter shutting down, daemon threads)"
        spent[rest] = cpu - sum(spent.values())
        print(f"  CPU per task by thread: {_per_task(spent, prompts)}", flush=True)
        print(
            f"  of which the garbage collector, by generation: {_per_task(collected, prompts)}",
            flush=True,
        )
    return cpu


def _per_task(seconds: dict[str, float], prompts: int) -> str:
    """'name 1.23 ms, ...', the largest first."""
    ranked = sorted(seconds.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {1000 * spent / prompts:.2f} ms" for name, spent in ranked)


if __name__ == "__main__":
    main()
