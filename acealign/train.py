"""The training recipe: counterfactual pairs -> prompts -> option log-probs -> objective -> LoRA.

One trainer serves every method (``ace``, ``anchor``, ``causal``, ``distribution``,
``ace+distribution``): a method is only a per-epoch schedule of objective weights (config
``[methods]``). Consecutive epochs with the same weights form a *stage* (:func:`stages`): ``ace``
is an anchor stage, then a causal stage. The recipe, in the order it runs (:func:`train`):

1. configuration: defaults (``acealign/config/train.toml``) < ``--config FILE`` < ``--set k=v``;
   saved as ``OUT/config.json``;
2. data: pairs from the training side of a saved split only (training questions and countries,
   held-out persona combinations excluded), checked with ``check_split``,
   ``Split.check_training`` and :func:`check_no_eval_cells` (no pair on an evaluation question,
   whatever the split kind);
3. model: base model + a fresh LoRA adapter (peft), AdamW, LR schedule (:func:`make_optimizer`);
   Accelerate provides the device, the process group and mixed precision, so one command runs on
   a CPU and under ``accelerate launch`` on several GPUs;
4. loop: stage by stage; each stage after the first starts a new AdamW and LR schedule over its
   own steps from the previous stage's weights (the paper starts epoch 2 "from the first-epoch
   checkpoint"; ``train.stage_optimizer = "keep"``: one optimizer for the whole run). Per
   optimizer step, micro-batches of pairs; both ends of each pair are scored with
   :class:`acealign.scoring.OptionScorer` (``grad=True``, ``train.scoring_mode``), the objective
   is computed by :mod:`acealign.objectives`, gradients are averaged over processes; progress
   bar and ``OUT/log.jsonl`` (one record per step, one ``"event": "stage"`` record as each stage
   starts). ``train.max_steps`` below the run's length never drops a stage: the budget is split
   across the stages in proportion to their lengths (:func:`stages`);
5. outputs: a resumable checkpoint every ``checkpoint_every`` steps (``OUT/checkpoints/``), the
   adapter after each epoch (``OUT/epoch-K/``) and at the end (``OUT/adapter/``), in peft format.

Determinism: the data order of epoch e is a permutation seeded by (seed, e); LoRA init and dropout
use torch's RNG seeded by ``seed``. A checkpoint holds the adapter, optimizer, scheduler, RNG states
and data position (a checkpoint is also written at each stage's last step), so a resumed run
repeats the uninterrupted one step for step, across stage changes too.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_write_json, atomic_write_text
from .objectives import TERMS, combined_loss, pair_terms
from .pairs import CounterfactualPair, build_pairs
from .scoring import SCORING_MODES
from .survey import DataError, Persona, SurveyData

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

DEFAULT_CONFIG = Path(__file__).parent / "config" / "train.toml"
METHODS = ("ace", "anchor", "causal", "distribution", "ace+distribution")
SCHEDULERS = ("constant", "linear", "cosine")
MIXED_PRECISION = ("no", "bf16", "fp16")
STAGE_OPTIMIZERS = ("fresh", "keep")
CONFIG_NAME = "config.json"
LOG_NAME = "log.jsonl"
EVAL_NAME = "eval.json"


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------
def default_config() -> dict:
    with open(DEFAULT_CONFIG, "rb") as f:
        return tomllib.load(f)


def read_config_file(path) -> dict:
    """A TOML (``.toml``) or YAML (``.yaml``/``.yml``) file of config keys (any subset)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("config file not found", path)
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            raise DataError(f"invalid YAML ({getattr(e, 'problem', e)})", path,
                            None if line is None else line + 1) from None
    elif path.suffix == ".toml":
        try:
            obj = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise DataError(f"invalid TOML ({e})", path) from None
    else:
        raise DataError("config file must end in .toml, .yaml or .yml", path)
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise DataError("config file must hold a table of keys", path)
    return obj


def merge_config(base: dict, extra: dict, source: str = "config") -> dict:
    """A copy of ``base`` with ``extra``'s keys set; unknown keys and wrong types are errors.

    ``[methods]`` accepts new method names (a new schedule); every other table is closed.
    """
    out = copy.deepcopy(base)
    _merge_into(out, extra, source, "")
    return out


def _merge_into(dst: dict, src: dict, source: str, prefix: str) -> None:
    for key, value in src.items():
        name = f"{prefix}{key}"
        if key not in dst:
            if prefix == "methods.":
                dst[key] = value
                continue
            raise DataError(f"unknown config key {name!r}", source)
        if isinstance(dst[key], dict):
            if not isinstance(value, dict):
                raise DataError(f"config key {name!r} must be a table", source)
            _merge_into(dst[key], value, source, name + ".")
            continue
        dst[key] = _coerce(dst[key], value, name, source)


