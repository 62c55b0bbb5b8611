"""Persona-effect fidelity (beside Table 1): does a method reproduce how toggling one attribute
shifts the answers? Mean CDF distance of the counterfactual pairs on the evaluation questions
(Eq. 11-12; model effect from the predictions of the two G=4 ends, data effect from the survey
counts) and the share of flipped attribute-topic effects, with two references computed from the
survey counts alone: a model that predicts no effect at all (identical distributions for both ends)
and the sampling-noise floor (the distance a model reproducing the true effects exactly would
still show against finite cells, by parametric bootstrap). Every row's mean distance carries a
question-clustered bootstrap CI; the report shows distances x1000 (:func:`per_mille`).

The effect-fidelity ladder (:func:`fidelity_ladder`) measures the same on three sets of pairs, each
with its own references: ``in_sample`` (training questions, trained personas: can the objective fit
the effects at all?), ``new_combinations`` (training questions, an end is a held-out G=4
combination: compositional generalization) and ``new_questions`` (evaluation questions: transfer).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from .. import metrics
from .common import (
    FLAG_COLUMNS,
    PAIR_REFERENCES,
    PRIMARY_METHOD,
    measured_pairs,
    method_order,
    pair_measures,
    prediction_pairs,
    unique_pair_counts,
    with_flags,
)
from .seeds import collapse_seeds, mean_over_seeds
from .stats import bootstrap_ci, n_questions, question_units, sign_flip_pvalue
from .taxonomy import DEFAULT_TAU, attribute_effects

NO_EFFECT = "no-effect"
NOISE_FLOOR = "noise-floor"
RUN_COLUMNS = ["method", "country", "pairs", "cdf_distance", "flipped_share", "effects"]
COLUMNS = ["method", "country", "pairs", "n_questions", "cdf_distance", "ci_low", "ci_high",
           "flipped_share", "effects"]
PAIR_KEYS = ["country", "question_key", "attribute", "context"]
IN_SAMPLE, NEW_COMBINATIONS, NEW_QUESTIONS = "in_sample", "new_combinations", "new_questions"
LEVELS = (IN_SAMPLE, NEW_COMBINATIONS, NEW_QUESTIONS)
LEVEL_LABELS = {IN_SAMPLE: "in-sample", NEW_COMBINATIONS: "new persona combinations",
                NEW_QUESTIONS: "new questions"}
LADDER_COLUMNS = ["method", "level", "n_pairs", "n_questions", "d_cdf_x1000", "ci_low_x1000",
                  "ci_high_x1000", "flipped_share", "no_effect_x1000", "noise_floor_x1000"]
TEST_COLUMNS = ["level", "primary", "baseline", "diff_x1000", "ci_low_x1000", "ci_high_x1000",
                "p_value", "n_questions", "pairs"]
# The ladder's comparison: the paper's method against its anchor-only ablation.
ANCHOR_METHOD = "anchor"


def effect_fidelity(
    df: pd.DataFrame,
    tau: float = DEFAULT_TAU,
    n_boot: int = 200,
    seed: int = 0,
    pairs=None,
    refs=None,
    n_ci: int = 1000,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Per method x country (and ``country="Avg"``, the mean over countries):

    ``pairs`` counterfactual pairs whose two G=4 ends are both predicted; ``cdf_distance`` their
    mean d_CDF (Eq. 11 per pair, averaged as Eq. 12; lower is better) with a (1 - alpha) CI
    (``ci_low``, ``ci_high``; ``n_ci`` resamples of whole questions, :func:`fidelity_cis`) over
    ``n_questions`` independent questions; ``flipped_share`` the share of attribute-topic effects
    that the method flips (:mod:`acealign.analyses.taxonomy`, tolerance ``tau``); ``effects`` the
    number of attribute-topic effects. Two extra method rows, ``no-effect`` and ``noise-floor``,
    give the references of the distance (``n_boot`` resamples for the floor, :func:`pair_references`).

    Seed runs (``ace-s0``, ...) are measured one by one and collapsed to their method: mean over
    seeds plus ``cdf_distance_sd``, ``flipped_share_sd`` and ``seeds``
    (:func:`~acealign.analyses.seeds.collapse_seeds`). ``pairs``: :func:`measured_pairs` of ``df``
    and ``refs``: :func:`pair_references` of its pairs, if already computed.
    """
    pairs = measured_pairs(df) if pairs is None else pairs
    if pairs.empty:
        return pd.DataFrame(columns=COLUMNS)
    if refs is None:
        refs = pair_references(unique_pair_counts(pairs), n_boot=n_boot, seed=seed)
    runs = run_fidelity(pairs, refs, tau)
    table = collapse_seeds(runs, ["country"], ["cdf_distance", "flipped_share"])
    cis = fidelity_cis(pairs, refs, n_boot=n_ci, seed=seed, alpha=alpha)
    table = table.merge(cis, on=["method", "country"], how="left")
    front = [c for c in COLUMNS if c in table.columns]
    return table[front + [c for c in table.columns if c not in front]]


