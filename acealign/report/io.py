"""Atomic file writes (temp file in the same folder + os.replace) for every report output."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def atomic_write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False, default=_default) + "\n")


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
