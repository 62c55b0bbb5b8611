"""Hand-computed checks of every metric (arithmetic in the comments)."""

import math

import numpy as np
import pytest

from acealign import metrics as M
from acealign.pairs import data_effect


# -- Eq. 15: W1 and the alignment score ------------------------------------------------------
@pytest.mark.parametrize(
    "p, q, w1, score",
    [
        # opposite ends, N=3: F_p = (1, 1), F_q = (0, 0) -> W1 = 2, score = 1 - 2/2 = 0
        ([1, 0, 0], [0, 0, 1], 2.0, 0.0),
        # F_p = (.5, 1), F_q = (0, .5) -> W1 = .5 + .5 = 1, score = 1 - 1/2 = .5
        ([0.5, 0.5, 0], [0, 0.5, 0.5], 1.0, 0.5),
        # N=4: F_p = (.1, .3, .6), F_q = (.4, .7, .9) -> .3 + .4 + .3 = 1, score = 1 - 1/3
        ([0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], 1.0, 2 / 3),
        # uniform vs point mass, N=5: F_u = (.2, .4, .6, .8), F_q = 1 -> .8+.6+.4+.2 = 2, 1 - 2/4
        ([0.2] * 5, [1, 0, 0, 0, 0], 2.0, 0.5),
        # counts are normalised: (2, 2, 0) = (.5, .5, 0); (0, 1, 1) = (0, .5, .5) -> as row 2
        ([2, 2, 0], [0, 1, 1], 1.0, 0.5),
        # identical -> 0 distance, score 1
        ([0.3, 0.7], [3, 7], 0.0, 1.0),
    ],
)
def test_wasserstein_and_score_hand_values(p, q, w1, score):
    assert M.wasserstein_1d(p, q) == pytest.approx(w1)
    assert M.wasserstein_1d(q, p) == pytest.approx(w1)  # symmetric
    assert M.alignment_score(p, q) == pytest.approx(score)


def test_point_masses_are_position_differences():
    # W1 between point masses at positions i and j is |i - j|
    for i in range(6):
        for j in range(6):
            assert M.wasserstein_1d(np.eye(6)[i], np.eye(6)[j]) == pytest.approx(abs(i - j))


def test_batch_equals_scalar():
    rng = np.random.default_rng(1)
    p, q = rng.random((50, 5)), rng.integers(0, 9, (50, 5)) + 0.5
    assert np.allclose(
        M.wasserstein_1d_batch(p, q), [M.wasserstein_1d(a, b) for a, b in zip(p, q, strict=True)]
    )
    assert np.allclose(
        M.alignment_score_batch(p, q), [M.alignment_score(a, b) for a, b in zip(p, q, strict=True)]
    )


def test_mean_alignment_score_mixed_option_counts_and_percent():
    preds = [[1, 0, 0], [0.5, 0.5], [0.1, 0.2, 0.3, 0.4]]
    targets = [[0, 0, 1], [1, 1], [0.4, 0.3, 0.2, 0.1]]
    # scores 0, 1, 2/3 (see the table above) -> mean (0 + 1 + 2/3) / 3 = 5/9
    assert M.mean_alignment_score(preds, targets) == pytest.approx(5 / 9)
    assert np.allclose(M.alignment_scores(preds, targets), [0, 1, 2 / 3])
    assert M.percent(M.mean_alignment_score(preds, targets)) == pytest.approx(500 / 9)


@pytest.mark.parametrize(
    "p, q",
    [([0.5, -0.1, 0.6], [1, 0, 0]), ([0, 0], [1, 0]), ([1, 0], [1, 0, 0]), ([np.nan, 1], [1, 0])],
)
def test_bad_distributions_raise(p, q):
    with pytest.raises(ValueError):
        M.alignment_score(p, q)


def test_single_option_has_no_score():
    with pytest.raises(ValueError, match="at least 2"):
        M.alignment_score([1], [1])


