"""Wall time of `seedance-pipeline demo` on a fresh copy of the sample data, and polls per task.

Run: python benchmarks/demo.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seedance_pipeline.ledger import Ledger

SAMPLE = Path(__file__).resolve().parents[1] / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    walls, polls = [], []
    for _ in range(args.runs):
        data = Path(tempfile.mkdtemp(prefix="demo-bench-")) / "data"
        for folder in ("catalog", "media"):
            shutil.copytree(SAMPLE / folder, data / folder)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "seedance_pipeline.cli", "demo"],
            check=True,
            env={**os.environ, "SEEDANCE_DATA_DIR": str(data), "DAGSTER_HOME": str(data.parent)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        walls.append(time.perf_counter() - started)
        polls += [r.polls for r in Ledger(data / "state" / "ledger.sqlite3").rows()]
    print(
        f"demo wall time: median {statistics.median(walls):.1f} s over {args.runs} runs "
        f"({', '.join(f'{w:.1f}' for w in walls)})"
    )
    print(
        f"polls per task: median {statistics.median(polls)}, max {max(polls)}, "
        f"mean {statistics.mean(polls):.2f} over {len(polls)} tasks"
    )


if __name__ == "__main__":
    main()
