"""Alignment (Eq. 15) on a run's training or validation cells: during a run (before training,
after each epoch, at the end; forward passes only, so they consume no RNG and do not change the
trained adapter) and afterwards from the run directory (:func:`score_run_cells`); and learning
curves (``eval.curve_every``): S (Eq. 15) and mean d_CDF (Eq. 11-12) of the validation pairs every
N optimizer steps (:func:`curve_point`, :class:`CurveEvaluator`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..memory import allocator_phase
from ..survey import SurveyData
from .checkpoint import LOG_NAME, TrainState, append_log, write_json_atomic
from .config import CONFIG_NAME
from .data import make_requests, pair_cells, training_pairs, validation_pairs

EVAL_NAME = "eval.json"


def alignment_on_cells(scorer, requests, counts) -> float:
    """Eq. 15 (mean alignment score) of the model's distributions against the survey's."""
    from ..metrics import mean_alignment_score

    preds = scorer.distributions(requests)
    return mean_alignment_score(preds, [np.asarray(c, float) / np.sum(c) for c in counts])


def cell_requests(data: SurveyData, pairs, tokenizer, cfg: dict) -> tuple[list, list]:
    """``(requests, counts)`` of the unique cells at the ends of ``pairs``."""
    cells = pair_cells(pairs)
    return (make_requests(data, [(s, q) for s, q, _ in cells], tokenizer, cfg),
            [c for _, _, c in cells])


def eval_sets(data, split, pairs, cfg, tokenizer) -> dict:
    """Cells scored before/after training, as ``{name: (requests, counts)}``."""
    sets = {}
    if cfg["eval"]["train_cells"]:
        sets["train"] = cell_requests(data, pairs, tokenizer, cfg)
    if cfg["eval"]["validation"]:
        vpairs = validation_pairs(data, split, cfg)
        if not vpairs:
            raise ValueError("eval.validation is set but the split has no validation pairs "
                             "(make the split with a validation fraction)")
        sets["validation"] = cell_requests(data, vpairs, tokenizer, cfg)
    return sets


@dataclass
class RunEvaluator:
    """The evaluations of one training run (config ``[eval]``), on the main process only: each
    writes one ``"event": "eval"`` log record per cell set and rewrites ``OUT/eval.json``."""

    sets: dict              # eval_sets()
    model: Any
    scorer: Any
    accelerator: Any
    out: Path

    def __call__(self, state: TrainState, tag: str) -> None:
        """Score every set now; the scores go to ``state.evals[name][tag]``."""
        if not self.sets or not self.accelerator.is_main_process:
            return
        self.model.eval()
        for name, (reqs, counts) in self.sets.items():
            with torch.no_grad(), self.accelerator.autocast(), allocator_phase("scoring"):
                score = alignment_on_cells(self.scorer, reqs, counts)
            state.evals.setdefault(name, {})[tag] = score
            append_log(self.out / LOG_NAME, {"step": state.global_step, "epoch": state.epoch + 1,
                                             "event": "eval", "cells": name, "n_cells": len(reqs),
                                             "at": tag, "alignment": score})
        self.model.train()
        write_json_atomic(self.out / EVAL_NAME, state.evals)

    def final(self, state: TrainState) -> None:
        """The ``after`` scores: a run that ended on an epoch boundary has them already."""
        last_epoch = f"epoch-{state.epoch}"
        if state.step_in_epoch == 0 and all(last_epoch in v for v in state.evals.values()):
            for v in state.evals.values():  # the run ended on an epoch boundary: same model
                v["after"] = v[last_epoch]
            if self.accelerator.is_main_process and state.evals:
                write_json_atomic(self.out / EVAL_NAME, state.evals)
        else:
            self(state, "after")


def curve_point(preds: Mapping, counts: Mapping, pairs: Sequence) -> dict:
    """One learning-curve point from predictions already made (pure; no model).

    ``preds`` / ``counts``: model distribution / survey counts by cell key (e.g. (persona,
    question)); ``pairs``: ``(key1, key0)`` of each counterfactual pair. S is Eq. 15 over the
    unique pair ends (a fraction, as :func:`alignment_on_cells`); d_CDF is Eq. 11 per pair
    between the model effect p(.|s1) - p(.|s0) and the survey's (Eq. 8), averaged as Eq. 12.
    """
    from ..metrics import cdf_distance, mean_alignment_score
    from ..pairs import data_effect

    cells = list(dict.fromkeys(k for pair in pairs for k in pair))
    s = mean_alignment_score([preds[k] for k in cells],
                             [np.asarray(counts[k], float) / np.sum(counts[k]) for k in cells])
    d = [cdf_distance(np.asarray(preds[k1], float) - np.asarray(preds[k0], float),
                      data_effect(counts[k1], counts[k0])) for k1, k0 in pairs]
    return {"validation_S": s, "validation_d_cdf_x1000": 1000.0 * float(np.mean(d)),
            "pairs": len(pairs), "cells": len(cells)}


@dataclass
class CurveEvaluator:
    """Learning-curve points of one run (``eval.curve_every``), on the main process only: the
    unique validation cells are scored in one pass, then :func:`curve_point`; each point is one
    ``"event": "curve"`` record of ``OUT/log.jsonl``."""

    keys: list              # unique (persona, question) cells at the pairs' ends
    requests: list
    counts: dict
    pairs: list             # (key1, key0) per validation pair
    model: Any
    scorer: Any
    accelerator: Any
    out: Path

    @classmethod
    def build(cls, data, split, cfg, tokenizer, model, scorer, accelerator, out) -> CurveEvaluator:
        vpairs = validation_pairs(data, split, cfg)
        if not vpairs:
            raise ValueError("eval.curve_every is set but the split has no validation pairs "
                             "(make the split with a validation fraction)")
        cells = pair_cells(vpairs)
        keys = [(s, q) for s, q, _ in cells]
        return cls(keys, make_requests(data, keys, tokenizer, cfg), {(s, q): c for s, q, c in cells},
                   [((p.s1, p.question_key), (p.s0, p.question_key)) for p in vpairs],
                   model, scorer, accelerator, out)

    def __call__(self, step: int, epoch: int, stage) -> None:
        """Score the cells now and log the point for optimizer step ``step`` of ``stage``."""
        if not self.accelerator.is_main_process:
            return
        was_training = self.model.training
        self.model.eval()  # no dropout: the point measures the weights, and draws no RNG
        with torch.no_grad(), self.accelerator.autocast(), allocator_phase("scoring"):
            dists = self.scorer.distributions(self.requests)
        if was_training:
            self.model.train()
        point = curve_point(dict(zip(self.keys, dists, strict=True)), self.counts, self.pairs)
        append_log(self.out / LOG_NAME, {"event": "curve", "step": step, "epoch": epoch,
                                         "stage": stage.index + 1, "objective": stage.objective,
                                         **point})


def score_run_cells(run_dir, which: str = "train", adapter: str | None = "adapter",
                    data: SurveyData | None = None, batch_size: int = 16) -> tuple[float, int]:
    """Eq. 15 alignment of a finished run's ``train`` (pair ends) or ``validation`` cells.

    Rebuilds the cells from ``run_dir/config.json`` and scores them with the base model plus
    ``run_dir/adapter`` (``adapter=None``: the base model). Returns (score, number of cells);
    the same numbers as ``--eval-train`` / ``--eval-validation`` give during a run.
    """
    from ..models import load_model
    from ..scoring import OptionScorer
    from ..splits import Split
    from ..survey import load_survey

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
    reqs, counts = cell_requests(data, pairs, tok, cfg)
    with torch.no_grad():
        # Runs saved before train.scoring_mode existed scored whole answers.
        mode = cfg["train"].get("scoring_mode", "whole")
        score = alignment_on_cells(OptionScorer(model, tok, batch_size=batch_size, mode=mode),
                                   reqs, counts)
    return score, len(counts)
