"""``acealign report RUN_DIR``: every analysis from saved predictions only (no model), written as a
self-contained HTML page (figures embedded as base64 PNG), a Markdown page, and CSV + JSON of every
table.

Run-directory layout read here (written by ``acealign eval`` / ``acealign run``)::

    RUN_DIR/run.json                          optional manifest (see MANIFEST_FIELDS)
    RUN_DIR/eval/<method>/predictions.parquet one file per method (any depth is accepted)
    RUN_DIR/train/<method>/log.jsonl          optional training logs (learning curves)
    RUN_DIR/report/                           default output: report.html, report.md,
                                              tables/<name>.csv|json, figures/<name>.png
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..analyses import fidelity, seeds, table1, taxonomy
from ..analyses.common import (
    BASE_METHOD,
    PRIMARY_METHOD,
    REFERENCE_METHODS,
    eval_subset,
    load_tiers,
    method_label,
    method_order,
    validate_predictions,
    with_flags,
)
from ..fileio import read_json_object
from ..survey import DataError
from . import figures as F
from .io import atomic_write_bytes, atomic_write_json, atomic_write_text, write_table
from .render import Section, render_html, render_markdown
from .tables import analyse, learning_curves, trained_pairs

MANIFEST = "run.json"
PREDICTIONS = "predictions.parquet"
# Fields of RUN_DIR/run.json that the report shows (all optional; unknown fields are listed too).
MANIFEST_FIELDS = {
    "name": "run name",
    "profile": "profile (quick | standard | quick-egypt | full)",
    "created": "created (UTC, ISO 8601)",
    "updated": "last started or continued (UTC, ISO 8601)",
    "model": "model (name or path)",
    "data": "survey data directory",
    "split": "split file (relative to the run directory)",
    "slice": "data slice: countries, questions, granularities, min_n, max_pairs, description",
    "methods": "methods trained / evaluated",
    "seed": "seed",
    "device": "device",
    "scoring_mode": "option scoring (whole answers | literal Eq. 2)",
    "scoring_backend": "scoring backend of the evaluation (hf | vllm | openai, and its estimator)",
    "adapters": "how adapters are trained",
    "dtype": "weight precision",
    "allocator": "glibc allocator thresholds per phase (bytes; acealign.memory)",
    "wall_time_s": "wall time of the run (s)",
    "peak_memory_mb": "peak resident memory of the run's process (MiB)",
    "peak_training_process_mb": "peak resident memory of its largest training process (MiB; "
                                "each training run has its own, while the run's process waits)",
    "versions": "package versions",
}


@dataclass
class ReportResult:
    out_dir: Path
    html: Path
    markdown: Path
    tables: dict[str, Path]
    figures: dict[str, Path | None]  # None: the figure had no data (the report says why)
    summary: pd.DataFrame
    missing_figures: dict[str, str] = field(default_factory=dict)


# -- inputs ------------------------------------------------------------------------------------------


def find_predictions(run_dir, exclude=None) -> list[Path]:
    """Every ``predictions.parquet`` under ``run_dir`` (outside ``exclude``), sorted."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError("run directory not found", run_dir)
    found = []
    for p in sorted(run_dir.rglob(PREDICTIONS)):
        if exclude is not None and Path(exclude).resolve() in p.resolve().parents:
            continue
        found.append(p)
    return found


def load_predictions(paths) -> pd.DataFrame:
    """Concatenate predictions files; a method may come from one file only."""
    frames, origin = [], {}
    for path in paths:
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DataError(f"cannot read predictions ({type(e).__name__}: {e})", path) from None
        validate_predictions(df, path)
        for m in df["method"].unique():
            if m in origin:
                raise DataError(f"method {m!r} is also in {origin[m]}", path)
            origin[m] = path
        frames.append(df)
    if not frames:
        raise DataError("no predictions found")
    return pd.concat(frames, ignore_index=True)


def read_manifest(run_dir) -> dict | None:
    return read_json_object(Path(run_dir) / MANIFEST)


