"""Peak resident memory and time of training and of scoring under glibc allocator settings
(acealign.memory; README, "Memory").

Training (default): the standard profile's training as `acealign run` does it, one process, per
method load the model, train, release. Scoring (``--score-prompts N``): N question-first prompts of
the scoring benchmark's workload in mixed bf16, batch 32, timed after a warm-up.

    python benchmarks/bench_memory.py [--steps 12] [--curve-every 0] [--methods anchor]
    python benchmarks/bench_memory.py --score-prompts 192
      [--mmap-threshold BYTES [--trim-threshold BYTES]]

``--mmap-threshold``: the phase's mmap threshold (training's, or scoring's with
``--score-prompts``; trim threshold 2x unless given); 0 leaves glibc's dynamic default; without
it, acealign.memory's phases. glibc reads MALLOC_MMAP_THRESHOLD_ / MALLOC_ARENA_MAX from the
environment at start, so those can be compared too (with ``--mmap-threshold 0``). Peak is the
process's high-water mark (ru_maxrss): compare settings in separate processes.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_training(args) -> dict:
    from acealign.memory import allocator_phase, release_memory
    from acealign.pipeline import PROFILES, _fresh, _profile_overrides, _toml, make_split
    from acealign.precision import resolve_dtype
    from acealign.survey import load_survey
    from acealign.train import resolve_config, train

    prof = PROFILES["standard"]
    data = load_survey(None).subset(countries=prof.countries)
    tmp = Path(tempfile.mkdtemp())
    split = make_split(data, prof, tmp / "split.json")
    for i, method in enumerate(args.methods.split(",")):  # a method may repeat (drift checks)
        cfg = resolve_config(None, [f"method={_toml(method)}", f"model.dtype={_toml(resolve_dtype('auto', 'cpu'))}",
                                    f"model.template={_toml(prof.template)}", *_profile_overrides(prof, method),
                                    f"train.max_steps={args.steps}", f"eval.curve_every={args.curve_every}",
                                    *args.set])
        cfg["data"]["split"] = str(tmp / "split.json")
        with allocator_phase("scoring"):  # loading, as in acealign run
            model, tok = _fresh("default", "cpu", "auto")
        t0 = time.perf_counter()
        train(cfg, tmp / f"{i}-{method}", data=data, split=split, model=model, tokenizer=tok, progress=False)
        seconds = time.perf_counter() - t0
        del model, tok
        release_memory()
        row = {"method": method, "train_s": round(seconds, 1), "rss_after_release_gib": round(rss_gib(), 2),
               "peak_gib": round(peak_gib(), 2)}
        print(json.dumps(row), flush=True)
    return {"steps": args.steps, "curve_every": args.curve_every, "train_s": row["train_s"]}


def bench_scoring(args) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_scoring import build_requests

    from acealign.memory import allocator_phase
    from acealign.models import load_model
    from acealign.scoring import OptionScorer

    model, tok = load_model("default", dtype="bfloat16")
    reqs, _ = build_requests(args.score_prompts, 0, tok, "grid", "paper-question-first")
    scorer = OptionScorer(model, tok, batch_size=32)
    with allocator_phase("scoring"):
        scorer.distributions(reqs[:8])  # warm-up
        t0 = time.perf_counter()
        scorer.distributions(reqs)
        seconds = time.perf_counter() - t0
    return {"prompts": len(reqs), "score_s": round(seconds, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--curve-every", type=int, default=0)
    ap.add_argument("--methods", default="anchor")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="training-config override on top of the standard profile's (repeatable)")
    ap.add_argument("--score-prompts", type=int, default=0)
    ap.add_argument("--mmap-threshold", type=int, default=None)
    ap.add_argument("--trim-threshold", type=int, default=None)
    ap.add_argument("--scoring-mmap-threshold", type=int, default=None,
                    help="training mode: the scoring phase's threshold (curve points, loading)")
    args = ap.parse_args(argv)
    if args.mmap_threshold is not None and not 0 <= args.mmap_threshold <= 32 << 20:
        ap.error("--mmap-threshold must be 0 (glibc's default) or at most 32 MiB (glibc's ceiling)")

    from acealign import memory

    phase = "scoring" if args.score_prompts else "training"
    if args.mmap_threshold:
        memory.PHASES[phase] = (args.mmap_threshold, args.trim_threshold or 2 * args.mmap_threshold)
    if args.scoring_mmap_threshold:
        memory.PHASES["scoring"] = (args.scoring_mmap_threshold, 2 * args.scoring_mmap_threshold)
    if args.mmap_threshold != 0:
        memory.manage_allocator()
    warnings.simplefilter("ignore")
    result = bench_scoring(args) if args.score_prompts else bench_training(args)
    result.update(allocator=memory.allocator_settings(), peak_gib=round(peak_gib(), 2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