def run_fidelity(pairs: pd.DataFrame, refs: pd.DataFrame, tau: float = DEFAULT_TAU) -> pd.DataFrame:
    """The point estimates of :func:`effect_fidelity` per method as named in ``pairs`` (each seed
    run on its own predictions): columns :data:`RUN_COLUMNS`, reference rows from ``refs``."""
    effects = attribute_effects(pairs, tau=tau)
    rows = []
    for (method, country), part in pairs.groupby(["method", "country"], sort=True):
        eff = effects[(effects["method"] == method) & (effects["country"] == country)]
        rows.append(
            {
                "method": method,
                "country": country,
                "pairs": len(part),
                "cdf_distance": float(part["d_cdf"].mean()),
                "flipped_share": float((eff["category"] == "flipped").mean()) if len(eff) else np.nan,
                "effects": len(eff),
            }
        )
    for country, part in refs.groupby("country", sort=True):
        for name, col in ((NO_EFFECT, "no_effect"), (NOISE_FLOOR, "noise_floor")):
            rows.append(
                {
                    "method": name,
                    "country": country,
                    "pairs": len(part),
                    "cdf_distance": float(part[col].mean()),
                    "flipped_share": np.nan,
                    "effects": 0,
                }
            )
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    avg = (
        table.groupby("method", sort=False)
        .agg(pairs=("pairs", "sum"), cdf_distance=("cdf_distance", "mean"),
             flipped_share=("flipped_share", "mean"), effects=("effects", "sum"))
        .reset_index()
        .assign(country="Avg")
    )
    table = pd.concat([table, avg[RUN_COLUMNS]], ignore_index=True)
    order = {m: i for i, m in enumerate(method_order(table["method"].unique()))}
    table["_o"] = table["method"].map(order)
    table["_c"] = table["country"] == "Avg"
    return table.sort_values(["_o", "_c", "country"]).drop(columns=["_o", "_c"]).reset_index(drop=True)


