"""Compositional generalization (paper section 4.2, Fig. 4): scores on the held-out G=4 persona
combinations (never trained on, on any question), per topic, base model vs each method.

Rows are the predictions flagged ``heldout_persona``. ``questions`` tells whether a row's
questions were training questions for the other personas ("train": only the combination is new)
or evaluation questions ("eval": combination and question both new).
"""

from __future__ import annotations

import pandas as pd

from ..survey import Persona
from .common import method_order, with_scores

COLUMNS = ["method", "combo", "questions", "topic", "score", "countries", "cells"]


def heldout_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Per method x held-out combination x question side x topic: score x100 = mean over countries
    of the country's mean cell score; ``countries`` and ``cells`` counted."""
    if "heldout_persona" not in df.columns or not df["heldout_persona"].astype(bool).any():
        return pd.DataFrame(columns=COLUMNS)
    h = with_scores(df[df["heldout_persona"].astype(bool)])
    h = h.assign(
        combo=h["persona"].map(lambda k: Persona.from_key(k).combo),
        questions=h["eval_question"].map(lambda e: "eval" if e else "train"),
    )
    per_country = (
        h.groupby(["method", "combo", "questions", "topic", "country"])["score"]
        .agg(["mean", "size"])
        .reset_index()
    )
    out = (
        per_country.groupby(["method", "combo", "questions", "topic"])
        .agg(score=("mean", "mean"), countries=("country", "nunique"), cells=("size", "sum"))
        .reset_index()
    )
    out["score"] *= 100
    order = {m: i for i, m in enumerate(method_order(out["method"]))}
    out = out.assign(_o=out["method"].map(order)).sort_values(["combo", "questions", "topic", "_o"])
    return out.drop(columns="_o")[COLUMNS].reset_index(drop=True)


def heldout_summary(table: pd.DataFrame, base: str = "base") -> pd.DataFrame:
    """Per method x combination x question side: mean over topics, and the change from the base."""
    if table.empty:
        return pd.DataFrame(columns=["method", "combo", "questions", "score", "diff"])
    s = table.groupby(["method", "combo", "questions"], sort=False)["score"].mean().reset_index()
    b = s[s["method"] == base].set_index(["combo", "questions"])["score"]
    s["diff"] = [r.score - b.get((r.combo, r.questions), float("nan")) for r in s.itertuples()]
    return s
