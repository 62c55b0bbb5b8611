"""Table 1: alignment score x100 per country x G x method, the average, differences from the base
model, bootstrap confidence intervals over questions, and paired tests of ACE-Align vs baselines
(Holm-corrected over the table).

Aggregation (as the paper's table): a country's score at granularity G is the plain mean of the
alignment score (Eq. 15, one question at a time) over all its eligible persona-question cells of
that G on the evaluation questions; the average column is the plain mean over countries.
Uncertainty: whole questions are resampled / sign-flipped, with their cells in every country
(:mod:`acealign.analyses.stats`); ``n_questions`` is the number of independent questions behind
each CI. A method run with several seeds enters with its seed-mean cell scores
(:func:`acealign.analyses.seeds.mean_cells`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common import (
    BASE_METHOD,
    PRIMARY_METHOD,
    REFERENCE_METHODS,
    eval_rows,
    method_label,
    method_order,
    with_scores,
)
from .stats import bootstrap_ci, holm, n_questions, question_units, sign_flip_pvalue


def country_scores(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Long table: method, granularity, country, score (x100), ci_low, ci_high, cells, n_questions.

    The CI resamples the country's evaluation questions (all persona cells of a question together).
    """
    df = eval_rows(with_scores(df))
    rows = []
    for (method, g, country), part in df.groupby(["method", "granularity", "country"], sort=True):
        units = question_units(part)
        est, lo, hi = bootstrap_ci(units, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "method": method,
                "granularity": int(g),
                "country": country,
                "score": 100 * est,
                "ci_low": 100 * lo,
                "ci_high": 100 * hi,
                "cells": int(units["n"].sum()),
                "n_questions": n_questions(units),
            }
        )
    cols = ["method", "granularity", "country", "score", "ci_low", "ci_high", "cells", "n_questions"]
    out = pd.DataFrame(rows, columns=cols)
    return _sort_methods(out)


def table1_wide(scores: pd.DataFrame, base: str = BASE_METHOD, countries=None) -> pd.DataFrame:
    """The paper's layout from a long table (method, granularity, country, score x100).

    One row per (granularity, method); one column per country; ``Avg`` = mean over the countries;
    ``diff`` = Avg minus the base model's Avg at the same G (NaN when the base is absent).
    """
    countries = list(countries) if countries is not None else list(dict.fromkeys(scores["country"]))
    wide = scores.pivot_table(index=["granularity", "method"], columns="country", values="score", aggfunc="first")
    wide = wide.reindex(columns=countries)
    wide["Avg"] = wide[countries].mean(axis=1)
    wide = add_differences(wide.reset_index(), base)
    wide.columns.name = None
    order = {m: i for i, m in enumerate(method_order(wide["method"]))}
    wide = wide.assign(_o=wide["method"].map(order)).sort_values(["granularity", "_o"]).drop(columns="_o")
    return wide.reset_index(drop=True)


def add_differences(wide: pd.DataFrame, base: str = BASE_METHOD, avg: str = "Avg") -> pd.DataFrame:
    """Add ``diff`` = each row's ``avg`` minus the base model's at the same granularity (the paper's
    bracketed figures, e.g. ACE-Align +4.30 at G=1). NaN where the base model is absent."""
    out = wide.copy()
    base_avg = out[out["method"] == base].set_index("granularity")[avg]
    out["diff"] = out[avg] - out["granularity"].map(base_avg)
    return out


def average_scores(df: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per method x G: the Table-1 average (mean over countries) with a CI from resampling whole
    evaluation questions (each with its cells in every country); ``n_questions`` of them."""
    df = eval_rows(with_scores(df))
    rows = []
    for (method, g), part in df.groupby(["method", "granularity"], sort=True):
        units = question_units(part)
        est, lo, hi = bootstrap_ci(units, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "method": method,
                "granularity": int(g),
                "avg": 100 * est,
                "ci_low": 100 * lo,
                "ci_high": 100 * hi,
                "countries": part["country"].nunique(),
                "n_questions": n_questions(units),
            }
        )
    cols = ["method", "granularity", "avg", "ci_low", "ci_high", "countries", "n_questions"]
    return _sort_methods(pd.DataFrame(rows, columns=cols))


def paired_tests(
    df: pd.DataFrame,
    primary: str = PRIMARY_METHOD,
    n_boot: int = 1000,
    n_perm: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """ACE-Align (``primary``) vs each other model method, per G, on the cells both have.

    ``diff`` = Avg(primary) - Avg(baseline) x100 over the paired cells; CI from resampling whole
    questions; ``p_value`` from a sign-flip permutation test with whole questions as the unit
    (:func:`~acealign.analyses.stats.sign_flip_pvalue`); ``p_holm`` the Holm-adjusted p-value over
    the family of every comparison in the table (baselines x G); ``n_questions`` independent
    questions and ``cells`` paired cells behind each row.
    """
    df = eval_rows(with_scores(df))
    cols = ["primary", "baseline", "granularity", "diff", "ci_low", "ci_high", "p_value", "p_holm",
            "n_questions", "cells"]
    if primary not in set(df["method"]):
        return pd.DataFrame(columns=cols)
    key = ["country", "question_key", "persona"]
    prim = df[df["method"] == primary][key + ["granularity", "score"]]
    rows = []
    for other in method_order(df["method"].unique()):
        if other == primary or other in REFERENCE_METHODS:
            continue
        paired = prim.merge(df[df["method"] == other][key + ["score"]], on=key, suffixes=("", "_b"))
        paired["d"] = paired["score"] - paired["score_b"]
        for g, part in paired.groupby("granularity", sort=True):
            units = question_units(part, "d")
            est, lo, hi = bootstrap_ci(units, n_boot=n_boot, seed=seed)
            p = sign_flip_pvalue(units, n_perm=n_perm, seed=seed)
            rows.append(
                {
                    "primary": primary,
                    "baseline": other,
                    "granularity": int(g),
                    "diff": 100 * est,
                    "ci_low": 100 * lo,
                    "ci_high": 100 * hi,
                    "p_value": p,
                    "p_holm": np.nan,
                    "n_questions": n_questions(units),
                    "cells": int(units["n"].sum()),
                }
            )
    out = pd.DataFrame(rows, columns=cols)
    out["p_holm"] = holm(out["p_value"].to_numpy(float))
    return out


def paper_table1(path) -> pd.DataFrame:
    """Read a Table-1 CSV in the paper's layout (G, method, one column per country, Avg) into the
    long form used here (method, granularity, country, score). The CSV's own Avg is dropped."""
    raw = pd.read_csv(path)
    countries = [c for c in raw.columns if c not in ("G", "method", "Avg")]
    long = raw.melt(id_vars=["G", "method"], value_vars=countries, var_name="country", value_name="score")
    return long.rename(columns={"G": "granularity"})[["method", "granularity", "country", "score"]]


def labelled(table: pd.DataFrame, column: str = "method") -> pd.DataFrame:
    """Replace method ids by their display names (for reports)."""
    out = table.copy()
    if column in out.columns:
        out[column] = out[column].map(method_label)
    return out


def _sort_methods(table: pd.DataFrame) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(method_order(table["method"]))}
    keys = [c for c in ("granularity", "country") if c in table.columns]
    out = table.assign(_o=table["method"].map(order)).sort_values(["_o", *keys]).drop(columns="_o")
    return out.reset_index(drop=True)
