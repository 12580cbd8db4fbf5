"""The API key reaches no log, event, metadata entry, table, file or exception text."""

from __future__ import annotations

import logging
import subprocess
import sys

from dagster import DagsterEventType, instance_for_test

from .pipeline_support import (
    DAY,
    copy_sample_data,
    make_resources,
    save_videos,
    submit,
    wait_for_tasks,
)

KEY = "sk-evo-SECRET-c0ffee-4242-do-not-leak"
PASSWORD = "pw-SECRET-in-the-url"


def _everything_written(root) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_key_appears_nowhere(tmp_path, start_emulator, caplog):
    caplog.set_level(logging.DEBUG)
    url = start_emulator(api_key=KEY)
    data = copy_sample_data(tmp_path / "data")
    resources = make_resources(data, url, KEY)
    (tmp_path / "dagster_home").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        assert submit(resources, instance=instance).success
        wait_for_tasks(resources)
        assert save_videos(resources, instance=instance).success
        # A refused key: the failure must explain, without echoing either key.
        wrong = make_resources(data, url, KEY + "-wrong")
        failed = submit(wrong, "2026-11-21", instance=instance)
        assert not failed.success
        texts = []
        for run in instance.get_runs():
            for entry in instance.all_logs(run.run_id):
                texts.append(repr(entry))
        failures = [
            e.step_failure_data.user_failure_data.description
            for e in failed.all_events
            if e.event_type == DagsterEventType.STEP_FAILURE
        ]
        assert any("401" in f and "EVOLINK_API_KEY" in f for f in failures), failures
        texts += failures
    texts += [r.getMessage() for r in caplog.records]
    assert texts and not [t for t in texts if KEY in t]
    assert KEY.encode() not in _everything_written(data)
    assert KEY.encode() not in _everything_written(tmp_path / "dagster_home")


def _shell_env(tmp_path, data, url: str, **changes: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "SEEDANCE_DATA_DIR": str(data),
        "DAGSTER_HOME": str(tmp_path / "shell_dagster_home"),
        "EVOLINK_BASE_URL": url,
        "EVOLINK_FILES_URL": url,
        "EVOLINK_API_KEY": KEY,
        **changes,
    }


def _run(env: dict[str, str], day: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "seedance_pipeline.cli", "run", day],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_key_not_printed_by_the_shell_commands(tmp_path, start_emulator):
    url = start_emulator(api_key=KEY)
    data = copy_sample_data(tmp_path / "data")
    run = _run(_shell_env(tmp_path, data, url), DAY)
    assert run.returncode == 0, run.stderr[-3000:]
    bad = _run(_shell_env(tmp_path, data, url, EVOLINK_API_KEY=KEY + "x"), "2026-11-21")
    assert bad.returncode != 0 and "401" in bad.stderr
    for out in (run.stdout, run.stderr, bad.stdout, bad.stderr):
        assert KEY not in out


def test_a_password_in_the_api_url_is_refused_without_being_shown(tmp_path, start_emulator):
    """httpx would send it as Basic auth in place of the key, and quote it in every error."""
    url = start_emulator(api_key=KEY)
    data = copy_sample_data(tmp_path / "data")
    host = url.removeprefix("http://")
    for name, value in (
        ("EVOLINK_BASE_URL", f"http://user:{PASSWORD}@{host}"),
        ("EVOLINK_FILES_URL", f"http://{host}/?key={PASSWORD}"),
    ):
        run = _run(_shell_env(tmp_path, data, url, **{name: value}), DAY)
        assert run.returncode != 0 and f"{name} must be an http(s):// URL with no" in run.stderr
        assert PASSWORD not in run.stdout + run.stderr
    assert not (data / "state").exists()  # stopped before the ledger: nothing was sent
