"""Shared pieces of the analyses: the predictions table, per-cell scores, method names, tiers, pairs.

Every analysis is a function of one *predictions table* (a pandas DataFrame, one row per method x
persona x question; the columns are :data:`PREDICTION_COLUMNS`), concatenated over methods. Scores
are kept in [0, 1] internally and shown x100 in tables, like the paper.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from ..survey import ATTRIBUTE_VALUES, ATTRIBUTES, DataError

PREDICTION_COLUMNS = [
    "method",
    "country",
    "question_key",
    "dataset",
    "topic",
    "question_id",
    "persona",
    "granularity",
    *ATTRIBUTES,
    "n",
    "survey_counts",
    "pred",
]

# Optional columns written by :func:`acealign.evaluate.evaluate`: whether the question is on the
# evaluation side of the split, whether the persona is a held-out G=4 combination, and whether the
# question was trained on in the cell's country (in-sample cells; tables before it lack the column).
FLAG_COLUMNS = ["eval_question", "heldout_persona", "train_question"]

BASE_METHOD = "base"
PRIMARY_METHOD = "ace"
REFERENCE_METHODS = ("country-marginal", "noise-ceiling")
# Rows of the effect-fidelity table that are references of the CDF distance, not methods.
PAIR_REFERENCES = ("no-effect", "noise-floor")

# Display names (the paper's where it has one); unknown method ids are shown as they are.
METHOD_LABELS = {
    "base": "Base model",
    "anthropological": "AdPrompt",
    "anchor": "Anchor-only",
    "causal": "Causal-only",
    "ace": "ACE-Align",
    "ace-joint": "ACE-Align (joint, Eq. 14)",
    "distribution": "Distribution",
    "ace+distribution": "ACE+distribution",
    # Persona-blind, but it predicts each evaluation question from that question's own answers:
    # an oracle, not a baseline a model could match without seeing the evaluation data.
    "country-marginal": "Country marginal (oracle)",
    "noise-ceiling": "Noise ceiling (reference)",
    "no-effect": "No effect (reference)",
    "noise-floor": "Noise floor (reference)",
}
_ORDER = ["base", "anthropological", "anchor", "causal", "ace", "ace-joint", "distribution", "ace+distribution"]
# A training seed's run of a method (``ace-s0``, ``ace-s1``, ...; names from ``acealign run``).
SEED_NAME = re.compile(r"^(?P<method>.+)-s(?P<seed>\d+)$")


def method_label(method: str) -> str:
    """Display name of a method id; a seed run ``ace-s1`` is shown as "ACE-Align (seed 1)"."""
    if method in METHOD_LABELS:
        return METHOD_LABELS[method]
    hit = SEED_NAME.match(method)
    if hit and hit["method"] in METHOD_LABELS:
        return f"{METHOD_LABELS[hit['method']]} (seed {int(hit['seed'])})"
    return method


def method_order(methods) -> list[str]:
    """Base model first, then the paper's order, then other methods by name, references last.
    A seed run (``ace-s1``) sorts with its method, seeds in numeric order."""
    methods = list(dict.fromkeys(methods))

    def rank(m):
        if m in PAIR_REFERENCES:
            return (3, PAIR_REFERENCES.index(m), m, -1)
        if m in REFERENCE_METHODS:
            return (2, REFERENCE_METHODS.index(m), m, -1)
        hit = SEED_NAME.match(m)
        name, seed = (hit["method"], int(hit["seed"])) if hit else (m, -1)
        if name in _ORDER:
            return (0, _ORDER.index(name), name, seed)
        return (1, 0, name, seed)

    return sorted(methods, key=rank)


def model_methods(df: pd.DataFrame) -> list[str]:
    """Methods in the table that are models (not the reference rows)."""
    return [m for m in method_order(df["method"].unique()) if m not in REFERENCE_METHODS]


def validate_predictions(df: pd.DataFrame, source: object = "predictions") -> None:
    """Raise :class:`DataError` naming ``source`` when a column is missing or a row is malformed."""
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"predictions table lacks column(s) {', '.join(missing)}", source)
    for i, (pred, counts) in enumerate(zip(df["pred"], df["survey_counts"], strict=True)):
        if len(pred) != len(counts):
            raise DataError(
                f"row {i}: pred has {len(pred)} values but survey_counts has {len(counts)}", source
            )
    dup = df.duplicated(["method", "persona", "question_key"])
    if dup.any():
        row = df[dup].iloc[0]
        raise DataError(
            f"duplicate row for method {row['method']}, persona {row['persona']}, "
            f"question {row['question_key']}",
            source,
        )


def with_scores(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``score`` (alignment score of the cell, the summand of Eq. 15, in [0, 1]) and
    ``modal_hit`` (the predicted mode is a survey mode, Tan et al. 2026).

    A ``score`` already present (the noise-ceiling reference stores its bootstrap expectation) is
    kept where it is not NaN; every other row is scored from ``pred`` and ``survey_counts``.
    """
    if "score" in df.columns and "modal_hit" in df.columns and all(c in df.columns for c in FLAG_COLUMNS):
        if not pd.to_numeric(df["score"], errors="coerce").isna().any():
            return df  # already scored (analyses call this on their input; it is cheap to repeat)
    out = df.copy()
    preds = [np.asarray(p, float) for p in out["pred"]]
    counts = [np.asarray(c, float) for c in out["survey_counts"]]
    computed = metrics.alignment_scores(preds, counts) if len(out) else np.zeros(0)
    if "score" in out.columns:
        given = pd.to_numeric(out["score"], errors="coerce").to_numpy(float)
        out["score"] = np.where(np.isnan(given), computed, given)
    else:
        out["score"] = computed
    hits = np.zeros(len(out), dtype=bool)
    for n_opt in sorted({len(c) for c in counts}):
        idx = np.asarray([i for i, c in enumerate(counts) if len(c) == n_opt])
        hits[idx] = metrics.modal_match_batch(np.stack([preds[i] for i in idx]), np.stack([counts[i] for i in idx]))
    out["modal_hit"] = hits
    return with_flags(out)


