"""The CPU one task costs in the parts the pipeline is built on, with no pipeline logic around
them: what `day.py`'s CPU per task can at best come down to with this stack.

A task needs a create, a poll (16 at a time on threads, as poll rounds send them), a
download, a measuring of the MP4, and four ledger transactions (claim, submitted, the poll's
answer, the stored video). Each part is timed alone in this process (CPU time, after one call
to warm it up), N times, against the emulator in another process, through the project's own
clients and ledger; the same three HTTP calls in bare httpx are timed beside them.

`--gap S` sleeps S seconds before each sync call, not counted: in a day the calls come one at a
time, paced (a create every 50 ms at 20/s), and a call finding the CPU's caches cold after such
a wait costs more than back to back (helper-43 measured 1.5-3x on this project's machines).

Run: python benchmarks/task_floor.py [--tasks 300] [--gap 0.05]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers
from seedance_pipeline.emulator import DEFAULT_API_KEY  # noqa: E402
from seedance_pipeline.ledger import Ledger, PollUpdate  # noqa: E402
from seedance_pipeline.media import measure_video_output  # noqa: E402
from seedance_pipeline.seedance import Client  # noqa: E402
from seedance_pipeline.statuses import Status  # noqa: E402
from seedance_pipeline_tests.fault_support import free_port  # noqa: E402
from seedance_pipeline_tests.pipeline_support import b_frame_video  # noqa: E402

BODY = {"model": "seedance-2.0-fast-text-to-video", "prompt": "a cat", "duration": 4}
AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
DAY = "2026-11-20"


def cpu_ms_each(n: int, one: Callable[[int], object], gap: float = 0.0) -> float:
    """CPU milliseconds per `one(i)` for i in 1..n, after `one(0)` warmed it up; each after
    `gap` seconds of sleep, not counted."""
    one(0)
    spent = 0.0
    for i in range(1, n + 1):
        time.sleep(gap)
        started = time.process_time()
        one(i)
        spent += time.process_time() - started
    return spent * 1000 / n


def threaded_ms_each(n: int, one: Callable[[int], object]) -> float:
    """As `cpu_ms_each`, the calls made 16 at a time on a thread pool, as poll rounds make
    them (the CPU of every thread of the process)."""
    one(0)
    with ThreadPoolExecutor(16) as pool:
        started = time.process_time()
        list(pool.map(one, range(1, n + 1)))
        return (time.process_time() - started) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.0, help="seconds slept before each call")
    args = parser.parse_args()
    n = args.tasks
    folder = Path(tempfile.mkdtemp(prefix="task-floor-"))
    port = free_port()
    emulator = subprocess.Popen(
        [str(Path(sys.executable).with_name("seedance-pipeline")), "emulator"]
        + ["--port", str(port), "--time-scale", "0.001", "--state-dir", str(folder / "emu")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        figures = measure(n, f"http://127.0.0.1:{port}", folder, args.gap)
    finally:
        emulator.terminate()
        emulator.wait()
    width = max(map(len, figures))
    for name, ms in figures.items():
        print(f"{name:<{width}}  {ms:6.2f} ms CPU")


def measure(n: int, url: str, folder: Path, gap: float) -> dict[str, float]:
    each = partial(cpu_ms_each, gap=gap)
    figures: dict[str, float] = {}
    with Client(DEFAULT_API_KEY, base_url=url, files_url=url) as client:
        for _ in range(100):  # until the emulator answers
            try:
                client.get_credits()
                break
            except Exception:
                time.sleep(0.1)
        tasks = [None] * (n + 1)

        def create(i: int) -> None:
            tasks[i] = client.create_task(BODY)

        figures["create (Client.create_task)"] = each(n, create)
        time.sleep(1)  # every task completes
        links = [""] * (n + 1)

        def poll(i: int) -> None:
            links[i] = client.get_task(tasks[i].id).results[0]

        figures["poll (Client.get_task, 16 threads)"] = threaded_ms_each(n, poll)
        files = [folder / f"{i}.mp4" for i in range(n + 1)]
        figures["download (Client.download)"] = each(
            n, lambda i: client.download(links[i], files[i])
        )
    figures["measure (measure_video_output)"] = each(n, lambda i: measure_video_output(files[i]))
    hd = b_frame_video(folder / "hd.mp4", 1920, 1080, 5)  # not as the emulator renders
    measure_hd = each(n, lambda i: measure_video_output(hd))
    ledger = Ledger(folder / "ledger.sqlite3")

    def ledger_steps(i: int) -> None:
        task_id, prompt_id = tasks[i].id, f"p{i}"
        ledger.claim(DAY, prompt_id, BODY, 1.0)
        ledger.record_submitted(DAY, prompt_id, task_id, time.time(), status="processing")
        ledger.record_polls([PollUpdate(task_id, Status.COMPLETED, result_url=links[i])])
        ledger.record_video(DAY, prompt_id, f"videos/{i}.mp4", "0" * 64, 1, {"width": 1})

    figures["ledger: claim, submitted, poll answer, video"] = each(n, ledger_steps)
    figures["= one task in these parts"] = sum(figures.values())
    figures["measure a 5 s 1080p video with B-frames (not the emulator's)"] = measure_hd
    figures.update(bare_httpx(n, url, links, folder, gap))
    return figures


def bare_httpx(n: int, url: str, links: list[str], folder: Path, gap: float) -> dict[str, float]:
    """A task's three HTTP calls in httpx alone (no checks, retries, hashing, fsync or
    ledger): below this no httpx-based pipeline can go on this machine."""
    each = partial(cpu_ms_each, gap=gap)
    ids = [""] * (n + 1)
    figures: dict[str, float] = {}
    with httpx.Client(headers=AUTH) as bare:

        def create(i: int) -> None:
            ids[i] = bare.post(f"{url}/v1/videos/generations", json=BODY).json()["id"]

        def download(i: int) -> None:
            with bare.stream("GET", links[i]) as answer, open(folder / f"bare{i}", "wb") as f:
                for chunk in answer.iter_raw():
                    f.write(chunk)

        figures["bare httpx: POST a create"] = each(n, create)
        figures["bare httpx: GET a task, 16 threads"] = threaded_ms_each(
            n, lambda i: bare.get(f"{url}/v1/tasks/{ids[i]}").json()
        )
        figures["bare httpx: GET the video into a file"] = each(n, download)
    figures["= a task's three calls in bare httpx"] = sum(figures.values())
    return figures


if __name__ == "__main__":
    main()
