"""The ``acealign`` command: a thin argparse layer over the library.

Each sub-module registers its own sub-commands (``register(subparsers)``) and sets ``func`` on them.
Errors that users can cause (bad data, bad options) end as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from ..quiet import QUIET_LIBRARIES, quiet_libraries  # noqa: F401 - the CLI's public names
from ..survey import DataError

# Sub-modules, in the order of the data flow. Each defines ``register(subparsers)``.
COMMAND_MODULES = ["data", "engine", "training", "evaluation", "run"]


class UsageError(Exception):
    """A user error detected by a command (bad option combination, missing file, ...)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acealign",
        description="Measure and improve how well a language model reproduces the values of "
        "survey sub-populations (ACE-Align, arXiv 2601.12962).",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"acealign {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show the libraries' own warnings, log lines and progress bars "
                        "(weight loading, deprecations)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:  # a command group not built yet
            if e.name and e.name.startswith(__name__):
                continue
            raise
        module.register(sub)
    return parser


def add_data_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        metavar="DIR",
        help="tidy survey tables (questions.jsonl + cells.csv); default: $ACEALIGN_DATA, else the "
        "copy shipped in the package (acealign/data/surveys)",
    )


# acealign.scoring.SCORING_MODES, repeated so that building the parser does not import torch
# (tests/test_guards.py checks that they agree).
SCORING_MODES = ("whole", "literal")


# acealign.precision.DTYPE_CHOICES, kept here (not imported) so that building the parser imports
# no torch (tests/test_precision.py checks that they agree).
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
DTYPE_HELP = ("weight precision: auto (default) = bf16 matmuls with fp32 residual stream, norms and LM "
              "head where the CPU (avx512_bf16/AMX) or GPU supports bf16, else float32; bfloat16 "
              "forces that mixed scheme; float16 casts the whole model (GPU)")


def add_dtype_option(p: argparse.ArgumentParser, choices=DTYPE_CHOICES) -> None:
    p.add_argument("--dtype", default="auto", choices=choices, help=DTYPE_HELP)


def add_scoring_mode_option(p: argparse.ArgumentParser, default: str | None = "whole") -> None:
    p.add_argument(
        "--scoring-mode", choices=SCORING_MODES, default=default,
        help="option scoring: whole = the probability that the answer is exactly the option "
        "(default); literal = the paper's Eq. 2 as written (option tokens only)"
        + ("" if default else "; default: the profile's"),
    )


BACKEND_CHOICES = ("hf", "vllm", "openai")  # acealign.backends.BACKENDS, without importing it
ESTIMATOR_CHOICES = ("exact", "prompt-logprobs", "first-token", "sampling")


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """Where the option distributions come from (:mod:`acealign.backends`)."""
    g = p.add_argument_group("scoring backend")
    g.add_argument("--backend", choices=BACKEND_CHOICES, default="hf",
                   help="hf: transformers in-process (default); vllm: offline vLLM in-process (its own "
                   "environment, see the README); openai: an OpenAI-compatible server (--base-url)")
    g.add_argument("--base-url", metavar="URL", help="openai: the server's API root, e.g. http://localhost:8000/v1")
    g.add_argument("--api-key-env", metavar="NAME",
                   help="openai: environment variable holding the API key (never written anywhere)")
    g.add_argument("--estimator", choices=ESTIMATOR_CHOICES,
                   help="openai: prompt-logprobs (default; /completions with echoed log-probs), "
                   "first-token or sampling (chat API); hf and vllm: exact")
    g.add_argument("--tokenizer", metavar="MODEL",
                   help="openai prompt-logprobs: local model whose tokenizer (and chat template) builds "
                   "the prompts as token ids, e.g. default; without it the prompts are plain text")
    g.add_argument("--top-logprobs", type=int, default=20, metavar="K",
                   help="openai: alternatives per position asked for (20)")
    g.add_argument("--samples", type=int, default=50, metavar="N", help="openai sampling: answers per prompt (50)")
    g.add_argument("--concurrency", type=int, default=4, metavar="N", help="openai: requests in flight (4)")
    g.add_argument("--sampling-seed", type=int, metavar="N",
                   help="openai sampling: seed sent with each prompt's requests (default: none sent)")
    g.add_argument("--cache", default="auto", metavar="FILE",
                   help="openai: SQLite response cache (default: responses.sqlite in acealign's cache "
                   "directory; 'none': no cache)")


def backend_spec(args):
    """The :class:`acealign.backends.spec.BackendSpec` of the backend options."""
    from ..backends.spec import BackendSpec

    return BackendSpec(
        args.backend, base_url=args.base_url, api_key_env=args.api_key_env, estimator=args.estimator,
        tokenizer=args.tokenizer, top_logprobs=args.top_logprobs, samples=args.samples,
        concurrency=args.concurrency, cache=None if args.cache == "none" else args.cache,
        sampling_seed=args.sampling_seed,
    )


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False, default=_json_default)
    sys.stdout.write("\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def print_table(rows: list[dict], columns: list[str] | None = None, floatfmt: str = "{:.2f}") -> None:
    """Plain aligned text table."""
    if not rows:
        print("(no rows)")
        return
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return floatfmt.format(v)
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.verbose:
        quiet_libraries()
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from ..memory import manage_allocator

    manage_allocator()  # training without heap fragments, scoring at full speed (acealign.memory)
    try:
        result = args.func(args)
    except (DataError, UsageError, ValueError, FileNotFoundError) as e:
        if os.environ.get("ACEALIGN_DEBUG"):
            raise
        print(f"acealign {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"acealign {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: not an error of ours
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stderr at exit
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
