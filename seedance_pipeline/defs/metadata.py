"""DataFrames as Dagster table metadata: typed columns the UI renders, instead of Markdown."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from dagster import DataVersion, MetadataValue, TableColumn, TableRecord, TableSchema
from pandas.api import types

PREVIEW_ROWS = 20


def _column_type(series: pd.Series) -> str:
    values = series.dropna()
    if types.is_bool_dtype(series) or (len(values) and values.map(type).eq(bool).all()):
        return "bool"
    if types.is_integer_dtype(series):
        return "int"
    if types.is_float_dtype(series):
        return "float"
    return "string"


def schema(frame: pd.DataFrame) -> TableSchema:
    """The table's columns with their types (the UI's "Columns" view)."""
    return TableSchema(columns=[TableColumn(str(c), _column_type(frame[c])) for c in frame])


def _cell(value: object) -> str | int | float | bool | None:
    if isinstance(value, list | tuple | np.ndarray):  # e.g. a row's rejection reasons
        return "; ".join(str(v) for v in value) or None
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str | int | float | bool) else str(value)


def table(
    frame: pd.DataFrame, columns: Sequence[str] | None = None, rows: int = PREVIEW_ROWS
) -> MetadataValue:
    """The first `rows` rows of `frame` (only `columns`) as a typed table; no `nan` cells."""
    shown = frame[list(columns)] if columns else frame
    shown = shown.head(rows)
    records = [
        TableRecord({str(k): _cell(v) for k, v in record.items()})
        for record in shown.to_dict("records")
    ]
    return MetadataValue.table(records=records, schema=schema(shown))


def frame_version(frame: pd.DataFrame) -> DataVersion:
    """A data version that changes exactly when the rows change (per partition)."""
    text = frame.to_json(orient="records", date_format="iso", default_handler=str)
    return DataVersion(hashlib.sha256(text.encode()).hexdigest()[:24])


def written(path: str, frame: pd.DataFrame) -> dict:
    """What every table asset's materialisation says: where it went, its rows and columns."""
    return {
        "path": MetadataValue.path(path),
        "dagster/row_count": len(frame),
        "dagster/column_schema": schema(frame),
    }
