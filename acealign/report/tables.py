"""The report's tables: every analysis run over one predictions table (:func:`analyse`), and the
one-row-per-method summary (:func:`summary_table`).

Seed runs (``ace-s0``, ``ace-s1``, ...) are never merged into an averaged prediction. Analyses that
are means of cell scores (Table 1, tests, tiers, held-out, attributes, topics, best/worst personas)
take each cell's mean over the seeds of its per-seed score (:func:`~acealign.analyses.seeds.
mean_cells`: identical to averaging the per-seed tables); the others (effect fidelity, taxonomy,
fairness) are computed per seed run and collapsed to mean and spread over seeds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from ..analyses import (
    attributes,
    compositional,
    fairness,
    fidelity,
    heterogeneity,
    seeds,
    table1,
    taxonomy,
    tiers,
)
from ..analyses.common import (
    BASE_METHOD,
    PAIR_REFERENCES,
    PRIMARY_METHOD,
    REFERENCE_METHODS,
    SEED_NAME,
    eval_mask,
    load_tiers,
    measured_pairs,
    method_order,
    unique_pair_counts,
    with_scores,
)
from ..survey import DataError

FAIRNESS_METRICS = ["modal_accuracy", "mean", "worst", "best", "gap", "std"]


def analyse(
    df: pd.DataFrame,
    base: str = BASE_METHOD,
    primary: str = PRIMARY_METHOD,
    tiers_path=None,
    n_boot: int = 1000,
    n_perm: int = 2000,
    tau: float = taxonomy.DEFAULT_TAU,
    seed: int = 0,
    trained_pairs: dict[str, pd.DataFrame] | None = None,
) -> dict[str, pd.DataFrame]:
    """Run every analysis; returns tables by name (method ids, scores x100, d_CDF x1000).

    ``df``: predictions of every method, seed runs as their own methods (``ace-s0``, ...).
    ``trained_pairs``: method -> the pairs its adapter trained on (:func:`trained_pairs`), which
    the ladder's in-sample level is then limited to.
    ``n_boot``: resamples of every question-clustered CI (0: none); ``n_perm``: sign patterns of
    the paired tests (all of them when 2^questions <= n_perm).
    """
    runs = with_scores(df)  # one method per seed run
    cells = seeds.mean_cells(runs)  # seed runs -> their method, per-cell mean of per-seed scores
    tier_map = load_tiers(tiers_path)
    t: dict[str, pd.DataFrame] = {}
    t["country_scores"] = table1.country_scores(cells, n_boot=n_boot, seed=seed)
    t["table1"] = table1.table1_wide(t["country_scores"], base=base)
    t["averages"] = table1.average_scores(cells, n_boot=n_boot, seed=seed)
    t["paired_tests"] = table1.paired_tests(cells, primary=primary, n_boot=n_boot, n_perm=n_perm, seed=seed)

    pairs = measured_pairs(runs)
    refs = fidelity.pair_references(unique_pair_counts(pairs), seed=seed) if len(pairs) else None
    fid = fidelity.effect_fidelity(runs, tau=tau, seed=seed, pairs=pairs, refs=refs, n_ci=n_boot)
    t["fidelity"] = fidelity.per_mille(fid)
    fid_runs = fidelity.run_fidelity(pairs, refs, tau) if len(pairs) else None
    # The ladder: the same distance on in-sample, new-combination and new-question pairs.
    ladder = fidelity.ladder_pairs(runs, trained_pairs)
    t["fidelity_ladder"] = fidelity.fidelity_ladder(runs, tau=tau, n_ci=n_boot, seed=seed, pairs=ladder)
    t["fidelity_ladder_tests"] = fidelity.ladder_tests(ladder, primary, n_perm=n_perm, n_ci=n_boot, seed=seed)

    model_scores = t["country_scores"][~t["country_scores"]["method"].isin(REFERENCE_METHODS)]
    t["tier_scores"] = tiers.tier_scores(model_scores, tier_map, base)
    t["tier_gaps"] = tiers.tier_gaps(model_scores, tier_map) if len(model_scores) else pd.DataFrame()
    t["tier_summary"] = tiers.tier_summary(model_scores, tier_map, base) if len(model_scores) else pd.DataFrame()
    t["heldout"] = compositional.heldout_scores(cells)
    t["heldout_summary"] = compositional.heldout_summary(t["heldout"], base)
    t["heterogeneity"] = heterogeneity.heterogeneity(runs[eval_mask(runs)])
    t["dominant_attributes"] = heterogeneity.dominant_attributes(t["heterogeneity"])

    effects = taxonomy.taxonomy(runs, tau=tau, pairs=pairs)
    t["taxonomy_effects"] = _with_seed_column(effects)
    t["taxonomy_shares"] = seeds.collapse_seeds(
        taxonomy.taxonomy_shares(effects), ["country"], list(metrics.CATEGORIES)
    )
    t["attribute_changes"] = attributes.attribute_value_changes(cells, base)
    t["topic_scores"] = attributes.topic_scores(cells)
    fair_runs = fairness.persona_fairness(runs)
    t["fairness"] = seeds.collapse_seeds(fair_runs, ["country", "granularity"], FAIRNESS_METRICS)
    t["fairness_changes"] = fairness.fairness_changes(t["fairness"], base)
    t["best_worst_personas"] = fairness.best_worst_personas(cells)
    t["seed_spread"] = seeds.seed_spread(runs, fid_runs, fair_runs)
    t["summary"] = summary_table(t, base)
    return t


def summary_table(t: dict[str, pd.DataFrame], base: str = BASE_METHOD) -> pd.DataFrame:
    """One row per method: S averaged over G (and its difference from the base) over
    ``n_questions`` evaluation questions; p-values of the primary method against it per G, Holm-
    adjusted over the paired-test table (``p_holm_vs_primary``) and raw (``p_raw_vs_primary``);
    effect fidelity x1000 (Avg over countries); modal accuracy and the worst-persona score (mean
    over countries, personas of every G); ``seeds``, the training seeds averaged (each metric
    computed per seed first; their spread is in the ``seed_spread`` table; only when a method was
    run with several seeds)."""
    avg = t["averages"]
    if avg.empty:
        return pd.DataFrame()
    s = avg.groupby("method")["avg"].mean()
    nq = avg.groupby("method")["n_questions"].max()
    fid = t["fidelity"]
    fid_avg = fid[fid["country"] == "Avg"].set_index("method") if not fid.empty else pd.DataFrame()
    fair = t["fairness"]
    fair_all = fair[fair["granularity"] == "all"].groupby("method")[["modal_accuracy", "worst"]].mean()
    n_seeds = _seed_counts(t)
    tests = t["paired_tests"]
    rows = []
    refs = [x for x in fid_avg.index if x in PAIR_REFERENCES]
    for m in method_order(list(s.index) + refs):
        row = {"method": m, "S": s.get(m, np.nan)}
        row["diff_vs_base"] = row["S"] - s.get(base, np.nan)
        row["n_questions"] = nq.get(m, np.nan)
        pt = tests[tests["baseline"] == m].sort_values("granularity") if not tests.empty else tests
        for col, name in (("p_holm", "p_holm_vs_primary"), ("p_value", "p_raw_vs_primary")):
            row[name] = " / ".join(f"{p:.3f}" for p in pt[col]) if len(pt) else ""
        row["d_cdf_x1000"] = fid_avg["d_cdf_x1000"].get(m, np.nan) if len(fid_avg) else np.nan
        row["flipped_share"] = fid_avg["flipped_share"].get(m, np.nan) if len(fid_avg) else np.nan
        row["modal_accuracy"] = fair_all["modal_accuracy"].get(m, np.nan)
        row["worst_persona"] = fair_all["worst"].get(m, np.nan)
        if n_seeds:
            row["seeds"] = n_seeds.get(m, 1)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["n_questions"] = out["n_questions"].astype("Int64")  # NaN on the pair-reference rows
    return out


def _seed_counts(t: dict[str, pd.DataFrame]) -> dict[str, int]:
    spread = t.get("seed_spread")
    if spread is None or spread.empty:
        return {}
    return spread.groupby("method")["seeds"].max().astype(int).to_dict()


def _with_seed_column(effects: pd.DataFrame) -> pd.DataFrame:
    """Per-run taxonomy effects with seed runs named by their method and a ``seed`` column."""
    runs = seeds.run_methods(effects["method"].unique()) if len(effects) else {}
    if not any(r != m for r, m in runs.items()):
        return effects
    seed = effects["method"].map(lambda r: int(SEED_NAME.match(r)["seed"]) if runs[r] != r else pd.NA)
    return effects.assign(method=effects["method"].map(runs), seed=seed.astype("Int64"))


CURVE_COLUMNS = ["method", "step", "stage", "objective", "S", "d_cdf_x1000"]
STAGE_COLUMNS = ["method", "stage", "first_step", "objective"]


def trained_pairs(run_dir, methods) -> dict[str, pd.DataFrame] | None:
    """Method -> its training pairs, from ``RUN_DIR/train/<method>/pairs.csv`` (written by
    :func:`acealign.train.train`) for each of ``methods`` that has one; None when none has (an
    evaluation-only folder, or runs made before the file existed). A malformed file is a DataError."""
    from ..training.data import PAIR_KEY_COLUMNS, PAIRS_NAME

    out = {}
    for method in methods:
        path = Path(run_dir) / "train" / str(method) / PAIRS_NAME
        if path.is_file():
            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            except (ValueError, pd.errors.ParserError) as e:  # EmptyDataError is a ValueError
                raise DataError(f"not a pairs table ({e})", path) from None
            if list(frame.columns) != PAIR_KEY_COLUMNS:
                raise DataError(f"expected the columns {', '.join(PAIR_KEY_COLUMNS)}, got "
                                f"{', '.join(map(str, frame.columns))}", path)
            out[str(method)] = frame
    return out or None


def learning_curves(run_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(curves, stage_starts)`` from every ``RUN_DIR/train/<method>/log.jsonl``.

    ``curves``: the ``"event": "curve"`` records (``eval.curve_every``) as method (the run
    folder's name), optimizer step, stage, objective, validation S ×100 (Eq. 15) and mean d_CDF
    ×1000 (Eq. 11-12); a step logged twice (recomputed after a resume) keeps its last record.
    ``stage_starts``: the ``"event": "stage"`` records (``first_step`` is 1-based).
    """
    curves, starts = [], []
    for log in sorted(Path(run_dir).glob("train/*/log.jsonl")):
        method = log.parent.name
        for line in log.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a run killed mid-write leaves a partial last line
                continue
            if rec.get("event") == "curve":
                curves.append([method, rec["step"], rec["stage"], rec["objective"],
                               100.0 * rec["validation_S"], rec["validation_d_cdf_x1000"]])
            elif rec.get("event") == "stage":
                starts.append([method, rec["stage"], rec["first_step"], rec["objective"]])
    table = pd.DataFrame(curves, columns=CURVE_COLUMNS)
    table = table.drop_duplicates(["method", "step"], keep="last").sort_values(["method", "step"])
    stages = pd.DataFrame(starts, columns=STAGE_COLUMNS).drop_duplicates(["method", "first_step"], keep="last")
    return table.reset_index(drop=True), stages.reset_index(drop=True)
