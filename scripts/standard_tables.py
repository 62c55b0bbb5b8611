"""Print the README's tables of a standard-profile run from its files (nothing is recomputed).

    python scripts/standard_tables.py runs/standard

Learning curves (report/tables/learning_curves.csv), the training-batch loss terms per method
(train/<method>/log.jsonl: means over the first and last four optimizer steps), the
effect-fidelity ladder and its ACE-Align-versus-anchor tests (report/tables/fidelity_ladder*.csv).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

LABELS = {"anchor": "anchor-only", "causal": "causal-only", "ace": "ACE-Align",
          "ace-joint": "joint (β = 100)", "distribution": "distribution",
          "ace+distribution": "ACE+distribution"}


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def learning_curves(run: Path) -> list[str]:
    lc = pd.read_csv(run / "report/tables/learning_curves.csv")
    steps = sorted(lc["step"].unique())
    out = [_row(["step", *steps]), _row(["---"] * (len(steps) + 1))]
    for column, name in (("S", "S"), ("d_cdf_x1000", "d_CDF")):
        for method in [m for m in LABELS if m in set(lc["method"])]:
            by_step = lc[lc["method"] == method].set_index("step")[column]
            out.append(_row([f"{name}: {LABELS[method]}",
                             *(f"{by_step[s]:.1f}" if s in by_step else "" for s in steps)]))
    return out


def loss_terms(run: Path, window: int = 4) -> list[str]:
    out = [_row(["method", "term", f"steps 1–{window}", "last steps"]), _row(["---"] * 4)]
    for method in LABELS:
        log = run / "train" / method / "log.jsonl"
        if not log.exists():
            continue
        steps = [r for r in map(json.loads, log.read_text().splitlines()) if "loss" in r]
        for term in ("causal", "anchor"):
            first = sum(r[term] for r in steps[:window]) / window
            last = sum(r[term] for r in steps[-window:]) / window
            out.append(_row([LABELS[method], term, f"{first:.4f}",
                             f"{last:.4f} (steps {steps[-window]['step']}–{steps[-1]['step']})"]))
    return out


def ladder(run: Path) -> list[str]:
    lad = pd.read_csv(run / "report/tables/fidelity_ladder.csv")
    levels = list(dict.fromkeys(lad["level"]))
    S = pd.read_csv(run / "report/tables/summary.csv").set_index("method")["S"]
    out = [_row(["method", *levels, "S ×100 (eval)"]), _row(["---"] * (len(levels) + 2))]
    for method in dict.fromkeys(lad["method"]):
        rows = lad[lad["method"] == method].set_index("level")
        out.append(_row([method, *(f"{rows.loc[v, 'd_cdf_x1000']:.1f} [{rows.loc[v, 'ci_low_x1000']:.1f}, "
                                   f"{rows.loc[v, 'ci_high_x1000']:.1f}]" if v in rows.index else ""
                                   for v in levels),
                         f"{S[method]:.2f}" if method in S.index else ""]))
    first = lad.drop_duplicates("level").set_index("level")
    for column, name in (("no_effect_x1000", "no-effect reference"), ("noise_floor_x1000", "noise floor")):
        out.append(_row([f"*{name}*", *(f"{first.loc[v, column]:.1f}" for v in levels), ""]))
    out.append(_row(["*pairs / questions*", *(f"{first.loc[v, 'n_pairs']} / {first.loc[v, 'n_questions']}"
                                              for v in levels), ""]))
    tests = pd.read_csv(run / "report/tables/fidelity_ladder_tests.csv")
    out += ["", _row(["level", "primary − baseline", "difference ×1000", "95% CI", "p"]), _row(["---"] * 5)]
    for t in tests.itertuples():
        out.append(_row([t.level, f"{t.primary} − {t.baseline}", f"{t.diff_x1000:+.2f}",
                         f"[{t.ci_low_x1000:.2f}, {t.ci_high_x1000:.2f}]", f"{t.p_value:.2f}"]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run directory of `acealign run --profile standard`")
    run = ap.parse_args(argv).run
    try:
        for title, lines in (("Learning curves (validation S x100, d_CDF x1000)", learning_curves(run)),
                             ("Loss terms on the training batches", loss_terms(run)),
                             ("Effect-fidelity ladder (mean d_CDF x1000, 95% CI)", ladder(run))):
            print(f"\n{title}\n", *lines, sep="\n")
    except (OSError, KeyError, ValueError) as e:
        print(f"error: {run}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
