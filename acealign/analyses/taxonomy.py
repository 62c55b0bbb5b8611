"""Misalignment taxonomy (paper section 4.2, Fig. 6): is each attribute-topic effect flipped,
stereotyped, erased or aligned?

For a method, country, treatment attribute A and topic, Δm is the mean over the topic's
counterfactual pairs (both G=4 ends predicted, evaluation questions) of the signed
expected-position shift of the model's two predictions, and Δd the same on the survey counts
(:func:`acealign.metrics.expected_position_shift`, a fraction of the answer scale). The category
is :func:`acealign.metrics.misalignment_category` (Δm, Δd, tau). Averaging the signed shifts over a
topic's pairs before classifying keeps the noise of small G=4 cells from deciding the category.
"""

from __future__ import annotations

import pandas as pd

from .. import metrics
from .common import measured_pairs, method_order

# Tolerance on the expected-position shift (a fraction of the answer scale). The paper does not
# give its tau; 0.02 = 2% of the scale, about a fifth of a point on an 11-point item.
DEFAULT_TAU = 0.02
EFFECT_COLUMNS = ["method", "country", "attribute", "topic", "pairs", "dm", "dd", "category"]


def attribute_effects(pairs: pd.DataFrame, tau: float = DEFAULT_TAU, unit: str = "topic") -> pd.DataFrame:
    """Classify per (method, country, attribute, ``unit``) from measured pairs
    (:func:`~acealign.analyses.common.pair_measures`). ``unit``: "topic" (the paper) or
    "question_key" (finer). The ``topic`` column holds the unit's value."""
    if pairs.empty:
        return pd.DataFrame(columns=EFFECT_COLUMNS)
    g = pairs.groupby(["method", "country", "attribute", unit], sort=True)
    eff = g.agg(pairs=("dm", "size"), dm=("dm", "mean"), dd=("dd", "mean")).reset_index()
    eff = eff.rename(columns={unit: "topic"})
    eff["category"] = metrics.misalignment_categories(eff["dm"].to_numpy(), eff["dd"].to_numpy(), tau)
    return eff[EFFECT_COLUMNS]


def taxonomy(df: pd.DataFrame, tau: float = DEFAULT_TAU, unit: str = "topic", pairs=None) -> pd.DataFrame:
    """Attribute-topic effects with their category, from a predictions table (``pairs``:
    :func:`~acealign.analyses.common.measured_pairs` of it, if already computed)."""
    pairs = measured_pairs(df) if pairs is None else pairs
    return attribute_effects(pairs, tau=tau, unit=unit)


def taxonomy_shares(effects: pd.DataFrame) -> pd.DataFrame:
    """Per method x country (and ``country="All"``, pooled): share of each category and the number
    of classified effects. Shares of a row sum to 1."""
    cols = ["method", "country", *metrics.CATEGORIES, "effects"]
    if effects.empty:
        return pd.DataFrame(columns=cols)
    both = pd.concat([effects, effects.assign(country="All")], ignore_index=True)
    rows = []
    for (method, country), part in both.groupby(["method", "country"], sort=False):
        row = {"method": method, "country": country}
        for cat in metrics.CATEGORIES:
            row[cat] = float((part["category"] == cat).mean())
        row["effects"] = len(part)
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols)
    order = {m: i for i, m in enumerate(method_order(out["method"]))}
    out = out.assign(_o=out["method"].map(order), _a=out["country"] == "All")
    return out.sort_values(["_a", "country", "_o"]).drop(columns=["_o", "_a"]).reset_index(drop=True)
