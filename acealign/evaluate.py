"""Evaluation: score the evaluation side of a split and save predictions (Parquet) and per-cell scores.

Layout under an evaluation folder (``acealign eval --out RUN_DIR/eval``)::

    eval/<method>/predictions.parquet   one row per persona x question (PREDICTION_COLUMNS + flags)
    eval/<method>/cell_scores.csv       method, country, question_key, persona, granularity, n,
                                        score (Eq. 15 summand, x100), modal_hit, flags
    eval/<method>/eval.json             what was evaluated (model, adapter, prompt, split, ...)
                                        and its ``fingerprint`` (:func:`eval_fingerprint`)

A finished evaluation is reused only when its fingerprint matches (model, adapter content digest,
template, chat, scoring mode, dtype, split digest, data digest, granularities, min_n); else it is
an error naming the differing fields. An adapter is evaluated with the prompt template of its
training run (``config.json`` beside it) unless a prompt is given.

Which cells are evaluated (:func:`evaluation_cells`), in the split's evaluation countries:

- ``eval_question``: every eligible persona of G in ``granularities`` (support >= ``min_n``) on
  a question that was never trained in that country (an evaluation question of a question split;
  every question of a country split's evaluation countries);
- ``heldout_persona``: the held-out G=4 combinations of a persona split (or of a split that holds
  combinations out), on every question of the split: they were never trained on any question;
- ``train_question``: the cell's question was trained in its country (a held-out combination on
  a training question carries it too). With ``in_sample=True`` every eligible persona of G in
  ``granularities`` on those questions is added, for the in-sample level of the effect-fidelity
  ladder (:func:`acealign.analyses.fidelity.fidelity_ladder`); these cells never enter Table 1
  (it uses ``eval_question`` cells only).

Two reference "methods" need no model (:func:`reference_predictions`): ``country-marginal``
predicts, for every persona, the distribution of all of the country's respondents on the question
(an *oracle*: persona-blind, but it has seen each evaluation question's answers); ``noise-ceiling`` is a perfect model seen through finite
cells: its ``score`` column holds the exact expected score against a multinomial resample
(:func:`acealign.metrics.expected_ceiling_batch`) and its ``pred`` is one seeded resample of the
cell (used for modal accuracy and effect fidelity).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics
from .analyses.common import REFERENCE_METHODS, with_scores
from .fileio import read_json_object
from .fingerprint import adapter_digest, data_digest, require_same, split_digest
from .personas import DEFAULT_MIN_N, EligibleCell, eligible_cells
from .report.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from .splits import Split, combo_persona, split_countries
from .survey import DataError, Persona, SurveyData

PREDICTIONS = "predictions.parquet"
CELL_SCORES = "cell_scores.csv"
EVAL_META = "eval.json"
PARTIAL = "partial.parquet"  # the engine's checkpoint while scoring
PROMPT_ALIASES = {"plain": "paper"}
RUN_CONFIG = "config.json"  # a training run's resolved config (acealign.train.CONFIG_NAME)


@dataclass(frozen=True)
class EvalCell:
    cell: EligibleCell
    eval_question: bool
    heldout_persona: bool
    train_question: bool = False


@dataclass
class EvalResult:
    method: str
    directory: Path
    predictions: Path
    cell_scores: Path
    table: pd.DataFrame


def evaluation_cells(
    data: SurveyData, split: Split, granularities=(1, 2, 3, 4), min_n: int = DEFAULT_MIN_N,
    in_sample: bool = False,
    in_sample_granularities=None,
) -> list[EvalCell]:
    """The cells to evaluate (see the module docstring), in a stable order; ``in_sample`` adds the
    eligible cells of the training questions (flagged ``train_question``) after each country's,
    of G in ``in_sample_granularities`` (default: ``granularities``; the ladder's in-sample and
    new-combination levels need G=4 only)."""
    countries = [c for c in split.eval_countries if c in data.countries]
    if not countries:
        raise DataError(
            f"none of the split's evaluation countries ({', '.join(split.eval_countries) or 'none'}) "
            f"is in the data ({', '.join(data.countries)})"
        )
    train_q, train_c = set(split.train_questions), set(split.train_countries)
    split_q = set(split.eval_questions) | train_q | set(split.validation_questions)
    heldout_combos = set(split.heldout_personas)
    out: list[EvalCell] = []
    for country in countries:
        unseen = [
            q for q in data.question_keys(country)
            if q in split.eval_questions and (q not in train_q or country not in train_c)
        ]
        # Trained here: a training question of a training country that is not unseen in it.
        trained = set(data.question_keys(country)) & (train_q - set(unseen)) if country in train_c else set()
        seen: set[tuple[Persona, str]] = set()
        for cell in eligible_cells(data, granularities, min_n, [country], unseen).cells:
            held = cell.persona.granularity == 4 and cell.persona.combo in heldout_combos
            out.append(EvalCell(cell, True, held))
            seen.add((cell.persona, cell.question_key))
        if heldout_combos:
            personas = [combo_persona(country, c) for c in sorted(heldout_combos)]
            qkeys = [q for q in data.question_keys(country) if q in split_q]
            for cell in eligible_cells(data, (4,), min_n, [country], qkeys, personas).cells:
                if (cell.persona, cell.question_key) not in seen:
                    out.append(EvalCell(cell, False, True, cell.question_key in trained))
                    seen.add((cell.persona, cell.question_key))
        if in_sample:
            gs = granularities if in_sample_granularities is None else in_sample_granularities
            out += _in_sample_cells(data, gs, min_n, country, trained, heldout_combos, seen)
    return out


def _in_sample_cells(data, granularities, min_n, country, trained, heldout_combos, seen) -> list[EvalCell]:
    """Eligible cells of ``country`` on its ``trained`` questions not already in ``seen``: the
    in-sample level of the effect-fidelity ladder (can the objective fit the effects at all?)."""
    qkeys = [q for q in data.question_keys(country) if q in trained]
    out = []
    for cell in eligible_cells(data, granularities, min_n, [country], qkeys).cells:
        if (cell.persona, cell.question_key) not in seen:
            held = cell.persona.granularity == 4 and cell.persona.combo in heldout_combos
            out.append(EvalCell(cell, False, held, True))
    return out


def predictions_frame(data: SurveyData, cells: list[EvalCell], method: str, preds,
                      scoring_mode: str | None = None, estimator: str | None = None,
                      infos=None) -> pd.DataFrame:
    """The predictions table of ``cells`` (:func:`acealign.scoring.predictions_frame`, i.e.
    PREDICTION_COLUMNS, and ``scoring_mode`` for a model's predictions) plus the split flags
    ``eval_question``, ``heldout_persona`` and ``train_question``."""
    from .scoring import predictions_frame as engine_frame

    if len(preds) != len(cells):
        raise ValueError(f"{len(preds)} predictions for {len(cells)} cells")
    frame = engine_frame(data, [ec.cell for ec in cells], preds, method, scoring_mode=scoring_mode,
                         estimator=estimator, infos=infos)
    frame["eval_question"] = [ec.eval_question for ec in cells]
    frame["heldout_persona"] = [ec.heldout_persona for ec in cells]
    frame["train_question"] = [ec.train_question for ec in cells]
    return frame


def reference_predictions(
    data: SurveyData,
    cells: list[EvalCell],
    kind: str,
    seed: int = 0,
) -> pd.DataFrame:
    """Predictions of a reference method: ``country-marginal`` or ``noise-ceiling``."""
    if kind not in REFERENCE_METHODS:
        raise ValueError(f"unknown reference {kind!r} (expected one of {', '.join(REFERENCE_METHODS)})")
    if kind == "country-marginal":
        cache: dict[tuple[str, str], np.ndarray] = {}
        preds = []
        for ec in cells:
            key = (ec.cell.persona.country, ec.cell.question_key)
            if key not in cache:
                total = data.counts(Persona(key[0]), key[1])
                cache[key] = total / total.sum()
            preds.append(cache[key])
        return predictions_frame(data, cells, kind, preds)
    preds: list[np.ndarray] = [np.zeros(0)] * len(cells)
    scores = np.zeros(len(cells))
    by_key: dict[tuple[str, int], list[int]] = {}
    for i, ec in enumerate(cells):
        by_key.setdefault((ec.cell.persona.country, len(ec.cell.counts)), []).append(i)
    for (country, _), idx in sorted(by_key.items()):
        counts = np.stack([cells[i].cell.counts for i in idx])
        rng = np.random.default_rng([int(seed), zlib.crc32(country.encode()), counts.shape[1]])
        draws = rng.multinomial(counts.sum(1), counts / counts.sum(1, keepdims=True))
        scores[idx] = metrics.expected_ceiling_batch(counts)
        for j, i in enumerate(idx):
            preds[i] = draws[j] / draws[j].sum()
    frame = predictions_frame(data, cells, kind, preds)
    frame["score"] = scores
    return frame


def write_predictions(frame: pd.DataFrame, directory, meta: dict | None = None) -> EvalResult:
    """Write predictions.parquet, cell_scores.csv and eval.json into ``directory`` atomically."""
    directory = Path(directory)
    methods = frame["method"].unique()
    if len(methods) != 1:
        raise ValueError(f"one method per predictions file, got {list(methods)}")
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    pred_path = atomic_write_bytes(directory / PREDICTIONS, buf.getvalue())
    scored = with_scores(frame)
    cols = ["method", "country", "question_key", "topic", "persona", "granularity", "n", "score",
            "modal_hit", "eval_question", "heldout_persona", "train_question"]
    cs = scored[cols].assign(score=100 * scored["score"])
    cs_path = atomic_write_text(directory / CELL_SCORES, cs.to_csv(index=False))
    summary = (
        cs[cs["eval_question"]].groupby(["country", "granularity"])["score"].agg(["mean", "size"]).reset_index()
    )
    atomic_write_json(
        directory / EVAL_META,
        {
            "method": str(methods[0]),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cells": len(frame),
            "eval_question_cells": int(frame["eval_question"].sum()),
            "heldout_persona_cells": int(frame["heldout_persona"].sum()),
            "train_question_cells": int(scored["train_question"].sum()),
            "scores": [
                {"country": r.country, "granularity": int(r.granularity), "score": float(r.mean), "cells": int(r.size)}
                for r in summary.itertuples()
            ],
            **(meta or {}),
        },
    )
    return EvalResult(str(methods[0]), directory, pred_path, cs_path, frame)


def write_references(
    data: SurveyData,
    split: Split,
    eval_dir,
    granularities=(1, 2, 3, 4),
    min_n: int = DEFAULT_MIN_N,
    seed: int = 0,
    in_sample: bool = False,
    in_sample_granularities=None,
) -> list[EvalResult]:
    """Write both reference methods under ``eval_dir/<reference>/`` (always recomputed: cheap),
    on the cells of :func:`evaluation_cells` (with the in-sample cells when ``in_sample``)."""
    cells = evaluation_cells(data, split, granularities, min_n, in_sample, in_sample_granularities)
    fp = {"split": split_digest(split), "data": data_digest(data, split_countries(split)),
          "granularities": list(granularities), "min_n": min_n, "seed": seed,
          **_in_sample_fingerprint(in_sample, in_sample_granularities, granularities)}
    out = []
    for kind in REFERENCE_METHODS:
        frame = reference_predictions(data, cells, kind, seed)
        out.append(write_predictions(frame, Path(eval_dir) / kind, {
            "reference": kind, "split": split.to_dict()["kind"], "granularities": list(granularities),
            "min_n": min_n, "seed": seed, "data": data.source, "fingerprint": {"reference": kind, **fp},
        }))
    return out


def _in_sample_fingerprint(in_sample: bool, granularities, own) -> dict:
    """The fingerprint fields of the in-sample cells: none without them (earlier evaluations stay
    valid), their G only when not the evaluation's own ``own``."""
    if not in_sample:
        return {}
    same = granularities is None or sorted(granularities) == sorted(own)
    return {"in_sample": True, **({} if same else {"in_sample_granularities": sorted(granularities)})}


def adapter_run_config(adapter) -> dict | None:
    """The training config of the run an adapter comes from (``RUN/config.json`` beside
    ``RUN/adapter`` or ``RUN/epoch-K``), or None when there is none."""
    path = (Path(adapter) / ".." / RUN_CONFIG).resolve()
    cfg = read_json_object(path, "an acealign training config (a JSON object)")
    if cfg is None:
        return None
    if not isinstance(cfg.get("model"), dict) or "template" not in cfg["model"]:
        raise DataError("not an acealign training config (no model.template)", path)
    return cfg


def adapter_prompt(adapter) -> tuple[str, bool | None]:
    """(template, chat) an adapter was trained with, from its run config; an error if there is none."""
    cfg = adapter_run_config(adapter)
    if cfg is None:
        raise DataError("no training config beside the adapter (expected ../config.json of its training "
                        "run) to tell which prompt template it was trained with: pass --prompt TEMPLATE",
                        adapter)
    chat = cfg["model"].get("chat", "auto")
    return cfg["model"]["template"], (None if chat == "auto" else bool(chat))


def eval_fingerprint(model, adapter, template: str, chat, scoring_mode: str, dtype: str, data: SurveyData,
                     split: Split, granularities, min_n: int, device: str = "cpu") -> dict:
    """What determines an evaluation's predictions (see the module docstring)."""
    return {
        "model": _model_name(model),
        "adapter": adapter_digest(adapter),
        "template": template,
        "chat": chat,
        "scoring_mode": scoring_mode,
        "dtype": _dtype_of(model, dtype, device),
        "split": split_digest(split),
        "data": data_digest(data, split_countries(split)),
        "granularities": list(granularities),
        "min_n": min_n,
    }


def evaluate(
    model="default",
    adapter=None,
    prompt: str | None = None,
    *,
    data: SurveyData,
    split: Split,
    out_dir,
    granularities=(1, 2, 3, 4),
    min_n: int = DEFAULT_MIN_N,
    method_name: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 16,
    progress: bool = True,
    split_path=None,
    scoring_mode: str = "whole",
    chat: bool | None = None,
    backend=None,
    in_sample: bool = False,
    in_sample_granularities=None,
) -> EvalResult:
    """Score the evaluation cells of ``split`` with a model and write ``out_dir/<method>/``.

    ``model``: a name or path for :func:`acealign.models.load_model`, or an already loaded
    ``(model, tokenizer)`` pair. ``prompt``: ``plain`` (the paper's persona prompt) or any template
    of :mod:`acealign.prompts` (``anthropological`` ...); None: the template (and chat setting) the
    adapter was trained with, ``plain`` without an adapter. ``scoring_mode``: see
    :class:`acealign.scoring.OptionScorer`. ``chat``: None = the chat template when the tokenizer
    has one. Resumable: cells already scored in an interrupted run are not scored again (the
    engine checkpoints to ``<method>/partial.parquet``), and a finished evaluation with the same
    fingerprint is returned without loading the model; another fingerprint is an error.
    ``backend``: an :class:`acealign.backends.spec.BackendSpec` (default: the hf engine); its
    settings join the fingerprint. ``in_sample``: also score the training questions' cells
    (flagged ``train_question``; see :func:`evaluation_cells`), for the in-sample level of the
    effect-fidelity ladder; it joins the fingerprint only when True, so earlier evaluations stay valid.
    ``in_sample_granularities``: G of those cells (default ``granularities``).
    """
    from . import prompts, scoring

    if scoring_mode not in scoring.SCORING_MODES:
        raise ValueError(f"unknown scoring mode {scoring_mode!r} (expected one of {', '.join(scoring.SCORING_MODES)})")
    trained = None
    if adapter is not None:
        cfg = adapter_run_config(adapter)
        trained = None if cfg is None else cfg["model"]["template"]
        if prompt is None:
            prompt, chat = adapter_prompt(adapter)
    prompt = "plain" if prompt is None else prompt
    template = PROMPT_ALIASES.get(prompt, prompt)
    template = prompts.get_template(template).name  # unknown template -> ValueError before loading anything
    from .backends.spec import BackendSpec
    from .memory import allocator_phase

    backend = backend or BackendSpec()
    if isinstance(model, tuple) and backend.name != "hf":
        raise ValueError(f"a loaded model is scored by the hf engine, not the {backend.name} backend")
    if adapter is not None and backend.name == "openai":
        raise ValueError("an OpenAI-compatible server serves its own adapters: evaluate the name it "
                         "serves the adapter under as the model")
    if not isinstance(model, tuple) and backend.name != "openai":
        from .models import check_model

        check_model(model)
    method = method_name or _default_method_name(adapter, prompt)
    if method in REFERENCE_METHODS:
        raise ValueError(f"method name {method!r} is reserved for a reference")
    cells = evaluation_cells(data, split, granularities, min_n, in_sample, in_sample_granularities)
    if not cells:
        raise DataError("the split leaves no cell to evaluate (check eval questions, countries and min_n)")
    directory = Path(out_dir) / method
    fingerprint = eval_fingerprint(model, adapter, template, chat, scoring_mode, dtype, data, split,
                                   granularities, min_n, device)
    if backend.name != "hf":  # its precision is the engine's (or the server's), not acealign's
        fingerprint.update(backend.settings(), dtype=dtype if backend.name == "vllm" else None)
    # only when set: fingerprints of evaluations made before the option still match
    fingerprint.update(_in_sample_fingerprint(in_sample, in_sample_granularities, granularities))
    settings = {
        "model": _model_name(model),
        "adapter": None if adapter is None else str(Path(adapter).resolve()),
        "prompt": prompt,
        "trained_template": trained,
        "scoring_mode": scoring_mode,
        "dtype": fingerprint["dtype"],
        **backend.settings(),
        "split": None if split_path is None else str(Path(split_path).resolve()),
        "split_kind": split.kind,
        "data": data.source,
        "granularities": list(granularities),
        "min_n": min_n,
        "in_sample": in_sample,
        **({"in_sample_granularities": list(in_sample_granularities)}
           if in_sample and in_sample_granularities is not None else {}),
        "fingerprint": fingerprint,
    }
    done = _finished(directory, fingerprint, cells)
    if done is not None:
        return done
    if isinstance(model, tuple):
        scorer = scoring.OptionScorer(*model, batch_size=batch_size, mode=scoring_mode)
    else:
        scorer = backend.build(model, adapter, device=device, dtype=dtype, mode=scoring_mode,
                               batch_size=batch_size)
    with allocator_phase("scoring"):
        scored = scoring.score_cells_detailed(
            None, None, data, [ec.cell for ec in cells], template=template, chat=chat,
            partial_path=directory / PARTIAL, progress=progress, scorer=scorer,
            fingerprint={"adapter": fingerprint["adapter"], "split": fingerprint["split"],
                         "data": fingerprint["data"], **backend.settings()},
        )
    frame = predictions_frame(data, cells, method, [s.dist for s in scored], scoring_mode,
                              estimator=scoring.estimator_label(scorer), infos=[s.info for s in scored])
    result = write_predictions(frame, directory, settings)
    (directory / PARTIAL).unlink(missing_ok=True)
    return result


def _model_name(model) -> str:
    if isinstance(model, tuple):
        cfg = getattr(model[0], "config", None)
        return str(getattr(cfg, "_name_or_path", "") or type(model[0]).__name__)
    p = Path(str(model)).expanduser()
    # A directory is named by its absolute path, so "m" and "./m" are the same model.
    return str(p.resolve()) if p.is_dir() else str(model)


def _dtype_of(model, dtype: str, device: str = "cpu") -> str:
    """The weights' precision: a loaded model's own, else the one it will be loaded with
    (``auto`` resolved on this machine; see :mod:`acealign.precision`)."""
    from .precision import model_precision, precision_name

    if isinstance(model, tuple):
        return model_precision(model[0])
    return precision_name(dtype, device)


def _finished(directory: Path, fingerprint: dict, cells: list[EvalCell]) -> EvalResult | None:
    """The result of a finished earlier run with the same fingerprint and cells, else None; a
    finished run with another fingerprint is an error (delete the folder to redo it)."""
    pred_path, meta_path = directory / PREDICTIONS, directory / EVAL_META
    if not (pred_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON ({e.msg})", meta_path, e.lineno) from None
    fresh = f"delete {directory} to evaluate again"
    require_same(meta.get("fingerprint") if isinstance(meta, dict) else None, fingerprint,
                 what="a finished evaluation", path=directory, fresh=fresh)
    frame = pd.read_parquet(pred_path)
    if set(zip(frame["persona"], frame["question_key"], strict=True)) != {(ec.cell.persona.key, ec.cell.question_key) for ec in cells}:
        raise DataError(f"already evaluated on other cells; {fresh}", directory)
    return EvalResult(str(frame["method"].iloc[0]), directory, pred_path, directory / CELL_SCORES, frame)


def _default_method_name(adapter, prompt: str | None) -> str:
    """``base`` / the prompt template without an adapter; else the adapter's run folder name
    (``runs/ace/adapter`` -> ``ace``)."""
    if adapter is not None:
        a = Path(adapter).resolve()
        return (a.parent.name if a.name in ("adapter", "final") else a.name) or "adapter"
    return "base" if prompt in ("plain", "paper") else prompt
