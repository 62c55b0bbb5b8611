"""Per-attribute-value alignment change base -> method (paper App. B, bubble charts) and per-topic
alignment per country (paper App. C, radar charts), on the evaluation cells.
"""

from __future__ import annotations

import pandas as pd

from ..survey import ATTRIBUTE_VALUES, ATTRIBUTES
from .common import BASE_METHOD, REFERENCE_METHODS, eval_rows, method_order, with_scores

CHANGE_COLUMNS = ["method", "granularity", "country", "attribute", "value", "base", "score", "change", "cells"]


def attribute_value_changes(df: pd.DataFrame, base: str = BASE_METHOD) -> pd.DataFrame:
    """Per method x G x country x attribute value (e.g. gender=Female): mean score x100 of the
    cells whose persona has that value, for the base and the method on the same cells, and the
    change (method - base). A G=2 persona counts for both of its attribute values."""
    df = eval_rows(with_scores(df))
    if base not in set(df["method"]):
        return pd.DataFrame(columns=CHANGE_COLUMNS)
    key = ["country", "question_key", "persona"]
    b = df[df["method"] == base][key + ["score"]].rename(columns={"score": "base"})
    rows = []
    for method in method_order(df["method"].unique()):
        if method == base or method in REFERENCE_METHODS:
            continue
        m = df[df["method"] == method].merge(b, on=key)
        for attr in ATTRIBUTES:
            for value in ATTRIBUTE_VALUES[attr]:
                part = m[m[attr] == value]
                for (g, country), cell in part.groupby(["granularity", "country"], sort=True):
                    rows.append(
                        {
                            "method": method,
                            "granularity": int(g),
                            "country": country,
                            "attribute": attr,
                            "value": value,
                            "base": 100 * cell["base"].mean(),
                            "score": 100 * cell["score"].mean(),
                            "change": 100 * (cell["score"] - cell["base"]).mean(),
                            "cells": len(cell),
                        }
                    )
    return pd.DataFrame(rows, columns=CHANGE_COLUMNS)


def topic_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Per method x G x country x topic: mean cell score x100 and the number of cells."""
    df = eval_rows(with_scores(df))
    out = (
        df.groupby(["method", "granularity", "country", "topic"], sort=True)["score"]
        .agg(["mean", "size"])
        .reset_index()
        .rename(columns={"mean": "score", "size": "cells"})
    )
    out["score"] *= 100
    order = {m: i for i, m in enumerate(method_order(out["method"]))}
    out = out.assign(_o=out["method"].map(order)).sort_values(["_o", "granularity", "country", "topic"])
    return out.drop(columns="_o").reset_index(drop=True)
