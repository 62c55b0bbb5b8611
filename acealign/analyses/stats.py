"""Uncertainty of the report's figures: question-clustered bootstrap CIs, paired sign-flip tests
and the Holm correction.

The independent unit is the *question* (``question_key`` = dataset/topic/question_id), not the
(country, question) cell group: the ISSP module is asked in six countries and WVS in two, and a
question's cells in every country share its wording, topic and the model's reading of it. Every
resampling here therefore draws or sign-flips whole questions, with all their cells in every
country. The estimator is Table 1's: the mean over countries of each country's plain mean over its
cells (:func:`country_average`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

UNIT_COLUMNS = ["question_key", "country", "sum", "n"]


def question_units(df: pd.DataFrame, value: str = "score") -> pd.DataFrame:
    """Per (question, country): the sum of ``value`` over the cells (``sum``) and their number (``n``)."""
    if df.empty:
        return pd.DataFrame(columns=UNIT_COLUMNS)
    g = df.groupby(["question_key", "country"], sort=True)[value]
    return pd.DataFrame({"sum": g.sum(), "n": g.size()}).reset_index()[UNIT_COLUMNS]


def unit_matrices(units: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``units`` (:func:`question_units`) as two question x country matrices: sums and cell counts
    (0 where a country does not ask the question)."""
    s = units.pivot_table(index="question_key", columns="country", values="sum", aggfunc="sum", fill_value=0)
    n = units.pivot_table(index="question_key", columns="country", values="n", aggfunc="sum", fill_value=0)
    return s.to_numpy(float), n.reindex(index=s.index, columns=s.columns).to_numpy(float)


def country_average(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean over countries of each country's mean over its cells, S_c / N_c, over the countries
    with N_c > 0. The last axis is the country: per-country totals of shape (C,) give a scalar,
    (B, C) totals of B bootstrap replicates give (B,).
    """
    s, n = np.asarray(sums, float), np.asarray(counts, float)
    has = n > 0
    ratio = np.divide(s, n, out=np.zeros_like(s), where=has)
    k = has.sum(-1)
    return np.divide(ratio.sum(-1), k, out=np.full(k.shape, np.nan), where=k > 0)


def n_questions(units: pd.DataFrame) -> int:
    """Independent questions behind an estimate: distinct question keys over all countries."""
    return int(units["question_key"].nunique()) if len(units) else 0


def bootstrap_ci(
    units: pd.DataFrame, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float, float]:
    """:func:`country_average` of ``units`` with a (1 - alpha) percentile CI from resampling whole
    questions with replacement (each drawn question brings its cells in every country).

    Returns (estimate, low, high); low/high are NaN when ``n_boot`` is 0. A replicate that draws no
    question of some country averages over the other countries (rare unless a country asks very
    few of the questions).
    """
    if units.empty:
        return (float("nan"),) * 3
    s, n = unit_matrices(units)
    est = float(country_average(s.sum(0), n.sum(0)))
    if n_boot <= 0:
        return est, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    q = len(s)
    draws = rng.multinomial(q, np.full(q, 1.0 / q), size=n_boot)  # times each question is drawn
    boots = country_average(draws @ s, draws @ n)
    lo, hi = np.nanquantile(boots, [alpha / 2, 1 - alpha / 2])
    return est, float(lo), float(hi)


def sign_flip_pvalue(units: pd.DataFrame, n_perm: int = 2000, seed: int = 0) -> float:
    """Two-sided paired sign-flip p-value with whole questions as the exchangeable unit.

    ``units`` (:func:`question_units` of per-cell differences between two methods on the same
    cells) gives D[q,c] and N[q,c]. The statistic is the country-averaged mean difference
    T = (1/C) sum_c sum_q D[q,c] / N_c with N_c = sum_q N[q,c]. Under the null the two methods are
    exchangeable on each question, so question q's differences in *every* country keep or flip
    their sign together: T* = sum_q s_q v_q, v_q = (1/C) sum_c D[q,c] / N_c, s_q = +-1.

    With 2^Q <= ``n_perm`` every sign pattern is enumerated and p = #{|T*| >= |T|} / 2^Q (exact);
    otherwise ``n_perm`` random patterns give p = (1 + #{|T*| >= |T|}) / (1 + n_perm).
    """
    if units.empty:
        return float("nan")
    d, n = unit_matrices(units)
    totals = n.sum(0)
    v = (d / totals).sum(1) / d.shape[1]  # each question's contribution to T
    obs = abs(v.sum())
    q = len(v)
    tol = 1e-12 * max(1.0, obs)
    if 2**q <= n_perm:
        signs = 1.0 - 2.0 * ((np.arange(2**q)[:, None] >> np.arange(q)) & 1)
        return float(np.mean(np.abs(signs @ v) >= obs - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_perm, q))
    return float((1 + np.sum(np.abs(signs @ v) >= obs - tol)) / (1 + n_perm))


def holm(pvalues) -> np.ndarray:
    """Holm(-Bonferroni) adjusted p-values for one family of tests, in the input order.

    With the m non-missing p-values sorted, p_(1) <= ... <= p_(m):
    adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)). Rejecting where adj <= alpha controls the
    family-wise error rate at alpha (Holm 1979). NaN p-values are not in the family and stay NaN.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p-values must be a 1-D vector, got shape {p.shape}")
    finite = ~np.isnan(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError(f"p-values must lie in [0, 1]: {p.tolist()}")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(finite)
    if not len(idx):
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(stepped)
    return out