# -- Eq. 6-12: effects and the CDF distance --------------------------------------------------
def test_effect_vector_cdf_shift_and_distance():
    e = M.effect_vector([5, 3, 2], [0.2, 0.3, 0.5])  # (.5, .3, .2) - (.2, .3, .5) = (.3, 0, -.3)
    assert np.allclose(e, [0.3, 0.0, -0.3])
    assert np.allclose(e, data_effect(np.array([5, 3, 2]), np.array([2, 3, 5])))  # Eq. 8 in pairs
    assert np.allclose(M.cdf_shift(e), [0.3, 0.3, 0.0])
    # no effect vs e: |0 - .3| + |0 - .3| + |0 - 0| over 3 levels = .6 / 3 = .2
    assert M.cdf_distance([0, 0, 0], e) == pytest.approx(0.2)
    # (.1, 0, -.1) vs (.3, 0, -.3): cumulative differences (-.2, -.2, 0) -> .4 / 3
    assert M.cdf_distance([0.1, 0, -0.1], e) == pytest.approx(0.4 / 3)
    # Eq. 12 over pairs of any K: K=2 pair (.5, -.5) vs 0 -> cumsum (.5, 0) -> .25
    pairs = [([0, 0, 0], e), ([0.1, 0, -0.1], e), ([0.5, -0.5], [0, 0])]
    assert M.mean_cdf_distance(pairs) == pytest.approx((0.2 + 0.4 / 3 + 0.25) / 3)
    batch = M.cdf_distance_batch([[0, 0, 0], [0.1, 0, -0.1]], [e, e])
    assert np.allclose(batch, [0.2, 0.4 / 3])
    with pytest.raises(ValueError):
        M.cdf_distance([0, 0], e)
    with pytest.raises(ValueError):
        M.mean_cdf_distance([])


# -- modal accuracy --------------------------------------------------------------------------
def test_modal_match_and_tie_rule():
    assert M.modal_match([0.1, 0.6, 0.3], [1, 5, 4])  # both modes at position 1
    assert M.modal_match([0.2, 0.5, 0.3], [5, 5, 0])  # survey tie (0 and 1): 1 is a mode
    assert M.modal_match([0.5, 0.2, 0.3], [5, 5, 0])  # ... and so is 0
    assert not M.modal_match([0.1, 0.2, 0.7], [5, 5, 0])
    assert not M.modal_match([0.4, 0.4, 0.2], [1, 9, 0])  # predicted tie -> first max (0) != 1
    preds = [[0.1, 0.6, 0.3], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.4, 0.4, 0.2]]
    targets = [[1, 5, 4], [5, 5, 0], [5, 5, 0], [1, 9, 0]]
    assert M.modal_accuracy(preds, targets) == pytest.approx(2 / 4)
    assert M.modal_match_batch(preds, targets).tolist() == [True, True, False, False]
    # survey tie represented as floats from counts (1/3 each) still counts as a tie
    assert M.modal_match([0, 0, 1], np.array([1, 1, 1]) / 3)


# -- disparity -------------------------------------------------------------------------------
def test_disparity_hand_values():
    d = M.disparity({"a": 0.9, "b": 0.7, "c": 0.8})
    # mean .8, worst .7 (b), best .9 (a), gap .2, std = sqrt((.01 + .01 + 0) / 3)
    assert d.mean == pytest.approx(0.8) and d.gap == pytest.approx(0.2)
    assert (d.worst, d.worst_persona, d.best, d.best_persona) == (0.7, "b", 0.9, "a")
    assert d.std == pytest.approx(math.sqrt(0.02 / 3))
    assert d.personas == 3 and d.as_dict()["gap"] == pytest.approx(0.2)
    assert M.disparity([1.0, 3.0]).std == pytest.approx(1.0)  # population std of {1, 3}
    assert M.group_means(["a", "b", "a"], [1, 2, 3]) == {"a": 2.0, "b": 2.0}
    with pytest.raises(ValueError):
        M.disparity([])


