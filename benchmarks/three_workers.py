"""One day run by three workers sharing only PostgreSQL and S3 (moto's server), worker A
killed mid-submission: prints paid tasks per prompt, unknown rows settled, wall times.

Run: python benchmarks/three_workers.py [--prompts 24]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' helpers
from seedance_pipeline_tests.fault_support import free_port  # noqa: E402
from seedance_pipeline_tests.postgres import running_postgres  # noqa: E402
from seedance_pipeline_tests.scale_out import run_fleet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=24)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                httpx.put(f"{url}/fleet-bench", timeout=1)  # creates the bucket
                break
            except httpx.TransportError:
                time.sleep(0.1)
        with running_postgres() as postgres:
            fleet = run_fleet(root, postgres, url, "fleet-bench", args.prompts)
    finally:
        moto.terminate()
    paid = Counter(Counter(t["prompt"] for t in fleet.tasks).values())
    print(f"prompts {len(fleet.prompts)}; paid tasks per prompt {dict(paid)}")
    print(f"unknown rows A left, settled by hand: {fleet.unknown_settled}")
    print(f"table: {dict(fleet.table_statuses)}; videos in S3: {len(fleet.videos_in_s3)}")
    print(
        f"runs in the Postgres instance: {fleet.runs}; files left in scratch dirs: "
        f"{len(fleet.scratch_files)}"
    )
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in fleet.seconds.items()))


if __name__ == "__main__":
    main()
