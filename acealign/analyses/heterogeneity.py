"""Heterogeneity of attribute influence (paper section 4.2, Fig. 5): how strongly each attribute
shifts the answers of each topic in each country, from survey counts only (no model).

For a country, question q and treatment attribute A, the data-side CDF effects (Eq. 8-10) of all
its G=4 counterfactual pairs (both ends with at least min_n respondents) are averaged over the
contexts X into the conditional average effect of A on q; its magnitude is
mean_k |avg ΔCDF_data(k)|, i.e. Eq. 11 between that effect and no effect. A topic's magnitude is
the mean over its questions. Averaging the signed effects over contexts before taking the
magnitude keeps the sampling noise of small G=4 cells from inflating it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics
from ..personas import DEFAULT_MIN_N, eligible_cells
from ..survey import ATTRIBUTES, SurveyData
from .common import prediction_pairs

COLUMNS = ["country", "topic", "attribute", "magnitude", "questions", "pairs"]


def heterogeneity(df: pd.DataFrame) -> pd.DataFrame:
    """Per country x topic x attribute: effect magnitude, from the survey counts of a predictions
    table's G=4 rows (any one method's copy; they are the same counts for every method)."""
    g4 = df[df["granularity"] == 4]
    if g4.empty:
        return pd.DataFrame(columns=COLUMNS)
    cells = g4.drop_duplicates(["country", "question_key", "persona"]).assign(method="survey")
    pairs = prediction_pairs(cells)
    if pairs.empty:
        return pd.DataFrame(columns=COLUMNS)
    per_q = []
    for (country, _qkey, topic, attr), part in pairs.groupby(
        ["country", "question_key", "topic", "attribute"], sort=True
    ):
        c1 = np.stack([np.asarray(c, float) for c in part["counts1"]])
        c0 = np.stack([np.asarray(c, float) for c in part["counts0"]])
        avg_effect = (c1 / c1.sum(1, keepdims=True) - c0 / c0.sum(1, keepdims=True)).mean(0)
        magnitude = metrics.cdf_distance(np.zeros_like(avg_effect), avg_effect)
        per_q.append((country, topic, attr, magnitude, len(part)))
    q = pd.DataFrame(per_q, columns=["country", "topic", "attribute", "magnitude", "pairs"])
    out = (
        q.groupby(["country", "topic", "attribute"], sort=True)
        .agg(magnitude=("magnitude", "mean"), questions=("magnitude", "size"), pairs=("pairs", "sum"))
        .reset_index()
    )
    out["_a"] = out["attribute"].map(ATTRIBUTES.index)
    return out.sort_values(["country", "topic", "_a"]).drop(columns="_a")[COLUMNS].reset_index(drop=True)


def dominant_attributes(table: pd.DataFrame) -> pd.DataFrame:
    """Per country x topic: the attribute with the largest magnitude (the paper's reading of Fig. 5)."""
    if table.empty:
        return pd.DataFrame(columns=["country", "topic", "attribute", "magnitude"])
    idx = table.groupby(["country", "topic"])["magnitude"].idxmax()
    return table.loc[idx, ["country", "topic", "attribute", "magnitude"]].reset_index(drop=True)


def survey_frame(data: SurveyData, countries=None, question_keys=None, min_n: int = DEFAULT_MIN_N) -> pd.DataFrame:
    """The G=4 eligible cells of a survey as a predictions-shaped table (``pred`` = the survey
    distribution), for :func:`heterogeneity` straight from survey data."""
    sel = eligible_cells(data, (4,), min_n, countries=countries, question_keys=question_keys)
    rows = []
    for cell in sel.cells:
        q = data.questions[cell.question_key]
        p = cell.persona
        rows.append(
            {
                "method": "survey",
                "country": p.country,
                "question_key": cell.question_key,
                "dataset": q.dataset,
                "topic": q.topic,
                "question_id": q.question_id,
                "persona": p.key,
                "granularity": p.granularity,
                **{a: getattr(p, a) for a in ATTRIBUTES},
                "n": cell.n,
                "survey_counts": [int(x) for x in cell.counts],
                "pred": list(cell.counts / cell.counts.sum()),
            }
        )
    return pd.DataFrame(rows)
