"""A run's configuration: defaults (``acealign/config/train.toml``) < ``--config FILE`` <
``--set key=value``, type-checked as merged and value-checked by :func:`validate_config`."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

from ..objectives import TERMS
from ..scoring import SCORING_MODES
from ..survey import DataError
from .schedule import objective_name, stage_runs

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

DEFAULT_CONFIG = Path(__file__).parent.parent / "config" / "train.toml"
METHODS = ("ace", "anchor", "causal", "ace-joint", "distribution", "ace+distribution")
SCHEDULERS = ("constant", "linear", "cosine")
MIXED_PRECISION = ("no", "bf16", "fp16")
STAGE_OPTIMIZERS = ("fresh", "keep")
CONFIG_NAME = "config.json"


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
    _validate_methods(cfg)
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
                 "optim.max_grad_norm": o["max_grad_norm"], "lora.top_layers": lora["top_layers"],
                 "eval.curve_every": cfg["eval"]["curve_every"],
                 "optim.causal_lr": o["causal_lr"]}.items():
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
    if o["causal_lr"] and t["stage_optimizer"] != "fresh":
        raise ValueError("optim.causal_lr needs train.stage_optimizer = \"fresh\" (one optimizer "
                         "across stages has one learning rate)")
    if t["scoring_mode"] not in SCORING_MODES:
        raise ValueError(f"train.scoring_mode must be one of {', '.join(SCORING_MODES)}, "
                         f"got {t['scoring_mode']!r}")
    runs = stage_runs(cfg)
    if t["max_steps"] and t["max_steps"] < len(runs):
        raise ValueError(
            f"train.max_steps={t['max_steps']} is fewer than the {len(runs)} stages of method "
            f"{cfg['method']!r} ({', '.join(objective_name(w) for w, _, _ in runs)}): every stage "
            f"needs at least one step")
    if cfg["model"]["chat"] not in ("auto", True, False):
        raise ValueError(f"model.chat must be true, false or \"auto\", got {cfg['model']['chat']!r}")
    if not 1 <= cfg["data"]["context_granularity"] <= 4:
        raise ValueError("data.context_granularity must be 1..4")


def _validate_methods(cfg: dict) -> None:
    """The configured method exists; every schedule is a non-empty list of known, non-zero terms."""
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


# Keys added after runs were saved whose default reproduces what those runs did: a run saved
# without them resumes (other new keys changed behaviour and are named as differences).
ADDED_KEYS = {("optim", "causal_lr"): 0.0}


def check_run_dir(out: Path, cfg: dict, resume: bool) -> None:
    """A resumed run must be the same run (``OUT/config.json``); a new run needs an unused ``out``."""
    config_path = out / CONFIG_NAME
    if resume:
        if not config_path.is_file():
            raise DataError("nothing to resume: no config.json", out)
        saved = json.loads(config_path.read_text(encoding="utf-8"))
        for (table, key), value in ADDED_KEYS.items():  # saved before the key existed
            saved.get(table, {}).setdefault(key, value)
        diff = config_differences(saved, cfg)
        if diff:
            raise ValueError(f"--resume with a different configuration ({', '.join(diff[:5])})")
    elif (out / "checkpoints").exists() or (out / "adapter").exists():
        raise ValueError(f"{out} already holds a run: pass --resume to continue it, or another --out")
