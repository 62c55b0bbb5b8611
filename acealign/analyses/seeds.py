"""Several training seeds of one method (``ace-s0``, ``ace-s1``, ...; names from ``acealign run``).

The analyses compare methods, so the seeds of a method are merged into one method row
(:func:`merge_seeds`): per cell, ``score`` is the mean of the seeds' scores (so Table 1 of the merged
method is exactly the mean over seeds of each seed's Table 1, the mean being linear) and ``pred``
is the mean of the seeds' distributions (the seed-averaged model, used for modal accuracy and for
effects: the model effect of Eq. 6 of the averaged predictions is the average of the seeds'
effects). :func:`seed_spread` keeps the seed-to-seed variation visible.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .common import country_question_means, eval_rows, with_scores

SEED_NAME = re.compile(r"^(?P<method>.+)-s(?P<seed>\d+)$")


def seed_groups(methods) -> dict[str, list[str]]:
    """{method: [its seed runs]} for names like ``ace-s0``; a name without a seed suffix, or one
    whose base name is itself a method in the table, is left alone."""
    methods = list(methods)
    groups: dict[str, list[str]] = {}
    for m in methods:
        hit = SEED_NAME.match(m)
        if hit and hit["method"] not in methods:
            groups.setdefault(hit["method"], []).append(m)
    return groups


def merge_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """The table with every seed group replaced by one method (mean score, mean prediction) on
    the cells that all its seeds have."""
    groups = seed_groups(df["method"].unique())
    if not groups:
        return df
    df = with_scores(df)
    seeded = {m for runs in groups.values() for m in runs}
    out = [df[~df["method"].isin(seeded)]]
    key = ["country", "question_key", "persona"]
    for method, runs in groups.items():
        part = df[df["method"].isin(runs)]
        complete = part.groupby(key)["method"].transform("nunique") == len(runs)
        part = part[complete.to_numpy()]
        first = part.drop_duplicates(key).set_index(key)
        g = part.groupby(key, sort=False)
        merged = first.assign(
            method=method,
            score=g["score"].mean(),
            pred=g["pred"].agg(lambda ps: list(np.mean(np.stack([np.asarray(p, float) for p in ps]), axis=0))),
        ).reset_index()
        merged = merged.drop(columns=["modal_hit"])
        out.append(merged[[c for c in df.columns if c != "modal_hit"]])
    merged_all = pd.concat(out, ignore_index=True).drop(columns=["modal_hit"])
    return with_scores(merged_all)


def seed_spread(df: pd.DataFrame) -> pd.DataFrame:
    """Per seeded method x G: each seed's Table-1 average (x100; mean over countries of the
    country mean), their mean and standard deviation (ddof=1) over seeds."""
    groups = seed_groups(df["method"].unique())
    cols = ["method", "granularity", "seeds", "mean", "std", "per_seed"]
    if not groups:
        return pd.DataFrame(columns=cols)
    df = eval_rows(with_scores(df))
    rows = []
    for method, runs in groups.items():
        for g in sorted(df["granularity"].unique()):
            vals = []
            for r in sorted(runs):
                part = df[(df["method"] == r) & (df["granularity"] == g)]
                if len(part):
                    u = country_question_means(part)
                    vals.append(100 * float(np.mean([s["sum"].sum() / s["n"].sum() for _, s in u.groupby("country")])))
            if vals:
                rows.append({
                    "method": method, "granularity": int(g), "seeds": len(vals), "mean": float(np.mean(vals)),
                    "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan"),
                    "per_seed": " / ".join(f"{v:.2f}" for v in vals),
                })
    return pd.DataFrame(rows, columns=cols)
