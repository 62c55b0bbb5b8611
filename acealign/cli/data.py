"""``acealign data``: inspect, import and split survey data; print reference scores."""

from __future__ import annotations

from . import UsageError, add_data_option, add_json_option, print_json, print_table

GRANULARITIES = (1, 2, 3, 4)


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="inspect, import and split survey data")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    q = sub.add_parser("info", help="countries, datasets, topics, questions and cells per granularity")
    add_data_option(q)
    add_json_option(q)
    _add_min_n(q)
    q.set_defaults(func=cmd_info)

    q = sub.add_parser("import", help="convert survey data into tidy tables (questions.jsonl + cells.csv)")
    q.add_argument("kind", choices=["tidy", "release", "wvs"], metavar="KIND",
                   help="tidy: a tidy-table folder; release: the ACE-Align release's data/eval folder; "
                        "wvs: a WVS wave-7 respondent CSV (needs --catalog)")
    q.add_argument("path", metavar="PATH")
    q.add_argument("--out", required=True, metavar="DIR", help="folder to write the tidy tables into")
    q.add_argument("--catalog", metavar="FILE", help="WVS question catalog (JSONL), for KIND=wvs")
    q.add_argument("--countries", metavar="LIST", help="comma-separated country slugs to keep")
    q.add_argument("--files", metavar="LIST",
                   help="KIND=release: file stems to keep, e.g. family,wvs_all (default: all)")
    add_json_option(q)
    q.set_defaults(func=cmd_import)

    q = sub.add_parser("split", help="make a question, persona or country split and save it as JSON")
    add_data_option(q)
    q.add_argument("--kind", required=True, choices=["question", "persona", "country"])
    q.add_argument("--out", required=True, metavar="FILE", help="split file to write (JSON)")
    q.add_argument("--countries", metavar="LIST", help="question/persona split: countries to include")
    q.add_argument("--eval-frac", type=float, default=0.2, help="question split: evaluation share (0.2)")
    q.add_argument("--validation-frac", type=float, default=0.0,
                   help="question split: share of the training questions kept for validation (0)")
    q.add_argument("--seed", type=int, default=0, help="question split: random seed (0)")
    q.add_argument("--heldout", action="append", metavar="COMBO",
                   help="persona split: held-out G=4 combination such as Female_College_Urban_Married "
                        "(repeatable; default: the paper's two)")
    q.add_argument("--eval-countries", metavar="LIST", help="country split: evaluation countries")
    q.add_argument("--train-countries", metavar="LIST",
                   help="country split: training countries (default: all others)")
    add_json_option(q)
    q.set_defaults(func=cmd_split)

    q = sub.add_parser("ceiling", help="noise ceiling, country-marginal (oracle) and uniform scores per country and G")
    add_data_option(q)
    add_json_option(q)
    _add_min_n(q)
    q.add_argument("--countries", metavar="LIST", help="comma-separated countries (default: all)")
    q.add_argument("--boot", type=int, default=200, metavar="N",
                   help="bootstrap resamples per cell (200); 0: the ceiling's exact expectation instead")
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_ceiling)


def _add_min_n(p) -> None:
    p.add_argument("--min-n", type=int, default=10, metavar="N",
                   help="minimum respondents for a persona-question cell to count (10)")


def _split_list(text):
    if text is None:
        return None
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise UsageError(f"empty list {text!r}")
    return items


def _load(args):
    from ..survey import load_survey

    return load_survey(args.data)


def _locate_and_load(args):
    """The data folder chosen by ``--data`` / ``$ACEALIGN_DATA`` / the package copy, and its survey."""
    from ..survey import read_tidy, resolve_data_dir

    loc = resolve_data_dir(args.data)
    return loc, read_tidy(loc.path)


