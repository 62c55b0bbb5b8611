"""The main job end to end on a tiny random model and the tiny dataset: every stage runs, the
report is built, and a second call finds everything done."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from acealign.pipeline import PROFILES, Profile, run_pipeline


@pytest.fixture
def tiny_model_dir(tmp_path):
    from acealign.testing import save_tiny_model

    d = tmp_path / "tiny-model"
    save_tiny_model(d, seed=3)
    return d


def tiny_profile(**kw) -> Profile:
    base = dict(
        name="test",
        description="tiny test slice",
        countries=None,
        eval_frac=0.34,  # 1 of the 3 tiny questions
        validation_frac=0.0,
        methods=("anchor", "ace"),
        template="paper",
        prompt_baselines=(("anthropological", "anthropological"),),
        train={"data.max_pairs": 8, "train.batch_size": 4, "optim.lr": 1e-3,
               "train.checkpoint_every": 1},
    )
    base.update(kw)
    return Profile(**base)


def test_profiles_are_well_formed():
    from acealign.prompts import TEMPLATES
    from acealign.train import METHODS

    for prof in PROFILES.values():
        assert prof.template in TEMPLATES
        assert all(t in TEMPLATES for _, t in prof.prompt_baselines)
        assert set(prof.methods) <= set(METHODS)


def test_run_pipeline_end_to_end_and_resume(tmp_path, tiny_data_dir, tiny_model_dir, monkeypatch):
    out = tmp_path / "run"
    manifest = run_pipeline(out, tiny_profile(), model=str(tiny_model_dir), data_dir=tiny_data_dir,
                            progress=False)
    assert manifest["profile"] == "test" and manifest["scoring_mode"] == "whole"
    assert manifest["methods"] == ["base", "anthropological", "anchor", "ace"]
    split = json.loads((out / "split.json").read_text())
    assert len(split["eval_questions"]) == 1 and split["heldout_personas"]
    for m in ("anchor", "ace"):
        assert (out / "train" / m / "adapter" / "adapter_config.json").is_file()
        log = [json.loads(x) for x in (out / "train" / m / "log.jsonl").read_text().splitlines()]
        steps = [r for r in log if "event" not in r]  # step records (stage events have no loss)
        assert steps and all(r["loss"] == r["loss"] for r in steps)  # no NaN
    # ace runs its two stages: anchor in epoch 1, causal in epoch 2
    objectives = {json.loads(x)["objective"] for x in (out / "train" / "ace" / "log.jsonl").read_text().splitlines()}
    assert len(objectives) == 2
    methods = set()
    for p in (out / "eval").glob("*/predictions.parquet"):
        methods |= set(pd.read_parquet(p)["method"])
    assert methods == {"base", "anthropological", "anchor", "ace", "country-marginal", "noise-ceiling"}
    assert (out / "report" / "report.html").is_file()
    # Every reused artefact carries its fingerprint.
    from acealign.fingerprint import adapter_digest, split_digest
    from acealign.splits import Split

    sp = Split.load(out / "split.json")
    assert sp.fingerprint["eval_frac"] == 0.34 and sp.fingerprint["heldout_personas"] == split["heldout_personas"]
    for m in ("anchor", "ace"):
        fp = json.loads((out / "train" / m / "fingerprint.json").read_text())
        assert fp["split"] == split_digest(sp) and fp["config"]["method"] == m
        efp = json.loads((out / "eval" / m / "eval.json").read_text())["fingerprint"]
        assert efp["adapter"] == adapter_digest(out / "train" / m / "adapter") and efp["scoring_mode"] == "whole"
    summary = (out / "report" / "report.md").read_text()
    assert "tiny test slice" in summary
    assert manifest["peak_training_process_mb"] > 0  # each training run had its own process

    # Training in this process instead gives the same adapters, bit for bit.
    from safetensors.torch import load_file

    inproc = run_pipeline(tmp_path / "inproc", tiny_profile(), model=str(tiny_model_dir),
                          data_dir=tiny_data_dir, progress=False, isolate_training=False)
    assert inproc["methods"] == manifest["methods"]
    for m in ("anchor", "ace"):
        a, b = (load_file(d / "train" / m / "adapter" / "adapter_model.safetensors") for d in (out, tmp_path / "inproc"))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)

    # Everything is done: a second call trains and scores nothing.
    from acealign import pipeline, scoring, train

    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(scoring, "score_cells_detailed", lambda *a, **k: pytest.fail("scored again"))
    monkeypatch.setattr(pipeline, "_fresh", lambda *a, **k: pytest.fail("model copied again"))
    monkeypatch.setattr(pipeline, "_now", lambda: "2999-01-01T00:00:00+00:00")
    again = run_pipeline(out, tiny_profile(), model=str(tiny_model_dir), data_dir=tiny_data_dir, progress=False)
    # a continued run keeps its creation time and records when it was continued
    assert again["created"] == manifest["created"] and again["updated"] == "2999-01-01T00:00:00+00:00"


def test_unknown_countries_and_methods_are_errors(tmp_path, tiny_data_dir):
    from acealign.survey import DataError

    with pytest.raises(DataError, match="pass --countries"):
        run_pipeline(tmp_path / "a", tiny_profile(countries=("narnia",)), data_dir=tiny_data_dir)
    # Given on the command line, an unknown country is the data's problem, not the profile's.
    with pytest.raises(DataError, match=r"country narnia not in the data \(it has atlantis, borduria\)"):
        run_pipeline(tmp_path / "a", tiny_profile(), countries=["narnia"], data_dir=tiny_data_dir)
    with pytest.raises(ValueError, match="unknown method"):
        run_pipeline(tmp_path / "b", tiny_profile(), methods=["sft"], data_dir=tiny_data_dir)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_wall_time_estimate_is_cells_pairs_and_methods_at_the_calibrated_rates(tiny_data, monkeypatch):
    import acealign.pipeline as P
    from acealign.evaluate import evaluation_cells
    from acealign.splits import make_question_split
    from acealign.train import resolve_config, training_pairs

    monkeypatch.setattr(P, "CALIBRATION", {
        "score_cell": {("persona-first", "float32"): 0.5, ("question-first", "float32"): 0.25},
        "train_pair_epoch": {"float32": 2.0},
        "per_method_overhead_s": 10.0,
        "spread_pairs_factor": 3.0,
    })
    prof = tiny_profile()
    split = make_question_split(tiny_data, eval_frac=prof.eval_frac, seed=0, heldout=prof.heldout)
    est = P.estimate_wall_time(prof, tiny_data, split, "mixed-bf16")  # uncalibrated: as float32
    cells = len(evaluation_cells(tiny_data, split, prof.granularities, prof.min_n))
    cfg = resolve_config(None, [f"{k}={json.dumps(v)}" for k, v in prof.train.items()])
    pairs = len(training_pairs(tiny_data, split, cfg))
    assert est["cells"] == cells and est["pairs"] == pairs == 8 and est["precision"] == "float32"
    # base + anthropological + 2 trained methods scored; 2 training runs of 2 epochs
    assert est["scored_methods"] == 4 and est["training_runs"] == 2
    assert P._training_work(est) == "8 pairs x 2 epochs x 2 training runs"
    assert est["total_s"] == pytest.approx(cells * 4 * 0.5 + 8 * 2 * 2 * 2.0 * 3.0 + (4 + 2) * 10.0)
    # Pairs from whole questions share prefixes (no spread factor); a method's own overrides
    # (here: one epoch for ace) count for that method only.
    grouped = tiny_profile(train={**prof.train, "data.group_by_question": True},
                           method_train={"ace": {"train.epochs": 1}})
    est = P.estimate_wall_time(grouped, tiny_data, split, "float32")
    assert est["train_s"] == pytest.approx(8 * 2 * 2.0 + 8 * 1 * 2.0)
    # the line printed before a run names the total, not one method's pairs and epochs
    assert est["pairs"] is None and est["pair_epochs"] == 8 * 2 + 8 * 1
    assert P._training_work(est) == "24 pair-epochs over 2 training runs"
    qf = P.estimate_wall_time(tiny_profile(template="paper-question-first"), tiny_data, split, "float32")
    assert qf["score_s"] == pytest.approx(cells * 4 * 0.25)
    assert est["curve_s"] == 0
    # Learning curves: 8 pairs / 4 per step x 2 epochs = 4 steps; every 3 -> points at 0, 3, 4;
    # each scores the unique cells of the validation pairs (one validation question here).
    vsplit = make_question_split(tiny_data, eval_frac=0.34, validation_frac=0.5, seed=0)
    curved = tiny_profile(train={**prof.train, "eval.curve_every": 3})
    from acealign.train import pair_cells, validation_pairs

    vcells = len(pair_cells(validation_pairs(tiny_data, vsplit, cfg)))
    assert vcells > 0
    est = P.estimate_wall_time(curved, tiny_data, vsplit, "float32")
    assert est["curve_s"] == pytest.approx(2 * 3 * vcells * 0.5)  # 2 methods x 3 points
    assert est["total_s"] == pytest.approx(est["score_s"] + est["train_s"] + est["curve_s"] + 6 * 10.0)


def test_method_train_overrides_apply_to_their_method_only():
    import acealign.pipeline as P
    from acealign.train import resolve_config

    prof = tiny_profile(method_train={"ace": {"optim.causal_lr": 1e-4, "optim.lr": 3e-4}})
    cfg = {m: resolve_config(None, [f"method={json.dumps(m)}", *P._profile_overrides(prof, m)])
           for m in ("anchor", "ace")}
    assert (cfg["anchor"]["optim"]["lr"], cfg["anchor"]["optim"]["causal_lr"]) == (1e-3, 0.0)
    assert (cfg["ace"]["optim"]["lr"], cfg["ace"]["optim"]["causal_lr"]) == (3e-4, 1e-4)
    assert cfg["ace"]["train"]["batch_size"] == 4  # the profile-wide overrides still apply
    # a method name that is not a bare TOML key, and an inline table as the value
    prof = tiny_profile(method_train={"ace+distribution": {
        "methods.ace+distribution": [{"distribution": 1.0}, {"causal": 2.0}]}})
    cfg = resolve_config(None, ['method="ace+distribution"', *P._profile_overrides(prof, "ace+distribution")])
    assert cfg["methods"]["ace+distribution"] == [{"distribution": 1.0}, {"causal": 2.0}]


def test_standard_profile_scores_g4_in_sample_cells_and_logs_curves():
    import acealign.pipeline as P
    from acealign.train import resolve_config

    prof = PROFILES["standard"]
    assert prof.in_sample_fidelity and prof.in_sample_granularities == (4,)
    for m in prof.methods:
        cfg = resolve_config(None, [f"method={json.dumps(m)}", *P._profile_overrides(prof, m)])
        assert cfg["eval"]["curve_every"] > 0 and not cfg["data"]["group_by_question"]
        assert cfg["train"]["batch_size"] * cfg["train"]["grad_accum"] == 32
        # the joint method's own beta (an inline TOML table through --set); the others keep 1
        beta = cfg["methods"]["ace-joint"][0]["causal"]
        assert beta == (100.0 if m == "ace-joint" else 1.0)
