"""``acealign run``: the whole job (split -> train -> evaluate -> report), thin over acealign.pipeline."""

from __future__ import annotations

from . import add_backend_options, add_data_option, add_dtype_option, add_scoring_mode_option


def register(subparsers) -> None:
    from ..pipeline import PROFILES, TRAINED_METHODS

    p = subparsers.add_parser(
        "run",
        help="the main job: split, train each method, evaluate, report (resumable)",
        description="Split the data, train every method, evaluate them with the baselines and "
        "references, and build the report, all under one run directory. Give the same command "
        "again to continue a killed run.",
    )
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                   help="quick: ~15 min on a 2-core CPU (default); full: the paper's protocol, for a GPU")
    p.add_argument("--model", default="default", metavar="NAME_OR_DIR",
                   help="base model: default (SmolLM2-135M-Instruct), a hub id or a directory")
    add_data_option(p)
    p.add_argument("--countries", metavar="LIST", help="comma-separated countries (default: the profile's)")
    p.add_argument("--methods", metavar="LIST",
                   help=f"trained methods (default: {','.join(TRAINED_METHODS)}; none: only the prompt "
                   "baselines)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    add_dtype_option(p, choices=("auto", "float32", "bfloat16"))
    add_scoring_mode_option(p, default=None)
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/<profile>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_backend_options(p)
    p.set_defaults(func=cmd_run)


def _list(text):
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def cmd_run(args) -> int:
    from ..pipeline import run_pipeline
    from . import backend_spec

    out = args.out or f"runs/{args.profile}"
    run_pipeline(
        out, args.profile, model=args.model, data_dir=args.data, device=args.device,
        dtype=args.dtype, methods=[] if args.methods == "none" else _list(args.methods),
        countries=_list(args.countries), scoring_mode=args.scoring_mode, progress=not args.no_progress,
        backend=backend_spec(args),
    )
    return 0
