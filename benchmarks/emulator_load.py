"""Emulator create and poll latency with 1,000 and 10,000 tasks already in its state.

The tasks are written straight into the state store (half still running, half ended), then
the emulator starts on that state and answers creates and polls over loopback HTTP.

Run: python benchmarks/emulator_load.py [--sizes 1000 10000] [--requests 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from seedance_pipeline.emulator import (
    DEFAULT_API_KEY,
    EmulatorConfig,
    EmulatorState,
    running_emulator,
)
from seedance_pipeline.emulator.state import TaskRecord

BODY = {"model": "seedance-2.0-text-to-video", "prompt": "waves", "duration": 4, "quality": "480p"}
AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}


def preload(state_dir: Path, count: int) -> list[str]:
    """`count` tasks created over the last hour: every other one still running."""
    state = EmulatorState(state_dir, credits=1e9)
    now, ids = time.time(), []
    for i in range(count):
        created = now - 3600 * i / count
        task = TaskRecord(
            id=f"task-unified-{int(created)}-{i:08d}",
            created=created,
            model=BODY["model"],
            duration=4,
            quality="480p",
            width=864,
            height=496,
            audio=True,
            run_seconds=7200.0 if i % 2 else 1.0,
            credits_reserved=25.004,
            error_code="service_error" if i % 4 == 0 else None,
        )
        assert state.reserve_task(task, prompt="waves") is None
        ids.append(task.id)
    state.close()
    return ids


def timed(call, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def line(name: str, ms: list[float]) -> str:
    p95 = statistics.quantiles(ms, n=20)[-1]
    return f"{name:<8} median {statistics.median(ms):6.2f} ms   p95 {p95:6.2f} ms"


def measure(size: int, requests: int) -> None:
    rng = random.Random(1)
    state_dir = Path(tempfile.mkdtemp(prefix="emulator-load-"))
    started = time.perf_counter()
    ids = preload(state_dir, size)
    loaded = time.perf_counter() - started
    config = EmulatorConfig(port=0, state_dir=state_dir, credits=1e9, seed=1)
    started = time.perf_counter()
    with running_emulator(config) as url, httpx.Client(base_url=url, headers=AUTH) as client:
        boot = time.perf_counter() - started

        def create() -> None:
            assert client.post("/v1/videos/generations", json=BODY).status_code == 200

        def poll() -> None:
            assert client.get(f"/v1/tasks/{rng.choice(ids)}").status_code == 200

        creates, polls = timed(create, requests), timed(poll, requests)
    print(f"{size:,} tasks in state (written in {loaded:.1f} s, emulator up in {boot:.2f} s)")
    print("  " + line("create", creates))
    print("  " + line("poll", polls))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    for size in args.sizes:
        measure(size, args.requests)


if __name__ == "__main__":
    main()
