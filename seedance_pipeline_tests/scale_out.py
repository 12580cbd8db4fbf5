"""One day run by three workers that share nothing but PostgreSQL and S3 (moto's server).

Each worker is a `seedance-pipeline run` process with its own scratch SEEDANCE_DATA_DIR and
its own DAGSTER_HOME (a Postgres-backed instance). Worker A is killed with SIGKILL in the
middle of submission, right after the vendor made a task whose answer A never read; then B
and C run the same day at once. Used by `test_scale_out.py` and `benchmarks/three_workers.py`.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from dagster import DagsterInstance

from seedance_pipeline.emulator import EmulatorConfig
from seedance_pipeline.ledger import Ledger
from seedance_pipeline.s3 import S3Bucket, S3TableStore, s3_client

from .fault_support import Emulator, cli, pipeline_env, write_catalog
from .pipeline_support import DAY, emulator_tasks
from .postgres import new_database

PREFIX = "fleet"
RUN_TIMEOUT = 300

_INSTANCE_YAML = """\
storage:
  postgres:
    postgres_url: {url}
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
telemetry:
  enabled: false
"""


@dataclass
class Fleet:
    """What the day left behind, for the checks and the figures."""

    prompts: list[str]
    tasks: list[dict]
    table_statuses: Counter
    unknown_settled: int
    videos_in_s3: dict[str, str]  # key -> sha256 of the object
    table_sha256: dict[str, str]  # prompt_id -> sha256 the table records
    runs: int
    scratch_files: list[Path]
    seconds: dict[str, float] = field(default_factory=dict)


def _worker_env(base: dict, root: Path, name: str, dagster_url: str) -> dict:
    scratch, home = root / name / "data", root / name / "dagster_home"
    scratch.mkdir(parents=True)
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(_INSTANCE_YAML.format(url=dagster_url))
    return base | {"SEEDANCE_DATA_DIR": str(scratch), "DAGSTER_HOME": str(home)}


def run_fleet(root: Path, postgres: str, moto: str, bucket: str, prompts: int = 24) -> Fleet:
    """Run the day with workers A (killed), B and C, settle what A left `unknown`, finish."""
    catalog = root / "shared"
    ids = write_catalog(catalog, prompts)
    aws = {
        "AWS_ENDPOINT_URL": moto,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    ledger_url = new_database(postgres)
    dagster_url = new_database(postgres).replace("postgresql://", "postgresql+psycopg2://")
    config = EmulatorConfig(port=0, time_scale=0.05, seed=5, state_dir=root / "emulator")
    seconds = {}
    with Emulator(config) as emulator:
        base = pipeline_env(root, emulator.url, catalog) | aws
        base |= {
            "SEEDANCE_LEDGER_URL": ledger_url,
            "SEEDANCE_S3_BUCKET": bucket,
            "SEEDANCE_S3_PREFIX": PREFIX,
        }
        workers = {n: _worker_env(base, root, n, dagster_url) for n in ("a", "b", "c")}
        args = [
            "run",
            DAY,
            "--prompts",
            str(catalog / "catalog" / "prompts.csv"),
            "--media",
            str(catalog / "catalog" / "media.csv"),
        ]

        def start(name: str) -> subprocess.Popen:
            return subprocess.Popen(
                [*cli(), *args],
                env=workers[name],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

        started = time.monotonic()
        a = start("a")
        emulator.victim = a  # killed as its 8th create's answer is about to leave
        emulator.hook = lambda kind, n: "kill_after" if (kind, n) == ("create", 8) else None
        a.wait(timeout=RUN_TIMEOUT)
        emulator.hook = emulator.victim = None
        assert a.returncode == -signal.SIGKILL, a.stdout.read()
        seconds["a_until_killed"] = time.monotonic() - started
        started = time.monotonic()
        b, c = start("b"), start("c")
        for proc in (b, c):
            out = proc.communicate(timeout=RUN_TIMEOUT)[0]
            assert proc.returncode == 0, out
        seconds["b_and_c"] = time.monotonic() - started
        ledger = Ledger(ledger_url)
        made = {t["prompt"]: t["id"] for t in emulator_tasks(emulator.url)}
        unknown = [r for r in ledger.rows(DAY) if r.status == "unknown"]
        for row in unknown:  # a person settles them, as the dashboard shows
            how = (
                ["--task-id", made[row.request["prompt"]]]
                if row.request["prompt"] in made
                else ["--forget"]
            )
            settled = subprocess.run(
                [*cli(), "resolve", DAY, row.prompt_id, *how],
                env=workers["b"],
                capture_output=True,
                text=True,
            )
            assert settled.returncode == 0, settled.stderr
        started = time.monotonic()
        final = subprocess.run(
            [*cli(), *args], env=workers["c"], capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
        assert final.returncode == 0, final.stdout + final.stderr
        seconds["after_settling"] = time.monotonic() - started
        tasks = emulator_tasks(emulator.url)
    os.environ.update(aws)  # the checks below read the bucket as the workers did
    try:
        s3 = boto3.client("s3")
        listed = s3.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/videos/{DAY}/")
        videos = {
            o["Key"]: hashlib.sha256(
                s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
            ).hexdigest()
            for o in listed.get("Contents", [])
        }
        table = S3TableStore(S3Bucket(s3_client(), bucket, PREFIX)).read("generated_videos", DAY)
    finally:
        for name in aws:
            os.environ.pop(name, None)
    instance = DagsterInstance.from_config(str(root / "b" / "dagster_home"))
    try:
        runs = len(instance.get_runs())
    finally:
        instance.dispose()
    return Fleet(
        prompts=ids,
        tasks=tasks,
        table_statuses=Counter(table.status),
        unknown_settled=len(unknown),
        videos_in_s3=videos,
        table_sha256=dict(zip(table.prompt_id, table.video_sha256, strict=True)),
        runs=runs,
        scratch_files=[
            p for n in ("a", "b", "c") for p in (root / n / "data").rglob("*") if p.is_file()
        ],
        seconds=seconds,
    )