# -- misalignment taxonomy -------------------------------------------------------------------
def test_expected_position_shift():
    assert M.expected_position([0, 0, 1]) == 1.0  # position 2 / (N-1 = 2)
    assert M.expected_position_shift([0, 0, 1], [1, 0, 0]) == 1.0
    # E1 = .5, E0 = 1.5 (positions 0..3), shift (.5 - 1.5) / 3 = -1/3
    p1, p0 = [0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0]
    assert M.expected_position_shift(p1, p0) == pytest.approx(-1 / 3)
    # equals minus the summed CDF shift (Eq. 10) over k < N-1, divided by N-1: -(.5 + .5 + 0) / 3
    assert -M.cdf_shift(M.effect_vector(p1, p0))[:-1].sum() / 3 == pytest.approx(-1 / 3)
    assert np.allclose(
        M.expected_position_shift_batch([p1, [0, 0, 0, 1]], [p0, [1, 0, 0, 0]]), [-1 / 3, 1]
    )


# tau = .25 and default sign_eps = tau/2 = .125; dyadic numbers so boundaries are exact.
@pytest.mark.parametrize(
    "dm, dd, expected",
    [
        (0.5, 0.5, "aligned"),
        (0.75, 0.5, "aligned"),  # |dm - dd| = .25 = tau: boundary is aligned
        (-0.125, 0.125, "aligned"),  # opposite signs but within tau
        (0.875, 0.5, "stereotyping"),  # .875 > .5 + .25
        (0.5, 0.0, "stereotyping"),  # invented effect
        (0.125, 0.5, "erasure"),  # .125 < .5 - .25
        (0.0, 0.5, "erasure"),
        (-0.5, 0.5, "flipped"),
        (-0.25, 0.5, "flipped"),  # |dm| = .25 > eps
        (-0.125, 0.5, "erasure"),  # |dm| = .125 = eps: no direction, the effect is erased
        (0.5, -0.0625, "stereotyping"),  # data effect within eps: .5 > .0625 + .25
        (-0.875, -0.5, "stereotyping"),  # negative side, same sign
        (-0.125, -0.5, "erasure"),
    ],
)
def test_misalignment_category_boundaries(dm, dd, expected):
    assert M.misalignment_category(dm, dd, 0.25) == expected


def test_misalignment_tau_zero_and_bad_arguments():
    assert M.misalignment_category(0.5, 0.5, 0) == "aligned"
    assert M.misalignment_category(0.5, 0.25, 0) == "stereotyping"
    assert M.misalignment_category(-1e-9, 0.5, 0) == "flipped"  # eps = 0: any opposite sign
    with pytest.raises(ValueError):
        M.misalignment_category(0.1, 0.2, -0.1)
    with pytest.raises(ValueError):
        M.misalignment_category(0.1, 0.2, 0.1, sign_eps=0.06)  # > tau/2


def test_misalignment_categories_are_exhaustive_and_consistent():
    grid = np.arange(-8, 9) / 8  # dyadic shifts in [-1, 1]
    dm, dd = (a.ravel() for a in np.meshgrid(grid, grid))
    tau, eps = 0.25, 0.125
    cats = M.misalignment_categories(dm, dd, tau)
    assert set(cats) == set(M.CATEGORIES)
    for m, d, c in zip(dm, dd, cats, strict=True):
        assert (c == "aligned") == (abs(m - d) <= tau)
        if c == "flipped":
            assert m * d < 0 and min(abs(m), abs(d)) > eps
        if c in ("stereotyping", "erasure") and m * d >= 0:  # same sign: the inequalities
            assert (abs(m) > abs(d) + tau) if c == "stereotyping" else (abs(m) < abs(d) - tau)
        if c == "stereotyping":
            assert abs(m) > abs(d)
        if c == "erasure":
            assert abs(m) < abs(d)


