"""``acealign report RUN_DIR``: every analysis from saved predictions only (no model), written as a
self-contained HTML page (figures embedded as base64 PNG), a Markdown page, and CSV + JSON of every
table.

Run-directory layout read here (written by ``acealign eval`` / ``acealign run``)::

    RUN_DIR/run.json                          optional manifest (see MANIFEST_FIELDS)
    RUN_DIR/eval/<method>/predictions.parquet one file per method (any depth is accepted)
    RUN_DIR/report/                           default output: report.html, report.md,
                                              tables/<name>.csv|json, figures/<name>.png
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

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
    PRIMARY_METHOD,
    REFERENCE_METHODS,
    eval_mask,
    eval_subset,
    load_tiers,
    measured_pairs,
    method_label,
    method_order,
    validate_predictions,
    with_scores,
)
from ..survey import DataError
from . import figures as F
from .io import atomic_write_bytes, atomic_write_json, atomic_write_text, write_table

MANIFEST = "run.json"
PREDICTIONS = "predictions.parquet"
# Fields of RUN_DIR/run.json that the report shows (all optional; unknown fields are listed too).
MANIFEST_FIELDS = {
    "name": "run name",
    "profile": "profile (quick | full)",
    "created": "created (UTC, ISO 8601)",
    "model": "model (name or path)",
    "data": "survey data directory",
    "split": "split file (relative to the run directory)",
    "slice": "data slice: countries, questions, granularities, min_n, max_pairs, description",
    "methods": "methods trained / evaluated",
    "seed": "seed",
    "device": "device",
    "wall_time_s": "wall time of the run (s)",
    "peak_memory_mb": "peak resident memory (MiB)",
    "versions": "package versions",
}


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[tuple[str, str, pd.DataFrame]] = field(default_factory=list)  # (name, caption, table)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (name, caption)


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
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON ({e.msg})", path, e.lineno) from None
    if not isinstance(obj, dict):
        raise DataError("expected a JSON object", path)
    return obj


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


# -- analyses ----------------------------------------------------------------------------------------


def analyse(
    df: pd.DataFrame,
    base: str = BASE_METHOD,
    primary: str = PRIMARY_METHOD,
    tiers_path=None,
    n_boot: int = 1000,
    n_perm: int = 2000,
    tau: float = taxonomy.DEFAULT_TAU,
    seed: int = 0,
) -> dict[str, pd.DataFrame]:
    """Run every analysis; returns tables by name (method ids, scores x100)."""
    scored = with_scores(df)
    tier_map = load_tiers(tiers_path)
    t: dict[str, pd.DataFrame] = {}
    t["country_scores"] = table1.country_scores(scored, n_boot=n_boot, seed=seed)
    t["table1"] = table1.table1_wide(t["country_scores"], base=base)
    t["averages"] = table1.average_scores(scored, n_boot=n_boot, seed=seed)
    t["paired_tests"] = table1.paired_tests(scored, primary=primary, n_boot=n_boot, n_perm=n_perm, seed=seed)
    pairs = measured_pairs(scored)
    t["fidelity"] = fidelity.effect_fidelity(scored, tau=tau, seed=seed, pairs=pairs)
    model_scores = t["country_scores"][~t["country_scores"]["method"].isin(REFERENCE_METHODS)]
    t["tier_scores"] = tiers.tier_scores(model_scores, tier_map, base)
    t["tier_gaps"] = tiers.tier_gaps(model_scores, tier_map) if len(model_scores) else pd.DataFrame()
    t["tier_summary"] = tiers.tier_summary(model_scores, tier_map, base) if len(model_scores) else pd.DataFrame()
    t["heldout"] = compositional.heldout_scores(scored)
    t["heldout_summary"] = compositional.heldout_summary(t["heldout"], base)
    t["heterogeneity"] = heterogeneity.heterogeneity(scored[eval_mask(scored)])
    t["dominant_attributes"] = heterogeneity.dominant_attributes(t["heterogeneity"])
    t["taxonomy_effects"] = taxonomy.taxonomy(scored, tau=tau, pairs=pairs)
    t["taxonomy_shares"] = taxonomy.taxonomy_shares(t["taxonomy_effects"])
    t["attribute_changes"] = attributes.attribute_value_changes(scored, base)
    t["topic_scores"] = attributes.topic_scores(scored)
    t["fairness"] = fairness.persona_fairness(scored)
    t["fairness_changes"] = fairness.fairness_changes(t["fairness"], base)
    t["best_worst_personas"] = fairness.best_worst_personas(scored)
    t["summary"] = summary_table(t, base)
    return t


def summary_table(t: dict[str, pd.DataFrame], base: str = BASE_METHOD) -> pd.DataFrame:
    """One row per method: S averaged over G (and its difference from the base), p-values of the
    primary method against it per G, effect fidelity (Avg over countries), modal accuracy and the
    worst-persona score (mean over countries, personas of every G)."""
    avg = t["averages"]
    if avg.empty:
        return pd.DataFrame()
    s = avg.groupby("method")["avg"].mean()
    fid = t["fidelity"]
    fid_avg = fid[fid["country"] == "Avg"].set_index("method") if not fid.empty else pd.DataFrame()
    fair = t["fairness"]
    fair_all = fair[fair["granularity"] == "all"].groupby("method")[["modal_accuracy", "worst"]].mean()
    tests = t["paired_tests"]
    rows = []
    for m in method_order(list(s.index) + [x for x in fid_avg.index if x in ("no-effect", "noise-floor")]):
        row = {"method": m, "S": s.get(m, np.nan)}
        row["diff_vs_base"] = row["S"] - s.get(base, np.nan)
        pt = tests[tests["baseline"] == m] if not tests.empty else tests
        row["p_vs_primary"] = " / ".join(f"{p:.3f}" for p in pt.sort_values("granularity")["p_value"]) if len(pt) else ""
        row["cdf_distance"] = fid_avg["cdf_distance"].get(m, np.nan) if len(fid_avg) else np.nan
        row["flipped_share"] = fid_avg["flipped_share"].get(m, np.nan) if len(fid_avg) else np.nan
        row["modal_accuracy"] = fair_all["modal_accuracy"].get(m, np.nan)
        row["worst_persona"] = fair_all["worst"].get(m, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


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
    raw = load_predictions(paths)
    df = seeds.merge_seeds(raw)  # ace-s0, ace-s1, ... -> ace (mean over seeds)
    t = analyse(df, base, primary, tiers_path, n_boot, n_perm, tau, seed)
    t["seed_spread"] = seeds.seed_spread(raw)
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
    model_scores = t["country_scores"][~t["country_scores"]["method"].isin(REFERENCE_METHODS)]
    draw("tiers", F.fig_tiers, model_scores, t["tier_scores"], t["tier_gaps"], tier_map, base, primary)
    draw("heldout", F.fig_heldout, t["heldout"])
    draw("heterogeneity", F.fig_heterogeneity, t["heterogeneity"])
    draw("taxonomy", F.fig_taxonomy, t["taxonomy_shares"])
    draw("attribute_changes", F.fig_bubbles, t["attribute_changes"], primary)
    for g in (1, 2, 3, 4):
        draw(f"topics_g{g}", F.fig_topic_radar, t["topic_scores"], g, [base, primary])
    draw("fairness", F.fig_fairness, t["fairness"])

    sections = _sections(t, df, paths, run_dir, manifest, base, primary, tau, n_boot, tier_map)
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
    d = df.copy()
    for col in ("eval_question", "heldout_persona"):
        if col not in d.columns:  # a table without split flags: every row is an evaluation cell
            d[col] = col == "eval_question"
    rows = []
    for (m, c), part in d.groupby(["method", "country"], sort=True):
        ev = part[part["eval_question"].astype(bool)]
        rows.append({
            "method": m,
            "country": c,
            "eval_questions": ev["question_key"].nunique(),
            "topics": ev["topic"].nunique(),
            **{f"cells_g{g}": int((ev["granularity"] == g).sum()) for g in (1, 2, 3, 4)},
            "heldout_cells": int(part["heldout_persona"].astype(bool).sum()),
        })
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
        [("slice", "Cells per method and country (evaluation questions; held-out persona cells)", _slice_table(df))],
    ))
    secs.append(Section(
        "Summary",
        f"S: alignment score ×100 (Eq. 15) averaged over countries and G; `p_vs_primary`: sign-flip "
        f"permutation p-values of {method_label(primary)} against the method, per G. Effect fidelity: "
        "mean CDF distance of the counterfactual pairs (Eq. 12, lower is better) and the share of "
        "flipped attribute-topic effects. The country-marginal row predicts each country's overall "
        "distribution for every persona; the noise-ceiling row is the expected score of a perfect "
        "model against finite cells; `no-effect` and `noise-floor` are the references of the CDF distance.",
        [("summary", "Summary per method", L(t["summary"]))],
    ))
    secs.append(Section(
        "Table 1: alignment per country, granularity and method",
        "A country's score at G is the plain mean of the per-question alignment score over its "
        "eligible persona-question cells of that G; Avg is the plain mean over countries; diff is "
        f"Avg minus the base model's. Confidence intervals: 95% percentile bootstrap ({n_boot} "
        "resamples) of each country's evaluation questions.",
        [("table1", "Table 1 (score ×100)", L(t["table1"])),
         ("averages", "Average over countries with 95% CI", L(t["averages"])),
         ("paired_tests", f"{method_label(primary)} vs each baseline: paired difference, CI, sign-flip p-value",
          L(L(t["paired_tests"], "baseline"), "primary")),
         ("country_scores", "Per-country scores with CIs", L(t["country_scores"])),
         ("seed_spread", "Training seeds (methods run with several seeds are shown as their mean above)",
          L(t["seed_spread"]))],
        [("table1", "Average score per G with CIs; dashed/dotted: noise ceiling / country marginal")],
    ))
    secs.append(Section(
        "Persona-effect fidelity",
        "Counterfactual pairs: both G=4 ends of a toggled attribute predicted on an evaluation "
        "question. Model effect from the two predictions (Eq. 6), data effect from the survey "
        "counts (Eq. 8); distance Eq. 11, averaged Eq. 12. `no-effect`: a model predicting the same "
        "distribution for both ends; `noise-floor`: the expected distance of a model that knows the "
        "true effects, against finite cells (parametric bootstrap). Only the gap between them is "
        f"room for learning. Flipped share: attribute-topic effects with opposite sign (tau = {tau}).",
        [("fidelity", "Mean CDF distance and flipped share per method and country", L(t["fidelity"]))],
        [("fidelity", "Mean CDF distance (Avg over countries) with references")],
    ))
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


# -- writers -----------------------------------------------------------------------------------------

MAX_INLINE_ROWS = 40


# Columns that are fractions or distances (3 decimals); scores x100 get 2.
FINE_COLUMNS = {
    "modal_accuracy", "d_modal_accuracy", "flipped_share", "cdf_distance", "no_effect", "noise_floor",
    "p_value", "dm", "dd", "magnitude", "aligned", "flipped", "stereotyping", "erasure",
}


def _fmt(v, column: str = "") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}" if column in FINE_COLUMNS else f"{v:.2f}"
    return str(v)


def markdown_table(table: pd.DataFrame, max_rows: int | None = None) -> str:
    if table.empty:
        return "_(no rows)_"
    shown = table if max_rows is None else table.head(max_rows)
    cols = list(shown.columns)
    lines = ["| " + " | ".join(str(c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for rec in shown.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v, c).replace("|", "\\|") for v, c in zip(rec, cols, strict=True)) + " |")
    return "\n".join(lines)


def _html_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p><em>(no rows)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v, c))}</td>" for v, c in zip(rec, table.columns, strict=True)) + "</tr>"
        for rec in table.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_inline(text: str) -> str:
    """The little Markdown the section texts use (bold, code, bullets) as HTML."""
    import re

    out = []
    for para in text.split("\n\n"):
        esc = html.escape(para)
        esc = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", esc)
        esc = re.sub(r"`(.+?)`", r"<code>\1</code>", esc)
        if esc.lstrip().startswith("- "):
            items = "".join(f"<li>{li[2:]}</li>" for li in esc.strip().split("\n"))
            out.append(f"<ul>{items}</ul>")
        else:
            out.append(f"<p>{esc}</p>")
    return "".join(out)


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.2em}th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
.nodata{color:#a33;font-style:italic}details{margin-bottom:1em}h2{border-bottom:1px solid #ddd;margin-top:2em}"""


