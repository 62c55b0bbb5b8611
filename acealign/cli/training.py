"""``acealign train``: LoRA training with the ACE-Align objective or a baseline (thin over acealign.train)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import UsageError, add_data_option, add_json_option, print_json, print_table

METHOD_HELP = (
    "ace: epoch 1 anchor (Eq. 13), epoch 2 causal effect alignment (Eq. 9-12), as in the paper; "
    "anchor: anchor only; causal: causal only; ace-joint: anchor + causal in the same steps "
    "(Eq. 14, one stage); distribution: per-persona W1 matching; "
    "ace+distribution: distribution matching, then causal. Each stage of ace and "
    "ace+distribution starts a fresh AdamW and LR schedule from the previous stage's weights "
    "(--set train.stage_optimizer=keep: one optimizer for the whole run)"
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a LoRA adapter (ACE-Align or a baseline) on the training side of a split",
        description="Train a LoRA adapter on counterfactual persona pairs of a split's training "
        "side. Writes OUT/adapter/ (final), OUT/epoch-K/, OUT/config.json, OUT/log.jsonl and "
        "resumable OUT/checkpoints/. Runs unchanged under `accelerate launch`.",
    )
    p.add_argument("--method", help=f"training method ({METHOD_HELP}); default from the config (ace)")
    add_data_option(p)
    p.add_argument("--split", metavar="FILE", help="split JSON (acealign data split); required "
                   "unless resuming")
    p.add_argument("--countries", metavar="LIST", help="comma-separated training countries "
                   "(default: all training countries of the split)")
    p.add_argument("--max-pairs", type=int, metavar="N", help="seeded subsample of N training pairs")
    p.add_argument("--max-steps", type=int, metavar="N",
                   help="at most N optimizer steps in all; a multi-stage method still trains every "
                   "stage: N is split across its stages in proportion to their lengths")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs (config: 2)")
    p.add_argument("--batch-size", type=int, metavar="N", help="pairs per micro-batch (config: 8)")
    p.add_argument("--grad-accum", type=int, metavar="N", help="micro-batches per optimizer step (1)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (config: 2e-5)")
    p.add_argument("--seed", type=int, help="seed of LoRA init, data order and dropout (config: 0)")
    p.add_argument("--model", metavar="NAME_OR_DIR", help="base model: default, a hub id or a directory")
    p.add_argument("--config", metavar="FILE", help="config file (TOML or YAML), over the defaults")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set optim.scheduler=linear (repeatable)")
    p.add_argument("--eval-train", action="store_true",
                   help="score the training cells (Eq. 15) before and after training")
    p.add_argument("--eval-validation", action="store_true",
                   help="score the split's validation questions before training and after each epoch")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory, e.g. runs/NAME")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last "
                   "checkpoint (same configuration)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_option(p)
    p.set_defaults(func=run_train)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """Command-line options as ``key=value`` config overrides (applied after --config)."""
    out = []

    def put(key, value):
        if value is not None:
            out.append(f"{key}={json.dumps(value)}")

    put("method", args.method)
    put("data.dir", args.data)
    put("data.split", str(Path(args.split).resolve()) if args.split else None)
    if args.countries:
        put("data.countries", [c.strip() for c in args.countries.split(",") if c.strip()])
    put("data.max_pairs", args.max_pairs)
    put("train.max_steps", args.max_steps)
    put("train.epochs", args.epochs)
    put("train.batch_size", args.batch_size)
    put("train.grad_accum", args.grad_accum)
    put("optim.lr", args.lr)
    put("seed", args.seed)
    put("model.name", args.model)
    if args.eval_train:
        put("eval.train_cells", True)
    if args.eval_validation:
        put("eval.validation", True)
    return out + list(args.set)


def run_train(args: argparse.Namespace) -> int:
    from .. import train as T

    out = Path(args.out)
    options = overrides_from_args(args)
    if args.resume:
        saved = out / T.CONFIG_NAME
        if not saved.is_file():
            raise UsageError(f"--resume: {saved} not found (no run to continue)")
        # Keys added since the run was saved take their defaults, so that --resume then names
        # them as differences instead of failing on a missing key.
        base = T.merge_config(T.default_config(), json.loads(saved.read_text(encoding="utf-8")),
                              str(saved))
        cfg = T.resolve_config(args.config, options, base=base)
    else:
        if not args.split:
            raise UsageError("--split FILE is required (make one with `acealign data split`)")
        cfg = T.resolve_config(args.config, options)
    result = T.train(cfg, out, resume=args.resume, progress=not args.no_progress)
    if not result.main_process:  # under accelerate launch / torchrun: one summary, not N
        return 0
    summary = {
        "method": cfg["method"], "out": str(result.out), "adapter": str(result.adapter),
        "pairs": result.n_pairs, "steps": result.steps, "epochs": result.epochs_done,
        "last_loss": result.last_loss, "seconds": round(result.seconds, 1), "evals": result.evals,
        "stage_optimizer": cfg["train"]["stage_optimizer"], "stages": result.stages,
    }
    if args.json:
        print_json(summary)
        return 0
    rows = [{k: summary[k] for k in ("method", "pairs", "steps", "epochs", "last_loss", "seconds")}]
    print_table(rows, floatfmt="{:.4f}")
    for st in result.stages:
        print(f"{st['name']}: {st['objective']}, steps {st['first_step']}-"
              f"{st['first_step'] + st['steps'] - 1} (epochs {', '.join(map(str, st['epochs']))})")
    for name, by_tag in result.evals.items():
        print(f"alignment ({name} cells): " + ", ".join(f"{t} {v:.4f}" for t, v in by_tag.items()))
    print(f"adapter: {result.adapter}")
    return 0
