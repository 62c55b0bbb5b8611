"""Objectives (Eq. 9-14, distribution matching) against hand-computed values and gradients."""

import math

import numpy as np
import pytest
import torch

from acealign.objectives import (
    anchor_loss,
    causal_loss,
    cdf_effect_distance,
    combined_loss,
    distribution_distance,
    pair_terms,
    survey_mode,
)

T = torch.float64


def t(*xs):
    return torch.tensor(xs, dtype=T)


def test_survey_mode_and_tie_rule():
    assert survey_mode([1, 7, 2]) == 1
    assert survey_mode(np.array([3, 5, 5])) == 1  # tie: the first in ordinal order
    assert survey_mode([4, 0, 4]) == 0
    with pytest.raises(ValueError):
        survey_mode([0, 0, 0])


def test_anchor_loss_value_and_gradient():
    # logits z = (0, ln 2, ln 3) -> p = (1/6, 2/6, 3/6); mode 0 -> loss = -ln(1/6) = ln 6.
    z = torch.log(t(1.0, 2.0, 3.0)).requires_grad_()
    loss = anchor_loss(torch.log_softmax(z, -1), 0)
    assert loss.item() == pytest.approx(math.log(6))
    # d(-log softmax_m)/dz = p - e_m = (1/6 - 1, 2/6, 3/6)
    (g,) = torch.autograd.grad(loss, z)
    assert torch.allclose(g, t(1 / 6 - 1, 1 / 3, 1 / 2))


def test_cdf_effect_distance_value_and_gradient():
    # p1 = (.5,.25,.25), p0 = (.25,.25,.5): model effect (.25, 0, -.25), CDF (.25, .25, 0).
    # survey counts1 (4,2,2) -> (.5,.25,.25); counts0 (2,4,2) -> (.25,.5,.25):
    # data effect (.25, -.25, 0), CDF (.25, 0, 0). |diff| = (0, .25, 0) -> d = .25/3.
    p1 = t(0.5, 0.25, 0.25).requires_grad_()
    p0 = t(0.25, 0.25, 0.5).requires_grad_()
    data = t(0.25, -0.25, 0.0)
    d = cdf_effect_distance(p1, p0, data)
    assert d.item() == pytest.approx(0.25 / 3)
    # Only level k=2 has a non-zero gap (sign +1); dCDF(2)/dp1_j = 1 for j <= 2:
    # grad p1 = (1/3)(1, 1, 0), grad p0 = -(1/3)(1, 1, 0).
    g1, g0 = torch.autograd.grad(d, (p1, p0))
    assert torch.allclose(g1, t(1 / 3, 1 / 3, 0.0))
    assert torch.allclose(g0, -g1)


def test_cdf_effect_distance_zero_when_effects_match():
    p1, p0 = t(0.6, 0.3, 0.1), t(0.2, 0.5, 0.3)
    assert cdf_effect_distance(p1, p0, p1 - p0).item() == pytest.approx(0.0)
    # Same effect from other absolute levels: the causal loss alone is under-determined (Eq. 13's why).
    assert cdf_effect_distance(p1 - 0.1 + t(0.1, 0, 0), p0 + t(0.1, -0.1, 0), p1 - p0).item() != 0


def test_causal_loss_is_mean_over_pairs():
    assert causal_loss([t(0.1), t(0.3)]).item() == pytest.approx(0.2)  # (0.1 + 0.3) / 2
    with pytest.raises(ValueError):
        causal_loss([])


def test_distribution_distance_is_one_minus_alignment():
    # CDF(p) = (.5, .75, 1), CDF(q) = (.25, .75, 1): W1 = .25; / (K-1 = 2) = .125.
    p, q = t(0.5, 0.25, 0.25), t(0.25, 0.5, 0.25)
    assert distribution_distance(p, q).item() == pytest.approx(0.125)
    # Opposite ends of a 4-option scale: W1 = 3 = K-1 -> 1.
    assert distribution_distance(t(1, 0, 0, 0), t(0, 0, 0, 1)).item() == pytest.approx(1.0)
    metrics = pytest.importorskip("acealign.metrics")
    assert 1 - distribution_distance(p, q).item() == pytest.approx(
        metrics.alignment_score(p.numpy(), q.numpy())
    )


def test_combined_loss_eq14():
    terms = {"anchor": t(2.0), "causal": t(0.5)}
    assert combined_loss(terms, {"anchor": 1.0, "causal": 0.0}).item() == 2.0
    assert combined_loss(terms, {"anchor": 0.0, "causal": 1.0}).item() == 0.5
    assert combined_loss(terms, {"anchor": 0.5, "causal": 2.0}).item() == pytest.approx(2.0)  # 1 + 1
    with pytest.raises(ValueError, match="zero"):
        combined_loss(terms, {"anchor": 0.0})
    with pytest.raises(ValueError, match="unknown"):
        combined_loss(terms, {"anchr": 1.0})
    with pytest.raises(ValueError, match="not computed"):
        combined_loss(terms, {"distribution": 1.0})


