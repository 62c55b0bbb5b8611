"""``acealign prompt`` (show / score one persona prompt) and ``acealign score`` (predictions table)."""

from __future__ import annotations

import json
from pathlib import Path

from ..fileio import atomic_path
from . import (
    UsageError,
    add_backend_options,
    add_data_option,
    add_dtype_option,
    add_json_option,
    add_scoring_mode_option,
    print_json,
)


def register(sub) -> None:
    p = sub.add_parser("prompt", help="show the exact prompt of one persona x question (and score it)")
    p.add_argument("--country", required=True, help="country id, e.g. egypt")
    p.add_argument("--question", required=True, metavar="QID",
                   help="question id (e.g. Q43, v5) or full key dataset/topic/id")
    p.add_argument("--topic", help="topic, when the id repeats across topics (ISSP)")
    p.add_argument("--dataset", help="dataset (wvs7, issp), when the id repeats across datasets")
    p.add_argument("--persona", default="", metavar="ATTR=VALUE,...",
                   help="e.g. gender=Female,residence=Rural (empty: the country alone)")
    _add_prompt_options(p)
    p.add_argument("--score", action="store_true", help="also compute the model's option distribution")
    _add_model_options(p)
    add_data_option(p)
    add_json_option(p)
    p.set_defaults(func=cmd_prompt)

    s = sub.add_parser("score", help="score persona x question cells with a model -> predictions table")
    _add_model_options(s)
    add_data_option(s)
    s.add_argument("--countries", help="comma-separated country ids (default: all)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--questions-file", metavar="FILE", help="question keys to score, one per line")
    g.add_argument("--split", metavar="SPLIT_JSON", help="a split file (acealign split); see --side")
    s.add_argument("--side", choices=("train", "validation", "eval"), default="eval",
                   help="which questions (and, for a country split, countries) of --split (default eval)")
    s.add_argument("--granularity", default="1,2,3,4", help="persona granularities G (default 1,2,3,4)")
    s.add_argument("--min-n", type=int, default=10, help="minimum respondents per cell (default 10)")
    _add_prompt_options(s)
    s.add_argument("--method-name", default="base", help="value of the method column (default base)")
    s.add_argument("--out", required=True, metavar="PREDS.parquet", help="predictions table to write")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_backend_options(s)
    add_json_option(s)
    s.set_defaults(func=cmd_score)


def _add_prompt_options(p) -> None:
    from ..prompts import TEMPLATES

    p.add_argument("--template", default="paper", choices=list(TEMPLATES),
                   help="prompt template (default paper)")
    p.add_argument("--plain", action="store_true",
                   help="plain prompt for base models (default: chat template when the tokenizer has one)")


def _add_model_options(p) -> None:
    p.add_argument("--model", default="default",
                   help="'default' (SmolLM2-135M-Instruct, bundled GGUF), a .gguf file, an HF id or a directory")
    p.add_argument("--adapter", metavar="DIR", help="LoRA adapter directory (peft) on top of --model")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    add_dtype_option(p)
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code to run")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass (default 16)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    add_scoring_mode_option(p)


# -- prompt ------------------------------------------------------------------------------------
def find_question(data, qid: str, topic: str | None = None, dataset: str | None = None,
                  country: str | None = None):
    """The question with id (or full key) ``qid``; ambiguity is an error asking for --topic."""
    if qid in data.questions:
        return data.questions[qid]
    found = [q for q in data.questions.values()
             if q.question_id == qid and topic in (None, q.topic) and dataset in (None, q.dataset)]
    if len(found) > 1 and country in data.countries:
        mine = set(data.question_keys(country))
        found = [q for q in found if q.key in mine] or found
    if not found:
        raise UsageError(f"no question {qid!r}" + (f" in topic {topic!r}" if topic else "")
                         + (f" of dataset {dataset!r}" if dataset else ""))
    if len(found) > 1:
        keys = ", ".join(sorted(q.key for q in found))
        raise UsageError(f"question {qid!r} is ambiguous ({keys}): pass --topic (or --dataset)")
    return found[0]


def _set_threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def cmd_prompt(args) -> int:
    from ..models import check_model, load_model, load_tokenizer
    from ..prompts import build_prompt, option_verbalizations
    from ..scoring import OptionScorer, question_request
    from ..survey import Persona, load_survey, parse_attribute_list

    check_model(args.model)
    data = load_survey(args.data)
    q = find_question(data, args.question, args.topic, args.dataset, args.country)
    persona = Persona(args.country, **parse_attribute_list(args.persona))
    chat = False if args.plain else None
    if args.score:
        _set_threads(args)
        model, tok = load_model(args.model, args.adapter, args.device, args.dtype, args.trust_remote_code)
    else:
        model, tok = None, load_tokenizer(args.model, args.trust_remote_code)
    prompt = build_prompt(persona, q, args.template, tokenizer=tok, chat=chat)
    options = option_verbalizations(q)
    out = {"prompt": prompt, "options": options}
    if args.score:
        scorer = OptionScorer(model, tok, batch_size=1, mode=args.scoring_mode)
        # Eq. 3 over the substantive options: the others are printed but get no probability
        dist = scorer.distributions([question_request(prompt, q)])[0].tolist()
        out["distribution"] = dist
        out["scale_options"] = [options[k] for k in q.scale_indices]
    if args.json:
        print_json(out)
        return 0
    print(f"# {q.key} | {persona.key} | template {args.template}")
    print(prompt)
    print("# options")
    prob_of = dict(zip(q.scale_indices, out.get("distribution", []), strict=False))
    for k, (v, o) in enumerate(zip(options, q.options, strict=True)):
        prob = ""
        if args.score:
            prob = f"  p={prob_of[k]:.3f}" if k in prob_of else "  (not on the scale)"
        print(f"{v:>3}  {o.label.strip()}{prob}")
    return 0