def update_manifest(run_dir, **fields) -> dict:
    """Merge ``fields`` into ``RUN_DIR/run.json`` (created if absent), atomically; returns it.

    For the run job: e.g. ``update_manifest(run, name=..., profile="quick", model="default",
    data=str(data_dir), split="split.json", slice={"countries": [...], "eval_questions": 12,
    "description": "..."}, methods=[...], seed=0, device="cpu")`` at the start, and
    ``wall_time_s=..., peak_memory_mb=...`` at the end. Fields: :data:`MANIFEST_FIELDS`.
    """
    manifest = read_manifest(run_dir) or {"format": "acealign-run/1"}
    manifest.update(fields)
    atomic_write_json(Path(run_dir) / MANIFEST, manifest)
    return manifest


# -- the report --------------------------------------------------------------------------------------


def build_report(
    run_dir,
    out_dir=None,
    *,
    base: str = BASE_METHOD,
    primary: str = PRIMARY_METHOD,
    tiers_path=None,
    n_boot: int = 1000,
    n_perm: int = 2000,
    tau: float = taxonomy.DEFAULT_TAU,
    seed: int = 0,
) -> ReportResult:
    """Build the report of ``run_dir`` into ``out_dir`` (default ``run_dir/report``)."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    paths = find_predictions(run_dir, exclude=out_dir)
    if not paths:
        raise DataError(f"no {PREDICTIONS} under the run directory (expected eval/<method>/{PREDICTIONS})", run_dir)
    manifest = read_manifest(run_dir)
    # Seed runs (ace-s0, ace-s1, ...) stay separate: analyse scores each seed on its own predictions.
    df = load_predictions(paths)
    t = analyse(df, base, primary, tiers_path, n_boot, n_perm, tau, seed,
                trained_pairs(run_dir, df["method"].unique()))
    t["learning_curves"], stage_starts = learning_curves(run_dir)  # training logs, if any
    tier_map = load_tiers(tiers_path)

    fig_png: dict[str, bytes | None] = {}
    missing: dict[str, str] = {}

    def draw(name, fn, *args):
        try:
            fig_png[name] = F.png_bytes(fn(*args))
        except F.NoData as e:
            fig_png[name], missing[name] = None, str(e)

    draw("table1", F.fig_table1, t["averages"])
    draw("fidelity", F.fig_fidelity, t["fidelity"])
    draw("fidelity_ladder", F.fig_fidelity_ladder, t["fidelity_ladder"])
    model_scores = t["country_scores"][~t["country_scores"]["method"].isin(REFERENCE_METHODS)]
    draw("tiers", F.fig_tiers, model_scores, t["tier_scores"], t["tier_gaps"], tier_map, base, primary)
    draw("heldout", F.fig_heldout, t["heldout"])
    draw("heterogeneity", F.fig_heterogeneity, t["heterogeneity"])
    draw("taxonomy", F.fig_taxonomy, t["taxonomy_shares"])
    draw("attribute_changes", F.fig_bubbles, t["attribute_changes"], primary)
    for g in (1, 2, 3, 4):
        draw(f"topics_g{g}", F.fig_topic_radar, t["topic_scores"], g, [base, primary])
    draw("fairness", F.fig_fairness, t["fairness"])
    # Eval-only run directories have no training logs: no learning-curve figure to miss there.
    has_train_logs = any(run_dir.glob("train/*/log.jsonl"))
    if has_train_logs:
        draw("learning_curves", F.fig_learning_curves, t["learning_curves"], stage_starts)

    sections = _sections(t, df, paths, run_dir, manifest, base, primary, tau, n_boot, tier_map)
    if has_train_logs:
        sections.append(_curves_section(t))
    table_paths: dict[str, Path] = {}
    for name, table in t.items():
        table_paths[name] = write_table(table, out_dir / "tables", name)[0]
    fig_paths: dict[str, Path | None] = {}
    for name, png in fig_png.items():
        fig_paths[name] = atomic_write_bytes(out_dir / "figures" / f"{name}.png", png) if png else None
    html_path = atomic_write_text(out_dir / "report.html", render_html(sections, fig_png, missing, run_dir))
    md_path = atomic_write_text(out_dir / "report.md", render_markdown(sections, fig_png, missing, run_dir))
    atomic_write_json(out_dir / "report.json", {
        "run_dir": str(run_dir),
        "predictions": [str(p) for p in paths],
        "tables": sorted(table_paths),
        "figures": {k: (f"figures/{k}.png" if v else None) for k, v in fig_png.items()},
        "missing_figures": missing,
    })
    return ReportResult(out_dir, html_path, md_path, table_paths, fig_paths, t["summary"], missing)


def _slice_table(df: pd.DataFrame) -> pd.DataFrame:
    """What the predictions cover, per method and country (derived, not taken from the manifest)."""
    d = with_flags(df)  # a table without split flags: every row is an evaluation cell
    rows = []
    for (m, c), part in d.groupby(["method", "country"], sort=True):
        ev = part[part["eval_question"].astype(bool)]
        rows.append({
            "method": m,
            "country": c,
            # the survey behind the country's questions (resource tiers differ in survey too)
            "survey": ", ".join(sorted(part["dataset"].unique())),
            "eval_questions": ev["question_key"].nunique(),
            "topics": ev["topic"].nunique(),
            **{f"cells_g{g}": int((ev["granularity"] == g).sum()) for g in (1, 2, 3, 4)},
            "heldout_cells": int(part["heldout_persona"].astype(bool).sum()),
            # cells on training questions beside the held-out ones (evaluations with in_sample)
            "in_sample_cells": int((part["train_question"].astype(bool) & ~part["eval_question"].astype(bool)
                                    & ~part["heldout_persona"].astype(bool)).sum()),
        })
    return pd.DataFrame(rows)


def scoring_table(df: pd.DataFrame) -> pd.DataFrame:
    """How each method's distributions were obtained: backend:estimator (``hf:exact`` for rows
    without the column, ``reference`` for the references), scoring mode, and what the estimator
    reported: sampled answers per prompt and the share naming no option (sampling), the largest
    bound of the whole-answer term's error (``boundary_gap``, prompt-logprobs)."""
    from ..analyses.common import REFERENCE_METHODS

    rows = []
    for m, part in df.groupby("method", sort=True):
        est = part["estimator"].dropna().unique() if "estimator" in part else []
        row = {"method": m,
               "estimator": "reference" if m in REFERENCE_METHODS else (", ".join(sorted(est)) or "hf:exact"),
               "scoring_mode": ", ".join(sorted(part["scoring_mode"].dropna().unique()))
               if "scoring_mode" in part else ""}
        infos = [json.loads(x) for x in part["score_info"].dropna() if x] if "score_info" in part else []
        if any("samples" in i for i in infos):
            row["samples"] = float(np.mean([i["samples"] for i in infos if "samples" in i]))
            row["unparseable_share"] = float(np.mean([i["unparseable"] for i in infos if "unparseable" in i]))
        if any("boundary_gap" in i for i in infos):
            row["max_boundary_gap"] = float(max(i["boundary_gap"] for i in infos if "boundary_gap" in i))
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt_manifest(manifest: dict | None) -> str:
    if manifest is None:
        return (f"No `{MANIFEST}` manifest in the run directory: the data slice below is derived "
                "from the predictions themselves.")
    lines = []
    keys = [k for k in MANIFEST_FIELDS if k in manifest] + [k for k in manifest if k not in MANIFEST_FIELDS]
    for k in keys:
        v = manifest[k]
        text = json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)
        if len(text) > 400:
            text = text[:400] + " …"
        lines.append(f"- **{MANIFEST_FIELDS.get(k, k)}**: {text}")
    return "\n".join(lines)


