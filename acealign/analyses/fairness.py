"""Subgroup fairness (Tan et al. 2026): modal accuracy, worst-persona score, best-worst gap and
spread across personas, before and after alignment; which personas are emulated best and worst.

A persona's score is the mean alignment score of its cells on the evaluation questions.
"""

from __future__ import annotations

import pandas as pd

from .. import metrics
from .common import BASE_METHOD, eval_rows, method_order, with_scores

COLUMNS = [
    "method", "country", "granularity", "personas", "modal_accuracy", "mean", "worst", "best",
    "gap", "std", "worst_persona", "best_persona",
]


def persona_fairness(df: pd.DataFrame) -> pd.DataFrame:
    """Per method x country x G (``granularity="all"``: personas of every G together). Scores,
    gap and std x100; modal accuracy as a fraction of cells."""
    df = eval_rows(with_scores(df))
    both = pd.concat([df.assign(granularity=df["granularity"].astype(str)), df.assign(granularity="all")])
    rows = []
    for (method, country, g), part in both.groupby(["method", "country", "granularity"], sort=True):
        per_persona = metrics.group_means(part["persona"].tolist(), part["score"].tolist())
        d = metrics.disparity(per_persona)
        rows.append(
            {
                "method": method,
                "country": country,
                "granularity": g,
                "personas": d.personas,
                "modal_accuracy": float(part["modal_hit"].mean()),
                "mean": 100 * d.mean,
                "worst": 100 * d.worst,
                "best": 100 * d.best,
                "gap": 100 * d.gap,
                "std": 100 * d.std,
                "worst_persona": d.worst_persona,
                "best_persona": d.best_persona,
            }
        )
    out = pd.DataFrame(rows, columns=COLUMNS)
    order = {m: i for i, m in enumerate(method_order(out["method"]))}
    return out.assign(_o=out["method"].map(order)).sort_values(["country", "granularity", "_o"]).drop(
        columns="_o"
    ).reset_index(drop=True)


def fairness_changes(table: pd.DataFrame, base: str = BASE_METHOD) -> pd.DataFrame:
    """Each method's fairness figures minus the base model's (same country and G): positive
    ``worst`` and negative ``gap``/``std`` changes mean a fairer model."""
    cols = ["modal_accuracy", "mean", "worst", "gap", "std"]
    b = table[table["method"] == base].set_index(["country", "granularity"])[cols]
    rows = []
    for r in table[table["method"] != base].itertuples(index=False):
        key = (r.country, r.granularity)
        if key not in b.index:
            continue
        rows.append(
            {"method": r.method, "country": r.country, "granularity": r.granularity,
             **{f"d_{c}": getattr(r, c) - b.loc[key, c] for c in cols}}
        )
    return pd.DataFrame(rows, columns=["method", "country", "granularity", *[f"d_{c}" for c in cols]])


def best_worst_personas(df: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """Per method x country: the ``k`` best and ``k`` worst emulated personas (any G), by their
    mean score x100 on the evaluation questions."""
    df = eval_rows(with_scores(df))
    g = df.groupby(["method", "country", "persona", "granularity"], sort=True)["score"]
    per = g.agg(["mean", "size"]).reset_index().rename(columns={"mean": "score", "size": "cells"})
    per["score"] *= 100
    rows = []
    for (method, country), part in per.groupby(["method", "country"], sort=True):
        ranked = part.sort_values(["score", "persona"], ascending=[False, True])
        for rank, r in enumerate(ranked.head(k).itertuples(), 1):
            rows.append((method, country, "best", rank, r.persona, int(r.granularity), r.score, r.cells))
        worst = part.sort_values(["score", "persona"], ascending=[True, True])
        for rank, r in enumerate(worst.head(k).itertuples(), 1):
            rows.append((method, country, "worst", rank, r.persona, int(r.granularity), r.score, r.cells))
    out = pd.DataFrame(rows, columns=["method", "country", "end", "rank", "persona", "granularity", "score", "cells"])
    order = {m: i for i, m in enumerate(method_order(out["method"]))}
    return out.assign(_o=out["method"].map(order)).sort_values(["country", "_o", "end", "rank"]).drop(
        columns="_o"
    ).reset_index(drop=True)
