"""Learning curves (``eval.curve_every``): the pure curve point against hand computation, the
``"event": "curve"`` records of a tiny run (and of a resumed one), config checks, and the report's
figure and table built from hand-written training logs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from acealign import train as T
from acealign.report import build_report
from acealign.report.tables import learning_curves
from acealign.splits import make_question_split
from acealign.testing import tiny_model_and_tokenizer

FAST = ["data.min_n=1", "data.max_pairs=4", "train.batch_size=2", "model.chat=false",
        "optim.lr=1e-2"]


@pytest.fixture
def vsplit(tiny_data):
    # 3 questions: eval issp/family/v5, validation wvs7/security/Q131, training wvs7/social_values/Q1.
    return make_question_split(tiny_data, eval_frac=0.34, validation_frac=0.5, seed=0)


def run(tmp_path, data, split, overrides, name="run", **kw):
    cfg = T.resolve_config(None, FAST + overrides)
    model, tok = tiny_model_and_tokenizer(seed=0)
    return T.train(cfg, tmp_path / name, data=data, split=split, model=model, tokenizer=tok,
                   progress=False, **kw)


def curve_records(out) -> list[dict]:
    lines = (out / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == "curve"]


# -- the pure point ---------------------------------------------------------------------------
def test_curve_point_by_hand():
    # Cells a, b, c with 3 options; pairs (a, b) and (c, b): b is shared and counted once in S.
    preds = {"a": [0.5, 0.5, 0.0], "b": [0.0, 0.5, 0.5], "c": [1 / 3, 1 / 3, 1 / 3]}
    counts = {"a": [2, 2, 0], "b": [1, 0, 1], "c": [0, 0, 4]}
    p = T.curve_point(preds, counts, [("a", "b"), ("c", "b")])
    # S per cell = 1 - W1/(N-1), W1 = sum |CDF diff| over the first N-1 levels:
    # a: exact -> 1; b: CDFs (0, .5) vs (.5, .5) -> W1 .5 -> .75; c: (1/3, 2/3) vs (0, 0) -> 1 -> .5
    assert p["validation_S"] == pytest.approx((1 + 0.75 + 0.5) / 3)
    # d_CDF (Eq. 11) = mean_k |cumsum(model effect - data effect)|:
    # (a, b): model effect (.5, 0, -.5), data (.5, .5, 0) - (.5, 0, .5) = (0, .5, -.5);
    #   diff (.5, -.5, 0) -> cumsum (.5, 0, 0) -> 1/6
    # (c, b): model (1/3, -1/6, -1/6), data (0, 0, 1) - (.5, 0, .5) = (-.5, 0, .5);
    #   diff (5/6, -1/6, -2/3) -> cumsum (5/6, 2/3, 0) -> 1/2
    assert p["validation_d_cdf_x1000"] == pytest.approx(1000 * (1 / 6 + 1 / 2) / 2)
    assert (p["pairs"], p["cells"]) == (2, 3)


# -- in training ------------------------------------------------------------------------------
def test_curve_evaluator_scores_in_eval_mode_and_restores_train_mode(tmp_path):
    import contextlib
    from types import SimpleNamespace

    import torch

    model = torch.nn.Dropout(0.5).train()
    modes = []

    def distributions(requests):
        modes.append(model.training)
        return [np.array([0.5, 0.5])] * len(requests)

    acc = SimpleNamespace(is_main_process=True, autocast=contextlib.nullcontext)
    ev = T.CurveEvaluator(["a", "b"], ["req-a", "req-b"], {"a": [1, 1], "b": [2, 0]}, [("a", "b")],
                          model, SimpleNamespace(distributions=distributions), acc, tmp_path)
    ev(7, 2, SimpleNamespace(index=1, objective="causal"))
    assert modes == [False] and model.training
    (rec,) = curve_records(tmp_path)
    assert (rec["step"], rec["epoch"], rec["stage"], rec["objective"]) == (7, 2, 2, "causal")
    assert rec["validation_S"] == pytest.approx((1 + 0.5) / 2)


def test_tiny_run_logs_a_point_per_step_and_keeps_the_adapter(tmp_path, tiny_data, vsplit):
    from safetensors.torch import load_file

    result = run(tmp_path, tiny_data, vsplit, ["eval.curve_every=1"])
    recs = curve_records(result.out)
    # ace, 4 pairs / 2 per step: anchor steps 1-2, causal steps 3-4; step 0 before training.
    assert [(r["step"], r["stage"], r["objective"]) for r in recs] == [
        (0, 1, "anchor"), (1, 1, "anchor"), (2, 1, "anchor"), (3, 2, "causal"), (4, 2, "causal")]
    assert [r["epoch"] for r in recs] == [1, 1, 1, 2, 2]
    for r in recs:
        assert 0 <= r["validation_S"] <= 1 and math.isfinite(r["validation_d_cdf_x1000"])
        assert r["pairs"] > 0 and 0 < r["cells"] <= 2 * r["pairs"]
    assert len({r["validation_S"] for r in recs}) > 1  # training moves the predictions
    # Every 3 steps: step 0, step 3, and the end (step 4).
    recs = curve_records(run(tmp_path, tiny_data, vsplit, ["eval.curve_every=3"], name="b").out)
    assert [r["step"] for r in recs] == [0, 3, 4]
    # Forward passes in eval mode only: the trained adapter is the one of a run without curves.
    plain = run(tmp_path, tiny_data, vsplit, [], name="plain")
    a, b = (load_file(str(r.out / "adapter" / "adapter_model.safetensors")) for r in (result, plain))
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_resumed_run_does_not_repeat_points(tmp_path, tiny_data, vsplit):
    over = ["eval.curve_every=1", "train.checkpoint_every=1"]
    run(tmp_path, tiny_data, vsplit, over, stop_after=3)
    result = run(tmp_path, tiny_data, vsplit, over, resume=True)
    assert [r["step"] for r in curve_records(result.out)] == [0, 1, 2, 3, 4]


def test_curve_every_is_checked(tmp_path, tiny_data, split):
    with pytest.raises(ValueError, match="eval.curve_every must be >= 0"):
        T.resolve_config(None, ["eval.curve_every=-1"])
    assert T.resolve_config()["eval"]["curve_every"] == 0
    # The plain question split of tests/test_train.py has no validation questions.
    with pytest.raises(ValueError, match="eval.curve_every is set but the split has no validation"):
        run(tmp_path, tiny_data, split, ["eval.curve_every=1"])


@pytest.fixture
def split(tiny_data):
    return make_question_split(tiny_data, eval_frac=0.34, seed=0)


# -- report -----------------------------------------------------------------------------------
def write_log(directory, records) -> None:
    directory.mkdir(parents=True)
    (directory / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def curve(step, stage, objective, s, d):
    return {"event": "curve", "step": step, "epoch": stage, "stage": stage, "objective": objective,
            "validation_S": s, "validation_d_cdf_x1000": d, "pairs": 2, "cells": 3}


def stage(n, first, objective):
    return {"event": "stage", "step": first, "epoch": n, "stage": n, "name": f"stage-{n}",
            "objective": objective, "first_step": first, "steps": 2}


def test_learning_curves_table_keeps_the_last_record_per_step(tmp_path):
    write_log(tmp_path / "train" / "ace", [
        stage(1, 1, "anchor"), curve(0, 1, "anchor", 0.5, 40.0), {"step": 1, "loss": 1.0},
        curve(2, 1, "anchor", 0.6, 35.0), stage(2, 3, "causal"), curve(3, 2, "causal", 0.61, 30.0),
        curve(3, 2, "causal", 0.62, 29.0)])  # step 3 recomputed after a resume
    curves, starts = learning_curves(tmp_path)
    assert curves.to_dict("list") == {
        "method": ["ace"] * 3, "step": [0, 2, 3], "stage": [1, 1, 2],
        "objective": ["anchor", "anchor", "causal"], "S": [50.0, 60.0, 62.0],
        "d_cdf_x1000": [40.0, 35.0, 29.0]}
    assert starts[["stage", "first_step"]].values.tolist() == [[1, 1], [2, 3]]
    assert all(t.empty for t in learning_curves(tmp_path / "nothing"))


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """A run directory with reference predictions only (no model), from the packaged survey."""
    from acealign import evaluate as ev
    from acealign.survey import load_survey, package_data_dir

    data = load_survey(package_data_dir()).subset(countries=["egypt"])
    sp = make_question_split(data, eval_frac=0.2, seed=0)
    run_dir = tmp_path_factory.mktemp("run")
    sp.save(run_dir / "split.json")
    ev.write_references(data, sp, run_dir / "eval")
    marg = pd.read_parquet(run_dir / "eval" / "country-marginal" / "predictions.parquet")
    uniform = [list(np.full(len(t), 1 / len(t))) for t in marg["survey_counts"]]
    ev.write_predictions(marg.assign(method="base", pred=uniform), run_dir / "eval" / "base")
    return run_dir


def test_report_draws_learning_curves_or_says_why_not(report_run, tmp_path):
    # No train/ folder (an eval-only run directory): no figure to miss, the table is empty.
    res = build_report(report_run, tmp_path / "r0", n_boot=0, n_perm=10)
    assert "learning_curves" not in res.missing_figures and "learning_curves" not in res.figures
    assert pd.read_csv(tmp_path / "r0" / "tables" / "learning_curves.csv").empty
    # Training logs without curve records: the figure is missing, and the report says why.
    write_log(report_run / "train" / "base", [stage(1, 1, "anchor"), {"step": 1, "loss": 1.0}])
    res = build_report(report_run, tmp_path / "r0b", n_boot=0, n_perm=10)
    assert res.figures["learning_curves"] is None
    assert "curve_every" in res.missing_figures["learning_curves"]
    for name in ("ace-s0", "ace-s1", "anchor"):
        write_log(report_run / "train" / name, [
            stage(1, 1, "anchor"), curve(0, 1, "anchor", 0.5, 40.0), curve(2, 1, "anchor", 0.6, 35.0),
            stage(2, 3, "causal"), curve(4, 2, "causal", 0.58, 30.0)])
    res = build_report(report_run, tmp_path / "r1", n_boot=0, n_perm=10)
    assert "learning_curves" not in res.missing_figures
    assert res.figures["learning_curves"].is_file()
    table = pd.read_csv(tmp_path / "r1" / "tables" / "learning_curves.csv")
    assert list(table.columns) == ["method", "step", "stage", "objective", "S", "d_cdf_x1000"]
    assert len(table) == 9 and set(table["method"]) == {"ace-s0", "ace-s1", "anchor"}
    assert "Learning curves" in (tmp_path / "r1" / "report.md").read_text()


def test_training_runs_in_the_training_allocator_phase_and_scores_in_the_scoring_one(
        tmp_path, tiny_data, vsplit, allocator_spy):
    """acealign.memory: the loop under "training", every curve point (inside it) under "scoring"."""
    seen = allocator_spy
    run(tmp_path, tiny_data, vsplit, ["eval.curve_every=2"])
    # point 0 before the loop; the loop; points at steps 2 and 4 inside it, each back to training
    assert seen == ["scoring", "scoring", "training", "scoring", "training", "scoring", "training", "scoring"]
