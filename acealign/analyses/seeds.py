"""Several training seeds of one method (``ace-s0``, ``ace-s1``, ...; names from ``acealign run``).

Every metric is computed on each seed's own predictions and then averaged over the seeds, with
the spread across seeds reported beside it. Predictions are never averaged over seeds: the
mean of the seeds' distributions is an ensemble, a different (and usually better) model than any
single run, which would flatter the method against single-run baselines.

Two ways to get there, chosen per metric:

- :func:`mean_over_seeds`: per unit (a cell, a counterfactual pair) the mean of a per-seed value
  (the cell's score, its modal hit, the pair's d_CDF). For metrics that are plain means over such
  units (Table 1, modal accuracy, mean d_CDF) this is exactly the mean of the per-seed metrics, and
  the question-clustered CIs and paired tests then run on one value per unit.
- :func:`collapse_seeds`: metrics that are not means of unit values (worst persona, taxonomy
  shares, flipped share) are computed per seed run and their rows collapsed to mean and spread.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import SEED_NAME, eval_rows, with_scores
from .stats import country_average, question_units, unit_matrices

SPREAD_COLUMNS = ["method", "metric", "granularity", "seeds", "seed_mean", "seed_std", "per_seed"]


def seed_groups(methods) -> dict[str, list[str]]:
    """{method: [its seed runs]} for names like ``ace-s0``; a name without a seed suffix, or one
    whose base name is itself a method in the table, is left alone. Runs in seed order."""
    methods = list(methods)
    groups: dict[str, list[str]] = {}
    for m in methods:
        hit = SEED_NAME.match(m)
        if hit and hit["method"] not in methods:
            groups.setdefault(hit["method"], []).append(m)
    return {k: sorted(v, key=lambda r: int(SEED_NAME.match(r)["seed"])) for k, v in groups.items()}


def run_methods(methods) -> dict[str, str]:
    """{run: method}: a seed run maps to its method, every other name to itself."""
    out = {m: m for m in methods}
    for method, runs in seed_groups(methods).items():
        out.update({r: method for r in runs})
    return out


def mean_over_seeds(table: pd.DataFrame, keys: list[str], values: list[str], drop=("pred",)) -> pd.DataFrame:
    """Rows of seed runs replaced by one row of their method per ``keys`` (e.g. a cell: country,
    question_key, persona), holding each of ``values`` averaged over the seeds, on the units that
    every seed has. Other columns come from the first seed; ``drop`` columns are removed (a cell's
    ``pred``: its seed mean would be an ensemble). A table without seed runs is returned as is."""
    groups = seed_groups(table["method"].unique())
    if not groups:
        return table
    seeded = {r for runs in groups.values() for r in runs}
    keep = [c for c in table.columns if c not in drop]
    out = [table.loc[~table["method"].isin(seeded), keep]]
    for method, runs in groups.items():
        part = table[table["method"].isin(runs)]
        complete = part.groupby(keys)["method"].transform("nunique").to_numpy() == len(runs)
        part = part[complete]
        first = part.drop_duplicates(keys).set_index(keys)
        means = part.assign(**{v: part[v].astype(float) for v in values}).groupby(keys)[values].mean()
        first[values] = means.reindex(first.index)
        out.append(first.reset_index().assign(method=method)[keep])
    return pd.concat(out, ignore_index=True)


def mean_cells(scored: pd.DataFrame) -> pd.DataFrame:
    """:func:`mean_over_seeds` of a scored predictions table (:func:`~.common.with_scores`) per
    cell: ``score`` and ``modal_hit`` (then the fraction of seeds that hit the mode) averaged over
    the seeds, ``pred`` dropped. The input of every analysis that is a mean of cell scores."""
    return mean_over_seeds(scored, ["country", "question_key", "persona"], ["score", "modal_hit"])


def collapse_seeds(table: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Rows of an analysis computed per seed run (``method`` = ``ace-s0``, ...) collapsed to one row
    per method and ``keys``: each of ``metrics`` is the mean over the seeds, followed by
    ``<metric>_sd`` (standard deviation over the seeds, ddof=1; NaN for one seed); ``seeds`` counts
    them. Other numeric columns are averaged; other columns keep the seeds' common value, or list
    the seeds' values joined by " / ". Rows keep the order of the input (seed runs sort with their
    method, :func:`~.common.method_order`). Without seed runs the table is returned as is."""
    runs = run_methods(table["method"].unique()) if len(table) else {}
    if not any(r != m for r, m in runs.items()):
        return table
    t = table.assign(method=table["method"].map(runs))
    rows = []
    for _, part in t.groupby(["method", *keys], sort=False, dropna=False):
        row = {}
        for col in t.columns:
            vals = part[col]
            if col in metrics:
                x = pd.to_numeric(vals, errors="coerce").to_numpy(float)
                row[col] = float(np.nanmean(x)) if np.isfinite(x).any() else np.nan
                row[f"{col}_sd"] = float(np.nanstd(x, ddof=1)) if np.isfinite(x).sum() > 1 else np.nan
            elif col in ("method", *keys) or vals.nunique(dropna=False) == 1:
                row[col] = vals.iloc[0]
            elif pd.api.types.is_numeric_dtype(vals):
                row[col] = float(vals.mean())
            else:
                row[col] = " / ".join(str(v) for v in vals)
        row["seeds"] = len(part)
        rows.append(row)
    cols = [c for col in t.columns for c in ((col, f"{col}_sd") if col in metrics else (col,))]
    return pd.DataFrame(rows, columns=[*cols, "seeds"])


