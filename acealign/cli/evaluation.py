"""``acealign eval`` (score the evaluation side of a split) and ``acealign report`` (analyses,
figures and the HTML/Markdown report of a run directory, from saved predictions only)."""

from __future__ import annotations

from pathlib import Path

from . import (
    UsageError,
    add_backend_options,
    add_data_option,
    add_dtype_option,
    add_json_option,
    add_scoring_mode_option,
    print_json,
    print_table,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score every eligible persona (G=1..4) on the evaluation side of a split; save predictions",
        description="Writes OUT/<method>/predictions.parquet, cell_scores.csv and eval.json. "
        "Resumable: an interrupted run continues where it stopped.",
    )
    p.add_argument("--model", help="model name or path (default: the adapter's training model, else "
                   "default = SmolLM2-135M-Instruct)")
    p.add_argument("--adapter", metavar="DIR", help="LoRA adapter directory (peft format) on top of the model")
    p.add_argument("--prompt", metavar="TEMPLATE",
                   help="plain (the paper's persona prompt) or another template, e.g. anthropological "
                   "(default: the template the adapter was trained with; plain without --adapter)")
    add_scoring_mode_option(p)
    add_data_option(p)
    p.add_argument("--split", required=True, metavar="FILE", help="split file (acealign data split)")
    p.add_argument("--out", required=True, metavar="DIR", help="evaluation folder, e.g. runs/NAME/eval")
    p.add_argument("--method-name", metavar="NAME",
                   help="method id in the tables (default: base, the template name, or the adapter's run name)")
    p.add_argument("--references", action="store_true",
                   help="write the country-marginal (an oracle: it has seen each question's answers) and "
                   "noise-ceiling references instead (no model)")
    p.add_argument("--granularity", default="1,2,3,4", metavar="LIST", help="granularities to score (1,2,3,4)")
    p.add_argument("--min-n", type=int, default=10, metavar="N", help="minimum respondents per cell (10)")
    p.add_argument("--device", default="cpu")
    add_dtype_option(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="seed of the noise-ceiling resample (0)")
    p.add_argument("--in-sample", action="store_true",
                   help="also score the training questions' cells (flag train_question; never in S): "
                   "the in-sample level of the effect-fidelity ladder")
    p.add_argument("--in-sample-granularity", metavar="LIST",
                   help="G of the --in-sample cells (default: --granularity); the ladder's in-sample and "
                   "new-combination levels use G=4 only")
    add_backend_options(p)
    add_json_option(p)
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser(
        "report",
        help="analyses, figures and an HTML/Markdown report of a run directory (no model needed)",
        description="Reads every predictions.parquet under RUN_DIR (layout RUN_DIR/eval/<method>/) and "
        "the optional manifest RUN_DIR/run.json; writes report.html (self-contained), report.md, "
        "tables/*.csv|json and figures/*.png.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN_DIR/report)")
    p.add_argument("--base", default="base", help="method id of the base model (base)")
    p.add_argument("--primary", default="ace", help="method id compared against every baseline (ace)")
    p.add_argument("--tiers", metavar="FILE", help="tier mapping (TOML; default acealign/config/tiers.toml)")
    p.add_argument("--boot", type=int, default=1000, metavar="N", help="bootstrap resamples for CIs (1000)")
    p.add_argument("--perm", type=int, default=2000, metavar="N", help="sign-flip permutations (2000)")
    p.add_argument("--tau", type=float, default=None, help="taxonomy tolerance on the position shift (0.02)")
    p.add_argument("--seed", type=int, default=0)
    add_json_option(p)
    p.set_defaults(func=cmd_report)


def _granularities(text: str, flag: str = "--granularity") -> tuple[int, ...]:
    try:
        gs = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise UsageError(f"{flag}: expected a list such as 1,2,3,4, got {text!r}") from None
    if not gs or any(g < 1 or g > 4 for g in gs):
        raise UsageError(f"{flag}: values must be 1..4, got {text!r}")
    return gs


