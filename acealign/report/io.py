"""Report outputs: tables as CSV + JSON, written atomically (:mod:`acealign.fileio`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import fileio
from ..fileio import atomic_write_bytes, atomic_write_text

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "table_records", "write_table"]


def atomic_write_json(path, obj) -> Path:
    """JSON with numpy scalars, NaN (-> null) and pandas NA handled."""
    return fileio.atomic_write_json(path, obj, default=_default)


def table_records(table: pd.DataFrame) -> list[dict]:
    """JSON-ready records: NaN -> null, numpy scalars -> Python numbers, lists kept."""
    return [{k: _clean(v) for k, v in rec.items()} for rec in table.to_dict(orient="records")]


def write_table(table: pd.DataFrame, directory, name: str) -> tuple[Path, Path]:
    """Write ``name.csv`` and ``name.json`` (a list of row objects) atomically."""
    directory = Path(directory)
    csv = atomic_write_text(directory / f"{name}.csv", table.to_csv(index=False))
    js = atomic_write_json(directory / f"{name}.json", table_records(table))
    return csv, js


def _clean(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return [_clean(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def _default(o):
    c = _clean(o)
    if c is o:
        raise TypeError(f"not JSON serializable: {type(o).__name__}")
    return c
