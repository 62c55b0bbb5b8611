"""Benchmark the option-scoring engine against a plain reference scorer (same prompts, same process).

Reference (as the original ACE-Align code does): one padded forward per batch with the full
vocabulary logits at every position, then the first token of each option at the last prompt
position. It only applies when every option is a single token, so agreement is checked on those
prompts; speed is compared on all of them (the engine scores multi-token options completely,
which costs it extra work the reference skips).

A third engine, ``bf16``, runs the default scoring in mixed bf16 (``acealign.precision``: bf16
matmuls in the blocks, fp32 residual stream, norms and LM head): its speed against the same fp32
reference, and its accuracy against the fp32 engine on the same cells (per-cell |dS| of Eq. 15
against the survey, and the mean score per granularity G).

The engine runs in both scoring modes on the same prompts: ``literal`` (Eq. 2 as printed, what the
reference computes, so their agreement is checked) and ``whole`` (the default: the answer is exactly
the option, one more tree node per option for the number-boundary term). The headline ratio is the
default ``whole`` engine against the reference; ``literal`` is reported beside it.

    python benchmarks/bench_scoring.py [--prompts 200] [--batch-size 16] [--workload grid|random]
        [--template paper|paper-question-first|...] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
import warnings

import numpy as np
import torch


def matmul_gflops(n: int = 1536, seconds: float = 2.0) -> float:
    """Measured float32 GEMM rate of this process's threads: the practical peak we compare to."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def theoretical_gflops(threads: int) -> tuple[float | None, str]:
    """cores x GHz x fp32 FLOPs/cycle from /proc/cpuinfo flags (2 FMA units assumed)."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return None, "unknown CPU"
    flags = next((ln for ln in info.splitlines() if ln.startswith("flags")), "")
    mhz = [float(ln.split(":")[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")]
    name = next((ln.split(":")[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 8
    if not mhz:
        return None, name
    return threads * max(mhz) / 1000 * per_cycle, f"{name}, {per_cycle} fp32 FLOP/cycle/core"


def build_requests(n: int, seed: int, tokenizer, workload: str = "grid", template: str = "paper"):
    """N real (persona, question) prompts (eligible cells, G=1..4, n >= 10).

    ``grid``: what an evaluation runs, every persona x question of one country, taken in whole
    groups until N prompts: whole personas (all their questions) for templates that start with the
    persona, whole questions (all their personas) for question-first templates. ``random``: N
    cells drawn at random over every country, persona and question (little shared prefix).
    """
    from acealign.personas import eligible_cells
    from acealign.prompts import build_prompt
    from acealign.scoring import question_request
    from acealign.survey import load_survey

    data = load_survey()
    rng = random.Random(seed)
    if workload == "random":
        cells = rng.sample(eligible_cells(data).cells, n)
    elif workload == "grid":
        country = rng.choice(data.countries)
        by_group: dict = {}
        question_first = "question-first" in template
        for c in eligible_cells(data, countries=[country]).cells:
            by_group.setdefault(c.question_key if question_first else c.persona.key, []).append(c)
        groups = sorted(by_group)
        rng.shuffle(groups)
        cells = [c for g in groups for c in by_group[g]][:n]
    else:
        raise ValueError(f"unknown workload {workload!r}")
    reqs = []
    for c in cells:
        q = data.questions[c.question_key]
        reqs.append(question_request(build_prompt(c.persona, q, template, tokenizer=tokenizer), q))
    return reqs, cells


def cell_scores(preds, cells) -> np.ndarray:
    """Eq. 15 per cell: 1 - W1(model, survey)/(K-1)."""
    from acealign.metrics import alignment_score

    return np.array([alignment_score(p, c.counts / c.counts.sum()) for p, c in zip(preds, cells, strict=True)])


def reference_distributions(model, tok, requests, batch_size):
    """Plain scorer: padded batch, full logits everywhere, first option token only."""
    out = []
    tok.padding_side = "left"
    with torch.inference_mode():
        for s in range(0, len(requests), batch_size):
            batch = requests[s : s + batch_size]
            enc = tok([r.prompt for r in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            logits = model(**enc).logits  # (B, T, V): the LM head at every position
            logp = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
            for b, r in enumerate(batch):
                first = [tok(o, add_special_tokens=False)["input_ids"] for o in r.options]
                if any(len(f) != 1 for f in first):
                    out.append(None)
                    continue
                lp = logp[b, [f[0] for f in first]]
                if r.scale is not None:  # Eq. 3 over the substantive options only
                    lp = lp[list(r.scale)]
                out.append(torch.softmax(lp, -1).double().numpy())
    return out


def model_flops_per_token(model) -> tuple[float, float]:
    """(2 x non-embedding parameters, 2 x LM-head parameters): matmul FLOPs per token / per logit row."""
    cfg = model.config
    head = cfg.vocab_size * cfg.hidden_size
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    body = total - emb - (0 if cfg.tie_word_embeddings else head)
    return 2.0 * body, 2.0 * head


def attention_flops(cfg, prompt_len: int) -> float:
    # QK^T and AV over a causal prompt: 2 matmuls x 2 FLOPs x heads x head_dim x T^2 / 2, per layer
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers * 2 * cfg.num_attention_heads * hd * prompt_len**2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workload", choices=("grid", "random"), default="grid",
                    help="grid: whole personas of one country, as `acealign score` runs (default); "
                    "random: cells drawn at random")
    ap.add_argument("--template", default="paper",
                    help="prompt template (paper; paper-question-first is what `acealign run "
                    "--profile quick` uses)")
    ap.add_argument("--rounds", type=int, default=4,
                    help="parts the prompts are split into; engine and reference alternate on them")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from acealign.models import load_model
    from acealign.scoring import OptionScorer

    load_before = os.getloadavg()
    model, tok = load_model(args.model, dtype="float32")
    bf16_model, _ = load_model(args.model, dtype="bfloat16")
    reqs, cells = build_requests(args.prompts, args.seed, tok, args.workload, args.template)
    scorer = OptionScorer(model, tok, batch_size=args.batch_size, mode="whole")
    literal = OptionScorer(model, tok, batch_size=args.batch_size, mode="literal")
    bf16 = OptionScorer(bf16_model, tok, batch_size=args.batch_size, mode="whole")
    # warm-up (allocator, kernels) on a few prompts, not timed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in (scorer, literal, bf16):
            s.distributions(reqs[:4])
    reference_distributions(model, tok, reqs[:4], args.batch_size)

    # The cores are shared with other processes whose load varies, so the two scorers take
    # turns on consecutive parts of the prompt set (alternating which goes first) and their
    # times are summed. CPU time (this process) is reported beside wall time.
    eng, lit, ref, b16 = [], [], [], []
    t_eng = c_eng = t_ref = c_ref = t_lit = t_b16 = 0.0
    size = -(-len(reqs) // args.rounds)
    for k, s in enumerate(range(0, len(reqs), size)):
        part = reqs[s : s + size]
        turns = ("engine", "bf16", "literal", "reference")
        for who in (turns if k % 2 == 0 else turns[::-1]):
            t0, c0 = time.perf_counter(), time.process_time()
            if who == "engine":
                eng += scorer.distributions(part)
                t_eng += time.perf_counter() - t0
                c_eng += time.process_time() - c0
            elif who == "bf16":
                b16 += bf16.distributions(part)
                t_b16 += time.perf_counter() - t0
            elif who == "literal":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # prefix options: that is the point of "whole"
                    lit += literal.distributions(part)
                t_lit += time.perf_counter() - t0
            else:
                ref += reference_distributions(model, tok, part, args.batch_size)
                t_ref += time.perf_counter() - t0
                c_ref += time.process_time() - c0

    both = [(e, r) for e, r in zip(lit, ref, strict=True) if r is not None]
    max_diff = max(float(np.abs(e - r).max()) for e, r in both) if both else float("nan")
    whole_vs_literal = max(float(np.abs(e - r).max()) for e, r in zip(eng, lit, strict=True))
    s32, s16 = cell_scores(eng, cells), cell_scores(b16, cells)
    gran = np.array([c.persona.granularity for c in cells])
    by_g = {int(g): 100 * float(s16[gran == g].mean() - s32[gran == g].mean()) for g in sorted(set(gran))}
    lens = [len(scorer.encode_prompt(r.prompt)) for r in reqs]
    body, head = model_flops_per_token(model)
    useful = np.mean([body * n + head + attention_flops(model.config, n) for n in lens])
    peak = matmul_gflops()
    theo, cpu = theoretical_gflops(torch.get_num_threads())
    res = {
        "engine_pps": len(reqs) / t_eng,
        "reference_pps": len(reqs) / t_ref,
        "ratio": t_ref / t_eng,
        "bf16_pps": len(reqs) / t_b16,
        "bf16_ratio": t_ref / t_b16,
        "bf16_speedup_vs_fp32_engine": t_eng / t_b16,
        "bf16_mean_abs_dS": float(np.abs(s16 - s32).mean()),
        "bf16_max_abs_dS": float(np.abs(s16 - s32).max()),
        "bf16_max_abs_dp": max(float(np.abs(a - b).max()) for a, b in zip(eng, b16, strict=True)),
        "bf16_dS_x100_by_granularity": by_g,
        "literal_pps": len(reqs) / t_lit,
        "literal_ratio": t_ref / t_lit,
        "max_abs_diff_whole_vs_literal": whole_vs_literal,
        "cpu_time_ratio": c_ref / c_eng,
        "engine_cpu_s": c_eng,
        "reference_cpu_s": c_ref,
        "max_abs_diff": max_diff,
        "prompts": len(reqs),
        "workload": args.workload,
        "template": args.template,
        "batch_size": args.batch_size,
        "compared": len(both),
        "mean_prompt_tokens": float(np.mean(lens)),
        "gflop_per_prompt": useful / 1e9,
        "engine_gflops": useful * len(reqs) / t_eng / 1e9,
        "matmul_peak_gflops": peak,
        "theoretical_peak_gflops": theo,
        "threads": torch.get_num_threads(),
        "cpu": cpu,
        "load_avg_before": load_before[0],
        "load_avg_after": os.getloadavg()[0],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    res["fraction_of_matmul_peak"] = res["engine_gflops"] / peak
    ok = max_diff <= 1e-4
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"workload {args.workload}, template {args.template}: prompts {len(reqs)} (agreement checked on {len(both)} with single-token options), "
              f"mean {res['mean_prompt_tokens']:.0f} tokens, batch size {args.batch_size}, "
              f"{res['threads']} threads, load avg {load_before[0]:.2f} -> {res['load_avg_after']:.2f}")
        print(f"engine     {res['engine_pps']:7.2f} prompts/s (whole answers, the default)")
        print(f"bf16       {res['bf16_pps']:7.2f} prompts/s (mixed bf16, whole answers; "
              f"{res['bf16_ratio']:.2f}x the reference, {res['bf16_speedup_vs_fp32_engine']:.2f}x the fp32 engine)")
        print(f"bf16 vs fp32 engine: mean per-cell |dS| {res['bf16_mean_abs_dS']:.5f} "
              f"(max {res['bf16_max_abs_dS']:.4f}), max |dp| {res['bf16_max_abs_dp']:.4f}; "
              "dS x100 by G: " + ", ".join(f"G{g} {d:+.3f}" for g, d in by_g.items()))
        print(f"literal    {res['literal_pps']:7.2f} prompts/s (literal Eq. 2; "
              f"{res['literal_ratio']:.2f}x the reference)")
        print(f"reference  {res['reference_pps']:7.2f} prompts/s")
        print(f"ratio      {res['ratio']:7.2f}x (wall time); {res['cpu_time_ratio']:.2f}x in CPU time "
              f"({c_ref:.0f} s / {c_eng:.0f} s)")
        print(f"max |p_literal - p_reference| = {max_diff:.2e} ({'ok' if ok else 'ABOVE 1e-4'}); "
              f"max |p_whole - p_literal| = {whole_vs_literal:.3f}")
        print(f"useful work {res['gflop_per_prompt']:.2f} GFLOP/prompt -> engine {res['engine_gflops']:.1f} "
              f"GFLOP/s = {100 * res['fraction_of_matmul_peak']:.0f}% of the measured fp32 matmul peak "
              f"({peak:.1f} GFLOP/s)"
              + (f"; theoretical peak ~{theo:.0f} GFLOP/s ({cpu})" if theo else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