def _coerce(default, value, name: str, source: str):
    """Check ``value`` against the default's type (ints are accepted for floats)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool) or (name == "model.chat" and value == "auto")
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str) or (name == "model.chat" and isinstance(value, bool))
    elif isinstance(default, list):
        ok = isinstance(value, list)
    else:
        ok = True
    if not ok:
        raise DataError(
            f"config key {name!r} must be {type(default).__name__}, got {value!r}", source
        )
    return value


def parse_override(item: str) -> dict:
    """``a.b=value`` -> ``{"a": {"b": value}}``, read as a TOML line (dotted keys may be quoted:
    ``methods."ace+distribution"=[...]``); a value that is not TOML is taken as a string."""
    key, eq, raw = item.partition("=")
    if not eq or not key.strip():
        raise ValueError(f"--set expects key=value, got {item!r}")
    try:
        return tomllib.loads(f"{key.strip()} = {raw.strip()}")
    except tomllib.TOMLDecodeError:
        pass
    try:
        return tomllib.loads(f"{key.strip()} = {json.dumps(raw.strip())}")
    except tomllib.TOMLDecodeError:
        raise ValueError(f"--set {item!r}: bad key {key.strip()!r}") from None


def resolve_config(config_file=None, overrides: Sequence[str] = (), base: dict | None = None) -> dict:
    """Defaults (or ``base``) < config file < ``key=value`` overrides; validated."""
    cfg = default_config() if base is None else copy.deepcopy(base)
    if config_file:
        cfg = merge_config(cfg, read_config_file(config_file), str(config_file))
    for item in overrides:
        cfg = merge_config(cfg, parse_override(item), f"--set {item}")
    validate_config(cfg)
    return cfg


def validate_config(cfg: dict) -> None:
    """Value checks that types alone do not catch; raises ValueError with the key."""
    method = cfg["method"]
    if method not in cfg["methods"]:
        raise ValueError(f"unknown method {method!r} (config has {', '.join(cfg['methods'])})")
    for name, schedule in cfg["methods"].items():
        if not isinstance(schedule, list) or not schedule:
            raise ValueError(f"methods.{name} must be a non-empty list of weight tables")
        for weights in schedule:
            if not isinstance(weights, dict) or not any(float(w) for w in weights.values()):
                raise ValueError(f"methods.{name}: every epoch needs a non-zero weight")
            unknown = set(weights) - set(TERMS)
            if unknown:
                raise ValueError(f"methods.{name}: unknown term(s) {sorted(unknown)} ({list(TERMS)})")
    t, o, lora = cfg["train"], cfg["optim"], cfg["lora"]
    positive = {"train.epochs": t["epochs"], "train.batch_size": t["batch_size"],
                "train.grad_accum": t["grad_accum"], "train.log_every": t["log_every"],
                "train.keep_checkpoints": t["keep_checkpoints"], "lora.r": lora["r"],
                "train.scorer_batch_size": t["scorer_batch_size"], "optim.lr": o["lr"]}
    for k, v in positive.items():
        if v <= 0:
            raise ValueError(f"{k} must be positive, got {v}")
    for k, v in {"train.max_steps": t["max_steps"], "train.checkpoint_every": t["checkpoint_every"],
                 "data.max_pairs": cfg["data"]["max_pairs"], "optim.warmup_steps": o["warmup_steps"],
                 "optim.max_grad_norm": o["max_grad_norm"], "lora.top_layers": lora["top_layers"]}.items():
        if v < 0:
            raise ValueError(f"{k} must be >= 0, got {v}")
    if not 0 <= lora["dropout"] < 1:
        raise ValueError(f"lora.dropout must be in [0, 1), got {lora['dropout']}")
    if o["scheduler"] not in SCHEDULERS:
        raise ValueError(f"optim.scheduler must be one of {', '.join(SCHEDULERS)}")
    if t["mixed_precision"] not in MIXED_PRECISION:
        raise ValueError(f"train.mixed_precision must be one of {', '.join(MIXED_PRECISION)}")
    if t["stage_optimizer"] not in STAGE_OPTIMIZERS:
        raise ValueError(f"train.stage_optimizer must be one of {', '.join(STAGE_OPTIMIZERS)}, "
                         f"got {t['stage_optimizer']!r}")
    if t["scoring_mode"] not in SCORING_MODES:
        raise ValueError(f"train.scoring_mode must be one of {', '.join(SCORING_MODES)}, "
                         f"got {t['scoring_mode']!r}")
    runs = stage_runs(cfg)
    if t["max_steps"] and t["max_steps"] < len(runs):
        raise ValueError(
            f"train.max_steps={t['max_steps']} is fewer than the {len(runs)} stages of method "
            f"{method!r} ({', '.join(objective_name(w) for w, _, _ in runs)}): every stage needs "
            f"at least one step")
    if cfg["model"]["chat"] not in ("auto", True, False):
        raise ValueError(f"model.chat must be true, false or \"auto\", got {cfg['model']['chat']!r}")
    if not 1 <= cfg["data"]["context_granularity"] <= 4:
        raise ValueError("data.context_granularity must be 1..4")


def epoch_weights(cfg: dict, epoch: int) -> dict[str, float]:
    """Objective weights of ``epoch`` (0-based) for the configured method; the last entry repeats."""
    schedule = cfg["methods"][cfg["method"]]
    weights = schedule[min(epoch, len(schedule) - 1)]
    return {k: float(v) for k, v in weights.items() if float(v) != 0.0}


def objective_name(weights: dict[str, float]) -> str:
    """``anchor``, ``causal``, ``0.5*anchor+causal``: the weighted terms of Eq. 14 in words."""
    return "+".join(k if w == 1.0 else f"{w:g}*{k}" for k, w in weights.items())


@dataclass
class Stage:
    """A run of consecutive epochs with the same objective weights, trained as one unit: with
    ``train.stage_optimizer = "fresh"`` it gets its own AdamW and LR schedule over ``steps``."""

    index: int                  # 0-based
    weights: dict[str, float]
    first_epoch: int            # 0-based
    epochs: int
    first_step: int             # optimizer steps of the run before this stage
    steps: int                  # its optimizer steps (after a max_steps budget)

    @property
    def name(self) -> str:
        return f"stage-{self.index + 1}"

    @property
    def objective(self) -> str:
        return objective_name(self.weights)

    def position(self, k: int, steps_per_epoch: int) -> tuple[int, int]:
        """(epoch, step in that epoch), both 0-based, of this stage's ``k``-th step."""
        return self.first_epoch + k // steps_per_epoch, k % steps_per_epoch

    def record(self) -> dict:
        """The stage as the log and the run summary show it (steps and epochs 1-based)."""
        return {"stage": self.index + 1, "name": self.name, "objective": self.objective,
                "weights": dict(self.weights), "first_step": self.first_step + 1, "steps": self.steps,
                "epochs": list(range(self.first_epoch + 1, self.first_epoch + self.epochs + 1))}


