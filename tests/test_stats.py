"""Question-clustered bootstrap, sign-flip test and Holm correction, checked by hand."""

import numpy as np
import pandas as pd
import pytest

from acealign.analyses import stats


def units(rows):
    """(question_key, country, sum, n) rows as a units table."""
    return pd.DataFrame(rows, columns=stats.UNIT_COLUMNS)


def test_question_units_and_country_average():
    cells = pd.DataFrame({
        "question_key": ["q1", "q1", "q1", "q2"],
        "country": ["egypt", "egypt", "chile", "egypt"],
        "score": [0.5, 0.7, 0.9, 0.2],
    })
    u = stats.question_units(cells)
    assert u.to_dict("list") == {
        "question_key": ["q1", "q1", "q2"], "country": ["chile", "egypt", "egypt"],
        "sum": pytest.approx([0.9, 1.2, 0.2]), "n": [1, 2, 1],
    }
    s, n = stats.unit_matrices(u)  # rows q1, q2; columns chile, egypt
    assert np.allclose(s, [[0.9, 1.2], [0.0, 0.2]]) and n.tolist() == [[1, 2], [0, 1]]
    # chile 0.9/1, egypt (1.2 + 0.2)/3: mean over the two countries = (0.9 + 1.4/3)/2.
    assert stats.country_average(s.sum(0), n.sum(0)) == pytest.approx((0.9 + 1.4 / 3) / 2)
    # A replicate without any cell of a country averages over the others.
    assert stats.country_average(np.array([[0.0, 0.6]]), np.array([[0, 2]])).tolist() == [0.3]
    assert stats.n_questions(u) == 2


def test_bootstrap_keeps_a_question_together_across_countries():
    # Two questions asked in both countries: egypt scores 1 on q1 and 0 on q2, chile the opposite.
    # Any resample draws q1 w times and q2 2 - w times: egypt w/2, chile (2 - w)/2, average 0.5
    # whatever w. Resampling each country's questions on its own would give spread (0 .. 1).
    u = units([("q1", "egypt", 1.0, 1), ("q2", "egypt", 0.0, 1),
               ("q1", "chile", 0.0, 1), ("q2", "chile", 1.0, 1)])
    est, lo, hi = stats.bootstrap_ci(u, n_boot=500)
    assert (est, lo, hi) == pytest.approx((0.5, 0.5, 0.5))


def test_bootstrap_percentile_interval():
    # One country, two questions with means 0 and 1 (one cell each): resamples give 0, 0.5 or 1
    # with probabilities 1/4, 1/2, 1/4, so the 95% interval is [0, 1]; the 50% interval [0.5, 0.5]
    # (quantiles 0.25 and 0.75 of that distribution, up to Monte Carlo noise at the edges).
    u = units([("q1", "egypt", 0.0, 1), ("q2", "egypt", 1.0, 1)])
    assert stats.bootstrap_ci(u, n_boot=4000, seed=1) == pytest.approx((0.5, 0.0, 1.0))
    est, lo, hi = stats.bootstrap_ci(u, n_boot=4000, seed=1, alpha=0.6)  # quantiles 0.3, 0.7
    assert (lo, hi) == (0.5, 0.5)
    est, lo, hi = stats.bootstrap_ci(u, n_boot=0)
    assert est == 0.5 and np.isnan(lo) and np.isnan(hi)


def test_sign_flip_exact_and_monte_carlo():
    # Differences: q1 +0.3 in egypt and +0.3 in chile, q2 -0.2 in egypt (one cell each).
    # v_q1 = (0.3/2 + 0.3/1)/2 = 0.225, v_q2 = (-0.2/2)/2 = -0.05, T = 0.175; the 4 patterns
    # give |T*| = 0.175, 0.275, 0.275, 0.175: all >= |T|, p = 1.
    u = units([("q1", "egypt", 0.3, 1), ("q2", "egypt", -0.2, 1), ("q1", "chile", 0.3, 1)])
    assert stats.sign_flip_pvalue(u, n_perm=4) == 1.0
    # Three questions of +0.1 each in one country: only the 2 all-same of 8 patterns reach |T|.
    u3 = units([(f"q{i}", "egypt", 0.1, 1) for i in range(3)])
    assert stats.sign_flip_pvalue(u3, n_perm=8) == pytest.approx(2 / 8)
    # 20 questions: 2^20 > n_perm, so random patterns; none of 99 reaches the all-positive T
    # (chance 2/2^20 each): p = (1 + 0)/(1 + 99).
    u20 = units([(f"q{i}", "egypt", 0.1, 1) for i in range(20)])
    assert stats.sign_flip_pvalue(u20, n_perm=99) == pytest.approx(1 / 100)
    assert np.isnan(stats.sign_flip_pvalue(units([])))


def test_holm_by_hand():
    # Sorted 0.005, 0.01, 0.03, 0.04 (m = 4): x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running
    # max 0.02, 0.03, 0.06, 0.06; back in input order.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # NaN is not in the family (m = 2) and stays NaN: 0.02 x 2 = 0.04, 0.6 x 1 = 0.6.
    got = stats.holm([0.6, np.nan, 0.02])
    assert got[[0, 2]].tolist() == pytest.approx([0.6, 0.04]) and np.isnan(got[1])
    # Capped at 1: 0.6 x 2 = 1.2 -> 1, then 0.7 x 1 = 0.7 raised to the running max 1.
    assert stats.holm([0.7, 0.6]).tolist() == [1.0, 1.0]
    # Ties: 0.01, 0.01 (m = 2) -> 0.02, 0.02; one test is its own family.
    assert stats.holm([0.01, 0.01]).tolist() == pytest.approx([0.02, 0.02])
    assert stats.holm([0.3]).tolist() == [0.3]
    assert stats.holm([]).tolist() == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.5, 1.5])
