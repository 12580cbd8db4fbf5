"""deploy/: the production dagster.yaml against a real throwaway PostgreSQL and moto's S3.

Docker cannot run here: the Dockerfile and docker-compose.yml are checked for consistency only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import psycopg
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, asset, materialize
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from seedance_pipeline.defs.generation.assets import API_POOL

from .fault_support import free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _as_postgres(*command: str) -> list[str]:
    """`command` as the `postgres` user when we are root (initdb refuses root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on loopback (initdb + pg_ctl), with a `dagster` database."""
    if not shutil.which("initdb") or not shutil.which("pg_ctl"):
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
    root = Path(tempfile.mkdtemp(prefix="seedance-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    subprocess.run(
        _as_postgres("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres(
            "pg_ctl", "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "start"
        ),
        check=True,
        capture_output=True,
    )
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres") as conn:
            conn.autocommit = True
            conn.execute("CREATE DATABASE dagster")
        yield f"postgresql://postgres@127.0.0.1:{port}/dagster"
    finally:
        subprocess.run(_as_postgres("pg_ctl", "-D", str(data), "-m", "immediate", "stop"))
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dagster_home(tmp_path, postgres_url, s3_bucket, monkeypatch) -> Path:
    """DAGSTER_HOME holding deploy/dagster.yaml as is, its settings in the environment."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.yaml", home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    # dagster-postgres needs psycopg2; SQLAlchemy 2.1 would pick psycopg 3 for `postgresql://`.
    monkeypatch.setenv(
        "DAGSTER_POSTGRES_URL", postgres_url.replace("postgresql:", "postgresql+psycopg2:")
    )
    monkeypatch.setenv("SEEDANCE_S3_BUCKET", s3_bucket)
    return home


def test_production_instance_runs_on_postgres_and_logs_steps_to_s3(dagster_home, s3_bucket):
    # The command the compose daemon runs first, against the same instance.
    subprocess.run(
        [sys.executable, "-m", "dagster", "instance", "concurrency", "set", API_POOL, "3"],
        check=True,
        capture_output=True,
    )
    instance = DagsterInstance.from_config(str(dagster_home))

    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    assert isinstance(instance.compute_log_manager, S3ComputeLogManager)
    assert instance.event_log_storage.get_concurrency_info(API_POOL).slot_count == 3
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 300

    @asset(pool=API_POOL)
    def says_hello() -> None:
        print("hello from a step")

    result = materialize([says_hello], instance=instance)

    assert result.success
    assert instance.get_run_by_id(result.run_id) is not None  # read back from Postgres
    assert instance.get_latest_materialization_event(AssetKey("says_hello")) is not None
    logs = boto3.client("s3").list_objects_v2(Bucket=s3_bucket, Prefix="dagster-compute-logs/")
    bodies = [
        boto3.client("s3").get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read()
        for o in logs.get("Contents", [])
    ]
    assert any(b"hello from a step" in body for body in bodies)
    instance.dispose()


def test_compose_file_wires_the_image_workspace_and_instance_together():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    services = compose["services"]

    assert {"postgres", "webserver", "daemon", "code-location"} <= set(services)
    server = workspace["load_from"][0]["grpc_server"]
    assert server["host"] in services
    assert f'"-p", "{server["port"]}"' in dockerfile
    build = services["code-location"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    env = services["webserver"]["environment"]
    assert env["DAGSTER_POSTGRES_URL"].startswith("postgresql+psycopg2://")
    assert "SEEDANCE_LEDGER_URL" in env
    assert API_POOL in " ".join(services["daemon"]["command"])
