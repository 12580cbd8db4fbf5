"""The code location loads as `dagster dev` would load it, with placeholder settings."""

import os
import subprocess
import sys
from pathlib import Path

from dagster import DefaultSensorStatus


def test_code_location_loads_with_placeholder_environment(monkeypatch):
    monkeypatch.setenv("EVOLINK_API_KEY", "sk-evo-placeholder")
    from seedance_pipeline.definitions import defs as load_defs

    defs = load_defs()

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {
        "prompt_catalog",
        "media_catalog",
        "generation_requests",
        "submitted_tasks",
        "generated_videos",
    } <= keys
    for sensor in ("task_poller", "stopped_day_videos"):
        assert defs.resolve_sensor_def(sensor).default_status == DefaultSensorStatus.RUNNING
    assert defs.resolve_job_def("daily_generation")
    store = defs.resolve_job_def("store_videos_of_stopped_day")
    assert store.partitions_def is not None and not store.asset_layer.selected_asset_keys


def test_dagster_cli_loads_the_workspace_module():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "seedance_pipeline.definitions",
        ],
        capture_output=True,
        text=True,
        env={"EVOLINK_API_KEY": "x", "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_dg_checks_the_project_definitions():
    """`[tool.dg]` in pyproject.toml: `dg check defs` loads the code location as Dagster does."""
    venv = Path(sys.executable).parent
    out = subprocess.run(
        [str(venv / "dg"), "check", "defs"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        env={
            "EVOLINK_API_KEY": "x",
            "PATH": f"{venv}:/usr/bin:/bin",
            "VIRTUAL_ENV": str(venv.parent),
            "HOME": os.environ.get("HOME", "/tmp"),
        },
        timeout=180,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "All definitions loaded successfully" in out.stdout + out.stderr