def stage_runs(cfg: dict) -> list[tuple[dict[str, float], int, int]]:
    """(weights, first epoch, number of epochs) of each run of equal per-epoch weights."""
    runs: list[tuple[dict[str, float], int, int]] = []
    for e in range(cfg["train"]["epochs"]):
        w = epoch_weights(cfg, e)
        if runs and runs[-1][0] == w:
            runs[-1] = (w, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((w, e, 1))
    return runs


def stages(cfg: dict, steps_per_epoch: int) -> list[Stage]:
    """The run's stage schedule: one :class:`Stage` per run of epochs with equal weights.

    ``train.max_steps`` below the full length never drops a stage: the budget is split across the
    stages in proportion to their full lengths (each gets one step, the rest by largest remainder,
    ties to the earlier stage); a truncated stage trains the first steps of its epochs. A budget
    smaller than the number of stages is a ValueError.
    """
    runs = stage_runs(cfg)
    full = [n * steps_per_epoch for _, _, n in runs]
    budget = full
    max_steps = cfg["train"]["max_steps"]
    if max_steps and max_steps < sum(full):
        if max_steps < len(runs):
            raise ValueError(f"train.max_steps={max_steps} is fewer than the {len(runs)} stages "
                             f"of method {cfg['method']!r}: every stage needs at least one step")
        rest, spare = max_steps - len(runs), [f - 1 for f in full]
        quota = [rest * x / sum(spare) for x in spare]
        share = [math.floor(q) for q in quota]
        by_remainder = sorted(range(len(runs)), key=lambda i: (share[i] - quota[i], i))
        for i in by_remainder[: rest - sum(share)]:
            share[i] += 1
        budget = [1 + x for x in share]
    out, first = [], 0
    for i, ((w, e0, n), steps) in enumerate(zip(runs, budget, strict=True)):
        out.append(Stage(i, w, e0, n, first, steps))
        first += steps
    return out


def stage_at(plan: Sequence[Stage], step: int) -> Stage:
    """The stage that runs the run's ``step``-th optimizer step (0-based; past the end: the last)."""
    for st in plan:
        if step < st.first_step + st.steps:
            return st
    return plan[-1]


def epochs_completed(plan: Sequence[Stage], done: int, steps_per_epoch: int) -> int:
    """Epochs all of whose steps ran, after ``done`` optimizer steps (a cut stage's last is not)."""
    return sum(min(max(done - st.first_step, 0), st.steps) // steps_per_epoch for st in plan)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def training_countries(split, countries: Sequence[str]) -> list[str]:
    """Requested countries (default: all of the split's training countries), checked."""
    from .splits import LeakError

    if not countries:
        return list(split.train_countries)
    outside = [c for c in countries if c not in split.train_countries]
    if outside:
        raise LeakError(
            f"countries {', '.join(outside)} are not training countries of the split "
            f"(training countries: {', '.join(split.train_countries) or 'none'})"
        )
    return list(countries)


def split_pairs(
    data: SurveyData, split, question_keys, countries, context_granularity=4, min_n=10
) -> list[CounterfactualPair]:
    """Pairs on ``question_keys`` whose ends avoid the split's held-out persona combinations."""
    heldout = [p for c in countries for p in split.heldout_in(c)]
    return build_pairs(
        data, context_granularity=context_granularity, min_n=min_n, countries=countries,
        question_keys=question_keys, exclude_personas=heldout,
    )


def training_pairs(data: SurveyData, split, cfg: dict) -> list[CounterfactualPair]:
    """The training pairs of a run: training side of ``split`` only, then a seeded subsample.

    Raises ``LeakError`` if any pair end is an evaluation/validation cell or covers a held-out
    persona combination, and ValueError if nothing is left.
    """
    from .splits import check_split

    check_split(split, data)  # the split as a whole (also done by Split.load): overlaps, data
    d = cfg["data"]
    countries = training_countries(split, d["countries"])
    pairs = split_pairs(data, split, split.train_questions, countries,
                        d["context_granularity"], d["min_n"])
    split.check_training(pairs)
    check_no_eval_cells(split, pairs)
    if not pairs:
        raise ValueError(
            f"no training pairs: no question of the split's training side has both ends with "
            f">= {d['min_n']} respondents in {', '.join(countries)}"
        )
    return subsample(pairs, d["max_pairs"], cfg["seed"], by_question=d["group_by_question"])


def check_no_eval_cells(split, pairs: Sequence[CounterfactualPair]) -> None:
    """Refuse pairs on an evaluation question (in an evaluation country) or a validation question.

    Whatever the split kind: held-out persona combinations do not make the other personas' cells
    on an evaluation question trainable (``Split.is_eval_cell`` counts only the held-out personas
    there). A second line of defence behind ``check_split`` and ``Split.check_training``, in
    case a split lists a question on two sides (persona splits of older versions did).
    """
    from .splits import LeakError

    val, ev, ev_c = (set(split.validation_questions), set(split.eval_questions),
                     set(split.eval_countries))
    bad = [p for p in pairs if p.question_key in val
           or (p.question_key in ev and (p.s1.country in ev_c or p.s0.country in ev_c))]
    if bad:
        p = bad[0]
        side = "a validation" if p.question_key in val else f"an evaluation ({p.s1.country})"
        raise LeakError(
            f"{len(bad)} of {len(pairs)} training pairs touch evaluation cells or validation "
            f"questions of the {split.kind} split (first: {p.question_key}, {side} question that "
            f"the split also lists for training): refusing to train on them")


def subsample(pairs: list, n: int, seed: int, by_question: bool = False) -> list:
    """``n`` pairs chosen with a seeded RNG, kept in their original order (all when n=0 or more).

    ``by_question``: take whole (country, question) groups in a seeded order (the last one cut),
    so that pair ends shared between pairs can be scored once per micro-batch.
    """
    if n <= 0 or n >= len(pairs):
        return list(pairs)
    rng = np.random.default_rng([seed, 7])
    if not by_question:
        idx = np.sort(rng.choice(len(pairs), size=n, replace=False))
        return [pairs[i] for i in idx]
    groups = question_groups(pairs)
    chosen: list[int] = []
    for g in rng.permutation(len(groups)):
        chosen += groups[g][: n - len(chosen)]
        if len(chosen) == n:
            break
    return [pairs[i] for i in sorted(chosen)]


def question_groups(pairs: Sequence[CounterfactualPair]) -> list[list[int]]:
    """Indices of the pairs of each (country, question), in first-seen order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault((p.s1.country, p.question_key), []).append(i)
    return list(groups.values())


def validation_pairs(data: SurveyData, split, cfg: dict) -> list[CounterfactualPair]:
    """Pairs on the split's validation questions, same countries and persona rule as training."""
    d = cfg["data"]
    countries = training_countries(split, d["countries"])
    return split_pairs(data, split, split.validation_questions, countries,
                       d["context_granularity"], d["min_n"])


def pair_cells(pairs: Sequence[CounterfactualPair]) -> list[tuple[Persona, str, np.ndarray]]:
    """Unique (persona, question, counts) cells at the ends of ``pairs``, in first-seen order."""
    seen: dict[tuple[Persona, str], np.ndarray] = {}
    for p in pairs:
        seen.setdefault((p.s1, p.question_key), p.counts1)
        seen.setdefault((p.s0, p.question_key), p.counts0)
    return [(s, q, c) for (s, q), c in seen.items()]


def pairs_digest(pairs: Sequence[CounterfactualPair]) -> str:
    """A short hash of the pair list, to check that a resumed run trains on the same pairs."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(f"{p.attribute}|{p.s1.key}|{p.s0.key}|{p.question_key}\n".encode())
    return h.hexdigest()[:16]


def epoch_order(n: int, seed: int, epoch: int, groups: list[list[int]] | None = None) -> list[int]:
    """The order of the ``n`` pairs in ``epoch``: a permutation seeded by (seed, epoch).

    With ``groups`` (:func:`question_groups`), the groups are shuffled and each group's pairs are
    shuffled, but a group's pairs stay together.
    """
    rng = np.random.default_rng([seed, epoch])
    if groups is None:
        return rng.permutation(n).tolist()
    out: list[int] = []
    for g in rng.permutation(len(groups)):
        out += [groups[g][i] for i in rng.permutation(len(groups[g]))]
    return out


def step_batches(order: list[int], batch_size: int, grad_accum: int, n_proc: int) -> list[list[list[int]]]:
    """Group an epoch order into optimizer steps of ``grad_accum * n_proc`` micro-batches."""
    micro = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    per_step = grad_accum * n_proc
    return [micro[i:i + per_step] for i in range(0, len(micro), per_step)]


# ---------------------------------------------------------------------------------------------
# Model, optimizer, schedule
# ---------------------------------------------------------------------------------------------
def lora_config(cfg: dict, model=None):
    from peft import LoraConfig

    lo = cfg["lora"]
    layers = None
    if lo["top_layers"]:
        n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if not isinstance(n, int):
            raise ValueError("lora.top_layers needs a model config with num_hidden_layers")
        layers = list(range(max(0, n - lo["top_layers"]), n))
    return LoraConfig(
        r=lo["r"], lora_alpha=lo["alpha"], lora_dropout=lo["dropout"],
        target_modules=list(lo["target_modules"]), layers_to_transform=layers, bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(model, cfg: dict):
    """Wrap ``model`` with a fresh LoRA adapter; a clear error if no target module matches."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(cfg, model))
    except ValueError as e:
        raise ValueError(f"lora.target_modules {cfg['lora']['target_modules']}: {e}") from None


def make_optimizer(params, ocfg: dict, n_steps: int, accelerator=None):
    """A new AdamW and its LR schedule (warm-up, then decay over ``n_steps``): the run's start
    and, with ``train.stage_optimizer = "fresh"``, every stage change. ``accelerator``: prepare
    the optimizer with it (device placement, mixed-precision loss scaling)."""
    optimizer = torch.optim.AdamW(params, lr=ocfg["lr"], betas=tuple(ocfg["betas"]),
                                  eps=ocfg["eps"], weight_decay=ocfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(ocfg["scheduler"], ocfg["warmup_steps"], n_steps))
    if accelerator is not None:
        # Forget the previous stage's optimizer: fp16 gradient unscaling goes over every
        # optimizer Accelerate holds, and would unscale the shared gradients twice.
        accelerator.free_memory()
        optimizer = accelerator.prepare(optimizer)
    return optimizer, scheduler


def lr_lambda(scheduler: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the base LR after ``step`` optimizer steps: linear warm-up, then decay."""

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if scheduler == "constant" or total <= warmup:
            return 1.0
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        if scheduler == "linear":
            return 1.0 - frac
        return 0.5 * (1.0 + math.cos(math.pi * frac))

    return f


# ---------------------------------------------------------------------------------------------
# Files: atomic writes, checkpoints
# ---------------------------------------------------------------------------------------------
def write_json_atomic(path: Path, obj) -> None:
    atomic_write_json(path, obj, indent=2)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished temp directory into place (the old one, if any, is removed first)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_adapter(model, directory: Path) -> None:
    """The adapter in standard peft format (adapter_config.json + adapter_model.safetensors)."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        _replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


@dataclass
class TrainState:
    """Where a run stands: ``global_step`` optimizer steps done; ``epoch``/``step_in_epoch``: the
    position just after the last one (the next step's position comes from the stage plan,
    :func:`stages`, since a stage cut by ``max_steps`` leaves its epoch early)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    evals: dict = field(default_factory=dict)


def save_checkpoint(out: Path, model, optimizer, scheduler, state: TrainState, digest: str,
                    accelerator, keep: int) -> Path:
    """Write ``OUT/checkpoints/step-N`` atomically, then point ``OUT/checkpoints/latest`` at it."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    root = out / "checkpoints"
    final = root / f"step-{state.global_step:08d}"
    rank = accelerator.process_index
    # Every process writes its own RNG state into the main process' temp directory.
    tmp = root / f".step-{state.global_step:08d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
    if accelerator.is_main_process:
        weights = {k: v.detach().cpu().contiguous()
                   for k, v in get_peft_model_state_dict(model).items()}
        save_file(weights, str(tmp / "adapter_model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        write_json_atomic(tmp / "state.json", {
            "epoch": state.epoch, "step_in_epoch": state.step_in_epoch,
            "global_step": state.global_step, "evals": state.evals,
            "pairs_digest": digest, "num_processes": accelerator.num_processes,
        })
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _replace_dir(tmp, final)
        write_json_atomic(root / "latest.json", {"checkpoint": final.name})
        done = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / "checkpoints" / "latest.json"
    if not pointer.is_file():
        return None
    path = out / "checkpoints" / json.loads(pointer.read_text())["checkpoint"]
    if not (path / "state.json").is_file():
        raise DataError("checkpoint named by latest.json is missing or incomplete", path)
    return path


def checkpoint_step(path: Path) -> int:
    """Optimizer steps done when the checkpoint at ``path`` was written."""
    return int(json.loads((path / "state.json").read_text())["global_step"])


def load_checkpoint(path: Path, model, optimizer, scheduler, digest: str, accelerator) -> TrainState:
    """Restore adapter weights, optimizer, scheduler and this process' RNG state."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    meta = json.loads((path / "state.json").read_text())
    if meta["pairs_digest"] != digest:
        raise DataError("checkpoint was trained on other pairs (data, split or config changed)", path)
    if meta["num_processes"] != accelerator.num_processes:
        raise DataError(
            f"checkpoint was written by {meta['num_processes']} processes, this run has "
            f"{accelerator.num_processes}: the data order would differ", path)
    weights = load_file(str(path / "adapter_model.safetensors"), device=str(accelerator.device))
    result = set_peft_model_state_dict(model, weights)
    if getattr(result, "unexpected_keys", None):
        raise DataError(f"checkpoint adapter has unexpected keys {result.unexpected_keys[:3]}", path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng_file = path / f"rng-{accelerator.process_index}.pt"
    set_rng_state(torch.load(rng_file, weights_only=True))
    return TrainState(meta["epoch"], meta["step_in_epoch"], meta["global_step"], meta["evals"])


def truncate_log(path: Path, last_step: int) -> None:
    """Drop log records written after the checkpoint a run resumes from."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


# ---------------------------------------------------------------------------------------------
# Scoring helpers
# ---------------------------------------------------------------------------------------------
def make_requests(data: SurveyData, cells, tokenizer, cfg: dict) -> list:
    """One :class:`ScoringRequest` per (persona, question) of ``cells``."""
    from .prompts import build_prompt
    from .scoring import question_request

    chat = {"auto": None, True: True, False: False}[cfg["model"]["chat"]]
    out = []
    for persona, qkey in cells:
        q = data.questions[qkey]
        prompt = build_prompt(persona, q, template=cfg["model"]["template"], tokenizer=tokenizer,
                              chat=chat)
        # option numbers, renormalized over the substantive options (the scale of the counts)
        out.append(question_request(prompt, q))
    return out


def alignment_on_cells(scorer, requests, counts) -> float:
    """Eq. 15 (mean alignment score) of the model's distributions against the survey's."""
    from .metrics import mean_alignment_score

    preds = scorer.distributions(requests)
    return mean_alignment_score(preds, [np.asarray(c, float) / np.sum(c) for c in counts])


def score_run_cells(run_dir, which: str = "train", adapter: str | None = "adapter",
                    data: SurveyData | None = None, batch_size: int = 16) -> tuple[float, int]:
    """Eq. 15 alignment of a finished run's ``train`` (pair ends) or ``validation`` cells.

    Rebuilds the cells from ``run_dir/config.json`` and scores them with the base model plus
    ``run_dir/adapter`` (``adapter=None``: the base model). Returns (score, number of cells);
    the same numbers as ``--eval-train`` / ``--eval-validation`` give during a run.
    """
    from .models import load_model
    from .scoring import OptionScorer
    from .splits import Split
    from .survey import load_survey

    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    data = data if data is not None else load_survey(cfg["data"]["dir"] or None)
    split = Split.load(cfg["data"]["split"])
    if which == "train":
        pairs = training_pairs(data, split, cfg)
    elif which == "validation":
        pairs = validation_pairs(data, split, cfg)
    else:
        raise ValueError(f"which must be 'train' or 'validation', got {which!r}")
    model, tok = load_model(cfg["model"]["name"], dtype=cfg["model"]["dtype"],
                            adapter=None if adapter is None else str(run_dir / adapter))
    cells = pair_cells(pairs)
    reqs = make_requests(data, [(s, q) for s, q, _ in cells], tok, cfg)
    with torch.no_grad():
        # Runs saved before train.scoring_mode existed scored whole answers.
        mode = cfg["train"].get("scoring_mode", "whole")
        score = alignment_on_cells(OptionScorer(model, tok, batch_size=batch_size, mode=mode),
                                   reqs, [c for _, _, c in cells])
    return score, len(cells)


# ---------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    out: Path
    adapter: Path
    n_pairs: int
    steps: int
    epochs_done: int
    last_loss: float | None
    evals: dict
    seconds: float
    main_process: bool = True  # False on the other processes of a multi-process run
    stages: list[dict] = field(default_factory=list)  # Stage.record() of each stage


def train(
    cfg: dict,
    out,
    *,
    data: SurveyData | None = None,
    split=None,
    resume: bool = False,
    progress: bool = True,
    model=None,
    tokenizer=None,
    stop_after: int | None = None,
) -> TrainResult:
    """Run (or resume) one training run into directory ``out``; see the module docstring.

    ``cfg``: a resolved configuration (:func:`resolve_config`). ``data``/``split``: already loaded
    objects (default: read from ``cfg["data"]["dir"]``/``cfg["data"]["split"]``). ``model``/
    ``tokenizer``: a base model to wrap instead of loading ``cfg["model"]["name"]``.
    ``stop_after``: return after this many optimizer steps of *this call*, without the final
    adapter (for tests and time-boxed runs; continue with ``resume=True``).
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from .scoring import OptionScorer
    from .splits import Split
    from .survey import load_survey

    t0 = time.perf_counter()
    validate_config(cfg)
    out = Path(out)
    seed, tcfg, ocfg = cfg["seed"], cfg["train"], cfg["optim"]

    # 1. Configuration: a resumed run must be the same run.
    config_path = out / CONFIG_NAME
    if resume:
        if not config_path.is_file():
            raise DataError("nothing to resume: no config.json", out)
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        diff = config_differences(saved, cfg)
        if diff:
            raise ValueError(f"--resume with a different configuration ({', '.join(diff[:5])})")
    elif (out / "checkpoints").exists() or (out / "adapter").exists():
        raise ValueError(f"{out} already holds a run: pass --resume to continue it, or another --out")

    # cpu=True without a GPU: Accelerate then forms a gloo process group under a launcher
    # (accelerate launch / torchrun), so multi-process CPU runs work as multi-GPU ones do.
    accelerator = Accelerator(mixed_precision=tcfg["mixed_precision"],
                              cpu=not torch.cuda.is_available())
    main = accelerator.is_main_process

    # 2. Data: the training side of the split only.
    if data is None:
        data = load_survey(cfg["data"]["dir"] or None)
    if split is None:
        if not cfg["data"]["split"]:
            raise ValueError("no split given: pass --split FILE (see `acealign split`)")
        split = Split.load(cfg["data"]["split"])
    pairs = training_pairs(data, split, cfg)
    digest = pairs_digest(pairs)
    if main:
        write_json_atomic(config_path, cfg)

    # 3. Model + LoRA; seeded so that the adapter's initial weights depend on the seed only.
    torch.manual_seed(seed)
    random.seed(seed)
    if model is None:
        from .models import load_model

        model, tokenizer = load_model(cfg["model"]["name"], dtype=cfg["model"]["dtype"])
    model = add_lora(model, cfg).to(accelerator.device)
    # Dropout masks: a different stream per process (rank 0 keeps the plain seed).
    torch.manual_seed(seed + 1_000_003 * accelerator.process_index)
    params = [p for p in model.parameters() if p.requires_grad]
    n_proc = accelerator.num_processes
    steps_per_epoch = len(step_batches(list(range(len(pairs))), tcfg["batch_size"],
                                       tcfg["grad_accum"], n_proc))
    plan = stages(cfg, steps_per_epoch)
    total_steps = plan[-1].first_step + plan[-1].steps
    fresh = tcfg["stage_optimizer"] == "fresh"

    def new_optimizer(stage: Stage):
        # "keep": one optimizer and one schedule over the whole run.
        return make_optimizer(params, ocfg, stage.steps if fresh else total_steps, accelerator)

    # The model is not wrapped in DDP: gradients of the (small) adapter are averaged explicitly
    # below, so the scorer can call the peft model directly. Accelerate wraps the optimizer for
    # mixed-precision loss scaling and device placement.
    optimizer, scheduler = new_optimizer(plan[0])
    scorer = OptionScorer(model, tokenizer, batch_size=tcfg["scorer_batch_size"],
                          mode=tcfg["scoring_mode"])

    requests = make_requests(data, [(p.s1, p.question_key) for p in pairs]
                             + [(p.s0, p.question_key) for p in pairs], tokenizer, cfg)
    req1, req0 = requests[: len(pairs)], requests[len(pairs):]

    state = TrainState()
    log_path = out / LOG_NAME
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise DataError("nothing to resume: no checkpoint yet (start the run again)", out)
        # The checkpoint's optimizer belongs to the stage of its last step: rebuild that one
        # (the schedule's length is not part of its state), then load into it.
        done = checkpoint_step(ckpt)
        if fresh and done > 0 and stage_at(plan, done - 1).index > 0:
            optimizer, scheduler = new_optimizer(stage_at(plan, done - 1))
        state = load_checkpoint(ckpt, model, optimizer, scheduler, digest, accelerator)
        if main:
            truncate_log(log_path, state.global_step)
    elif main:
        out.mkdir(parents=True, exist_ok=True)
        log_path.unlink(missing_ok=True)

    # Optional evaluations (forward passes only: they consume no RNG, so they do not change
    # the trained adapter).
    eval_sets = _eval_sets(data, split, pairs, cfg, tokenizer)

    def evaluate(tag: str) -> None:
        if not eval_sets or not main:
            return
        model.eval()
        for name, (reqs, counts) in eval_sets.items():
            with torch.no_grad(), accelerator.autocast():
                score = alignment_on_cells(scorer, reqs, counts)
            state.evals.setdefault(name, {})[tag] = score
            _append_log(log_path, {"step": state.global_step, "epoch": state.epoch + 1,
                                   "event": "eval", "cells": name, "n_cells": len(reqs),
                                   "at": tag, "alignment": score})
        model.train()
        write_json_atomic(out / EVAL_NAME, state.evals)

    def result() -> TrainResult:
        return TrainResult(out, out / "adapter", len(pairs), state.global_step,
                           epochs_completed(plan, state.global_step, steps_per_epoch), last_loss,
                           state.evals, time.perf_counter() - t0, main,
                           [st.record() for st in plan])

    if not resume:
        evaluate("before")

    # 4. The loop: the plan fixes the stage, epoch and batch of every step, so a resumed run
    # needs only the number of steps done.
    model.train()
    bar = tqdm(total=total_steps, initial=state.global_step, disable=not (progress and main),
               desc=f"train {cfg['method']}", unit="step", dynamic_ncols=True)
    groups = question_groups(pairs) if cfg["data"]["group_by_question"] else None
    running: dict[str, float] = {}
    last_loss = None
    steps_this_call = 0
    steps, steps_epoch = [], None
    while state.global_step < total_steps:
        stage = stage_at(plan, state.global_step)
        k = state.global_step - stage.first_step
        if k == 0:
            if fresh and stage.index > 0:  # a new stage starts clean from the current weights
                optimizer, scheduler = new_optimizer(stage)
            if main:
                _append_log(log_path, {"step": stage.first_step + 1, "epoch": stage.first_epoch + 1,
                                       "event": "stage", **stage.record(),
                                       "optimizer": "fresh" if fresh or stage.index == 0 else "kept"})
        epoch, pos = stage.position(k, steps_per_epoch)
        if epoch != steps_epoch:
            steps = step_batches(epoch_order(len(pairs), seed, epoch, groups), tcfg["batch_size"],
                                 tcfg["grad_accum"], n_proc)
            steps_epoch = epoch
        mine = steps[pos][accelerator.process_index::n_proc]
        lr = scheduler.get_last_lr()[0]  # the rate this step uses (a new stage's starts afresh)
        terms = _train_step(mine, pairs, req1, req0, stage.weights, scorer, model, params,
                            optimizer, scheduler, accelerator, ocfg["max_grad_norm"])
        state.global_step += 1
        epoch_done = pos + 1 == len(steps)
        state.epoch, state.step_in_epoch = (epoch + 1, 0) if epoch_done else (epoch, pos + 1)
        steps_this_call += 1
        last_loss = terms["loss"]
        for name, v in terms.items():
            running[name] = v if name not in running else 0.9 * running[name] + 0.1 * v
        bar.update(1)
        bar.set_postfix({name: f"{v:.4f}" for name, v in running.items()}, refresh=False)
        if main and state.global_step % tcfg["log_every"] == 0:
            _append_log(log_path, {
                "step": state.global_step, "epoch": epoch + 1, "stage": stage.index + 1,
                "objective": stage.objective, "weights": stage.weights, **terms,
                "lr": lr, "pairs": sum(len(m) for m in steps[pos]),
            })
        if epoch_done:
            if main:
                save_adapter(model, out / f"epoch-{epoch + 1}")
            evaluate(f"epoch-{epoch + 1}")
        every = tcfg["checkpoint_every"]
        stage_done = k + 1 == stage.steps
        if epoch_done or stage_done or (every and state.global_step % every == 0):
            save_checkpoint(out, model, optimizer, scheduler, state, digest, accelerator,
                            tcfg["keep_checkpoints"])
        if stop_after is not None and steps_this_call >= stop_after:
            bar.close()
            return result()
    bar.close()

    # 5. Final adapter (and evaluation when asked).
    if main:
        save_adapter(model, out / "adapter")
    last_epoch = f"epoch-{state.epoch}"
    if state.step_in_epoch == 0 and all(last_epoch in v for v in state.evals.values()):
        for v in state.evals.values():  # the run ended on an epoch boundary: same model
            v["after"] = v[last_epoch]
        if main and state.evals:
            write_json_atomic(out / EVAL_NAME, state.evals)
    else:
        evaluate("after")
    accelerator.wait_for_everyone()
    return result()


def _train_step(micro_batches, pairs, req1, req0, weights, scorer, model, params, optimizer,
                scheduler, accelerator, max_grad_norm) -> dict[str, float]:
    """One optimizer step over this process' micro-batches; returns the step's mean terms."""
    sums = dict.fromkeys(("loss", *TERMS), 0.0)
    n_mb = max(1, len(micro_batches))
    for mb in micro_batches:
        with accelerator.autocast():
            loss, terms = batch_loss([pairs[i] for i in mb], [req1[i] for i in mb],
                                     [req0[i] for i in mb], weights, scorer)
        accelerator.backward(loss / n_mb)
        sums["loss"] += loss.item() / n_mb
        for k, v in terms.items():
            sums[k] += v.item() / n_mb
    if accelerator.num_processes > 1:
        _average_gradients(params, accelerator)
    if max_grad_norm:
        accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if accelerator.num_processes > 1:
        t = torch.tensor(list(sums.values()), device=accelerator.device)
        sums = dict(zip(sums, accelerator.reduce(t, "mean").tolist(), strict=True))
    return sums


def batch_loss(pairs, req1, req0, weights, scorer, dedup: bool = True):
    """Objective of one micro-batch: ``(loss, {term: value})`` with gradients attached.

    ``dedup``: a persona end shared by several pairs (same persona, same question) is scored
    once; its log-probs then enter the loss wherever it appears (same value, same gradient).
    """
    if dedup:
        slot: dict = {}
        idx1 = [slot.setdefault(r, len(slot)) for r in req1]
        idx0 = [slot.setdefault(r, len(slot)) for r in req0]
        unique = list(slot)
    else:
        unique = list(req1) + list(req0)
        idx1, idx0 = list(range(len(req1))), list(range(len(req1), len(unique)))
    lp = [x.float() for x in scorer.log_probs(unique, grad=True)]
    terms = pair_terms([lp[j] for j in idx1], [lp[j] for j in idx0],
                       [p.counts1 for p in pairs], [p.counts0 for p in pairs])
    return combined_loss(terms, weights), terms


def _average_gradients(params, accelerator) -> None:
    """All-reduce the adapter's gradients (mean over processes) in one flat buffer."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), "mean")
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _eval_sets(data, split, pairs, cfg, tokenizer) -> dict:
    """Cells scored before/after training, as ``{name: (requests, counts)}``."""
    sets = {}
    if cfg["eval"]["train_cells"]:
        cells = pair_cells(pairs)
        sets["train"] = (make_requests(data, [(s, q) for s, q, _ in cells], tokenizer, cfg),
                         [c for _, _, c in cells])
    if cfg["eval"]["validation"]:
        vpairs = validation_pairs(data, split, cfg)
        if not vpairs:
            raise ValueError("eval.validation is set but the split has no validation pairs "
                             "(make the split with a validation fraction)")
        cells = pair_cells(vpairs)
        sets["validation"] = (make_requests(data, [(s, q) for s, q, _ in cells], tokenizer, cfg),
                              [c for _, _, c in cells])
    return sets


def config_differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs."""
    out = []
    for k in sorted(set(a) | set(b)):
        name = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += config_differences(va, vb, name + ".")
        elif va != vb:
            out.append(name)
    return out
