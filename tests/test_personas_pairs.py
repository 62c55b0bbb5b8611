"""Persona enumeration, exact aggregation from G=4 cells, the support filter, counterfactual pairs
and data-side effects (Eq. 8-10), on a hand-built dataset."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from acealign.pairs import build_pairs, data_effect
from acealign.personas import eligible_cells, enumerate_personas
from acealign.survey import ATTRIBUTES, Option, Persona, Question, SurveyData, all_g4_personas

Q = Question("d", "t", "q", "text", (Option("1", "a"), Option("2", "b"), Option("3", "c")))
C = "c"


def P(**attrs):
    return Persona(C, **attrs)


def P4(g, e, r, m):
    return Persona(C, gender=g, education=e, residence=r, marital_status=m)


A = P4("Male", "College", "Urban", "Married")
B = P4("Female", "College", "Urban", "Married")
Cc = P4("Male", "No_College", "Urban", "Married")
D = P4("Female", "No_College", "Rural", "Not_Married")
E = P4("Female", "College", "Rural", "Married")
CELLS = {A: [3, 1, 1], B: [1, 1, 3], Cc: [6, 3, 3], D: [2, 0, 0], E: [0, 2, 5]}  # n = 5, 5, 12, 2, 7


@pytest.fixture
def hand():
    return SurveyData({Q.key: Q}, {(C, Q.key): {p: np.array(c) for p, c in CELLS.items()}})


# -- enumeration ------------------------------------------------------------------------------------
def test_enumerate_80_personas():
    ps = enumerate_personas(C)
    assert len(ps) == 80 and len(set(ps)) == 80
    by_g = [sum(p.granularity == g for p in ps) for g in (1, 2, 3, 4)]
    assert by_g == [8, 24, 32, 16]  # C(4,G) * 2^G
    assert set(enumerate_personas(C, (4,))) == set(all_g4_personas(C))
    assert enumerate_personas(C, (0,)) == [Persona(C)]


# -- aggregation ------------------------------------------------------------------------------------
def test_coarser_counts_hand_computed(hand):
    k = Q.key
    # gender=Male: A + C = [3+6, 1+3, 1+3]
    np.testing.assert_array_equal(hand.counts(P(gender="Male"), k), [9, 4, 4])
    # gender=Female: B + D + E = [1+2+0, 1+0+2, 3+0+5]
    np.testing.assert_array_equal(hand.counts(P(gender="Female"), k), [3, 3, 8])
    # residence=Rural: D + E
    np.testing.assert_array_equal(hand.counts(P(residence="Rural"), k), [2, 2, 5])
    # gender=Female, education=College: B + E
    np.testing.assert_array_equal(hand.counts(P(gender="Female", education="College"), k), [1, 3, 8])
    # An absent G=4 cell counts as zero respondents.
    np.testing.assert_array_equal(hand.counts(P4("Male", "College", "Rural", "Married"), k), [0, 0, 0])
    # The whole country: every cell.
    np.testing.assert_array_equal(hand.counts(Persona(C), k), [12, 7, 12])


def test_coarser_counts_equal_sum_of_covered_g4(tiny_data):
    for country in tiny_data.countries:
        for k in tiny_data.question_keys(country):
            total = tiny_data.counts(Persona(country), k)
            for g in (1, 2, 3):
                level = np.zeros_like(total)
                for p in enumerate_personas(country, (g,)):
                    want = sum((tiny_data.cells[(country, k)].get(p4, 0) for p4 in all_g4_personas(country) if p.covers(p4)),
                               np.zeros_like(total))
                    got = tiny_data.counts(p, k)
                    np.testing.assert_array_equal(got, want)
                    level += got
                # Each respondent is in exactly C(4, g) personas of granularity g.
                np.testing.assert_array_equal(level, len(list(combinations(ATTRIBUTES, g))) * total)


# -- support filter -----------------------------------------------------------------------------------
def test_min_n_filter_and_dropped(hand):
    # G=1, min_n=10: n = Male 17, Female 14, College 17, No_College 14, Urban 22, Rural 9,
    # Married 29, Not_Married 2 -> 6 kept, 2 dropped (Rural, Not_Married).
    sel = eligible_cells(hand, granularities=(1,), min_n=10)
    assert len(sel.cells) == 6 and sel.dropped == 2
    assert {c.persona for c in sel.cells}.isdisjoint({P(residence="Rural"), P(marital_status="Not_Married")})
    # G=4, min_n=5: A(5), B(5), C(12), E(7) kept; 12 of the 16 dropped (D has 2, 11 are empty).
    sel = eligible_cells(hand, granularities=(4,), min_n=5)
    assert {c.persona for c in sel.cells} == {A, B, Cc, E} and sel.dropped == 12
    # min_n=6 also drops A and B.
    sel = eligible_cells(hand, granularities=(4,), min_n=6)
    assert {c.persona for c in sel.cells} == {Cc, E} and sel.dropped == 14
    # All granularities at once: 80 persona-question cells in all.
    sel = eligible_cells(hand, min_n=1)
    assert len(sel.cells) + sel.dropped == 80
    # A country without the question contributes nothing, kept or dropped.
    assert eligible_cells(hand, countries=["elsewhere"]).cells == []


# -- pairs and effects ---------------------------------------------------------------------------------
def test_pairs_toggle_one_attribute_both_ends_supported(hand):
    pairs = build_pairs(hand, context_granularity=4, min_n=5)
    got = {(p.attribute, p.s1, p.s0) for p in pairs}
    # gender: B vs A; education: C vs A; residence: E vs B. Every other pair has an end below 5.
    assert got == {("gender", B, A), ("education", Cc, A), ("residence", E, B)}
    for p in pairs:
        diff = [a for a in ATTRIBUTES if getattr(p.s1, a) != getattr(p.s0, a)]
        assert diff == [p.attribute]
        assert p.counts1.sum() >= 5 and p.counts0.sum() >= 5
        assert p.context == p.s0.with_value(p.attribute, None)
    assert build_pairs(hand, min_n=6) == []  # A and B fall below 6
    # Excluding A (e.g. a held-out persona) removes both pairs it is in.
    assert {p.attribute for p in build_pairs(hand, min_n=5, exclude_personas={A})} == {"residence"}
    assert {p.attribute for p in build_pairs(hand, min_n=5, attributes=("gender",))} == {"gender"}


def test_data_effect_and_cdf_hand_computed(hand):
    pairs = {p.attribute: p for p in build_pairs(hand, min_n=5)}
    # gender: p(B) = [.2, .2, .6], p(A) = [.6, .2, .2] -> [-.4, 0, .4]; CDF [-.4, -.4, 0]
    np.testing.assert_allclose(pairs["gender"].data_effect, [-0.4, 0.0, 0.4])
    np.testing.assert_allclose(pairs["gender"].data_cdf_effect, [-0.4, -0.4, 0.0], atol=1e-12)
    # education: p(C) = [.5, .25, .25] - p(A) -> [-.1, .05, .05]; CDF [-.1, -.05, 0]
    np.testing.assert_allclose(pairs["education"].data_effect, [-0.1, 0.05, 0.05])
    np.testing.assert_allclose(pairs["education"].data_cdf_effect, [-0.1, -0.05, 0.0], atol=1e-12)
    # residence: p(E) = [0, 2/7, 5/7] - p(B) -> [-.2, 2/7 - .2, 5/7 - .6]; CDF [-.2, 2/7 - .4, 0]
    np.testing.assert_allclose(pairs["residence"].data_effect, [-0.2, 2 / 7 - 0.2, 5 / 7 - 0.6])
    np.testing.assert_allclose(pairs["residence"].data_cdf_effect, [-0.2, 2 / 7 - 0.4, 0.0], atol=1e-12)
    # data_effect directly: [1, 3]/4 - [2, 2]/4 = [-.25, .25]
    np.testing.assert_allclose(data_effect([1, 3], [2, 2]), [-0.25, 0.25])


def test_pairs_at_coarser_context(hand):
    # G=1 ends, min_n=10: gender (Female 14 vs Male 17) and education (No_College 14 vs College 17)
    # survive; residence (Rural 9) and marital status (Not_Married 2) do not.
    pairs = {p.attribute: p for p in build_pairs(hand, context_granularity=1, min_n=10)}
    assert set(pairs) == {"gender", "education"}
    # Female [3, 3, 8]/14 - Male [9, 4, 4]/17
    np.testing.assert_allclose(pairs["gender"].data_effect, [3 / 14 - 9 / 17, 3 / 14 - 4 / 17, 8 / 14 - 4 / 17])
    assert pairs["gender"].s1 == P(gender="Female") and pairs["gender"].s0 == P(gender="Male")


# -- non-substantive options ---------------------------------------------------------------------------
def test_support_and_effects_count_only_the_scale():
    # Option 0 ("Doesn't apply") is off the scale: A's 4|3|1|1 is 3|1|1 (n = 5, not 9) and B's
    # 9|1|1|3 is 1|1|3 (n = 5, not 14), the same scale counts as A and B of the hand data above.
    q = Question("d", "t", "ns", "text", (Option("0", "Doesn't apply", False), Option("1", "a"),
                                          Option("2", "b"), Option("3", "c")))
    full = {(C, q.key): {A: np.array([4, 3, 1, 1]), B: np.array([9, 1, 1, 3])}}
    data = SurveyData.from_full_counts({q.key: q}, full)
    sel = eligible_cells(data, granularities=(4,), min_n=5)
    assert {c.persona: c.counts.tolist() for c in sel.cells} == {A: [3, 1, 1], B: [1, 1, 3]}
    # At min_n = 6 both fall out although 9 and 14 people answered.
    assert eligible_cells(data, granularities=(4,), min_n=6).cells == []
    # G=0 total and the dropped answers: 4 + 9 = 13.
    np.testing.assert_array_equal(data.counts(Persona(C), q.key), [4, 2, 4])
    np.testing.assert_array_equal(data.dropped_counts(Persona(C), q.key), [13])
    (pair,) = build_pairs(data, context_granularity=4, min_n=5)
    # p(B) = [.2, .2, .6], p(A) = [.6, .2, .2] over the scale -> [-.4, 0, .4]
    assert (pair.attribute, pair.s1, pair.s0) == ("gender", B, A)
    np.testing.assert_allclose(pair.data_effect, [-0.4, 0.0, 0.4])