# -- info ---------------------------------------------------------------------------------------
def data_summary(data, min_n: int = 10, location=None) -> dict:
    """Inventory of ``data``: per country, questions and eligible/dropped cells for G=1..4.

    ``location`` (a :class:`~acealign.survey.DataLocation`): where the data was found; adds
    ``source_kind`` ("option", "env" or "package") and ``source_label`` (e.g. "package copy
    (acealign/data/surveys)") beside ``source``, the folder read."""
    from ..personas import eligible_cells

    rows = []
    for country in data.countries:
        cells, dropped = {}, {}
        for g in GRANULARITIES:
            sel = eligible_cells(data, granularities=(g,), min_n=min_n, countries=[country])
            cells[g], dropped[g] = len(sel.cells), sel.dropped
        rows.append({
            "country": country,
            "datasets": data.datasets(country),
            "topics": data.topics(country),
            "questions": len(data.question_keys(country)),
            "g4_rows": sum(len(v) for (c, _), v in data.cells.items() if c == country),
            "cells": cells,
            "dropped": dropped,
        })
    where = {} if location is None else {"source_kind": location.origin,
                                         "source_label": location.describe()}
    return {"source": data.source, **where, "min_n": min_n, "countries": rows,
            "nonsubstantive": nonsubstantive_summary(data)}


def nonsubstantive_summary(data) -> list[dict]:
    """One row per country x question x non-substantive option: how it was marked ("label" or
    "missing-value code" when inferred, "declared" when the input said so) and the respondents
    who chose it, also as a share of all the country's respondents to the question (G=4 cells)."""
    import numpy as np

    rows = []
    keys = sorted(set(data.cells) | set(data.nonsubstantive))
    for country, qkey in keys:
        q = data.questions[qkey]
        if not q.nonscale_indices:
            continue
        scale = sum(int(c.sum()) for c in data.cells.get((country, qkey), {}).values())
        dropped = np.zeros(len(q.nonscale_indices), dtype=np.int64)
        for c in data.nonsubstantive.get((country, qkey), {}).values():
            dropped += c
        total = scale + int(dropped.sum())
        for j, i in enumerate(q.nonscale_indices):
            o = q.options[i]
            rows.append({
                "country": country, "question": qkey, "code": o.code, "label": o.label,
                "how": o.inferred or "declared", "respondents": int(dropped[j]), "total": total,
                "share": int(dropped[j]) / total if total else 0.0,
            })
    return rows


def cmd_info(args) -> int:
    if args.min_n < 1:
        raise UsageError("--min-n must be at least 1")
    loc, data = _locate_and_load(args)
    summary = data_summary(data, args.min_n, loc)
    if args.json:
        print_json(summary)
        return 0
    k = len(data.countries)
    countries = f"{k} country" if k == 1 else f"{k} countries"
    print(f"data: {loc.describe(countries)}  ({len(data.questions)} questions, {data.n_cells()} G=4 rows; "
          f"cells need n >= {args.min_n})")
    table = []
    for r in summary["countries"]:
        row = {
            "country": r["country"],
            "datasets": ",".join(r["datasets"]),
            "topics": len(r["topics"]),
            "questions": r["questions"],
            "g4_rows": r["g4_rows"],
        }
        row.update({f"G{g}": r["cells"][g] for g in GRANULARITIES})
        row["dropped"] = sum(r["dropped"].values())
        table.append(row)
    total = {"country": "all", "datasets": ",".join(sorted({d for r in summary["countries"] for d in r["datasets"]})),
             "topics": len(data.topics()), "questions": len(data.question_keys())}
    for k in ["g4_rows", *(f"G{g}" for g in GRANULARITIES), "dropped"]:
        total[k] = sum(r[k] for r in table)
    print_table([*table, total])
    print("Gk: persona-question cells with n >= min_n at granularity k; dropped: cells below it (G=1..4).")
    ns = summary["nonsubstantive"]
    if not ns:
        print("non-substantive options: none")
        return 0
    print("\nnon-substantive options (printed in prompts, left out of every distribution):")
    print_table([
        {"country": r["country"], "question": r["question"],
         "option": _short(f"{r['code']}: {r['label'].strip()}"), "how": r["how"],
         "respondents": r["respondents"], "share": f"{100 * r['share']:.1f}%"}
        for r in ns
    ])
    print("how: inferred from the label or the survey's missing-value code, or declared in the data; "
          "share: of the country's respondents to the question.")
    return 0


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# -- import ---------------------------------------------------------------------------------------
def cmd_import(args) -> int:
    from ..survey.importers import import_survey

    if args.kind == "wvs" and not args.catalog:
        raise UsageError("KIND=wvs needs --catalog FILE (JSONL of question_id, text, options)")
    if args.kind != "wvs" and args.catalog:
        raise UsageError("--catalog only applies to KIND=wvs")
    if args.files and args.kind != "release":
        raise UsageError("--files only applies to KIND=release")
    data = import_survey(args.kind, args.path, args.out, catalog=args.catalog,
                         countries=_split_list(args.countries), release_files=_split_list(args.files))
    info = {"out": str(args.out), "countries": data.countries, "questions": len(data.question_keys()),
            "g4_rows": data.n_cells()}
    if args.json:
        print_json(info)
    else:
        print(f"wrote {args.out}/questions.jsonl and cells.csv: {info['questions']} questions, "
              f"{info['g4_rows']} G=4 cells, countries {', '.join(info['countries'])}")
    return 0