def _sections(t, df, paths, run_dir, manifest, base, primary, tau, n_boot, tier_map) -> list[Section]:
    L = table1.labelled
    methods = method_order(df["method"].unique())
    secs = []
    slice_desc = ""
    if manifest and isinstance(manifest.get("slice"), dict) and manifest["slice"].get("description"):
        slice_desc = f"**Data slice:** {manifest['slice']['description']}\n\n"
    secs.append(Section(
        "Run and data slice",
        slice_desc + _fmt_manifest(manifest) + "\n\n"
        f"Predictions: {len(df)} rows from {len(paths)} file(s): "
        + ", ".join(str(p.relative_to(run_dir)) for p in paths)
        + f". Methods: {', '.join(method_label(m) for m in methods)}.\n\n"
        f"Table 1 and the per-question analyses use {eval_subset(df)}.",
        [("slice", "Cells per method and country (evaluation questions; held-out persona cells)", _slice_table(df)),
         ("scoring", "How each method was scored (backend:estimator; see acealign.backends)", scoring_table(df))],
    ))
    oracle = method_label("country-marginal")
    n_tests = int(t["paired_tests"]["p_value"].notna().sum()) if len(t["paired_tests"]) else 0
    holm_text = (f"Holm(-Bonferroni) correction over the family of the {n_tests} comparisons of the "
                 "paired-test table (baselines × G); raw p-values are kept beside the adjusted ones")
    seeded = seeds.seed_groups(df["method"].unique())
    seed_text = (
        f" Methods run with several training seeds ({', '.join(f'{method_label(m)}: {len(r)}' for m, r in seeded.items())}) "
        "show the mean over seeds of each metric computed on one seed's predictions (never on "
        "seed-averaged predictions, which would be an ensemble); the spread is in the seed table."
        if seeded else ""
    )
    secs.append(Section(
        "Summary",
        f"S: alignment score ×100 (Eq. 15) averaged over countries and G, over `n_questions` "
        f"evaluation questions. `p_holm_vs_primary` / `p_raw_vs_primary`: sign-flip permutation "
        f"p-values of {method_label(primary)} against the method, per G, whole questions as the "
        f"unit; {holm_text}. Effect fidelity: mean CDF distance of the counterfactual pairs ×1000 "
        "(`d_cdf_x1000`, Eq. 11–12, lower is better) and the share of flipped attribute-topic "
        f"effects. **{oracle}** predicts, for every persona, the country's answer distribution on "
        "that very evaluation question: it is persona-blind but has seen the evaluation answers, "
        "an oracle rather than a baseline. The noise-ceiling row is the expected score of a "
        "perfect model against finite cells; `no-effect` and `noise-floor` are the references of "
        "the CDF distance." + seed_text,
        [("summary", "Summary per method (d_CDF ×1000; p-values Holm-adjusted and raw)", L(t["summary"]))],
    ))
    secs.append(Section(
        "Table 1: alignment per country, granularity and method",
        "A country's score at G is the plain mean of the per-question alignment score over its "
        "eligible persona-question cells of that G; Avg is the plain mean over countries; diff is "
        f"Avg minus the base model's. Confidence intervals: 95% percentile bootstrap ({n_boot} "
        "resamples) of whole evaluation questions (question = dataset/topic/question_id, drawn "
        "with its cells in every country that asks it; a country's own CI resamples its "
        "questions); `n_questions` independent questions behind each. Paired tests flip the sign "
        f"of whole questions; {holm_text}. {oracle} is an oracle (it has seen each evaluation "
        "question's answers), not a baseline.",
        [("table1", "Table 1 (score ×100)", L(t["table1"])),
         ("averages", "Average over countries with 95% CI over questions", L(t["averages"])),
         ("paired_tests", f"{method_label(primary)} vs each baseline: paired difference, CI, "
          f"sign-flip p-value (`p_value` raw, `p_holm` Holm-adjusted over the {n_tests} comparisons)",
          L(L(t["paired_tests"], "baseline"), "primary")),
         ("country_scores", "Per-country scores with CIs", L(t["country_scores"])),
         ("seed_spread", "Training seeds: each seed's value of every headline metric, mean and "
          "standard deviation over seeds (S ×100 per G, d_CDF ×1000)", L(t["seed_spread"]))],
        [("table1", f"Average score per G with 95% CIs over questions; dashed/dotted: noise ceiling / {oracle}")],
    ))
    secs.append(Section(
        "Persona-effect fidelity",
        "Counterfactual pairs: both G=4 ends of a toggled attribute predicted on an evaluation "
        "question. Model effect from the two predictions (Eq. 6), data effect from the survey "
        "counts (Eq. 8); distance Eq. 11, averaged Eq. 12, shown **×1000** (`d_cdf_x1000`) with a "
        f"95% bootstrap CI over whole questions ({n_boot} resamples; `n_questions`). `no-effect`: a "
        "model predicting the same distribution for both ends; `noise-floor`: the expected "
        "distance of a model that knows the true effects, against finite cells (parametric "
        "bootstrap). Only the gap between them is room for learning. Flipped share: "
        f"attribute-topic effects with opposite sign (tau = {tau}).",
        [("fidelity", "Mean CDF distance ×1000 with 95% CI, and flipped share, per method and country",
          L(t["fidelity"]))],
        [("fidelity", "Mean CDF distance ×1000 (Avg over countries, 95% CI) with references")],
    ))
    secs.append(_ladder_section(t, primary, n_boot, L))
    tier_lines = "; ".join(f"{lbl}: {', '.join(tier_map.members[k])}" for k, lbl in tier_map.labels.items())
    secs.append(Section(
        "Resource tiers",
        f"Tiers ({tier_lines}). Gains are over the base model; tier gap = mean of the first tier's "
        "countries minus the last tier's; best-minus-worst over countries. Countries in no tier are "
        "left out of the tier means.",
        [("tier_summary", "Means over G", L(t["tier_summary"])),
         ("tier_gaps", "Per G", L(t["tier_gaps"])),
         ("tier_scores", "Per tier and G", L(t["tier_scores"]))],
        [("tiers", "Tier scores, gains and gaps (paper Fig. 3)")],
    ))
    secs.append(Section(
        "Compositional generalization: held-out persona combinations",
        "Scores of the held-out G=4 combinations (never trained on, on any question). `train` "
        "questions were seen with other personas; `eval` questions are unseen too.",
        [("heldout_summary", "Mean over topics, and the change from the base model", L(t["heldout_summary"])),
         ("heldout", "Per topic", L(t["heldout"]))],
        [("heldout", "Held-out combinations per topic (paper Fig. 4)")],
    ))
    secs.append(Section(
        "Heterogeneity of attribute influence (survey data)",
        "Magnitude of the survey's effect of each attribute per topic and country: the data-side "
        "CDF effect (Eq. 10) averaged over the G=4 contexts of a question, mean absolute value over "
        "levels, then averaged over the topic's questions. No model is involved.",
        [("dominant_attributes", "Dominant attribute per country and topic", t["dominant_attributes"]),
         ("heterogeneity", "Effect magnitude per country x topic x attribute", t["heterogeneity"])],
        [("heterogeneity", "Effect magnitude (paper Fig. 5)")],
    ))
    secs.append(Section(
        "Misalignment taxonomy",
        "Per method, country, attribute and topic: Δm and Δd are the mean signed expected-position "
        "shifts (fraction of the answer scale) of model and survey over the topic's pairs; aligned "
        f"if |Δm − Δd| ≤ tau ({tau}), else flipped (opposite signs), stereotyping (|Δm| > |Δd|) or erasure.",
        [("taxonomy_shares", "Shares per method and country", L(t["taxonomy_shares"])),
         ("taxonomy_effects", "Every attribute-topic effect", L(t["taxonomy_effects"]))],
        [("taxonomy", "Taxonomy shares (paper Fig. 6)")],
    ))
    secs.append(Section(
        "Attribute values and topics",
        f"Score change {method_label(primary)} − base per attribute value (cells whose persona has "
        "that value, paired), and per-topic scores per country.",
        [("attribute_changes", "Change per method, G, country and attribute value", L(t["attribute_changes"])),
         ("topic_scores", "Score per method, G, country and topic", L(t["topic_scores"]))],
        [("attribute_changes", "Attribute-value changes (paper App. B)")]
        + [(f"topics_g{g}", f"Per-topic alignment, G={g} (paper App. C)") for g in (1, 2, 3, 4)],
    ))
    secs.append(Section(
        "Subgroup fairness",
        "Per persona: mean score over its evaluation cells. Modal accuracy: share of cells whose "
        "predicted mode is a survey mode. Worst / best persona, their gap and the standard deviation "
        "across personas (granularity `all`: personas of every G together). Changes are against the "
        "base model.",
        [("fairness_changes", "Change from the base model", L(t["fairness_changes"])),
         ("fairness", "Per method, country and G", L(t["fairness"])),
         ("best_worst_personas", "Best and worst emulated personas", L(t["best_worst_personas"]))],
        [("fairness", "Worst-to-best persona spread")],
    ))
    return secs