def with_flags(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every :data:`FLAG_COLUMNS` column present and boolean. A missing flag (a table
    not written by ``evaluate``, or one written before the flag existed, also as NaN rows after
    concatenation with newer tables) means an evaluation cell and neither of the other flags."""
    todo = [c for c in FLAG_COLUMNS if c not in df.columns or df[c].isna().any()]
    if not todo:
        return df
    out = df.copy()
    for col in todo:
        default = col == "eval_question"
        if col in out.columns:
            vals = out[col].to_numpy(object)
            out[col] = np.where(pd.isna(vals), default, vals).astype(bool)
        else:
            out[col] = default
    return out


def eval_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows Table 1 and the per-question analyses use: cells on evaluation questions.

    A split that holds out only persona combinations (``kind="persona"``) has no unseen question;
    then the held-out persona rows are the evaluation cells. :func:`eval_subset` names the choice.
    """
    return df[eval_mask(df)]


def eval_mask(df: pd.DataFrame) -> np.ndarray:
    if "eval_question" not in df.columns:
        return np.ones(len(df), dtype=bool)
    m = df["eval_question"].astype(bool).to_numpy()
    if not m.any() and "heldout_persona" in df.columns:
        return df["heldout_persona"].astype(bool).to_numpy()
    return m


def eval_subset(df: pd.DataFrame) -> str:
    """Which rows :func:`eval_rows` uses, in words (for reports)."""
    if "eval_question" not in df.columns:
        return "all rows (the table has no split flags)"
    if df["eval_question"].astype(bool).any():
        return "cells on the split's evaluation questions (all personas G=1..4)"
    return "held-out G=4 persona combinations (the split holds out no question)"


# -- tiers --------------------------------------------------------------------------------------------

DEFAULT_TIERS_PATH = Path(__file__).resolve().parents[1] / "config" / "tiers.toml"


@dataclass
class Tiers:
    """Resource tiers: tier id -> (label, ISO3 codes), plus aliases from data country names."""

    labels: dict[int, str]
    members: dict[int, list[str]]
    aliases: dict[str, str] = field(default_factory=dict)

    def code(self, country: str) -> str:
        """ISO3 code of a country given by code or by the data's name (``united_states`` -> USA)."""
        key = str(country).strip()
        if key.upper() in self._codes():
            return key.upper()
        return self.aliases.get(key.lower().replace(" ", "_"), key)

    def tier(self, country: str) -> int | None:
        code = self.code(country)
        for t, codes in self.members.items():
            if code in codes:
                return t
        return None

    def _codes(self) -> set[str]:
        return {c for codes in self.members.values() for c in codes}


def load_tiers(path=None) -> Tiers:
    """Read a tier mapping (default: ``acealign/config/tiers.toml``)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    path = Path(path) if path is not None else DEFAULT_TIERS_PATH
    if not path.exists():
        raise DataError("file not found", path)
    try:
        with open(path, "rb") as f:
            obj = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise DataError(f"invalid TOML ({e})", path) from None
    labels, members = {}, {}
    seen: dict[str, int] = {}
    for entry in obj.get("tier", []):
        if not isinstance(entry, dict) or "id" not in entry or "countries" not in entry:
            raise DataError("each [[tier]] needs 'id' and 'countries'", path)
        t = int(entry["id"])
        labels[t] = str(entry.get("label", f"Tier {t}"))
        members[t] = [str(c).upper() for c in entry["countries"]]
        for c in members[t]:
            if c in seen:
                raise DataError(f"country {c} is in tier {seen[c]} and tier {t}", path)
            seen[c] = t
    if not members:
        raise DataError("no [[tier]] entries", path)
    aliases = {str(k).lower(): str(v).upper() for k, v in obj.get("aliases", {}).items()}
    return Tiers(labels, members, aliases)


# -- counterfactual pairs inside a predictions table -------------------------------------------------


def prediction_pairs(df: pd.DataFrame, extra=()) -> pd.DataFrame:
    """Counterfactual pairs formed by the G=4 rows of a predictions table.

    For each method, country, question and treatment attribute A, the rows s1 = (A=1, X) and
    s0 = (A=0, X) with the same other attributes X. Only pairs whose two ends are both in the
    table (so both passed the support filter) are kept. Columns: method, country, question_key,
    topic, attribute, context, pred1, pred0, counts1, counts0, and ``<col>1``, ``<col>0`` per
    column of ``extra`` (per-end values, e.g. the split flags).
    """
    g4 = df[df["granularity"] == 4]
    cols = ["method", "country", "question_key", "topic"]
    out = []
    for attr in ATTRIBUTES:
        others = [a for a in ATTRIBUTES if a != attr]
        ctx = g4[others[0]].astype(str)
        for a in others[1:]:
            ctx = ctx + "," + g4[a].astype(str)
        a0, a1 = ATTRIBUTE_VALUES[attr]
        base = g4[cols + ["pred", "survey_counts", *extra]].assign(context=ctx.to_numpy())
        ends1 = base[g4[attr].to_numpy() == a1]
        ends0 = base[g4[attr].to_numpy() == a0]
        m = ends1.merge(ends0, on=cols + ["context"], suffixes=("1", "0"))
        if len(m):
            out.append(
                m.rename(columns={"survey_counts1": "counts1", "survey_counts0": "counts0"}).assign(
                    attribute=attr
                )
            )
    if not out:
        ends = [f"{c}{e}" for c in extra for e in "10"]
        return pd.DataFrame(columns=cols + ["attribute", "context", "pred1", "pred0", "counts1", "counts0", *ends])
    return pd.concat(out, ignore_index=True)


def effect(p1, p0) -> np.ndarray:
    """Option-wise effect p1 - p0 of two distributions (Eq. 6 for the model, Eq. 8 for counts)."""
    return np.asarray(p1, float) - np.asarray(p0, float)


def pair_measures(pairs: pd.DataFrame) -> pd.DataFrame:
    """Add per-pair measures to :func:`prediction_pairs` output, batched by option count:
    ``d_cdf`` (Eq. 11 between the model effect, Eq. 6, and the data effect, Eq. 8), ``dm`` and
    ``dd`` (signed expected-position shifts of model and data, the taxonomy's Δm and Δd)."""
    out = pairs.copy()
    n = len(out)
    d_cdf, dm, dd = np.zeros(n), np.zeros(n), np.zeros(n)
    lengths = np.asarray([len(c) for c in out["counts1"]], dtype=int)
    for k in np.unique(lengths):
        idx = np.flatnonzero(lengths == k)
        p1 = np.stack([np.asarray(out["pred1"].iat[i], float) for i in idx])
        p0 = np.stack([np.asarray(out["pred0"].iat[i], float) for i in idx])
        c1 = np.stack([np.asarray(out["counts1"].iat[i], float) for i in idx])
        c0 = np.stack([np.asarray(out["counts0"].iat[i], float) for i in idx])
        q1, q0 = c1 / c1.sum(1, keepdims=True), c0 / c0.sum(1, keepdims=True)
        m1, m0 = p1 / p1.sum(1, keepdims=True), p0 / p0.sum(1, keepdims=True)
        d_cdf[idx] = metrics.cdf_distance_batch(m1 - m0, q1 - q0)
        dm[idx] = metrics.expected_position_shift_batch(m1, m0)
        dd[idx] = metrics.expected_position_shift_batch(q1, q0)
    out["d_cdf"], out["dm"], out["dd"] = d_cdf, dm, dd
    return out


def unique_pair_counts(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per survey pair (country, question, attribute, context), whatever the method."""
    keys = ["country", "question_key", "topic", "attribute", "context"]
    return pairs.drop_duplicates(keys)[keys + ["counts1", "counts0"]].reset_index(drop=True)


def measured_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`prediction_pairs` of the evaluation rows with :func:`pair_measures` added."""
    pairs = prediction_pairs(eval_rows(df))
    return pairs if pairs.empty else pair_measures(pairs)