def render_html(sections: list[Section], fig_png: dict, missing: dict, run_dir: Path) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>acealign report: {html.escape(str(run_dir))}</title>",
             f"<style>{CSS}</style></head><body>",
             f"<h1>acealign report</h1><p>Run directory <code>{html.escape(str(run_dir))}</code>, built {now} "
             "from saved predictions (tables also as CSV/JSON in <code>tables/</code>).</p>"]
    for sec in sections:
        parts.append(f"<h2>{html.escape(sec.title)}</h2>{_md_inline(sec.text)}")
        for name, caption in sec.figures:
            png = fig_png.get(name)
            if png:
                b64 = base64.b64encode(png).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{b64}'>"
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
            else:
                parts.append(f"<p class='nodata'>Figure “{html.escape(caption)}”: no data — "
                             f"{html.escape(missing.get(name, 'not drawn'))}.</p>")
        for name, caption, table in sec.tables:
            title = f"{html.escape(caption)} <small>(<code>tables/{name}.csv</code>, {len(table)} rows)</small>"
            if len(table) > MAX_INLINE_ROWS:
                parts.append(f"<details><summary>{title}</summary>{_html_table(table)}</details>")
            else:
                parts.append(f"<h3>{title}</h3>{_html_table(table)}")
    parts.append("</body></html>\n")
    return "".join(parts)


def render_markdown(sections: list[Section], fig_png: dict, missing: dict, run_dir: Path) -> str:
    out = [f"# acealign report\n\nRun directory `{run_dir}`; built from saved predictions. "
           "Every table is also in `tables/` as CSV and JSON.\n"]
    for sec in sections:
        out.append(f"## {sec.title}\n\n{sec.text}\n")
        for name, caption in sec.figures:
            if fig_png.get(name):
                out.append(f"![{caption}](figures/{name}.png)\n")
            else:
                out.append(f"_Figure “{caption}”: no data — {missing.get(name, 'not drawn')}._\n")
        for name, caption, table in sec.tables:
            more = len(table) > MAX_INLINE_ROWS
            out.append(f"**{caption}** (`tables/{name}.csv`, {len(table)} rows"
                       + (f"; first {MAX_INLINE_ROWS} shown" if more else "") + ")\n")
            out.append(markdown_table(table, MAX_INLINE_ROWS if more else None) + "\n")
    return "\n".join(out)
