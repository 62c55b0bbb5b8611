"""Which block linear layers, kept in fp32, bring mixed bf16 closest to fp32?

Scores the same N real prompts with the fp32 engine and with variants of the mixed-bf16 scheme
(``acealign.precision``) that keep some block linear layers in fp32, and prints each variant's
mean and max per-cell |dS| (Eq. 15 against the survey) and its mean S x100 shift per G against
fp32. Only accuracy: the speed of a variant follows the share of block FLOPs it keeps in fp32
(attention projections ~25%, MLP ~75%, one block of 30 ~3%).

    python benchmarks/bf16_placement.py [--prompts 160] [--seed 1] [--template paper-question-first]
        [--variants all-bf16,first,last,...]
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
from bench_scoring import build_requests, cell_scores


def variants(n_layers: int) -> dict:
    """name -> keep(layer, kind): True keeps that linear layer in fp32."""
    last = n_layers - 1
    return {
        "all-bf16": lambda layer, kind: False,  # acealign's scheme
        "first": lambda layer, kind: layer == 0,
        "last": lambda layer, kind: layer == last,
        "first2": lambda layer, kind: layer < 2,
        "last2": lambda layer, kind: layer >= last - 1,
        "first+last": lambda layer, kind: layer in (0, last),
        "down": lambda layer, kind: kind == "down_proj",
        "attn": lambda layer, kind: kind in ("q_proj", "k_proj", "v_proj", "o_proj"),
        "v+o": lambda layer, kind: kind in ("v_proj", "o_proj"),
    }


def mixed_copy(model, keep):
    """A copy of the fp32 model in acealign's mixed bf16 (acealign.precision.apply_mixed_bf16),
    except the block linear layers ``keep(layer index, kind)`` names."""
    from acealign.precision import apply_mixed_bf16

    def keep_name(name: str) -> bool:
        parts = name.split(".")
        return keep(int(parts[parts.index("layers") + 1]), parts[-1])

    m = copy.deepcopy(model)
    apply_mixed_bf16(m, keep_fp32=keep_name)
    return m


def fp32_baseline(prompts: int, seed: int, template: str, batch_size: int = 16):
    """The fp32 default model and tokenizer, N real requests with their cells, the fp32 engine's
    cell scores and each cell's G; prints the header line."""
    from acealign.models import load_model
    from acealign.scoring import OptionScorer

    m32, tok = load_model("default", dtype="float32")
    reqs, cells = build_requests(prompts, seed, tok, "grid", template)
    s32 = cell_scores(OptionScorer(m32, tok, batch_size=batch_size).distributions(reqs), cells)
    gran = np.array([c.persona.granularity for c in cells])
    print(f"{cells[0].persona.country}, {len(cells)} cells, template {template}, seed {seed}")
    return m32, tok, reqs, cells, s32, gran


def report_variant(name: str, model, tok, reqs, cells, s32, gran, batch_size: int = 16, width: int = 11):
    """Scores ``model`` on the requests and prints its mean and max per-cell |dS| against the fp32
    scores ``s32`` and its mean S x100 shift per G."""
    from acealign.scoring import OptionScorer

    t0 = time.perf_counter()
    s = cell_scores(OptionScorer(model, tok, batch_size=batch_size).distributions(reqs), cells)
    d = np.abs(s - s32)
    by_g = " ".join(f"G{g} {100 * (s[gran == g].mean() - s32[gran == g].mean()):+.3f}" for g in sorted(set(gran)))
    print(f"{name:{width}s} mean |dS| {d.mean():.5f} (max {d.max():.4f}); S x100 shift {by_g} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=160)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--template", default="paper-question-first")
    ap.add_argument("--variants", default=None)
    args = ap.parse_args(argv)

    warnings.simplefilter("ignore")
    m32, tok, reqs, cells, s32, gran = fp32_baseline(args.prompts, args.seed, args.template)
    table = variants(m32.config.num_hidden_layers)
    for name in args.variants.split(",") if args.variants else table:
        model = mixed_copy(m32, table[name])
        report_variant(name, model, tok, reqs, cells, s32, gran)
        del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
