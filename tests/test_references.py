"""Reference scores on a tiny hand-made survey (values worked out in the comments)."""

from math import comb

import numpy as np
import pytest

from acealign.pairs import CounterfactualPair
from acealign.references import (
    PAIR_REFERENCE_KEYS,
    REFERENCE_KEYS,
    pair_reference_values,
    pair_references,
    reference_table,
)
from acealign.survey import Option, Persona, Question, SurveyData, all_g4_personas, package_data_dir

DATA = package_data_dir()


def tiny_survey(countries=("x", "y")) -> SurveyData:
    """One 3-option question; every Male G=4 cell answers (0,0,4), every Female one (4,0,0)."""
    q = Question("wvs7", "t", "Q1", "text", tuple(Option(str(i), f"o{i}") for i in range(3)))
    cells = {}
    for country in countries:
        cells[(country, q.key)] = {
            p: np.array([0, 0, 4]) if p.gender == "Male" else np.array([4, 0, 0])
            for p in all_g4_personas(country)
        }
    return SurveyData({q.key: q}, cells)


def exact_ceiling_half(n: int) -> float:
    """Exact E[score] of a (n/2, 0, n/2) cell: a resample (k, 0, n-k) has CDFs (k/n, k/n) vs
    (.5, .5), so W1 = 2|k/n - .5| and score = 1 - |k/n - .5|, with k ~ Binomial(n, .5)."""
    return sum(comb(n, k) * 0.5**n * (1 - abs(k / n - 0.5)) for k in range(n + 1))


def test_reference_table_hand_values():
    rows = reference_table(tiny_survey(), n_boot=4000, seed=0)
    # G=3 cells hold 2 G=4 cells (n=8 < 10) and G=4 cells n=4: both dropped -> no rows.
    assert [(r["country"], r["granularity"]) for r in rows] == [
        ("x", 1),
        ("x", 2),
        ("y", 1),
        ("y", 2),
    ]
    for r in rows:
        assert tuple(r) == REFERENCE_KEYS
        assert isinstance(r["cells"], int) and all(
            isinstance(r[k], float) for k in REFERENCE_KEYS[3:]
        )
    g1, g2 = rows[0], rows[1]
    # Country marginal (32, 0, 32) = (.5, 0, .5).
    # G=1 (8 cells, n=32): Male (0,0,32) and Female (32,0,0) score 1 - 1/2 = .5 vs the marginal
    # (W1 = .5 + .5 = 1); the 6 other personas equal the marginal (score 1): (2*.5 + 6) / 8 = .875.
    # Uniform: vs a point mass W1 = 1/3 + 2/3 = 1 -> .5; vs (.5,0,.5) W1 = 1/6 + 1/6 -> 1 - 1/6
    # = 5/6: (2*.5 + 6*5/6) / 8 = .75.
    assert (
        g1["cells"] == 8
        and g1["marginal"] == pytest.approx(87.5)
        and g1["uniform"] == pytest.approx(75.0)
    )
    # G=2 (24 cells, n=16): 12 with gender are point masses (.5, .5), 12 without are (8,0,8)
    # (1, 5/6): marginal (6 + 12) / 24 = .75, uniform (6 + 10) / 24 = 2/3.
    assert g2["cells"] == 24 and g2["marginal"] == pytest.approx(75.0)
    assert g2["uniform"] == pytest.approx(200 / 3)
    # Ceiling: point masses give exactly 1, the others the exact binomial expectation.
    assert g1["ceiling"] == pytest.approx(100 * (2 + 6 * exact_ceiling_half(32)) / 8, abs=0.2)
    assert g2["ceiling"] == pytest.approx(100 * (12 + 12 * exact_ceiling_half(16)) / 24, abs=0.2)
    # n_boot=None: the closed-form expectation, equal to the binomial sum above
    exact = reference_table(tiny_survey(("x",)), n_boot=None)
    assert exact[0]["ceiling"] == pytest.approx(100 * (2 + 6 * exact_ceiling_half(32)) / 8)
    assert exact[1]["ceiling"] == pytest.approx(100 * (12 + 12 * exact_ceiling_half(16)) / 24)


