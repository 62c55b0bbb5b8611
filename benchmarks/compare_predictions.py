"""Compare the predictions tables of several methods cell by cell (e.g. one model scored by
several backends, or in two precisions): max and mean |dp| over every option of every shared cell,
against the first; and, where both folders have ``cell_scores.csv``, the per-cell |dS| (Eq. 15's
per-cell term, S in [0, 1]) and the shift of the mean S x100 per country x G on the evaluation
questions' cells (the figures the report shows).

    python benchmarks/compare_predictions.py EVAL_DIR/base EVAL_DIR/base-vllm EVAL_DIR/base-openai
    python benchmarks/compare_predictions.py --json EVAL_DIR/base-fp32 EVAL_DIR/base
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

CELL = ["persona", "question_key"]


def load(directory: Path) -> pd.DataFrame:
    df = pd.read_parquet(directory / "predictions.parquet")
    return df.set_index(CELL).sort_index()


def option_differences(ref: pd.DataFrame, got: pd.DataFrame) -> tuple[int, np.ndarray]:
    """The number of cells both tables predict, and |dp| of every option of those cells."""
    shared = ref.index.intersection(got.index)
    return len(shared), np.concatenate([np.abs(np.asarray(a) - np.asarray(b))
                                        for a, b in zip(ref.loc[shared, "pred"], got.loc[shared, "pred"], strict=True)])


def score_shifts(ref: pd.DataFrame, got: pd.DataFrame) -> dict:
    """Per-cell |dS| (S in [0, 1]) and mean S x100 per country x G of ``got`` minus ``ref``, on
    the evaluation questions' cells both score. Inputs: ``cell_scores.csv`` tables (score x100)."""
    keys = ["country", "granularity", *CELL]
    a = ref[ref["eval_question"]].set_index(keys)["score"]
    b = got[got["eval_question"]].set_index(keys)["score"]
    shared = a.index.intersection(b.index)
    if shared.empty:
        raise ValueError("no evaluation-question cell is scored in both tables")
    a, b = a.loc[shared], b.loc[shared]
    per_cell = (b - a).abs() / 100
    means = pd.DataFrame({"ref": a, "got": b}).groupby(level=["country", "granularity"]).mean()
    shift = means["got"] - means["ref"]
    return {
        "cells": len(shared),
        "mean_abs_dS": float(per_cell.mean()),
        "max_abs_dS": float(per_cell.max()),
        "country_g_shift_x100": [
            {"country": c, "granularity": int(g), "shift": float(s)} for (c, g), s in shift.items()
        ],
        "max_abs_country_g_shift_x100": float(shift.abs().max()),
    }


def main(argv: list[str]) -> int:
    as_json = "--json" in argv
    paths = [a for a in argv if a != "--json"]
    if len(paths) < 2:
        print(__doc__)
        return 2
    ref_dir, *others = (Path(p) for p in paths)
    ref = load(ref_dir)
    results = []
    if not as_json:
        print(f"reference: {ref_dir} ({len(ref)} cells)")
    for d in others:
        got = load(d)
        cells, diffs = option_differences(ref, got)
        est = ", ".join(sorted(got["estimator"].dropna().unique())) if "estimator" in got else "hf:exact"
        res = {"folder": str(d), "cells": cells, "estimator": est,
               "max_abs_dp": float(diffs.max()), "mean_abs_dp": float(diffs.mean())}
        if (ref_dir / "cell_scores.csv").exists() and (d / "cell_scores.csv").exists():
            res["scores"] = score_shifts(pd.read_csv(ref_dir / "cell_scores.csv"), pd.read_csv(d / "cell_scores.csv"))
        results.append(res)
        if as_json:
            continue
        print(f"{d}: {res['cells']} shared cells, estimator {est}: max |dp| {res['max_abs_dp']:.2e}, "
              f"mean |dp| {res['mean_abs_dp']:.2e}")
        if "scores" in res:
            s = res["scores"]
            print(f"  {s['cells']} evaluation cells: mean |dS| {s['mean_abs_dS']:.5f} (max {s['max_abs_dS']:.4f}); "
                  f"mean S x100 per country x G moved by at most {s['max_abs_country_g_shift_x100']:.3f}")
            for r in s["country_g_shift_x100"]:
                print(f"    {r['country']} G{r['granularity']}: {r['shift']:+.3f}")
    if as_json:
        print(json.dumps({"reference": str(ref_dir), "compared": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
