"""benchmarks/compare_predictions.py: per-cell |dS| and country x G shifts, computed by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

_spec = importlib.util.spec_from_file_location(
    "compare_predictions", Path(__file__).parents[1] / "benchmarks" / "compare_predictions.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)


def _scores(rows):
    return pd.DataFrame(rows, columns=["country", "granularity", "persona", "question_key", "score",
                                       "eval_question"])


def test_score_shifts_by_hand():
    ref = _scores([
        ("egypt", 1, "p1", "q1", 60.0, True),
        ("egypt", 1, "p2", "q1", 70.0, True),
        ("egypt", 2, "p3", "q1", 50.0, True),
        ("egypt", 2, "p3", "q9", 10.0, False),   # a training question: not in S
        ("chile", 1, "p1", "q2", 40.0, True),    # not scored by the other table
    ])
    got = _scores([
        ("egypt", 1, "p1", "q1", 60.5, True),
        ("egypt", 1, "p2", "q1", 69.7, True),
        ("egypt", 2, "p3", "q1", 50.2, True),
        ("egypt", 2, "p3", "q9", 90.0, False),
    ])
    s = compare.score_shifts(ref, got)
    assert s["cells"] == 3
    # |dS| in [0, 1]: 0.005, 0.003, 0.002
    assert s["mean_abs_dS"] == pytest.approx(0.01 / 3)
    assert s["max_abs_dS"] == pytest.approx(0.005)
    shifts = {(r["country"], r["granularity"]): r["shift"] for r in s["country_g_shift_x100"]}
    assert shifts == {("egypt", 1): pytest.approx(0.1), ("egypt", 2): pytest.approx(0.2)}
    assert s["max_abs_country_g_shift_x100"] == pytest.approx(0.2)


def test_score_shifts_needs_shared_cells():
    a = _scores([("egypt", 1, "p1", "q1", 60.0, True)])
    b = _scores([("egypt", 1, "p2", "q1", 60.0, True)])
    with pytest.raises(ValueError, match="no evaluation-question cell"):
        compare.score_shifts(a, b)