# -- score -------------------------------------------------------------------------------------
def read_questions_file(path, data) -> list[str]:
    from ..survey import DataError

    p = Path(path)
    if not p.is_file():
        raise DataError("questions file not found", p)
    keys = []
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        key = line.split("#", 1)[0].strip()
        if not key:
            continue
        if key not in data.questions:
            raise DataError(f"unknown question key {key!r} (expected dataset/topic/id)", p, i)
        keys.append(key)
    return keys


def _selection(args, data):
    countries = [c.strip() for c in args.countries.split(",")] if args.countries else None
    qkeys = None
    if args.questions_file:
        qkeys = read_questions_file(args.questions_file, data)
    elif args.split:
        from ..splits import Split

        split = Split.load(args.split, data)
        qkeys = getattr(split, f"{args.side}_questions")
        if not qkeys:  # never "all questions": that would score the other sides too
            raise UsageError(f"--side {args.side}: the split {args.split} has no {args.side} questions"
                             + (" (a persona split evaluates its held-out combinations on the "
                                "training questions: use acealign eval)" if split.kind == "persona" else ""))
        side_countries = getattr(split, f"{args.side}_countries", None) or None
        if side_countries:
            countries = [c for c in side_countries if countries is None or c in countries]
    if countries:
        unknown = [c for c in countries if c not in data.countries]
        if unknown:
            raise UsageError(f"unknown countries {', '.join(unknown)} (data has {', '.join(data.countries)})")
    return countries, qkeys


def parse_granularities(text: str) -> tuple[int, ...]:
    try:
        gs = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise UsageError(f"--granularity expects comma-separated integers, got {text!r}") from None
    if not gs or any(not 0 <= g <= 4 for g in gs):
        raise UsageError(f"--granularity values must be 0..4, got {text!r}")
    return gs


RUNS_META_KEY = b"acealign.runs"


def _read_existing(out: Path):
    """Rows and run settings (per method) of an existing predictions file."""
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    meta = (table.schema.metadata or {}).get(RUNS_META_KEY)
    return table.to_pandas(), (json.loads(meta) if meta else {})


def write_predictions_file(frame, out: Path, runs: dict) -> None:
    """Write the predictions table atomically, with the run settings in the Parquet metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), RUNS_META_KEY: json.dumps(runs).encode()})
    with atomic_path(out) as tmp:
        pq.write_table(table, tmp)


def cmd_score(args) -> int:
    import pandas as pd

    from ..fingerprint import adapter_digest, describe_differences, differences
    from ..models import check_model
    from ..personas import eligible_cells
    from ..precision import precision_name
    from ..prompts import get_template
    from ..scoring import predict_cells
    from ..survey import load_survey
    from . import backend_spec

    get_template(args.template)
    gs = parse_granularities(args.granularity)
    spec = backend_spec(args)
    if spec.name != "openai":
        check_model(args.model)
    if args.adapter and spec.name == "openai":
        raise UsageError("--adapter: an OpenAI-compatible server serves its own adapters; pass the "
                         "name it serves them under as --model")
    data = load_survey(args.data)
    countries, qkeys = _selection(args, data)
    cells = eligible_cells(data, gs, args.min_n, countries, qkeys).cells
    if not cells:
        raise UsageError("no eligible cell to score (check --countries, questions, --granularity, --min-n)")
    out = Path(args.out)
    # What determines the scores: an adapter by its content, not its path.
    run = {"model": args.model, "adapter": args.adapter, "adapter_digest": adapter_digest(args.adapter),
           "template": args.template, "plain": bool(args.plain),
           "dtype": precision_name(args.dtype, args.device) if spec.name == "hf" else args.dtype,
           "scoring_mode": args.scoring_mode, **spec.settings()}
    existing, runs = (None, {})
    if out.is_file():
        existing, runs = _read_existing(out)
        saved = runs.get(args.method_name)
        if saved is not None and differences(saved, run):
            raise UsageError(f"{out} already holds method {args.method_name!r} scored with other settings "
                             f"({describe_differences(saved, run)}): pass another --method-name or --out")
    done = set()
    if existing is not None:
        mine = existing[existing["method"] == args.method_name]
        done = set(zip(mine["persona"], mine["question_key"], strict=True))
    todo = [c for c in cells if (c.persona.key, c.question_key) not in done]
    if todo:
        _set_threads(args)
        scorer = spec.build(args.model, args.adapter, device=args.device, dtype=args.dtype,
                            mode=args.scoring_mode, batch_size=args.batch_size,
                            trust_remote_code=args.trust_remote_code)
        partial = out.with_name(out.name + ".partial")
        frame = predict_cells(scorer, data, todo, template=args.template,
                              chat=False if args.plain else None, method=args.method_name,
                              partial_path=partial, progress=not args.no_progress,
                              fingerprint={"adapter": run["adapter_digest"]})
        if existing is not None:
            frame = pd.concat([existing, frame], ignore_index=True)
        runs[args.method_name] = run
        write_predictions_file(frame, out, runs)
        partial.unlink(missing_ok=True)
    summary = {"out": str(out), "cells": len(cells), "scored": len(todo), "skipped": len(cells) - len(todo)}
    if args.json:
        print_json(summary)
    else:
        print(f"{out}: {len(todo)} cells scored, {len(cells) - len(todo)} already there")
    return 0