# -- split ----------------------------------------------------------------------------------------
def cmd_split(args) -> int:
    from .. import splits

    data = _load(args)
    if args.kind == "question":
        split = splits.make_question_split(data, args.eval_frac, args.validation_frac, args.seed,
                                           countries=_split_list(args.countries))
    elif args.kind == "persona":
        split = splits.make_persona_split(data, args.heldout or splits.PAPER_HELDOUT,
                                          countries=_split_list(args.countries))
    else:
        if not args.eval_countries:
            raise UsageError("--kind country needs --eval-countries LIST")
        split = splits.make_country_split(data, _split_list(args.eval_countries),
                                          _split_list(args.train_countries))
    split.save(args.out)
    info = {
        "out": str(args.out), "kind": split.kind, "seed": split.seed,
        "train_questions": len(split.train_questions),
        "validation_questions": len(split.validation_questions),
        "eval_questions": len(split.eval_questions),
        "heldout_personas": split.heldout_personas,
        "train_countries": split.train_countries, "eval_countries": split.eval_countries,
    }
    if args.json:
        print_json(info)
    else:
        print(f"wrote {args.out}: {split.kind} split; questions train {info['train_questions']}, "
              f"validation {info['validation_questions']}, eval {info['eval_questions']}; "
              f"train countries {', '.join(split.train_countries)}; eval countries "
              f"{', '.join(split.eval_countries)}"
              + (f"; held out {', '.join(split.heldout_personas)}" if split.heldout_personas else ""))
    return 0


# -- ceiling --------------------------------------------------------------------------------------
CEILING_KEYS = ("country", "granularity", "cells", "ceiling", "marginal", "uniform")


def cmd_ceiling(args) -> int:
    from ..references import reference_table

    if args.boot < 0:
        raise UsageError("--boot must be 0 (exact) or a number of resamples")
    if args.min_n < 1:
        raise UsageError("--min-n must be at least 1")
    data = _load(args)
    countries = _split_list(args.countries)
    if countries:
        unknown = [c for c in countries if c not in data.countries]
        if unknown:
            raise UsageError(f"unknown countries {', '.join(unknown)} (data has {', '.join(data.countries)})")
    rows = reference_table(data, granularities=GRANULARITIES, min_n=args.min_n,
                           n_boot=args.boot or None, seed=args.seed, countries=countries)
    rows = [{k: r[k] for k in CEILING_KEYS} for r in rows]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, list(CEILING_KEYS))
        how = (f"{args.boot} multinomial resamples per cell, seed {args.seed}" if args.boot
               else "exact expectation over multinomial resamples")
        print(f"scores x100 (mean of 1 - W1/(N-1) over each country's cells with n >= {args.min_n}); "
              f"ceiling: {how}")
    return 0
