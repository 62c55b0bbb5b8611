"""Benchmark the vllm backend against the hf engine on the same prompts, in one process.

Both score the same survey cells (paper template, chat prompts, whole-answer scoring, float32):
the hf engine (:class:`acealign.scoring.OptionScorer`, the reference here) and the offline vLLM
backend (:class:`acealign.backends.vllm.VLLMBackend`). Reported: prompts per second of each
(vLLM's after a warm-up pass, and its engine start-up separately), the ratio, and the agreement
(max |dp| over every option of every cell). Runs in the vLLM environment:

    .venv-vllm/bin/python benchmarks/bench_backends.py [--prompts 200] [--json]

(``if __name__ == "__main__":`` is required: vLLM spawns its engine process.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def cells_for(n: int, seed: int = 0):
    """``n`` eligible cells drawn at random (every granularity, both surveys) from the package data."""
    import random

    from acealign.personas import eligible_cells
    from acealign.survey import load_survey

    data = load_survey(None)
    cells = eligible_cells(data, (1, 2, 3, 4), 10).cells
    return data, random.Random(seed).sample(cells, min(n, len(cells)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    args = ap.parse_args()

    import numpy as np
    import torch

    from acealign.backends.vllm import VLLMBackend
    from acealign.models import load_model
    from acealign.scoring import OptionScorer, _cell_request

    data, cells = cells_for(args.prompts)
    model, tok = load_model("default", dtype="float32")
    requests = [_cell_request(data, c, "paper", tok, None) for c in cells]

    hf = OptionScorer(model, tok)
    hf.distributions(requests[:8])  # warm-up
    t0 = time.perf_counter()
    want = hf.distributions(requests)
    hf_s = time.perf_counter() - t0
    del model, hf

    t0 = time.perf_counter()
    vb = VLLMBackend("default", dtype="float32")
    start_s = time.perf_counter() - t0
    vb.score(requests[:8])  # warm-up
    t0 = time.perf_counter()
    got = [s.dist for s in vb.score(requests)]
    vllm_s = time.perf_counter() - t0
    vb.close()

    diff = max(float(np.abs(a - b).max()) for a, b in zip(want, got, strict=True))
    n = len(requests)
    out = {
        "prompts": n,
        "options_mean": float(np.mean([len(r.options) for r in requests])),
        "hf_prompts_per_s": n / hf_s,
        "vllm_prompts_per_s": n / vllm_s,
        "vllm_over_hf": hf_s / vllm_s,
        "vllm_engine_start_s": start_s,
        "max_abs_dp": diff,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "vllm_cpu_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
    }
    import vllm

    out["vllm_version"] = vllm.__version__
    print(f"{n} prompts: hf engine {out['hf_prompts_per_s']:.2f} prompts/s, vllm "
          f"{out['vllm_prompts_per_s']:.2f} prompts/s ({out['vllm_over_hf']:.2f}x the hf engine); "
          f"vLLM engine start {start_s:.0f} s; max |dp| {diff:.2e}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
