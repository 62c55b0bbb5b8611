"""Peak resident memory and time of the standard profile's training, as `acealign run` does it:
one process, per method load the model, train, release. Shows where a run's memory goes.

    python benchmarks/bench_memory.py [--steps 12] [--curve-every 0] [--methods anchor]
        [--mmap-threshold BYTES]   # training's; 0: glibc's dynamic default; default: acealign.memory's

Peak is the process's high-water mark (ru_maxrss); compare settings in separate processes. glibc
reads MALLOC_MMAP_THRESHOLD_ / MALLOC_ARENA_MAX from the environment at start, so those can be
compared too (then pass --mmap-threshold 0).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
import warnings
from pathlib import Path


def rss_gib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**30


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--curve-every", type=int, default=0)
    ap.add_argument("--methods", default="anchor")
    ap.add_argument("--mmap-threshold", type=int, default=None)
    args = ap.parse_args(argv)
    if args.mmap_threshold is not None and not 0 <= args.mmap_threshold <= 32 << 20:
        ap.error("--mmap-threshold must be 0 (glibc's default) or at most 32 MiB (glibc's ceiling)")

    from acealign import memory
    from acealign.pipeline import PROFILES, _fresh, _profile_overrides, _toml, make_split
    from acealign.precision import resolve_dtype
    from acealign.survey import load_survey
    from acealign.train import resolve_config, train

    if args.mmap_threshold is not None and args.mmap_threshold > 0:
        memory.PHASES["training"] = (args.mmap_threshold, 2 * args.mmap_threshold)
    managed = args.mmap_threshold != 0 and memory.manage_allocator()
    warnings.simplefilter("ignore")
    prof = PROFILES["standard"]
    data = load_survey(None).subset(countries=prof.countries)
    tmp = Path(tempfile.mkdtemp())
    split = make_split(data, prof, tmp / "split.json")
    rows = []
    for method in args.methods.split(","):
        cfg = resolve_config(None, [f"method={_toml(method)}", f"model.dtype={_toml(resolve_dtype('auto', 'cpu'))}",
                                    f"model.template={_toml(prof.template)}", *_profile_overrides(prof, method),
                                    f"train.max_steps={args.steps}", f"eval.curve_every={args.curve_every}"])
        cfg["data"]["split"] = str(tmp / "split.json")
        model, tok = _fresh("default", "cpu", "auto")
        t0 = time.perf_counter()
        train(cfg, tmp / method, data=data, split=split, model=model, tokenizer=tok, progress=False)
        seconds = time.perf_counter() - t0
        del model, tok
        memory.release_memory()
        rows.append({"method": method, "train_s": round(seconds, 1), "rss_after_release_gib": round(rss_gib(), 2),
                     "peak_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"steps": args.steps, "curve_every": args.curve_every, "allocator": memory.allocator_settings() if managed or memory._user_setting() else "default",
                      "peak_gib": rows[-1]["peak_gib"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