def cmd_eval(args) -> int:
    from .. import evaluate as ev
    from ..splits import Split
    from ..survey import load_survey
    from . import backend_spec

    gs = _granularities(args.granularity)
    if args.min_n < 1:
        raise UsageError("--min-n must be at least 1")
    if args.references and (args.adapter or args.method_name or args.model or args.prompt):
        raise UsageError("--references takes no --model, --adapter, --prompt or --method-name")
    in_gs = None
    if args.in_sample_granularity is not None:
        if not args.in_sample:
            raise UsageError("--in-sample-granularity needs --in-sample")
        in_gs = _granularities(args.in_sample_granularity, "--in-sample-granularity")
    spec = backend_spec(args)
    model = args.model
    if model is None:
        # An adapter is evaluated on the base model it was trained on.
        cfg = ev.adapter_run_config(args.adapter) if args.adapter else None
        model = cfg["model"].get("name", "default") if cfg else "default"
    data = load_survey(args.data)
    split = Split.load(args.split, data)
    if args.references:
        results = ev.write_references(data, split, args.out, gs, args.min_n, args.seed, args.in_sample,
                                      in_gs)
    else:
        results = [
            ev.evaluate(
                model, args.adapter, args.prompt, data=data, split=split, out_dir=args.out,
                granularities=gs, min_n=args.min_n, method_name=args.method_name, device=args.device,
                dtype=args.dtype, batch_size=args.batch_size, split_path=args.split,
                scoring_mode=args.scoring_mode, backend=spec, in_sample=args.in_sample,
                in_sample_granularities=in_gs,
            )
        ]
    rows = []
    for r in results:
        rows += _score_rows(r)
    if args.json:
        print_json(rows)
    else:
        for r in results:
            print(f"{r.method}: {len(r.table)} cells -> {r.predictions}")
        print_table(rows, ["method", "country", "granularity", "cells", "score"])
    return 0


def _score_rows(result) -> list[dict]:
    import pandas as pd

    cs = pd.read_csv(result.cell_scores)
    cs = cs[cs["eval_question"].astype(bool)] if cs["eval_question"].any() else cs
    g = cs.groupby(["country", "granularity"])["score"].agg(["mean", "size"]).reset_index()
    return [
        {"method": result.method, "country": r.country, "granularity": int(r.granularity),
         "cells": int(r.size), "score": float(r.mean)}
        for r in g.itertuples()
    ]


def cmd_report(args) -> int:
    from ..analyses.taxonomy import DEFAULT_TAU
    from ..report import build_report
    from ..report.io import table_records

    if args.boot < 0 or args.perm < 1:
        raise UsageError("--boot must be >= 0 and --perm >= 1")
    tau = DEFAULT_TAU if args.tau is None else args.tau
    res = build_report(
        args.run_dir, args.out, base=args.base, primary=args.primary, tiers_path=args.tiers,
        n_boot=args.boot, n_perm=args.perm, tau=tau, seed=args.seed,
    )
    summary = res.summary
    if args.json:
        print_json({
            "html": str(res.html),
            "markdown": str(res.markdown),
            "tables": {k: str(v) for k, v in res.tables.items()},
            "figures": {k: (None if v is None else str(v)) for k, v in res.figures.items()},
            "missing_figures": res.missing_figures,
            "summary": table_records(summary),
        })
        return 0
    rows = table_records(summary.drop(columns=["p_holm_vs_primary", "p_raw_vs_primary"], errors="ignore"))
    print_table([{k: ("" if v is None else v) for k, v in r.items()} for r in rows], floatfmt="{:.3f}")
    print(f"\nreport: {res.html}\nmarkdown: {res.markdown}\ntables: {Path(res.out_dir) / 'tables'}")
    for name, why in res.missing_figures.items():
        print(f"figure {name}: no data ({why})")
    return 0
