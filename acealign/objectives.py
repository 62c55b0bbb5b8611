"""Training objectives of ACE-Align (Eq. 9-14) and the distribution-matching baseline.

Everything here is a pure function of torch tensors, so gradients flow back into the model's
option log-probabilities (Eq. 2-3, from :class:`acealign.scoring.OptionScorer` with ``grad=True``).
Survey-side inputs (counts, modes, data effects) are constants.

Conventions
- ``log_probs`` of one persona-question is a 1-D tensor of shape (K,): log p(y|s,q) renormalized
  over the K options, in the question's ordinal option order.
- Ties in the survey mode (Eq. 13): the *first* option in ordinal order wins (``numpy.argmax``).
  The rule is arbitrary but fixed, so a run is reproducible; ties are rare in cells with n >= 10.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

# The terms a schedule may weight. Eq. 14 has the first two (alpha, beta); "distribution" is the
# per-persona distribution-matching baseline (and the anchor of ``ace+distribution``).
TERMS: tuple[str, ...] = ("anchor", "causal", "distribution")


def survey_mode(counts) -> int:
    """Empirical mode y*_{s,q} of Eq. 13: index of the most chosen option (ties: the first)."""
    c = np.asarray(counts)
    if c.ndim != 1 or c.size == 0 or c.sum() <= 0:
        raise ValueError("survey_mode needs a non-empty, non-zero 1-D count vector")
    return int(np.argmax(c))


def anchor_loss(log_probs: torch.Tensor, mode: int) -> torch.Tensor:
    """Eq. 13: l_anchor(s, q) = -log p_theta(y*_{s,q} | s, q) for one persona end."""
    return -log_probs[mode]


def cdf_effect_distance(
    p1: torch.Tensor, p0: torch.Tensor, data_effect: torch.Tensor
) -> torch.Tensor:
    """Eq. 9-11: d_CDF(A, Z) = (1/|Y|) * sum_k |dCDF_LLM(k) - dCDF_data(k)|.

    ``p1``/``p0``: model distributions at s1 = (A=1, X) and s0 = (A=0, X) (the model effect, Eq. 6,
    is ``p1 - p0``); ``data_effect``: the survey effect of Eq. 8. The mean runs over all K levels as
    in Eq. 11 (the last level is always 0 - 0, since both effects sum to zero).
    """
    model_cdf = torch.cumsum(p1 - p0, dim=-1)  # Eq. 9
    data_cdf = torch.cumsum(data_effect, dim=-1)  # Eq. 10
    return (model_cdf - data_cdf).abs().mean(dim=-1)  # Eq. 11


def causal_loss(distances: Sequence[torch.Tensor]) -> torch.Tensor:
    """Eq. 12: L_CE = mean of d_CDF(A, Z) over the pairs (A, Z) in D."""
    if not distances:
        raise ValueError("causal_loss needs at least one pair")
    return torch.stack(list(distances)).mean()


def distribution_distance(p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Ordinal distance between a predicted and a survey distribution: W1 / (K - 1).

    W1 on option positions 0..K-1 is sum_k |CDF_p(k) - CDF_target(k)|; dividing by K - 1 (the
    largest possible W1) makes it exactly ``1 - alignment score`` of Eq. 15 for one question, so
    minimizing it maximizes the evaluation metric. Not in the paper: it is the per-persona
    distribution-matching baseline (and the anchor of ``ace+distribution``).
    """
    k = p.shape[-1]
    if k < 2:
        raise ValueError("distribution_distance needs at least two options")
    return (torch.cumsum(p, -1) - torch.cumsum(target, -1)).abs().sum(-1) / (k - 1)


def combined_loss(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """Eq. 14, generalized: L = sum_t w_t * L_t (alpha = w["anchor"], beta = w["causal"]).

    Terms with weight 0 are skipped, so they need not be computed. At least one weight must be
    non-zero.
    """
    unknown = set(weights) - set(TERMS)
    if unknown:
        raise ValueError(f"unknown objective term(s) {sorted(unknown)}; expected {list(TERMS)}")
    active = [(t, float(w)) for t, w in weights.items() if float(w) != 0.0]
    if not active:
        raise ValueError("all objective weights are zero")
    total = None
    for t, w in active:
        if t not in terms:
            raise ValueError(f"objective term {t!r} has weight {w} but was not computed")
        total = w * terms[t] if total is None else total + w * terms[t]
    return total


def pair_terms(
    log_probs1: Sequence[torch.Tensor],
    log_probs0: Sequence[torch.Tensor],
    counts1: Sequence,
    counts0: Sequence,
    needed: Sequence[str] = TERMS,
) -> dict[str, torch.Tensor]:
    """Batch values of the objective terms for counterfactual pairs (s1, s0, q).

    ``log_probs1[i]``/``log_probs0[i]``: model log-probabilities (K_i,) at the two ends of pair i;
    ``counts1[i]``/``counts0[i]``: their survey counts. Returns the requested terms:
    - ``anchor``: mean of Eq. 13 over both ends of every pair (2 * n values);
    - ``causal``: Eq. 12, mean of d_CDF over the pairs;
    - ``distribution``: mean of W1/(K-1) over both ends of every pair.
    Questions may differ in K, so pairs are handled one by one (the work is tiny next to a forward).
    """
    n = len(log_probs1)
    if not (n == len(log_probs0) == len(counts1) == len(counts0)) or n == 0:
        raise ValueError("pair_terms needs equally long, non-empty lists")
    # Survey distributions first: this also checks that counts and model options agree.
    q1 = [_as_distribution(c, lp) for c, lp in zip(counts1, log_probs1, strict=True)]
    q0 = [_as_distribution(c, lp) for c, lp in zip(counts0, log_probs0, strict=True)]
    out: dict[str, torch.Tensor] = {}
    if "anchor" in needed:
        ends = [anchor_loss(lp, survey_mode(c)) for lp, c in zip(log_probs1, counts1, strict=True)]
        ends += [anchor_loss(lp, survey_mode(c)) for lp, c in zip(log_probs0, counts0, strict=True)]
        out["anchor"] = torch.stack(ends).mean()
    p1 = [lp.exp() for lp in log_probs1]
    p0 = [lp.exp() for lp in log_probs0]
    if "causal" in needed:
        out["causal"] = causal_loss(
            [cdf_effect_distance(a, b, c - d) for a, b, c, d in zip(p1, p0, q1, q0, strict=True)]
        )
    if "distribution" in needed:
        ends = [distribution_distance(a, c) for a, c in zip(p1, q1, strict=True)]
        ends += [distribution_distance(b, d) for b, d in zip(p0, q0, strict=True)]
        out["distribution"] = torch.stack(ends).mean()
    return out


def _as_distribution(counts, like: torch.Tensor) -> torch.Tensor:
    """Survey counts -> a constant probability tensor on ``like``'s device and dtype."""
    c = torch.as_tensor(np.asarray(counts, dtype=np.float64), dtype=like.dtype, device=like.device)
    if c.shape != like.shape:
        raise ValueError(f"{c.shape[0]} survey counts for {like.shape[0]} model options")
    total = c.sum()
    if total <= 0:
        raise ValueError("survey counts sum to zero")
    return c / total
