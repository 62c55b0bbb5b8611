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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=160)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--template", default="paper-question-first")
    ap.add_argument("--variants", default=None)
    args = ap.parse_args(argv)

    from acealign.models import load_model
    from acealign.scoring import OptionScorer

    warnings.simplefilter("ignore")
    m32, tok = load_model("default", dtype="float32")
    reqs, cells = build_requests(args.prompts, args.seed, tok, "grid", args.template)
    s32 = cell_scores(OptionScorer(m32, tok, batch_size=16).distributions(reqs), cells)
    gran = np.array([c.persona.granularity for c in cells])
    print(f"{cells[0].persona.country}, {len(cells)} cells, template {args.template}, seed {args.seed}")
    table = variants(m32.config.num_hidden_layers)
    for name in args.variants.split(",") if args.variants else table:
        model = mixed_copy(m32, table[name])
        t0 = time.perf_counter()
        s16 = cell_scores(OptionScorer(model, tok, batch_size=16).distributions(reqs), cells)
        d = np.abs(s16 - s32)
        by_g = " ".join(f"G{g} {100 * (s16[gran == g].mean() - s32[gran == g].mean()):+.3f}" for g in sorted(set(gran)))
        print(f"{name:11s} mean |dS| {d.mean():.5f} (max {d.max():.4f}); S x100 shift {by_g} "
              f"({time.perf_counter() - t0:.1f} s)", flush=True)
        del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