def _curves_section(t) -> Section:
    """Learning curves from the training logs (only for run directories that have some)."""
    return Section(
        "Learning curves",
        "From the training logs (`train/<method>/log.jsonl`, runs with `eval.curve_every` > 0): "
        "every N optimizer steps, before training and at the end, the alignment score S ×100 "
        "(Eq. 15) of the G=4 ends of the validation pairs and their mean d_CDF ×1000 (Eq. 11–12). "
        "Validation questions are neither trained nor evaluated on. Dotted lines: a new stage "
        "(objective) starts; a step logged twice after a resume keeps its last record.",
        [("learning_curves", "Validation S ×100 and d_CDF ×1000 per run and optimizer step",
          table1.labelled(t["learning_curves"]))],
        [("learning_curves", "Learning curves: validation S and d_CDF per optimizer step")],
    )


def _ladder_section(t, primary, n_boot, L) -> Section:
    """The effect-fidelity ladder: what each level measures, one sentence per level, table, figure."""
    return Section(
        "Effect fidelity at three levels",
        "The distance of the section above (Eq. 11–12, ×1000, lower is better) on three sets of "
        "counterfactual pairs, each with its own no-effect and noise-floor references: "
        "**in-sample** (training questions, both ends personas the model trained on: can the "
        "objective fit the effects at all?), **new persona combinations** (training questions, an "
        "end is a held-out G=4 combination: compositional generalization) and **new questions** "
        "(evaluation questions: transfer). In-sample pairs exist only when the methods were "
        "evaluated with `in_sample` (cells flagged `train_question`); when the run's training folders "
        "list their pairs (`train/<method>/pairs.csv`), the in-sample level is limited to those "
        "pairs. 95% CIs over whole questions "
        f"({n_boot} resamples).\n\n" + ladder_sentences(t["fidelity_ladder"], t["fidelity_ladder_tests"], primary),
        [("fidelity_ladder", "Mean CDF distance ×1000 per method and level, with the level's references",
          L(t["fidelity_ladder"])),
         ("fidelity_ladder_tests", f"{method_label(primary)} minus {method_label(fidelity.ANCHOR_METHOD)} "
          "per level (×1000; negative: closer to the survey's effects), paired sign-flip p-value",
          L(L(t["fidelity_ladder_tests"], "baseline"), "primary"))],
        [("fidelity_ladder", "Effect-fidelity ladder: mean d_CDF ×1000 per level (95% CI), "
          "dotted: no-effect, dashed: noise floor")],
    )


