"""`seedance-pipeline run` killed with SIGKILL at many points, then rerun; and two runs at once.

The kill points are exact moments, not luck: the emulator kills the run when a create
arrives (claim recorded, request not yet served), after it made the task but before the
answer leaves, or halfway through sending a video; a test-only `sitecustomize` (on the child's
PYTHONPATH, no product code involved) kills it as it renames a finished temporary file; and
the ledger is watched to kill it once task ids are recorded or every task is submitted.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from seedance_pipeline.emulator import EmulatorConfig
from seedance_pipeline.ledger import Ledger, LedgerRow
from seedance_pipeline.ledger.database import sql
from seedance_pipeline.media import measure_video_output
from seedance_pipeline.tables import read_table

from .fault_support import (
    Emulator,
    cli,
    kill_group,
    pipeline_env,
    start_run,
    temporaries,
    write_catalog,
)
from .pipeline_support import DAY, emulator_tasks

PROMPTS = 16
RUN_TIMEOUT = 120


def _ledger(url: str) -> list[LedgerRow]:
    return Ledger(url).rows()


def _submission_complete(url: str) -> bool:
    with Ledger(url).db.read() as db:
        return bool(db.execute(sql("SELECT MAX(submission_complete) FROM partitions")).scalar())


@dataclass
class KillPoint:
    name: str
    http: tuple[str, int, str] | None = None  # (request kind, n-th in this run, action)
    rename: str | None = None  # kill on renaming a temporary whose path contains this
    when: Callable[[str], bool] | None = None  # kill once the ledger shows this state
    after: float | None = None  # kill after this many seconds
    more_task_ids: int | None = None  # kill once this run recorded this many task ids
    left: Callable[[Path, str, list[dict]], bool] | None = None  # what the kill left behind


def _claimed(url: str, tasks: list[dict]) -> tuple[bool, bool]:
    """(a prompt is claimed without a task id and the vendor has no task for it, a claimed
    prompt has a task at the vendor). Both may hold: the submit threads' creates race the
    kill (CI once saw the second thread's create served as the first's killed the run)."""
    made = {t["prompt"] for t in tasks}
    claims = [r.request["prompt"] for r in _ledger(url) if not r.task_id]
    return any(c not in made for c in claims), any(c in made for c in claims)


def _left_temporary(fragment: str) -> Callable[[Path, str, list[dict]], bool]:
    return lambda data, url, tasks: any(fragment in str(p) for p in temporaries(data))


def _task_ids(url: str) -> int:
    return sum(r.task_id is not None for r in _ledger(url))


def _all_submitted_day_unfinished(url: str) -> bool:
    """Tasks still running, or videos still to store: tasks made by the runs killed before
    may all have ended by the time this run polls them (on a loaded machine), so running
    tasks alone are not a point every run reaches."""
    unfinished = any(
        r.status in ("pending", "processing") or (r.status == "completed" and not r.video_uri)
        for r in _ledger(url)
    )
    return unfinished and _submission_complete(url)


POINTS = [
    KillPoint("0.5 s after start (starting up)", after=0.5),
    KillPoint(
        "generation_requests table written, not renamed",
        rename="generation_requests/.",
        left=_left_temporary("generation_requests/."),
    ),
    KillPoint(
        "prompt claimed, request not yet served",
        http=("create", 1, "kill_before"),
        left=lambda data, url, tasks: _claimed(url, tasks)[0],
    ),
    KillPoint(
        "task made, answer not yet delivered",
        http=("create", 2, "kill_after"),
        left=lambda data, url, tasks: _claimed(url, tasks)[1],
    ),
    KillPoint("4 more task ids recorded", more_task_ids=4),
    KillPoint(
        # The run before may have sent every prompt: this one then marks the day submitted at
        # once, and its videos could all be stored first (CI saw it finish unkilled). Its first
        # download is served late, so a video is still to store when the mark comes.
        "every prompt submitted, the day unfinished",
        http=("download", 1, "hold"),
        when=_all_submitted_day_unfinished,
    ),
    KillPoint("2.5 s after start", after=2.5),
    KillPoint(
        # The first download: the point before leaves one task running for certain, but a
        # day whose other videos were all stored while it was submitted has no second.
        "mid-download (half a video received)",
        http=("download", 1, "kill_mid_body"),
        left=_left_temporary(".part"),
    ),
    KillPoint(
        "download complete, .part not renamed", rename=".mp4.", left=_left_temporary(".part")
    ),
    KillPoint(
        "generated_videos table written, not renamed",
        rename="generated_videos/.",
        left=_left_temporary("generated_videos/."),
    ),
]


def _run_until_killed(emulator: Emulator, env: dict, url: str, point: KillPoint) -> str:
    emulator.counts.clear()
    extra = {"FAULT_KILL_ON_RENAME": point.rename} if point.rename else {}
    when = point.when
    if point.more_task_ids:
        target = _task_ids(url) + point.more_task_ids
        when = lambda url: _task_ids(url) >= target  # noqa: E731
    proc = start_run(env, **extra)
    emulator.victim = proc
    if point.http:
        kind, nth, action = point.http
        emulator.hook = lambda k, n: action if (k, n) == (kind, nth) else None
    started = time.monotonic()
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - started
            assert elapsed < RUN_TIMEOUT, f"{point.name}: run did not reach its kill point"
            if (point.after is not None and elapsed >= point.after) or (
                when is not None and when(url)
            ):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        proc.wait(timeout=30)
        kill_group(proc)
        output = proc.communicate(timeout=30)[0]
    finally:
        emulator.hook = None
        emulator.victim = None
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"{point.name}: not killed\n{output}"
    return output


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*cli(), *args], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )


def _assert_submitted_once(url: str, ledger_url: str) -> list[dict]:
    tasks = emulator_tasks(url)
    counts = Counter(t["prompt"] for t in tasks)
    assert all(n == 1 for n in counts.values()), counts
    ledger_ids = {r.task_id for r in _ledger(ledger_url) if r.task_id}
    assert ledger_ids <= {t["id"] for t in tasks}
    return tasks


def _assert_videos_whole(data: Path, table: pd.DataFrame) -> None:
    for row in table[table.status == "completed"].itertuples():
        path = data / "videos" / DAY / f"{row.prompt_id}.mp4"
        assert path.stat().st_size == row.video_bytes
        measured = measure_video_output(path)
        assert (measured["width"], measured["height"]) == (row.expected_width, row.expected_height)


@pytest.fixture
def crash_emulator(tmp_path):
    config = EmulatorConfig(port=0, time_scale=0.1, seed=3, state_dir=tmp_path / "emulator")
    with Emulator(config) as emulator:
        yield emulator


@pytest.mark.timeout(900)
def test_sigkill_at_ten_points_then_rerun_loses_nothing_and_pays_nothing_twice(
    tmp_path, crash_emulator, ledger_url
):
    data = tmp_path / "data"
    ids = write_catalog(data, PROMPTS)
    env = pipeline_env(tmp_path, crash_emulator.url, data) | {"SEEDANCE_LEDGER_URL": ledger_url}
    stored: dict[str, str] = {}  # prompt -> sha256 of every video ever recorded as saved
    for point in POINTS:
        started = time.monotonic()
        _run_until_killed(crash_emulator, env, ledger_url, point)
        tasks = _assert_submitted_once(crash_emulator.url, ledger_url)
        statuses = Counter(r.status.value for r in _ledger(ledger_url))
        print(
            f"killed: {point.name:<48} {time.monotonic() - started:4.1f}s  ledger {dict(statuses)}"
            f"  temporaries {[p.name for p in temporaries(data)]}"
        )
        # The kill landed where it says (a half-written file or a dangling claim is there).
        if point.left:
            assert point.left(data, ledger_url, tasks), point.name
        stored.update({r.prompt_id: r.video_sha256 for r in _ledger(ledger_url) if r.video_sha256})
    assert stored  # videos were saved between kills, and must survive every later one

    done = _run(env, "run", DAY)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not temporaries(data)
    tasks = _assert_submitted_once(crash_emulator.url, ledger_url)
    table = read_table(data, "generated_videos", DAY)
    assert sorted(table.prompt_id) == ids
    assert set(table.status) <= {"completed", "unknown"}, Counter(table.status)
    _assert_videos_whole(data, table)
    final = dict(zip(table.prompt_id, table.video_sha256, strict=True))
    assert all(final[p] == sha for p, sha in stored.items())
    # Answers lost to a kill are `unknown`, never resubmitted silently: the one killed
    # before the request was served and the one whose task was made at least.
    unknown = list(table[table.status == "unknown"].prompt_id)
    assert len(unknown) >= 2
    # The user settles each as the dashboard shows: attach the task, or forget it.
    prompt_of = {r.prompt_id: r.request["prompt"] for r in _ledger(ledger_url)}
    made = {t["prompt"]: t["id"] for t in tasks}
    forgotten = []
    for prompt_id in unknown:
        text = prompt_of[prompt_id]
        if text in made:
            args = ["--task-id", made[text]]
        else:
            args = ["--forget"]
            forgotten.append(prompt_id)
        settled = _run(env, "resolve", DAY, prompt_id, *args)
        assert settled.returncode == 0, settled.stderr
    assert forgotten and len(forgotten) < len(unknown)  # both cases happened
    # Settling a settled row or a mistyped prompt says so and changes nothing.
    attached = next(p for p in unknown if p not in forgotten)
    twice = _run(env, "resolve", DAY, attached, "--forget")
    typo = _run(env, "resolve", DAY, "no-such-prompt", "--forget")
    assert twice.returncode == 2 and "is pending, not unknown" in twice.stderr, twice.stderr
    assert typo.returncode == 2 and "no such row in the ledger" in typo.stderr

    again = _run(env, "run", DAY)
    assert again.returncode == 0, again.stdout + again.stderr
    tasks = _assert_submitted_once(crash_emulator.url, ledger_url)
    assert len(tasks) == PROMPTS
    table = read_table(data, "generated_videos", DAY)
    assert sorted(table.prompt_id) == ids
    assert (table.status == "completed").all(), Counter(table.status)
    _assert_videos_whole(data, table)
    assert not temporaries(data)


def test_two_runs_started_at_once_submit_each_prompt_once(tmp_path, crash_emulator, ledger_url):
    data = tmp_path / "data"
    ids = write_catalog(data, PROMPTS)
    env = pipeline_env(tmp_path, crash_emulator.url, data) | {"SEEDANCE_LEDGER_URL": ledger_url}
    runs = [start_run(env) for _ in range(2)]
    outputs = [p.communicate(timeout=RUN_TIMEOUT)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs
    tasks = _assert_submitted_once(crash_emulator.url, ledger_url)
    assert len(tasks) == PROMPTS
    table = read_table(data, "generated_videos", DAY)
    assert sorted(table.prompt_id) == ids
    assert (table.status == "completed").all()
    _assert_videos_whole(data, table)
    assert not temporaries(data)