def test_pair_terms_hand_values_mixed_k():
    # Pair A (K=3): p1 = (.5,.25,.25), p0 = (.25,.25,.5), counts1 (4,2,2), counts0 (2,4,2).
    # Pair B (K=2): p1 = (.5,.5), p0 = (.5,.5), counts1 (1,3), counts0 (3,1).
    lp1 = [torch.log(t(0.5, 0.25, 0.25)), torch.log(t(0.5, 0.5))]
    lp0 = [torch.log(t(0.25, 0.25, 0.5)), torch.log(t(0.5, 0.5))]
    c1, c0 = [[4, 2, 2], [1, 3]], [[2, 4, 2], [3, 1]]
    out = pair_terms(lp1, lp0, c1, c0)
    # anchor: modes A1=0 (p .5), A0=1 (p .25), B1=1 (p .5), B0=0 (p .5):
    # mean(-ln .5, -ln .25, -ln .5, -ln .5) = (3 ln 2 + 2 ln 2) / 4 = 1.25 ln 2
    assert out["anchor"].item() == pytest.approx(1.25 * math.log(2))
    # causal: A = .25/3 (above); B: model effect 0, data effect (-.5, .5): CDF (-.5, 0) -> .5/2 = .25
    assert out["causal"].item() == pytest.approx((0.25 / 3 + 0.25) / 2)
    # distribution: A1: CDFs (.5,.75) vs (.5,.75) -> 0; A0: (.25,.5) vs (.25,.75) -> .25/2;
    # B1: .5 vs .25 -> .25/1; B0: .5 vs .75 -> .25/1. Mean = (0 + .125 + .25 + .25) / 4
    assert out["distribution"].item() == pytest.approx(0.625 / 4)
    only = pair_terms(lp1, lp0, c1, c0, needed=("causal",))
    assert set(only) == {"causal"}


def test_pair_terms_rejects_mismatched_options():
    with pytest.raises(ValueError, match="3 survey counts for 2"):
        pair_terms([torch.log(t(0.5, 0.5))], [torch.log(t(0.5, 0.5))], [[1, 2, 3]], [[1, 2, 3]])


def test_gradients_through_a_toy_model_match_hand_derivative():
    # A toy "model": logits = z1 / z0 directly (one free parameter vector per end), so that
    # p = softmax(z). For the causal term of pair A above, dL/dp1 = (1/3)(1, 1, 0) and
    # dL/dz_i = p_i (g_i - p.g) with p.g = .5/3 + .25/3 = .25:
    # dL/dz1 = (.5(1/3 - .25), .25(1/3 - .25), .25(0 - .25)) = (1/24, 1/48, -1/16).
    z1 = torch.log(t(0.5, 0.25, 0.25)).requires_grad_()
    z0 = torch.log(t(0.25, 0.25, 0.5)).requires_grad_()
    out = pair_terms(
        [torch.log_softmax(z1, -1)], [torch.log_softmax(z0, -1)], [[4, 2, 2]], [[2, 4, 2]],
        needed=("causal",),
    )
    g1, g0 = torch.autograd.grad(out["causal"], (z1, z0))
    assert torch.allclose(g1, t(1 / 24, 1 / 48, -1 / 16))
    # For z0, dL/dp0 = -(1/3)(1, 1, 0); p0.g = -(.25 + .25)/3 = -1/6:
    # dL/dz0 = (.25(-1/3 + 1/6), .25(-1/3 + 1/6), .5(0 + 1/6)) = (-1/24, -1/24, 1/12)
    assert torch.allclose(g0, t(-1 / 24, -1 / 24, 1 / 12))


@pytest.mark.parametrize(
    "weights",
    [{"anchor": 1.0}, {"causal": 1.0}, {"distribution": 1.0}, {"anchor": 1.0, "causal": 1.0}],
)
def test_gradient_descent_on_toy_model_lowers_each_objective(weights):
    # A linear "model" maps a persona embedding to 3 option logits; a few SGD steps must lower
    # the objective (a check that the gradients point the right way, not only that they exist).
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3).double()
    x1, x0 = torch.randn(4, dtype=T), torch.randn(4, dtype=T)
    c1, c0 = [[1, 2, 7]], [[6, 3, 1]]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def loss():
        terms = pair_terms(
            [torch.log_softmax(model(x1), -1)], [torch.log_softmax(model(x0), -1)], c1, c0,
            needed=tuple(weights),
        )
        return combined_loss(terms, weights)

    first = loss().item()
    for _ in range(20):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert loss().item() < 0.7 * first
