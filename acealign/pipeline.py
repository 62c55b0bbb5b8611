"""The main job: split -> train each method -> evaluate -> report, under one run directory.

Every step writes its outputs atomically and is skipped when already done, so a killed run
continues where it stopped when the same command is given again:

    RUN/run.json                    manifest (profile, slice, methods, timings)
    RUN/split.json                  the split every later step uses
    RUN/train/<method>[-s<seed>]/   training runs (adapter/, epoch-K/, checkpoints/, log.jsonl,
                                    fingerprint.json)
    RUN/eval/<method>/              predictions.parquet, cell_scores.csv, eval.json
    RUN/report/                     report.html, report.md, tables/, figures/

A step's output is reused only when its fingerprint (:mod:`acealign.fingerprint`) matches what
the step would do now: the split's (data, countries, fractions, seed, held-out combinations), a
training run's (config, split, data), an evaluation's (model, adapter content, template, scoring
mode, dtype, split, data). Anything else is an error naming the differing fields. The model, the
countries and the scoring mode are checked before anything is written.

Profiles are plain data (:data:`PROFILES`). ``quick`` is sized for a 2-core CPU in about 15
minutes; its training settings were chosen on the validation questions of the training side
(see README, "The standard profile"), never on evaluation questions. ``full`` is the
paper's protocol on all data and three seeds, meant for a GPU.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from .fileio import atomic_write_json
from .precision import precision_name, resolve_dtype
from .survey import DataError, SurveyData, load_survey

TRAINED_METHODS = ("anchor", "causal", "ace", "ace-joint", "distribution", "ace+distribution")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    countries: tuple[str, ...] | None  # None: every country of the data
    eval_frac: float = 0.2
    validation_frac: float = 0.1
    heldout: tuple[str, ...] = ("Female_College_Urban_Married", "Male_No_College_Rural_Not_Married")
    granularities: tuple[int, ...] = (1, 2, 3, 4)
    min_n: int = 10
    methods: tuple[str, ...] = TRAINED_METHODS
    # Prompt template of the base model and every trained method, and the prompt-only baseline
    # (method name -> template).
    template: str = "paper"
    prompt_baselines: tuple[tuple[str, str], ...] = (("anthropological", "anthropological"),)
    seeds: tuple[int, ...] = (0,)
    split_seed: int = 0
    # Training config overrides (dotted keys of acealign/config/train.toml).
    train: dict = field(default_factory=dict)
    eval_batch_size: int = 16
    # Option scoring of training and evaluation (acealign.scoring.SCORING_MODES): "whole" = the
    # answer is exactly the option; "literal" = the paper's Eq. 2 as written.
    scoring_mode: str = "whole"
    # Also evaluate every method on the training questions' cells (flag train_question), for the
    # in-sample level of the effect-fidelity ladder; off by default: it scores many more cells.
    in_sample_fidelity: bool = False
    # G of those in-sample cells (None: ``granularities``); the ladder's in-sample and
    # new-combination levels use G=4 pairs only, so (4,) scores a fifth of the cells.
    in_sample_granularities: tuple[int, ...] | None = None
    # Training-config overrides for one method only (method -> {dotted key: value}), on top of
    # ``train``: settings chosen per method family on validation questions.
    method_train: dict = field(default_factory=dict)


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        description=(
            "one country per resource tier of the paper: the United States (Tier 1, ISSP family "
            "module), Chile (Tier 2, the same ISSP module) and Egypt (Tier 3, WVS wave 7, 12 topics); "
            "15% of the questions held out for evaluation (stratified by topic, seed 0; a question "
            "shared by the two ISSP countries is on the same side for both) and 10% of the rest for "
            "validation, plus the paper's two held-out G=4 persona combinations; the paper's methods "
            "(anchor-only, causal-only, ACE-Align) each trained once across the three countries on "
            "64 pooled G=4 counterfactual pairs drawn from all training questions (seeded), 8 per "
            "step, 2 epochs, LoRA on the last 4 layers, lr 1e-3, causal-only stages at lr 1e-4 "
            "(chosen on the validation questions of the three countries); question-first prompts "
            "(persona after the options) so that a question's personas share one prompt prefix; "
            "CPU, bf16 matmuls where the CPU has them"
        ),
        countries=("united_states", "chile", "egypt"),
        eval_frac=0.15,
        methods=("anchor", "causal", "ace"),
        template="paper-question-first",
        prompt_baselines=(("anthropological", "anthropological-question-first"),),
        train={
            # Chosen on the validation questions of the three countries (README, "The standard
            # profile"): 64 pairs spread over all training questions beat 288 pairs from whole
            # questions at the same training time (validation S 73.3 against 70.2); lr 1e-3 reaches
            # the validation plateau fastest; the causal-only stages at 1e-4 keep validation S
            # (1e-3 lost 5.4 points) with the same validation d_CDF.
            "data.max_pairs": 64,
            "data.group_by_question": False,
            "lora.top_layers": 4,
            "optim.lr": 1e-3,
            "optim.causal_lr": 1e-4,
            "train.batch_size": 8,
            "train.checkpoint_every": 4,
        },
        eval_batch_size=32,
    ),
    # The quick profile before it covered three tiers (Egypt only, every objective); kept so that
    # the README's "What changed in the numbers" can be regenerated.
    "quick-egypt": Profile(
        name="quick-egypt",
        description=(
            "Egypt (WVS wave 7, 12 topics): 20% of its questions held out for evaluation "
            "(stratified by topic, seed 0) and 10% of the rest for validation, plus the paper's two "
            "held-out G=4 persona combinations; every method trained on 192 G=4 counterfactual pairs "
            "(whole training questions, seeded), LoRA on the last 4 layers, lr 1e-3 (chosen on the "
            "validation questions), 2 epochs; question-first prompts; CPU"
        ),
        countries=("egypt",),
        methods=("anchor", "causal", "ace", "distribution", "ace+distribution"),
        template="paper-question-first",
        prompt_baselines=(("anthropological", "anthropological-question-first"),),
        train={"data.max_pairs": 192, "data.group_by_question": True, "lora.top_layers": 4,
               "optim.lr": 1e-3, "train.batch_size": 32, "train.checkpoint_every": 4},
        eval_batch_size=32,
    ),
    # A fair CPU budget for effect learning (effect-learning issue): the quick slice, every
    # objective, pairs spread over all training questions, settings chosen on the validation
    # questions of the three countries (README, "The standard profile").
    "standard": Profile(
        name="standard",
        description=(
            "the quick profile's slice (United States, Chile, Egypt: one country per tier; 15% of "
            "the questions for evaluation, 10% of the rest for validation, the paper's two held-out "
            "G=4 combinations) with every objective (anchor-only, causal-only, ACE-Align, joint "
            "Eq. 14 with beta 100, distribution matching, ACE+distribution), one adapter per method "
            "across the three countries, each trained on the same 512 G=4 counterfactual pairs "
            "drawn from all training questions, 32 pairs per step (eight micro-batches of 4: memory), "
            "2 epochs, LoRA on the last 4 layers, lr 1e-3, causal-only stages at lr 1e-4; "
            "settings chosen on the validation questions of the three countries (README); in-sample "
            "G=4 cells scored for the effect-fidelity ladder; learning curves every 8 steps; "
            "question-first prompts; CPU, bf16 matmuls where the CPU has them"
        ),
        countries=("united_states", "chile", "egypt"),
        eval_frac=0.15,
        template="paper-question-first",
        prompt_baselines=(("anthropological", "anthropological-question-first"),),
        train={
            "data.max_pairs": 512,
            "data.group_by_question": False,
            "lora.top_layers": 4,
            "optim.lr": 1e-3,
            "optim.causal_lr": 1e-4,
            # 32 pairs per step as 8 micro-batches of 4: a step's activations, and the heap
            # fragments they leave, scale with the micro-batch (8 x 4 peaked at 4.09 GiB, 16 x 2 at
            # 4.2 GiB by the first method; README "Memory")
            "train.batch_size": 4,
            "train.grad_accum": 8,
            "train.checkpoint_every": 8,
            "eval.curve_every": 8,  # 4 took 86 min before acealign.memory's training phase slowed training
        },
        method_train={"ace-joint": {"methods.ace-joint": [{"anchor": 1.0, "causal": 100.0}]}},
        eval_batch_size=32,
        in_sample_fidelity=True,
        in_sample_granularities=(4,),
    ),
    "full": Profile(
        name="full",
        description=(
            "the paper's protocol on all data: every country, 20% of the questions held out "
            "(stratified by topic), the paper's two held-out G=4 combinations, every G=4 "
            "counterfactual pair, lr 2e-5, 2 epochs, 3 seeds; intended for a GPU (--device cuda)"
        ),
        countries=None,
        seeds=(0, 1, 2),
        train={"train.mixed_precision": "bf16"},
        eval_batch_size=64,
    ),
}


# Seconds per unit of work on the 2-core CPU this project is developed on (an Intel Xeon with
# AVX512-BF16 and AMX), measured in `acealign run --profile quick` runs: scoring one evaluation cell
# (question-first prompts share a question's prefix; persona-first ones share little), and one
# training pair for one epoch (both ends, forward and backward). Other machines differ: the
# estimate says so.
CALIBRATION = {
    "score_cell": {("question-first", "float32"): 0.064, ("question-first", "mixed-bf16"): 0.040,
                   ("persona-first", "float32"): 0.13, ("persona-first", "mixed-bf16"): 0.06},
    "train_pair_epoch": {"float32": 0.104, "mixed-bf16": 0.075},
    "per_method_overhead_s": 5.0,
    # pairs spread over all training questions (data.group_by_question = false) against whole
    # questions: no shared prompt prefixes and every pair end scored on its own. Measured in the
    # standard profile's validation runs: ~14 s per 32-pair step in mixed bf16, i.e. ~0.45 s per
    # pair and epoch against 0.075 s for whole questions (README, "The standard profile").
    "spread_pairs_factor": 6.0,
}


def estimate_wall_time(prof: Profile, data: SurveyData, split, precision: str) -> dict:
    """Expected wall seconds of a run from its numbers of cells, pairs and methods, at the
    calibrated rates of :data:`CALIBRATION` (CPU; unknown precisions count as float32)."""
    from .evaluate import evaluation_cells
    from .train import (
        pair_cells,
        resolve_config,
        stages,
        steps_per_epoch,
        total_steps,
        training_pairs,
        validation_pairs,
    )

    precision = precision if precision in CALIBRATION["train_pair_epoch"] else "float32"
    kind = "question-first" if "question-first" in prof.template else "persona-first"
    cells = len(evaluation_cells(data, split, prof.granularities, prof.min_n, prof.in_sample_fidelity,
                                 prof.in_sample_granularities))
    scored = 1 + len(prof.prompt_baselines) + len(prof.methods) * len(prof.seeds)
    runs = len(prof.methods) * len(prof.seeds)
    cell_s = CALIBRATION["score_cell"][(kind, precision)]
    plans = set()  # (pairs, epochs) of each method: its own overrides may change them
    pair_epochs = 0
    train_s = curve_s = 0.0
    for method in prof.methods:
        cfg = resolve_config(None, [f"method={_toml(method)}", *_profile_overrides(prof, method)])
        pairs, epochs = len(training_pairs(data, split, cfg)), cfg["train"]["epochs"]
        plans.add((pairs, epochs))
        work = pairs * epochs * len(prof.seeds)
        pair_epochs += work
        rate = CALIBRATION["train_pair_epoch"][precision]
        if not cfg["data"]["group_by_question"]:  # pairs of many questions share no prefix
            rate *= CALIBRATION["spread_pairs_factor"]
        train_s += work * rate
        if cfg["eval"]["curve_every"]:  # each point scores the validation pairs' unique cells
            steps = total_steps(stages(cfg, steps_per_epoch(pairs, cfg, 1)))  # the run's own plan
            points = 1 + -(-steps // cfg["eval"]["curve_every"])  # step 0, every N, the last
            curve_s += points * len(pair_cells(validation_pairs(data, split, cfg))) * cell_s * len(prof.seeds)
    score_s = cells * scored * cell_s
    overhead = (scored + runs) * CALIBRATION["per_method_overhead_s"]
    pairs, epochs = plans.pop() if len(plans) == 1 else (None, None)  # None: they differ by method
    return {"cells": cells, "scored_methods": scored, "pairs": pairs, "epochs": epochs,
            "pair_epochs": pair_epochs, "training_runs": runs, "score_s": score_s, "train_s": train_s, "curve_s": curve_s,
            "total_s": score_s + train_s + curve_s + overhead, "precision": precision, "prompts": kind}


def _training_work(est: dict) -> str:
    if est["pairs"] is None:  # methods train on different numbers of pairs or epochs
        return f"{est['pair_epochs']} pair-epochs over {est['training_runs']} training runs"
    return f"{est['pairs']} pairs x {est['epochs']} epochs x {est['training_runs']} training runs"


def _say(msg: str) -> None:
    print(f"[acealign run {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_split(data: SurveyData, profile: Profile, path: Path):
    """The run's split: a question split plus held-out G=4 persona combinations. A saved one is
    reused only when its fingerprint matches the profile and the data; a mismatch is an error."""
    from .fingerprint import require_same
    from .splits import Split, make_question_split

    split = make_question_split(
        data, eval_frac=profile.eval_frac, validation_frac=profile.validation_frac,
        seed=profile.split_seed, countries=profile.countries, heldout=profile.heldout,
    )
    if path.exists():
        saved = Split.load(path)  # leak checks; the fingerprint then names what differs
        require_same(saved.fingerprint, split.fingerprint, what="the saved split", path=path,
                     fresh=_fresh_hint(path.parent))
        return saved
    split.save(path)
    return split


def _fresh_hint(out: Path) -> str:
    return f"to start fresh, give another --out or delete {out}"


def _retrain_hint(out: Path, name: str) -> str:
    return (f"to train it again, delete {out / 'train' / name} and {out / 'eval' / name}; "
            f"or give another --out")


def run_name(method: str, seed: int, profile: Profile) -> str:
    return method if len(profile.seeds) == 1 else f"{method}-s{seed}"


def run_pipeline(
    out,
    profile: str | Profile = "quick",
    *,
    model: str = "default",
    data_dir=None,
    device: str = "cpu",
    dtype: str = "auto",
    methods=None,
    countries=None,
    scoring_mode: str | None = None,
    progress: bool = True,
    backend=None,
    isolate_training: bool = True,
) -> dict:
    """Run (or continue) the whole job into ``out``; returns the manifest.

    Everything that can be checked before the work starts is, before ``out`` is created: the
    methods, the scoring mode, the model (:func:`acealign.models.check_model`), the data and the
    countries. ``backend``: an :class:`acealign.backends.spec.BackendSpec` that scores the
    evaluation (training stays on the hf engine); default hf. ``isolate_training``: each training
    run in a fresh process (:mod:`acealign.isolate`: in one process the peak grew from run to
    run); False trains in this process."""
    from .backends.spec import BackendSpec
    from .evaluate import evaluate, write_references
    from .fingerprint import FINGERPRINT_NAME, read_fingerprint, require_same, training_fingerprint
    from .isolate import run_isolated
    from .memory import allocator_settings, manage_allocator, release_memory
    from .models import check_model
    from .prompts import get_template
    from .report.build import build_report, read_manifest, update_manifest
    from .scoring import SCORING_MODES
    from .splits import check_split
    from .train import resolve_config

    backend = backend or BackendSpec()
    prof = PROFILES[profile] if isinstance(profile, str) else profile
    if methods is not None and not methods:
        prof = replace(prof, methods=())
    if methods:
        unknown = [m for m in methods if m not in TRAINED_METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)} (choose from {', '.join(TRAINED_METHODS)})")
        prof = replace(prof, methods=tuple(methods))
    if countries:
        prof = replace(prof, countries=tuple(dict.fromkeys(countries)))
    if scoring_mode is not None:
        prof = replace(prof, scoring_mode=scoring_mode)
    if prof.scoring_mode not in SCORING_MODES:
        raise ValueError(f"unknown scoring mode {prof.scoring_mode!r} (choose from {', '.join(SCORING_MODES)})")
    for t in (prof.template, *(t for _, t in prof.prompt_baselines)):
        get_template(t)
    if backend.name == "openai" and prof.methods:
        raise ValueError("--backend openai evaluates what the server serves: it cannot score the adapters "
                         "this run trains; pass --methods none (prompt baselines only), or use --backend vllm")
    out = Path(out)
    t0 = time.perf_counter()
    manage_allocator()  # acealign.memory: training without heap fragments, scoring at full speed

    data = load_survey(data_dir)
    if prof.countries is not None:
        missing = [c for c in prof.countries if c not in data.countries]
        if missing:
            if countries:
                raise DataError(
                    f"{'country' if len(missing) == 1 else 'countries'} {', '.join(missing)} not in "
                    f"the data (it has {', '.join(data.countries)})", data.source)
            raise DataError(
                f"profile {prof.name!r} uses {', '.join(prof.countries)} but the data has "
                f"{', '.join(data.countries)}; pass --countries",
                data.source,
            )
        data = data.subset(countries=prof.countries)
    if backend.name != "openai":  # else the server's model name
        check_model(model)
    out.mkdir(parents=True, exist_ok=True)

    split_path = out / "split.json"
    split = make_split(data, prof, split_path)
    update_manifest(
        out, name=out.name, profile=prof.name,
        # a continued run keeps the time it was started; ``updated``: the latest start
        created=(read_manifest(out) or {}).get("created") or _now(),
        updated=_now(),
        model=model, data=str(data.source), split="split.json", device=device,
        methods=["base", *(m for m, _ in prof.prompt_baselines), *prof.methods],
        seed=list(prof.seeds), template=prof.template, scoring_mode=prof.scoring_mode,
        dtype=precision_name(dtype, device),
        allocator=allocator_settings(),
        scoring_backend=backend.settings() or {"backend": "hf", "estimator": "exact"},
        adapters=("one LoRA adapter per method (and seed), trained on the pooled counterfactual pairs "
                  "of all countries of the slice, as the paper trains one model across countries"),
        slice={
            "countries": data.countries,
            "train_questions": len(split.train_questions),
            "validation_questions": len(split.validation_questions),
            "eval_questions": len(split.eval_questions),
            "heldout_personas": split.heldout_personas,
            "granularities": list(prof.granularities),
            "min_n": prof.min_n,
            "max_pairs": prof.train.get("data.max_pairs", 0),
            "training": {k: v for k, v in prof.train.items()},
            **({"method_training": prof.method_train} if prof.method_train else {}),
            "description": prof.description,
        },
    )
    _say(f"profile {prof.name}: {', '.join(data.countries)}; {len(split.train_questions)} train / "
         f"{len(split.validation_questions)} validation / {len(split.eval_questions)} eval questions")
    if not device.startswith("cuda") and backend.name == "hf":  # calibrated on the hf engine
        est = estimate_wall_time(prof, data, split, precision_name(dtype, device))
        _say(f"estimated wall time ~{est['total_s'] / 60:.0f} min on a 2-core CPU like the one it was "
             f"calibrated on: {est['cells']} cells x {est['scored_methods']} scored methods "
             f"(~{est['score_s'] / 60:.0f} min), {_training_work(est)} (~{est['train_s'] / 60:.0f} min)"
             + (f", learning-curve points (~{est['curve_s'] / 60:.0f} min)" if est["curve_s"] else "")
             + f", {est['precision']}")

    eval_dir = out / "eval"
    write_references(data, split, eval_dir, prof.granularities, prof.min_n, in_sample=prof.in_sample_fidelity,
                     in_sample_granularities=prof.in_sample_granularities)
    stages = [("base", None, prof.template)] + [(m, None, t) for m, t in prof.prompt_baselines]
    adapters: list[tuple[str, Path]] = []

    # Train every method (and seed); each run resumes from its own checkpoints.
    check_split(split, data)  # again, as training starts
    total = len(prof.methods) * len(prof.seeds)
    i = 0
    child_mb = 0.0  # the largest training process's peak (this call's; 0 when none ran)
    for method in prof.methods:
        for seed in prof.seeds:
            i += 1
            name = run_name(method, seed, prof)
            run_dir = out / "train" / name
            adapter = run_dir / "adapter"
            adapters.append((name, adapter))
            overrides = [f"method={_toml(method)}", f"seed={seed}", f"model.name={_toml(model)}",
                         f"model.template={_toml(prof.template)}",
                         f"model.dtype={_toml(resolve_dtype(dtype, device))}", *_profile_overrides(prof, method)]
            cfg = resolve_config(None, overrides)
            cfg["data"]["split"] = str(split_path.resolve())
            # A run folder with anything in it is reused only for the same config, split and data.
            fp = training_fingerprint(cfg, split, data)
            fp_path = run_dir / FINGERPRINT_NAME
            if run_dir.is_dir() and any(run_dir.iterdir()):
                require_same(read_fingerprint(fp_path), fp, what=f"training run {name}", path=run_dir,
                             fresh=_retrain_hint(out, name))
            else:
                atomic_write_json(fp_path, fp)
            if (adapter / "adapter_config.json").exists():
                _say(f"[{i}/{total}] train {name}: done already")
                continue
            resume = (run_dir / "checkpoints").exists()
            _say(f"[{i}/{total}] train {name}" + (" (resuming)" if resume else ""))
            job = dict(data=data, split=split, resume=resume, progress=progress, model=model,
                       device=device, dtype=dtype)
            if isolate_training:
                child_mb = max(child_mb, run_isolated(_train_one, cfg, run_dir,
                                                      what=f"training run {name}", **job))
            else:
                _train_one(cfg, run_dir, **job)
                release_memory()

    release_memory()
    stages += [(name, adapter, prof.template) for name, adapter in adapters]
    for j, (name, adapter, prompt) in enumerate(stages, 1):
        _say(f"[{j}/{len(stages)}] evaluate {name}")
        evaluate(model, adapter, prompt, data=data, split=split, out_dir=eval_dir,
                 granularities=prof.granularities, min_n=prof.min_n, method_name=name,
                 device=device, dtype=dtype, batch_size=prof.eval_batch_size, progress=progress,
                 split_path=split_path, scoring_mode=prof.scoring_mode, backend=backend,
                 in_sample=prof.in_sample_fidelity,
                 in_sample_granularities=prof.in_sample_granularities)
        release_memory()

    _say("report")
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    manifest = update_manifest(out, wall_time_s=round(wall, 1), peak_memory_mb=round(peak_mb, 1),
                               peak_training_process_mb=round(child_mb, 1))
    report = build_report(out)
    _say(f"done in {wall / 60:.1f} min (peak memory {peak_mb:.0f} MiB"
         + (f"; training processes {child_mb:.0f} MiB" if child_mb else "") + f"): {report.html}")
    return manifest


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _train_one(cfg: dict, run_dir: Path, *, data, split, resume: bool, progress: bool, model: str,
               device: str, dtype: str) -> None:
    """One training run on freshly loaded base weights (LoRA wraps the model in place)."""
    from .train import train

    mdl, tok = _fresh(model, device, dtype)
    train(cfg, run_dir, data=data, split=split, resume=resume, progress=progress, model=mdl, tokenizer=tok)


def _fresh(model: str, device: str, dtype: str):
    """The base model loaded anew, with its tokenizer (peft wraps a model in place). Loading from
    the safetensors cache takes seconds and, unlike a kept copy, leaves one model in memory."""
    from .models import load_model

    return load_model(model, device=device, dtype=dtype)


def _profile_overrides(prof: Profile, method: str | None = None) -> list[str]:
    """The training-config overrides a profile sets for every method it trains, then those it
    sets for ``method`` alone."""
    settings = {**prof.train, **prof.method_train.get(method, {})}
    return [f"data.min_n={prof.min_n}", f"train.scoring_mode={_toml(prof.scoring_mode)}",
            *(f"{_toml_key(k)}={_toml(v)}" for k, v in settings.items())]


def _toml_key(dotted: str) -> str:
    """A dotted config key with the parts that are not bare TOML keys quoted
    (``methods.ace+distribution`` -> ``methods."ace+distribution"``)."""
    import json
    import re

    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else json.dumps(p) for p in dotted.split("."))


def _toml(v) -> str:
    """A TOML value for a ``--set`` override (inline tables for dicts: JSON objects are not TOML)."""
    import json

    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if v is None:
        raise ValueError("a profile override cannot be None (TOML has no null)")
    return json.dumps(v)
