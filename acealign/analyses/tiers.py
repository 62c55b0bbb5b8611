"""Resource tiers (paper section 4.2, Fig. 3): per-tier scores and gains per G, the best-minus-worst
country gap and the top-minus-bottom tier gap (Tier 1 - Tier 3) before and after alignment.

All functions take the long country-score table of :func:`acealign.analyses.table1.country_scores`
(method, granularity, country, score x100), so they also run on the paper's own Table 1.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import BASE_METHOD, Tiers, load_tiers, method_order


def with_tiers(scores: pd.DataFrame, tiers: Tiers | None = None) -> pd.DataFrame:
    """Add ``code`` (ISO3) and ``tier`` (int, or NaN for a country in no tier)."""
    tiers = tiers or load_tiers()
    out = scores.copy()
    out["code"] = out["country"].map(tiers.code)
    out["tier"] = out["country"].map(lambda c: tiers.tier(c)).astype("Float64")
    return out


def tier_scores(scores: pd.DataFrame, tiers: Tiers | None = None, base: str = BASE_METHOD) -> pd.DataFrame:
    """Per method x G x tier: mean country score, and the mean gain over the base model on the
    tier's countries that both have (NaN without a base)."""
    s = with_tiers(scores, tiers).dropna(subset=["tier"])
    b = s[s["method"] == base][["granularity", "country", "score"]].rename(columns={"score": "base"})
    s = s.merge(b, on=["granularity", "country"], how="left")
    s["gain"] = s["score"] - s["base"]
    out = (
        s.groupby(["method", "granularity", "tier"])
        .agg(score=("score", "mean"), gain=("gain", "mean"), countries=("country", "nunique"))
        .reset_index()
    )
    out["tier"] = out["tier"].astype(int)
    return _order(out, ["granularity", "tier"])


def tier_gaps(scores: pd.DataFrame, tiers: Tiers | None = None) -> pd.DataFrame:
    """Per method x G: best and worst country, their gap, and the first-minus-last tier gap
    (mean score of the first tier's countries minus the last tier's, e.g. Tier 1 - Tier 3)."""
    tiers = tiers or load_tiers()
    s = with_tiers(scores, tiers)
    top, bottom = min(tiers.members), max(tiers.members)
    rows = []
    for (method, g), part in s.groupby(["method", "granularity"], sort=True):
        best = part.loc[part["score"].idxmax()]
        worst = part.loc[part["score"].idxmin()]
        t_top = part[part["tier"] == top]["score"].mean()
        t_bot = part[part["tier"] == bottom]["score"].mean()
        rows.append(
            {
                "method": method,
                "granularity": int(g),
                "best": best["code"],
                "worst": worst["code"],
                "best_minus_worst": best["score"] - worst["score"],
                "tier_gap": t_top - t_bot,
            }
        )
    return _order(pd.DataFrame(rows), ["granularity"])


def tier_summary(scores: pd.DataFrame, tiers: Tiers | None = None, base: str = BASE_METHOD) -> pd.DataFrame:
    """Per method, means over G: the tier gap, the best-minus-worst gap, and the gain of every tier.

    On the paper's Table 1 this gives the text's equity figures: base-model tier gap 9.81, ACE-Align
    gains +2.99 (Tier 1) and +8.48 (Tier 3), and an ACE-Align gap of 4.31 (the text says 4.92).
    """
    tiers = tiers or load_tiers()
    gaps = tier_gaps(scores, tiers)
    ts = tier_scores(scores, tiers, base)
    rows = []
    for method in method_order(gaps["method"]):
        g = gaps[gaps["method"] == method]
        row = {
            "method": method,
            "tier_gap": g["tier_gap"].mean(),
            "best_minus_worst": g["best_minus_worst"].mean(),
        }
        for t in sorted(tiers.members):
            sel = ts[(ts["method"] == method) & (ts["tier"] == t)]
            row[f"gain_tier{t}"] = sel["gain"].mean() if len(sel) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _order(table: pd.DataFrame, keys) -> pd.DataFrame:
    if table.empty:
        return table
    order = {m: i for i, m in enumerate(method_order(table["method"]))}
    out = table.assign(_o=table["method"].map(order)).sort_values(["_o", *keys]).drop(columns="_o")
    return out.reset_index(drop=True)