# -- sampling-noise references ---------------------------------------------------------------
def test_ceiling_hand_expectation():
    # counts (1, 1), n = 2: resamples (2,0) p=.25 score 1 - .5 = .5; (1,1) p=.5 score 1;
    # (0,2) p=.25 score .5 -> E = .25*.5 + .5*1 + .25*.5 = .75 (sd .25, 20000 draws -> se .002)
    got = M.bootstrap_ceiling([1, 1], n_boot=20000, rng=np.random.default_rng(0))
    assert got == pytest.approx(0.75, abs=0.01)
    # a point mass never varies: exactly 1
    assert M.bootstrap_ceiling([0, 7, 0], n_boot=50) == 1.0


def test_expected_ceiling_closed_form():
    # (1, 1): E = .75 as above; point mass: 1
    assert np.allclose(M.expected_ceiling_batch([[1, 1], [0, 7]]), [0.75, 1.0])
    # (1, 1, 1), n = 3: cumulative counts m = 1, 2. Binomial(3, 1/3): P(0..3) = 8, 12, 6, 1 /27,
    # E|X - 1| = (8 + 0 + 6 + 2) / 27 = 16/27; by symmetry E|X - 2| under p = 2/3 is also 16/27.
    # E[W1] = (16/27 + 16/27) / 3 = 32/81 -> score 1 - (32/81) / 2 = 65/81
    assert M.expected_ceiling_batch([[1, 1, 1]])[0] == pytest.approx(65 / 81)
    # the bootstrap converges to it
    c = np.array([[3, 5, 2, 0, 1], [40, 2, 7, 30, 9]])
    boot = M.bootstrap_ceiling_batch(c, 20000, np.random.default_rng(2))
    assert np.allclose(boot, M.expected_ceiling_batch(c), atol=0.002)


def test_ceiling_grows_with_n_and_is_seeded():
    c = np.array([[3, 5, 2], [300, 500, 200]])
    small, large = M.bootstrap_ceiling_batch(c, 500, np.random.default_rng(0))
    assert 0 < small < large < 1
    a = M.bootstrap_ceiling_batch(c, 50, np.random.default_rng(7))
    b = M.bootstrap_ceiling_batch(c, 50, np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, M.bootstrap_ceiling_batch(c, 50, np.random.default_rng(8)))
    # chunking consumes the stream in the same order
    chunked = M.bootstrap_ceiling_batch(c, 50, np.random.default_rng(7), chunk=1)
    assert np.array_equal(a, chunked)
    with pytest.raises(ValueError):
        M.bootstrap_ceiling_batch([[0, 0]], 10)
    with pytest.raises(ValueError):
        M.bootstrap_ceiling_batch([[1.5, 2]], 10)


def test_effect_floor_and_no_effect_hand_values():
    # no effect vs (.5,.3,.2) - (.2,.3,.5) = (.3, 0, -.3): (.3 + .3 + 0) / 3 = .2
    assert np.allclose(M.no_effect_cdf_distance_batch([[5, 3, 2]], [[2, 3, 5]]), [0.2])
    # c1 = (1,1), c0 = (5,0) (point mass, never varies). p1* - p1: (.5,-.5) p=.25 -> cumsum
    # (.5, 0) -> d = .25; (0,0) p=.5 -> 0; (-.5,.5) p=.25 -> .25. E = .125 (se < .001)
    got = M.bootstrap_effect_floor_batch([[1, 1]], [[5, 0]], 20000, np.random.default_rng(0))
    assert got[0] == pytest.approx(0.125, abs=0.005)
    assert M.bootstrap_effect_floor_batch([[0, 4]], [[3, 0]], 20)[0] == 0.0
    with pytest.raises(ValueError):
        M.bootstrap_effect_floor_batch([[1, 1]], [[1, 1, 1]], 10)