def seed_spread(scored: pd.DataFrame, fidelity_runs=None, fairness_runs=None) -> pd.DataFrame:
    """Per seeded method: each seed's value of the report's headline metrics (``per_seed``), their
    mean ``seed_mean`` and standard deviation ``seed_std`` over seeds (ddof=1). Metrics: ``S`` per G (the Table-1 average x100 on the
    evaluation cells), and, given the per-run tables, ``d_cdf_x1000`` and ``flipped_share``
    (effect fidelity, Avg over countries; :func:`~.fidelity.run_fidelity`) and ``modal_accuracy``
    and ``worst_persona`` (x100; mean over countries, personas of every G;
    :func:`~.fairness.persona_fairness`)."""
    groups = seed_groups(scored["method"].unique())
    if not groups:
        return pd.DataFrame(columns=SPREAD_COLUMNS)
    ev = eval_rows(with_scores(scored))
    rows = []

    def add(method, metric, g, vals):
        vals = [v for v in vals if np.isfinite(v)]
        if vals:
            rows.append({
                "method": method, "metric": metric, "granularity": g, "seeds": len(vals),
                "seed_mean": float(np.mean(vals)),
                "seed_std": float(np.std(vals, ddof=1)) if len(vals) > 1 else np.nan,
                "per_seed": " / ".join(f"{v:.4g}" for v in vals),
            })

    for method, runs in groups.items():
        for g in sorted(ev["granularity"].unique()):
            vals = []
            for r in runs:
                part = ev[(ev["method"] == r) & (ev["granularity"] == g)]
                if len(part):
                    s, n = unit_matrices(question_units(part))
                    vals.append(100 * float(country_average(s.sum(0), n.sum(0))))
            add(method, "S", str(int(g)), vals)
        if fidelity_runs is not None and len(fidelity_runs):
            avg = fidelity_runs[fidelity_runs["country"] == "Avg"].set_index("method")
            add(method, "d_cdf_x1000", "4", [1000 * avg["cdf_distance"].get(r, np.nan) for r in runs])
            add(method, "flipped_share", "4", [avg["flipped_share"].get(r, np.nan) for r in runs])
        if fairness_runs is not None and len(fairness_runs):
            f = fairness_runs[fairness_runs["granularity"] == "all"].groupby("method")
            acc, worst = f["modal_accuracy"].mean(), f["worst"].mean()
            add(method, "modal_accuracy", "all", [acc.get(r, np.nan) for r in runs])
            add(method, "worst_persona", "all", [worst.get(r, np.nan) for r in runs])
    return pd.DataFrame(rows, columns=SPREAD_COLUMNS)