def fidelity_cis(
    pairs: pd.DataFrame, refs: pd.DataFrame, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> pd.DataFrame:
    """Question-clustered bootstrap CIs of the mean d_CDF per method x country and ``Avg``.

    A country's CI resamples its questions; the Avg CI resamples whole questions with their pairs
    in every country (:func:`~acealign.analyses.stats.bootstrap_ci`). A seeded method's pairs
    carry the mean over its seeds of each seed's d_CDF (never the d_CDF of averaged predictions).
    Columns: method, country, n_questions, ci_low, ci_high (raw distances; NaN when n_boot is 0).
    """
    per_pair = mean_over_seeds(pairs, PAIR_KEYS, ["d_cdf"], drop=("pred1", "pred0"))
    values = [per_pair[["method", *PAIR_KEYS, "d_cdf"]]]
    for name, col in ((NO_EFFECT, "no_effect"), (NOISE_FLOOR, "noise_floor")):
        values.append(refs[PAIR_KEYS].assign(method=name, d_cdf=refs[col].to_numpy()))
    values = pd.concat(values, ignore_index=True)
    rows = []
    for method, part in values.groupby("method", sort=False):
        groups = [(c, g) for c, g in part.groupby("country", sort=True)] + [("Avg", part)]
        for country, sub in groups:
            units = question_units(sub, "d_cdf")
            _, lo, hi = bootstrap_ci(units, n_boot=n_boot, seed=seed, alpha=alpha)
            rows.append({"method": method, "country": country, "n_questions": n_questions(units),
                         "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=["method", "country", "n_questions", "ci_low", "ci_high"])


def per_mille(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`effect_fidelity` for display: the distance and its CI (and spread over seeds) x1000
    as ``d_cdf_x1000``, ``ci_low_x1000``, ``ci_high_x1000`` (``d_cdf_x1000_sd``), so that the
    room between the noise floor and the no-effect reference (e.g. 41 vs 49) is visible."""
    names = {"cdf_distance": "d_cdf_x1000", "cdf_distance_sd": "d_cdf_x1000_sd",
             "ci_low": "ci_low_x1000", "ci_high": "ci_high_x1000"}
    out = table.copy()
    for col in names:
        if col in out.columns:
            out[col] = 1000 * pd.to_numeric(out[col], errors="coerce")
    return out.rename(columns=names)


def pair_references(pairs: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per survey pair: ``no_effect`` (d_CDF of a zero model effect) and ``noise_floor`` (bootstrap
    expectation of d_CDF for a model that predicts the true effect), via :mod:`acealign.metrics`.
    The random stream is seeded per country (crc32 of its name) so a country's floor does not
    depend on the other countries in the table."""
    out = pairs[["country", "question_key", "attribute", "context"]].copy()
    no_eff, floor = np.zeros(len(out)), np.zeros(len(out))
    lengths = np.asarray([len(c) for c in pairs["counts1"]], dtype=int)
    countries = pairs["country"].to_numpy()
    for country in np.unique(countries):
        rng = np.random.default_rng([int(seed), zlib.crc32(str(country).encode())])
        for k in np.unique(lengths[countries == country]):
            idx = np.flatnonzero((lengths == k) & (countries == country))
            c1 = np.stack([np.asarray(pairs["counts1"].iat[i], dtype=np.int64) for i in idx])
            c0 = np.stack([np.asarray(pairs["counts0"].iat[i], dtype=np.int64) for i in idx])
            no_eff[idx] = metrics.no_effect_cdf_distance_batch(c1, c0)
            floor[idx] = metrics.bootstrap_effect_floor_batch(c1, c0, n_boot, rng)
    out["no_effect"], out["noise_floor"] = no_eff, floor
    return out


# -- the effect-fidelity ladder --------------------------------------------------------------------


def pair_level(eval_question: bool, heldout1: bool, heldout0: bool, train1: bool, train0: bool) -> str | None:
    """The ladder level of one counterfactual pair from the split flags of its two ends.

    ``new_questions`` when the question is an evaluation question; otherwise the pair must lie on a
    training question (both ends ``train_question``), and is ``new_combinations`` when an end is a
    held-out G=4 combination, else ``in_sample``. None: no level (e.g. a validation question).
    """
    if eval_question:
        return NEW_QUESTIONS
    if not (train1 and train0):
        return None
    return NEW_COMBINATIONS if heldout1 or heldout0 else IN_SAMPLE


def pair_levels(pairs: pd.DataFrame) -> np.ndarray:
    """:func:`pair_level` of every row of :func:`prediction_pairs` output carrying the flags of
    both ends (``eval_question1``, ``heldout_persona0``, ...)."""
    cols = [pairs[f"{c}{e}"].astype(bool) for c in ("heldout_persona", "train_question") for e in "10"]
    evq = pairs["eval_question1"].astype(bool) | pairs["eval_question0"].astype(bool)
    return np.array([pair_level(*flags) for flags in zip(evq, *cols, strict=True)], dtype=object)


def ladder_pairs(df: pd.DataFrame, trained: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """Counterfactual pairs of every row of ``df`` (not only the evaluation rows) with their
    ``level`` (:func:`pair_levels`) and per-pair measures (:func:`pair_measures`, Eq. 11); pairs
    of no level are left out. A table without ``train_question`` has no in-sample pairs.

    ``trained``: method -> the pairs its adapter was trained on (columns :data:`PAIR_KEYS`, a
    training run's ``pairs.csv``). When given, the in-sample level keeps only those pairs — a
    method's own, and for a method without training pairs (the base model, a prompt) the union of
    all — so that it measures the training pairs themselves and not the other pairs of the
    training questions (a run that subsamples pairs trains on a part of them)."""
    pairs = prediction_pairs(with_flags(df), extra=FLAG_COLUMNS)
    if len(pairs):
        pairs = pairs.assign(level=pair_levels(pairs))
        if trained:
            keep = _trained_mask(pairs, trained)
            pairs.loc[(pairs["level"] == IN_SAMPLE) & ~keep, "level"] = None
        pairs = pairs[pairs["level"].notna()].reset_index(drop=True)
    if pairs.empty:
        return pairs.assign(level=[], d_cdf=[], dm=[], dd=[])
    return pair_measures(pairs)


def _trained_mask(pairs: pd.DataFrame, trained: dict[str, pd.DataFrame]) -> np.ndarray:
    """Whether each row of ``pairs`` is one of its method's training pairs (see :func:`ladder_pairs`)."""
    def index(frame):
        return pd.MultiIndex.from_frame(frame[PAIR_KEYS].astype(str))

    keys = index(pairs)
    union = index(pd.concat(list(trained.values()), ignore_index=True))
    out = np.zeros(len(pairs), dtype=bool)
    for method, rows in pairs.groupby("method").indices.items():
        own = index(trained[method]) if method in trained else union
        out[rows] = keys[rows].isin(own)
    return out


def fidelity_ladder(
    runs: pd.DataFrame,
    tau: float = DEFAULT_TAU,
    n_boot: int = 200,
    n_ci: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    pairs=None,
) -> pd.DataFrame:
    """Effect fidelity (Eq. 11-12) at three levels: one row per method x level (:data:`LEVELS`)
    with ``n_pairs``, ``n_questions``, mean d_CDF x1000 (Avg over countries) with its
    question-clustered (1 - alpha) CI, ``flipped_share``, and the level's own references x1000:
    ``no_effect_x1000`` and ``noise_floor_x1000`` (:func:`pair_references` of that level's pairs,
    ``n_boot`` resamples). Levels without pairs are absent. ``runs``: predictions, seed runs as
    their own methods (collapsed as in :func:`effect_fidelity`); ``pairs``: its
    :func:`ladder_pairs`, if already computed.
    """
    pairs = ladder_pairs(runs) if pairs is None else pairs
    tables = [_level_rows(pairs[pairs["level"] == lv], lv, tau, n_boot, n_ci, seed, alpha)
              for lv in LEVELS if (pairs["level"] == lv).any()]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=LADDER_COLUMNS)


def _level_rows(pairs, level, tau, n_boot, n_ci, seed, alpha) -> pd.DataFrame:
    """The Avg rows of :func:`effect_fidelity` on one level's pairs, references as columns."""
    refs = pair_references(unique_pair_counts(pairs), n_boot=n_boot, seed=seed)
    fid = per_mille(effect_fidelity(pairs, tau, pairs=pairs, refs=refs, n_ci=n_ci, seed=seed, alpha=alpha))
    avg = fid[fid["country"] == "Avg"]
    ref = avg.set_index("method")["d_cdf_x1000"]
    out = avg[~avg["method"].isin(PAIR_REFERENCES)].rename(columns={"pairs": "n_pairs"})
    out = out.assign(level=level, no_effect_x1000=ref.get(NO_EFFECT, np.nan),
                     noise_floor_x1000=ref.get(NOISE_FLOOR, np.nan))
    spread = [c for c in ("d_cdf_x1000_sd", "flipped_share_sd", "seeds") if c in out.columns]
    return out[LADDER_COLUMNS + spread].reset_index(drop=True)


def ladder_tests(
    pairs: pd.DataFrame,
    primary: str = PRIMARY_METHOD,
    baseline: str = ANCHOR_METHOD,
    n_perm: int = 2000,
    n_ci: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Per level of :func:`ladder_pairs` output: mean d_CDF of ``primary`` minus ``baseline`` x1000
    on the pairs both predict (negative: ``primary`` is closer to the survey's effects), its
    question-clustered CI and the two-sided paired sign-flip p-value (whole questions flip
    together, :func:`~acealign.analyses.stats.sign_flip_pvalue`). Seed runs enter as the mean of
    their per-seed d_CDF. A level where either method has no pair has no row."""
    per_pair = mean_over_seeds(pairs, PAIR_KEYS, ["d_cdf"], drop=("pred1", "pred0"))
    rows = []
    for level in LEVELS:
        part = per_pair[per_pair["level"] == level]
        a, b = (part[part["method"] == m][PAIR_KEYS + ["d_cdf"]] for m in (primary, baseline))
        paired = a.merge(b, on=PAIR_KEYS, suffixes=("", "_b"))
        if paired.empty:
            continue
        units = question_units(paired.assign(d=paired["d_cdf"] - paired["d_cdf_b"]), "d")
        est, lo, hi = bootstrap_ci(units, n_boot=n_ci, seed=seed, alpha=alpha)
        rows.append({"level": level, "primary": primary, "baseline": baseline,
                     "diff_x1000": 1000 * est, "ci_low_x1000": 1000 * lo, "ci_high_x1000": 1000 * hi,
                     "p_value": sign_flip_pvalue(units, n_perm=n_perm, seed=seed),
                     "n_questions": n_questions(units), "pairs": len(paired)})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)
