"""Figures of the report, drawn with matplotlib's Agg canvas (no display, no global backend change).

Each ``fig_*`` function takes analysis tables and returns a :class:`matplotlib.figure.Figure`, or
raises :class:`NoData` with the reason when its tables hold nothing to draw, so the report can say
so instead of crashing.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure as _Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..analyses.common import method_label, method_order
from ..survey import ATTRIBUTE_VALUES, ATTRIBUTES

CATEGORY_COLORS = {"aligned": "#4c9a5a", "flipped": "#c0392b", "stereotyping": "#e6a23c", "erasure": "#7f8c8d"}
TIER_COLORS = {1: "#2e6fba", 2: "#e08e0b", 3: "#b03a2e"}


def Figure(*args, **kwargs) -> _Figure:  # noqa: N802 - a Figure with constrained layout
    return _Figure(*args, layout="constrained", **kwargs)


class NoData(Exception):
    """A figure has nothing to draw; the message says why."""


def png_bytes(fig: _Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# One colour per method id in every figure; other method ids take the spare colours in order.
METHOD_COLORS = {
    "base": "#7f7f7f", "anthropological": "#9467bd", "anchor": "#8c564b", "causal": "#2ca02c",
    "ace": "#d62728", "ace-joint": "#9467bd", "distribution": "#1f77b4", "ace+distribution": "#ff7f0e",
    "country-marginal": "#17becf", "noise-ceiling": "#000000",
}
_SPARE = ["#bcbd22", "#e377c2", "#aec7e8", "#98df8a", "#c5b0d5", "#c49c94"]


def _colors(methods) -> dict[str, str]:
    out, spare = {}, iter(_SPARE * 10)
    for m in method_order(methods):
        out[m] = METHOD_COLORS.get(m) or next(spare)
    return out


def _grid(n: int, ncols: int = 3) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return int(np.ceil(n / ncols)), ncols


def fig_table1(avg: pd.DataFrame) -> _Figure:
    """Average score per G and method with bootstrap CIs (reference methods as dashed lines)."""
    if avg.empty:
        raise NoData("no evaluation cells")
    refs = avg[avg["method"].isin(["country-marginal", "noise-ceiling"])]
    models = avg[~avg.index.isin(refs.index)]
    methods = method_order(models["method"].unique())
    gs = sorted(avg["granularity"].unique())
    colors = _colors(methods)
    fig = Figure(figsize=(min(14.0, max(6.0, 1.6 + 1.4 * len(gs) * max(1, len(methods)) / 3)), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        part = models[models["method"] == m].set_index("granularity").reindex(gs)
        x = np.arange(len(gs)) + (i - (len(methods) - 1) / 2) * width
        err = np.vstack([part["avg"] - part["ci_low"], part["ci_high"] - part["avg"]])
        ax.bar(x, part["avg"], width, yerr=np.nan_to_num(err), capsize=2, color=colors[m], label=method_label(m))
    styles = {"country-marginal": ":", "noise-ceiling": "--"}
    for m, part in refs.groupby("method"):
        part = part.set_index("granularity").reindex(gs)
        for j, v in enumerate(part["avg"]):
            ax.hlines(v, j - 0.45, j + 0.45, colors="black", linestyles=styles.get(m, "-"),
                      label=method_label(m) if j == 0 else None)
    ax.set_xticks(np.arange(len(gs)), [f"G={g}" for g in gs])
    lo = np.nanmin(avg["ci_low"].fillna(avg["avg"]))
    hi = np.nanmax(avg["ci_high"].fillna(avg["avg"]))
    ax.set_ylim(max(0, lo - 3), min(100, hi + 2))
    ax.set_ylabel("alignment score ×100")
    ax.set_title("Table 1: average over countries (95% CI over questions)")
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return fig


def fig_fidelity(fid: pd.DataFrame) -> _Figure:
    """Mean CDF distance x1000 of the counterfactual pairs per method (Avg over countries) with 95%
    CIs over questions, and the no-effect / noise-floor references (lines, CI as a band). The axis
    is zoomed on the values: the room for learning is the few units between the two references."""
    avg = fid[fid["country"] == "Avg"] if not fid.empty else fid
    if avg.empty:
        raise NoData("no counterfactual pair has both G=4 ends predicted")
    models = avg[~avg["method"].isin(["no-effect", "noise-floor"])]
    methods = method_order(models["method"].unique())
    colors = _colors(methods)
    fig = Figure(figsize=(max(4.5, 1.5 + 0.8 * len(methods)), 3.4))
    ax = fig.subplots()
    part = models.set_index("method").reindex(methods)
    vals = part["d_cdf_x1000"].to_numpy(float)
    err = np.vstack([vals - part["ci_low_x1000"].to_numpy(float), part["ci_high_x1000"].to_numpy(float) - vals])
    # Points, not bars: the axis does not start at 0.
    for i, m in enumerate(methods):
        ax.errorbar(i, vals[i], yerr=np.nan_to_num(err[:, i : i + 1]), fmt="o", capsize=3, color=colors[m])
    ax.set_xticks(range(len(methods)), [method_label(m) for m in methods], rotation=30, ha="right", fontsize=8)
    for name, style in (("no-effect", ":"), ("noise-floor", "--")):
        ref = avg[avg["method"] == name]
        if len(ref):
            r = ref.iloc[0]
            ax.axhline(float(r["d_cdf_x1000"]), color="black", linestyle=style, label=f"{name} reference")
            if np.isfinite([r["ci_low_x1000"], r["ci_high_x1000"]]).all():
                ax.axhspan(float(r["ci_low_x1000"]), float(r["ci_high_x1000"]), color="gray", alpha=0.15)
    shown = np.concatenate([avg["d_cdf_x1000"].to_numpy(float), avg["ci_low_x1000"].to_numpy(float),
                            avg["ci_high_x1000"].to_numpy(float)])
    shown = shown[np.isfinite(shown)]
    if len(shown):
        span = max(shown.max() - shown.min(), 1.0)
        ax.set_ylim(max(0.0, shown.min() - 0.3 * span), shown.max() + 0.2 * span)
    ax.set_ylabel("mean d_CDF ×1000 (lower is better)", fontsize=8)
    ax.set_title("Persona-effect fidelity, Eq. 12 (95% CI over questions)", fontsize=10)
    ax.legend(fontsize=7)
    return fig


def fig_fidelity_ladder(ladder: pd.DataFrame) -> _Figure:
    """The effect-fidelity ladder: one panel per level (in-sample, new persona combinations, new
    questions) with each method's mean d_CDF x1000 (Eq. 12, Avg over countries, 95% CI over
    questions) and the level's no-effect and noise-floor references as lines. Each panel's axis is
    zoomed on its values and references, so the gap between the two lines stays visible."""
    from ..analyses.fidelity import LEVEL_LABELS, LEVELS

    if ladder.empty:
        raise NoData("no counterfactual pair at any level (no G=4 pair with both ends predicted)")
    levels = [lv for lv in LEVELS if (ladder["level"] == lv).any()]
    methods = method_order(ladder["method"].unique())
    colors = _colors(methods)
    fig = Figure(figsize=(max(4.5, 1.2 + (1.0 + 0.55 * len(methods)) * len(levels)), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(levels)))
    for ax, level in zip(axes, levels, strict=True):
        part = ladder[ladder["level"] == level].set_index("method")
        _ladder_panel(ax, part, [m for m in methods if m in part.index], colors)
        ax.set_title(f"{LEVEL_LABELS[level]}\n{int(part['n_pairs'].max())} pairs, "
                     f"{int(part['n_questions'].max())} questions", fontsize=9)
    axes[0].set_ylabel("mean d_CDF ×1000 (lower is better)", fontsize=8)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("Effect-fidelity ladder (Eq. 12, 95% CI over questions)", fontsize=10)
    return fig


def _ladder_panel(ax, part: pd.DataFrame, methods: list[str], colors: dict[str, str]) -> None:
    """Points with CI bars per method; dotted no-effect and dashed noise-floor lines."""
    vals = part.loc[methods, "d_cdf_x1000"].to_numpy(float)
    lo, hi = part.loc[methods, "ci_low_x1000"].to_numpy(float), part.loc[methods, "ci_high_x1000"].to_numpy(float)
    for i, m in enumerate(methods):
        err = np.nan_to_num([[vals[i] - lo[i]], [hi[i] - vals[i]]])
        ax.errorbar(i, vals[i], yerr=err, fmt="o", capsize=3, color=colors[m])
    refs = {"no-effect": float(part["no_effect_x1000"].iloc[0]), "noise floor": float(part["noise_floor_x1000"].iloc[0])}
    for (name, v), style in zip(refs.items(), (":", "--"), strict=True):
        if np.isfinite(v):
            ax.axhline(v, color="black", linestyle=style, lw=1, label=f"{name} reference")
    ax.set_xticks(range(len(methods)), [method_label(m) for m in methods], rotation=40, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(methods) - 0.4)
    # Not from 0: the room for learning is the few units between the two reference lines.
    shown = np.concatenate([vals, lo, hi, list(refs.values())])
    shown = shown[np.isfinite(shown)]
    if len(shown):
        span = max(shown.max() - shown.min(), 1.0)
        ax.set_ylim(max(0.0, shown.min() - 0.25 * span), shown.max() + 0.2 * span)


def fig_tiers(scores: pd.DataFrame, tier_table: pd.DataFrame, gaps: pd.DataFrame, tiers, base: str, primary: str) -> _Figure:
    """Paper Fig. 3: (a) base scores per country by tier, (b) gains of ``primary`` per G and tier,
    (c) tier gap per G before and after."""
    b = scores[scores["method"] == base]
    if b.empty:
        raise NoData(f"no base-model ({base}) scores")
    fig = Figure(figsize=(12, 3.6))
    ax_a, ax_b, ax_c = fig.subplots(1, 3)
    mean_b = b.groupby("country")["score"].mean().sort_values(ascending=False)
    cols = [TIER_COLORS.get(tiers.tier(c), "#cccccc") for c in mean_b.index]
    ax_a.bar(range(len(mean_b)), mean_b.to_numpy(), color=cols)
    ax_a.set_xticks(range(len(mean_b)), [tiers.code(c) for c in mean_b.index], rotation=60, fontsize=7)
    ax_a.set_ylim(max(0, mean_b.min() - 5), min(100, mean_b.max() + 3))
    ax_a.set_title("(a) base model, mean over G")
    handles = [Patch(color=c, label=tiers.labels[t]) for t, c in TIER_COLORS.items() if t in tiers.labels]
    ax_a.legend(handles=handles, fontsize=6)
    p = tier_table[tier_table["method"] == primary]
    if p.empty:
        ax_b.text(0.5, 0.5, f"no {method_label(primary)} scores", ha="center", va="center", transform=ax_b.transAxes)
    for t, part in p.groupby("tier"):
        ax_b.plot(part["granularity"], part["gain"], marker="o", color=TIER_COLORS.get(int(t), "gray"), label=f"Tier {t}")
    ax_b.axhline(0, color="black", lw=0.6)
    ax_b.set_xlabel("G")
    ax_b.set_title(f"(b) gain of {method_label(primary)} over base")
    if not p.empty:
        ax_b.legend(fontsize=7)
    plotted = False
    for m in [base, primary]:
        part = gaps[gaps["method"] == m].dropna(subset=["tier_gap"]) if "tier_gap" in gaps else gaps.iloc[:0]
        if not part.empty:
            ax_c.plot(part["granularity"], part["tier_gap"], marker="o", label=method_label(m))
            plotted = True
    if not plotted:
        # One tier only (e.g. a one-country run): say so instead of drawing empty axes.
        ax_c.text(0.5, 0.5, "no gap: needs countries of\nTier 1 and Tier 3", ha="center",
                  va="center", transform=ax_c.transAxes)
    ax_c.set_xlabel("G")
    for ax in (ax_b, ax_c):
        ax.set_xticks(sorted(scores["granularity"].unique()))
    ax_c.set_title("(c) Tier-1 minus Tier-3 gap")
    if plotted:
        ax_c.legend(fontsize=7)
    return fig


def _radar(ax, labels, series: dict[str, list[float]], colors: dict[str, str]):
    angles = np.linspace(0, 2 * np.pi, len(labels), endpoint=False)
    closed = np.concatenate([angles, angles[:1]])
    for name, vals in series.items():
        v = np.asarray(vals, float)
        ax.plot(closed, np.concatenate([v, v[:1]]), color=colors.get(name, "gray"), lw=1.2, label=method_label(name))
    ax.set_xticks(angles, [lbl[:18] for lbl in labels], fontsize=6)
    ax.tick_params(axis="y", labelsize=5)
    allv = np.concatenate([np.asarray(v, float) for v in series.values()])
    if np.isfinite(allv).any():  # zoom on the range of the scores: differences are a few points
        ax.set_ylim(max(0, np.nanmin(allv) - 3), min(100, np.nanmax(allv) + 1))


def _bars(ax, labels, series: dict[str, list[float]], colors: dict[str, str]):
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series.items()):
        x = np.arange(len(labels)) + (i - (len(series) - 1) / 2) * width
        ax.bar(x, vals, width, color=colors.get(name, "gray"), label=method_label(name))
    ax.set_xticks(np.arange(len(labels)), [lbl[:18] for lbl in labels], fontsize=7)
    allv = np.concatenate([np.asarray(v, float) for v in series.values()])
    if np.isfinite(allv).any():
        ax.set_ylim(max(0, np.nanmin(allv) - 5), min(100, np.nanmax(allv) + 3))


def _panels(groups: list[tuple[str, list[str], dict[str, list[float]]]], title: str, colors) -> _Figure:
    """One radar (>= 3 axes) or bar panel (fewer axes) per group."""
    nrows, ncols = _grid(len(groups))
    fig = Figure(figsize=(3.6 * ncols, 3.4 * nrows))
    for i, (name, labels, series) in enumerate(groups):
        if len(labels) >= 3:
            ax = fig.add_subplot(nrows, ncols, i + 1, projection="polar")
            _radar(ax, labels, series, colors)
        else:
            ax = fig.add_subplot(nrows, ncols, i + 1)
            _bars(ax, labels, series, colors)
        ax.set_title(name, fontsize=9)
    handles = [Line2D([], [], color=c, lw=2, label=method_label(m)) for m, c in colors.items()
               if any(m in series for _, _, series in groups)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def fig_heldout(table: pd.DataFrame) -> _Figure:
    """Paper Fig. 4: score per topic on each held-out combination, one line (or bar) per method."""
    if table.empty:
        raise NoData("the split holds out no persona combination (no rows flagged heldout_persona)")
    colors = _colors(table["method"].unique())
    groups = []
    for (combo, side), part in table.groupby(["combo", "questions"], sort=True):
        topics = sorted(part["topic"].unique())
        series = {
            m: part[part["method"] == m].set_index("topic").reindex(topics)["score"].tolist()
            for m in method_order(part["method"].unique())
        }
        groups.append((f"{combo} ({side} questions)", topics, series))
    return _panels(groups, "Held-out persona combinations: score ×100 per topic", colors)


def fig_heterogeneity(table: pd.DataFrame) -> _Figure:
    """Paper Fig. 5: effect magnitude, topics x attributes, one heatmap per country."""
    if table.empty:
        raise NoData("no G=4 counterfactual pair in the survey cells")
    countries = sorted(table["country"].unique())
    nrows, ncols = _grid(len(countries))
    fig = Figure(figsize=(3.8 * ncols, 0.9 + 0.28 * table.groupby("country")["topic"].nunique().max() * nrows + 1.2 * nrows))
    vmax = float(table["magnitude"].max()) or 1.0
    for i, c in enumerate(countries):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        part = table[table["country"] == c]
        mat = part.pivot_table(index="topic", columns="attribute", values="magnitude").reindex(columns=list(ATTRIBUTES))
        im = ax.imshow(mat.to_numpy(float), cmap="Reds", vmin=0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(ATTRIBUTES)), [a.replace("_status", "") for a in ATTRIBUTES], fontsize=7, rotation=30)
        ax.set_yticks(range(len(mat.index)), [t[:22] for t in mat.index], fontsize=6)
        ax.set_title(c, fontsize=9)
    fig.colorbar(im, ax=fig.axes, shrink=0.6, label="mean_k |avg ΔCDF_data|")
    fig.suptitle("Heterogeneity of attribute influence (survey data)", fontsize=10)
    return fig


def fig_taxonomy(shares: pd.DataFrame) -> _Figure:
    """Paper Fig. 6: stacked shares of aligned / flipped / stereotyping / erasure per method, one
    panel per country (and all countries pooled)."""
    if shares.empty:
        raise NoData("no attribute-topic effect could be classified (no G=4 pairs predicted)")
    countries = ["All"] + sorted(c for c in shares["country"].unique() if c != "All")
    nrows, ncols = _grid(len(countries), 4)
    fig = Figure(figsize=(3.2 * ncols, 3.0 * nrows))
    for i, c in enumerate(countries):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        part = shares[shares["country"] == c]
        methods = method_order(part["method"].unique())
        part = part.set_index("method").reindex(methods)
        bottom = np.zeros(len(methods))
        for cat, color in CATEGORY_COLORS.items():
            vals = part[cat].to_numpy(float)
            ax.bar(range(len(methods)), vals, bottom=bottom, color=color, label=cat if i == 0 else None)
            bottom += vals
        ax.set_xticks(range(len(methods)), [method_label(m)[:14] for m in methods], rotation=45, ha="right", fontsize=6)
        ax.set_ylim(0, 1)
        ax.set_title(f"{c} ({int(part['effects'].max())} effects)", fontsize=8)
    fig.legend(loc="outside lower center", ncol=4, fontsize=7)
    fig.suptitle("Misalignment taxonomy of attribute-topic effects", fontsize=10)
    return fig


def fig_bubbles(changes: pd.DataFrame, method: str) -> _Figure:
    """Paper App. B: change of the score (method - base) per country x attribute value, one panel
    per G; bubble area ~ |change|, red = improvement, blue = degradation."""
    part = changes[changes["method"] == method]
    if part.empty:
        raise NoData(f"no paired base / {method_label(method)} cells")
    gs = sorted(part["granularity"].unique())
    countries = sorted(part["country"].unique())
    values = [f"{a}={v}" for a in ATTRIBUTES for v in ATTRIBUTE_VALUES[a]]
    nrows, ncols = _grid(len(gs), 2)
    fig = Figure(figsize=(0.8 + 0.6 * len(countries) * ncols + 2, 3.8 * nrows))
    scale = 600 / max(1e-9, float(part["change"].abs().max()))
    for i, g in enumerate(gs):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        sub = part[part["granularity"] == g]
        x = sub["country"].map({c: j for j, c in enumerate(countries)})
        y = (sub["attribute"] + "=" + sub["value"]).map({v: j for j, v in enumerate(values)})
        ax.scatter(x, y, s=sub["change"].abs() * scale + 2,
                   c=np.where(sub["change"] >= 0, "#d62728", "#1f77b4"), alpha=0.7)
        ax.set_xticks(range(len(countries)), countries, rotation=45, fontsize=7)
        ax.set_yticks(range(len(values)), values, fontsize=6)
        ax.set_xlim(-0.6, len(countries) - 0.4)
        ax.set_ylim(-0.6, len(values) - 0.4)
        ax.set_title(f"G={g}", fontsize=9)
    fig.suptitle(f"Score change {method_label(method)} − base per attribute value "
                 f"(largest |change| {part['change'].abs().max():.2f} points)", fontsize=10)
    return fig


def fig_topic_radar(topics: pd.DataFrame, granularity: int, methods: list[str]) -> _Figure:
    """Paper App. C: per-topic score per country at one G, comparing ``methods``."""
    part = topics[(topics["granularity"] == granularity) & topics["method"].isin(methods)]
    if part.empty:
        raise NoData(f"no {' / '.join(method_label(m) for m in methods)} scores at G={granularity}")
    colors = _colors(part["method"].unique())
    groups = []
    for country, sub in part.groupby("country", sort=True):
        labels = sorted(sub["topic"].unique())
        series = {
            m: sub[sub["method"] == m].set_index("topic").reindex(labels)["score"].tolist()
            for m in method_order(sub["method"].unique())
        }
        groups.append((country, labels, series))
    return _panels(groups, f"Per-topic alignment (score ×100), G={granularity}", colors)


def fig_fairness(table: pd.DataFrame) -> _Figure:
    """Worst persona, mean and best persona score per method and country (personas of every G)."""
    part = table[table["granularity"] == "all"]
    if part.empty:
        raise NoData("no persona scores")
    countries = sorted(part["country"].unique())
    methods = method_order(part["method"].unique())
    colors = _colors(methods)
    fig = Figure(figsize=(min(14.0, max(6.0, 1.5 + 1.0 * len(countries) * max(1, len(methods)) / 3)), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(1, len(methods))
    for i, m in enumerate(methods):
        sub = part[part["method"] == m].set_index("country").reindex(countries)
        x = np.arange(len(countries)) + (i - (len(methods) - 1) / 2) * width
        ax.vlines(x, sub["worst"], sub["best"], color=colors[m], lw=2, label=method_label(m))
        ax.plot(x, sub["mean"], "o", color=colors[m], ms=3)
    ax.set_xticks(np.arange(len(countries)), countries, rotation=45, fontsize=7)
    ax.set_ylabel("persona score ×100 (worst–best, dot = mean)")
    ax.set_title("Subgroup fairness: spread across personas")
    ax.legend(fontsize=6, ncol=2)
    return fig


def fig_learning_curves(curves: pd.DataFrame, stage_starts: pd.DataFrame) -> _Figure:
    """Validation S ×100 (Eq. 15) and mean d_CDF ×1000 (Eq. 11-12) against optimizer steps, one
    line per training run (seed runs ``ace-s0``, ... as thin lines in their method's colour);
    dotted verticals where a later stage starts (after ``first_step - 1`` steps)."""
    from ..analyses.seeds import run_methods

    if curves.empty:
        raise NoData("no training run logged learning curves (train/<method>/log.jsonl with "
                     "eval.curve_every > 0)")
    runs = run_methods(curves["method"].unique())
    colors = _colors(set(runs.values()))
    fig = Figure(figsize=(9.0, 3.6))
    axes = fig.subplots(1, 2)
    for run, part in curves.groupby("method", sort=True):
        seed_run = runs[run] != run
        for ax, col in zip(axes, ("S", "d_cdf_x1000"), strict=True):
            ax.plot(part["step"], part[col], marker="" if seed_run else ".", lw=0.8 if seed_run else 1.6,
                    color=colors[runs[run]], label=run if seed_run else method_label(run))
        # One dotted line per later stage of the run: where its objective changes.
        for first in stage_starts.loc[(stage_starts["method"] == run) & (stage_starts["stage"] > 1), "first_step"]:
            for ax in axes:
                ax.axvline(first - 1, color=colors[runs[run]], linestyle=":", lw=1)
    axes[0].set_ylabel("validation S ×100 (higher is better)", fontsize=8)
    axes[1].set_ylabel("validation d_CDF ×1000 (lower is better)", fontsize=8)
    for ax in axes:
        ax.set_xlabel("optimizer step", fontsize=8)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("Learning curves on the validation questions (dotted: a stage starts)", fontsize=10)
    return fig