def ladder_sentences(ladder: pd.DataFrame, tests: pd.DataFrame, primary: str = PRIMARY_METHOD) -> str:
    """One sentence per level of the ladder, from its numbers: the model method with the lowest
    mean d_CDF, the level's references, and whether ``primary`` beats anchor-only there."""
    if ladder.empty:
        return "No counterfactual pair at any level: nothing to compare."
    out = []
    for level in fidelity.LEVELS:
        part = ladder[ladder["level"] == level]
        if part.empty:
            continue
        head = (f"**{fidelity.LEVEL_LABELS[level].capitalize()}** ({int(part['n_pairs'].max())} pairs, "
                f"{int(part['n_questions'].max())} questions; no-effect {part['no_effect_x1000'].iloc[0]:.2f}, "
                f"noise floor {part['noise_floor_x1000'].iloc[0]:.2f})")
        models = part[~part["method"].isin(REFERENCE_METHODS)].dropna(subset=["d_cdf_x1000"])
        if models.empty:
            out.append(f"{head}: only the references have pairs here.")
            continue
        best = models.loc[models["d_cdf_x1000"].idxmin()]
        out.append(f"{head}: lowest mean d_CDF ×1000 {method_label(best['method'])} "
                   f"({best['d_cdf_x1000']:.2f}); {_versus(tests, level, primary)}.")
    return "\n\n".join(out)


def _versus(tests: pd.DataFrame, level: str, primary: str) -> str:
    p_name, b_name = method_label(primary), method_label(fidelity.ANCHOR_METHOD)
    row = tests[tests["level"] == level]
    if row.empty:
        return f"{p_name} and {b_name} are not compared (one of them has no pair here)"
    r = row.iloc[0]
    diff, p = float(r["diff_x1000"]), float(r["p_value"])
    if diff < 0 and p < 0.05:
        verdict = f"{p_name} beats {b_name}"
    elif diff < 0:
        verdict = f"{p_name} is below {b_name} but not significantly"
    else:
        verdict = f"{p_name} does not beat {b_name}"
    ci = (f", 95% CI [{r['ci_low_x1000']:+.2f}, {r['ci_high_x1000']:+.2f}]"
          if np.isfinite([r["ci_low_x1000"], r["ci_high_x1000"]]).all() else "")
    return (f"{verdict} (difference {diff:+.2f}{ci}, paired sign-flip p = {p:.3f} over "
            f"{int(r['n_questions'])} questions)")
