"""Compare the predictions tables of several methods cell by cell (e.g. one model scored by
several backends): max and mean |dp| over every option of every shared cell, against the first.

    python benchmarks/compare_predictions.py EVAL_DIR/base EVAL_DIR/base-vllm EVAL_DIR/base-openai
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd


def load(directory: Path) -> pd.DataFrame:
    df = pd.read_parquet(directory / "predictions.parquet")
    return df.set_index(["persona", "question_key"]).sort_index()


def main(paths: list[str]) -> int:
    if len(paths) < 2:
        print(__doc__)
        return 2
    ref_dir, *others = (Path(p) for p in paths)
    ref = load(ref_dir)
    print(f"reference: {ref_dir} ({len(ref)} cells)")
    for d in others:
        got = load(d)
        shared = ref.index.intersection(got.index)
        diffs = np.concatenate([np.abs(np.asarray(a) - np.asarray(b))
                                for a, b in zip(ref.loc[shared, "pred"], got.loc[shared, "pred"], strict=True)])
        est = ", ".join(sorted(got["estimator"].dropna().unique())) if "estimator" in got else "hf:exact"
        print(f"{d}: {len(shared)} shared cells, estimator {est}: max |dp| {diffs.max():.2e}, "
              f"mean |dp| {diffs.mean():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
