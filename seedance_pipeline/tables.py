"""Per-partition Parquet tables under `<data_dir>/warehouse/<asset>/<partition>.parquet`."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .storage import remove_orphaned_temporaries


def table_path(data_dir: str | Path, asset: str, partition: str) -> Path:
    return Path(data_dir) / "warehouse" / asset / f"{partition}.parquet"


def write_table(frame: pd.DataFrame, data_dir: str | Path, asset: str, partition: str) -> Path:
    """Write atomically: a reader sees the old table or the new one, never half of one."""
    path = table_path(data_dir, asset, partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphaned_temporaries(path.parent)  # what a killed writer left
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frame.to_parquet(tmp, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_table(data_dir: str | Path, asset: str, partition: str) -> pd.DataFrame:
    path = table_path(data_dir, asset, partition)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not written yet; materialise {asset} for {partition}")
    return pd.read_parquet(path)


def read_all(data_dir: str | Path, asset: str) -> pd.DataFrame:
    """Every partition of a table, concatenated (empty frame if none)."""
    files = sorted((Path(data_dir) / "warehouse" / asset).glob("*.parquet"))
    frames = [pd.read_parquet(f) for f in files]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