def test_reference_table_seeding_and_subsets():
    data = tiny_survey()
    a = reference_table(data, n_boot=30, seed=3)
    assert a == reference_table(data, n_boot=30, seed=3)  # deterministic
    assert a != reference_table(data, n_boot=30, seed=4)
    # a country's figures do not depend on which other countries are in the table
    assert reference_table(data, n_boot=30, seed=3, countries=["y"]) == a[2:]
    # granularity selection and min_n pass through: with min_n=4 every G appears
    rows = reference_table(data, granularities=(3, 4), min_n=4, n_boot=10, countries=["x"])
    assert [(r["granularity"], r["cells"]) for r in rows] == [(3, 32), (4, 16)]


def test_larger_cells_have_higher_ceiling():
    small = tiny_survey(("x",))
    big = SurveyData(
        small.questions, {k: {p: c * 25 for p, c in v.items()} for k, v in small.cells.items()}
    )
    # every non-point-mass cell is 25x larger; the point masses stay at 1
    (s,) = [r for r in reference_table(small, n_boot=300) if r["granularity"] == 2]
    (b,) = [r for r in reference_table(big, n_boot=300) if r["granularity"] == 2]
    assert s["ceiling"] < b["ceiling"] < 100
    assert (s["marginal"], s["uniform"]) == pytest.approx((b["marginal"], b["uniform"]))


def test_pair_references_hand_values():
    rows = pair_references(tiny_survey(("x",)), min_n=4, n_boot=20)
    assert all(tuple(r) == PAIR_REFERENCE_KEYS for r in rows)
    by = {r["attribute"]: r for r in rows}
    # gender pairs: effect (1,0,0) - (0,0,1) = (1,0,-1), cumsum (1,1,0) -> no-effect d = 2/3;
    # every end is a point mass, so resampling never moves: floor 0.
    assert by["gender"]["pairs"] == 8 and by["gender"]["no_effect"] == pytest.approx(2 / 3)
    assert by["gender"]["noise_floor"] == 0.0
    # other attributes leave gender fixed: identical ends, no effect at all
    assert by["education"]["no_effect"] == 0.0 and by["education"]["noise_floor"] == 0.0
    # all 32 pairs: (8 * 2/3) / 32 = 1/6
    assert by["all"]["pairs"] == 32 and by["all"]["no_effect"] == pytest.approx(1 / 6)
    assert pair_references(tiny_survey(("x",)), min_n=10) == []  # n = 4 < 10: no pair survives


def test_pair_reference_values_hand_floor():
    q = "wvs7/t/Q1"
    s1, s0 = Persona("x", gender="Female"), Persona("x", gender="Male")
    pair = CounterfactualPair("gender", s1, s0, q, np.array([1, 1]), np.array([5, 0]))
    # E[d_CDF] = .125 (see tests/test_metrics.py); no effect: effect (-.5, .5), cumsum (-.5, 0) -> .25
    vals = pair_reference_values([pair], n_boot=20000, rng=np.random.default_rng(0))
    assert vals["no_effect"][0] == pytest.approx(0.25)
    assert vals["noise_floor"][0] == pytest.approx(0.125, abs=0.005)


@pytest.mark.skipif(not (DATA / "cells.csv").exists(), reason="shared survey data not present")
def test_reference_ordering_on_real_data():
    from acealign.survey import load_survey

    rows = reference_table(load_survey(DATA), granularities=(1, 4), n_boot=30, countries=["egypt"])
    assert [r["granularity"] for r in rows] == [1, 4]
    for r in rows:
        assert r["cells"] > 0 and 0 < r["uniform"] < r["marginal"] < r["ceiling"] < 100
