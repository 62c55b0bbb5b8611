"""The training recipe on a tiny random Llama and the tiny survey fixture: config, data side,
loss falls for every method, outputs, determinism, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from acealign import train as T
from acealign.cli import main as cli_main
from acealign.splits import LeakError, make_country_split, make_persona_split, make_question_split
from acealign.survey import read_tidy
from acealign.testing import save_tiny_model, tiny_model_and_tokenizer

# Small and fast: 4 pairs, character-level prompts without chat template, lr high enough to move.
FAST = ["data.min_n=1", "data.max_pairs=4", "train.batch_size=4", "model.chat=false",
        "optim.lr=1e-2"]


@pytest.fixture
def split(tiny_data):
    # Tiny data has 3 questions: eval = issp/family/v5, train = Q1 and Q131 (both countries).
    return make_question_split(tiny_data, eval_frac=0.34, seed=0)


def run(tmp_path, data, split, overrides, name="run", seed_model=0, **kw):
    cfg = T.resolve_config(None, FAST + overrides)
    model, tok = tiny_model_and_tokenizer(seed=seed_model)
    return T.train(cfg, tmp_path / name, data=data, split=split, model=model, tokenizer=tok,
                   progress=False, **kw)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def adapter_tensors(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path) -> None:
    ta, tb = adapter_tensors(a), adapter_tensors(b)
    assert ta.keys() == tb.keys() and ta
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


# -- configuration --------------------------------------------------------------------------
def test_default_config_has_paper_settings():
    cfg = T.resolve_config()
    assert (cfg["lora"]["r"], cfg["lora"]["alpha"], cfg["lora"]["dropout"]) == (8, 16, 0.05)
    assert cfg["optim"]["lr"] == 2e-5 and cfg["train"]["epochs"] == 2
    assert cfg["data"]["context_granularity"] == 4 and cfg["data"]["min_n"] == 10
    # Each stage starts clean (the paper's epoch 2 starts from the epoch-1 checkpoint).
    assert cfg["train"]["stage_optimizer"] == "fresh" and cfg["train"]["scoring_mode"] == "whole"
    # ace: epoch 1 alpha=1, beta=0; epoch 2 alpha=0, beta=1 (Eq. 14); later epochs repeat the last.
    assert T.epoch_weights(cfg, 0) == {"anchor": 1.0}
    assert T.epoch_weights(cfg, 1) == {"causal": 1.0}
    assert T.epoch_weights(cfg, 5) == {"causal": 1.0}
    for method in T.METHODS:
        T.resolve_config(None, [f'method="{method}"'])


def test_config_file_and_overrides(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("optim:\n  lr: 0.001\nlora:\n  target_modules: [q_proj, v_proj]\n")
    cfg = T.resolve_config(yml, ["train.batch_size=3", 'method="anchor"',
                                 "methods.mine=[{anchor=0.5, causal=2}]"])
    assert cfg["optim"]["lr"] == 0.001 and cfg["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert cfg["train"]["batch_size"] == 3 and cfg["method"] == "anchor"
    cfg = T.resolve_config(None, ['method="mine"', "methods.mine=[{anchor=0.5, causal=2}]"])
    assert T.epoch_weights(cfg, 0) == {"anchor": 0.5, "causal": 2.0}
    assert T.objective_name(T.epoch_weights(cfg, 0)) == "0.5*anchor+2*causal"
    toml = tmp_path / "c.toml"
    toml.write_text("[train]\nepochs = 3\n")
    assert T.resolve_config(toml)["train"]["epochs"] == 3


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["train.epochs=1.5"], "train.epochs' must be int"),
        (['method="sft"'], "unknown method 'sft'"),
        (["methods.ace=[{anchor=0}]"], "non-zero weight"),
        (["methods.ace=[{anker=1}]"], "unknown term"),
        (['optim.scheduler="step"'], "optim.scheduler"),
        (["lora.dropout=1.0"], "lora.dropout"),
        (['train.stage_optimizer="reset"'], "train.stage_optimizer must be one of fresh, keep"),
        (['train.scoring_mode="partial"'], "train.scoring_mode must be one of whole, literal"),
        (["optim.causal_lr=-1e-3"], "optim.causal_lr must be >= 0"),
        (['optim.causal_lr=1e-3', 'train.stage_optimizer="keep"'], "optim.causal_lr needs"),
        # ace has two stages: one step cannot train both.
        (["train.max_steps=1"], "max_steps=1 is fewer than the 2 stages of method 'ace'"),
    ],
)
def test_bad_config_is_one_clear_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        T.resolve_config(None, overrides)


def test_bad_config_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = \n")
    with pytest.raises(ValueError, match="bad.toml"):
        T.resolve_config(bad)


# -- data side ------------------------------------------------------------------------------
def test_training_pairs_only_from_training_side(tiny_data, split):
    cfg = T.resolve_config(None, ["data.min_n=1"])
    pairs = T.training_pairs(tiny_data, split, cfg)
    assert pairs and {p.question_key for p in pairs} <= set(split.train_questions)
    assert not {p.question_key for p in pairs} & set(split.eval_questions)
    # Persona split: no pair end is a held-out combination.
    psplit = make_persona_split(tiny_data)
    held = set(psplit.heldout_personas)
    ppairs = T.training_pairs(tiny_data, psplit, cfg)
    assert ppairs and all(p.s1.combo not in held and p.s0.combo not in held for p in ppairs)
    # Seeded subsample: same seed, same pairs; another seed, other pairs.
    a = T.training_pairs(tiny_data, split, T.resolve_config(None, ["data.min_n=1", "data.max_pairs=5"]))
    b = T.training_pairs(tiny_data, split, T.resolve_config(None, ["data.min_n=1", "data.max_pairs=5"]))
    c = T.training_pairs(tiny_data, split, T.resolve_config(None, ["data.min_n=1", "data.max_pairs=5", "seed=1"]))
    assert len(a) == 5 and T.pairs_digest(a) == T.pairs_digest(b) != T.pairs_digest(c)


def test_refuses_evaluation_countries_and_leaky_splits(tiny_data, split):
    csplit = make_country_split(tiny_data, ["borduria"])
    cfg = T.resolve_config(None, ["data.min_n=1", 'data.countries=["borduria"]'])
    with pytest.raises(LeakError, match="borduria"):
        T.training_pairs(tiny_data, csplit, cfg)
    # A hand-edited split listing an evaluation question as a training question too, with and
    # without held-out persona combinations.
    split.train_questions = sorted(set(split.train_questions) | set(split.eval_questions))
    with pytest.raises(LeakError, match="evaluation"):
        T.training_pairs(tiny_data, split, T.resolve_config(None, ["data.min_n=1"]))
    split.heldout_personas = ["Female_College_Urban_Married"]
    with pytest.raises(LeakError, match="evaluation"):
        T.training_pairs(tiny_data, split, T.resolve_config(None, ["data.min_n=1"]))


def test_no_training_pair_on_an_evaluation_question_whatever_the_split_kind(tiny_data, split):
    from acealign.splits import make_country_split, make_persona_split

    pairs = T.training_pairs(tiny_data, split, T.resolve_config(None, ["data.min_n=1"]))
    on = {q: [p for p in pairs if p.question_key == q] for q in split.train_questions}
    q = sorted(on)[0]
    assert on[q] and len(on[q]) < len(pairs)
    for s in (make_question_split(tiny_data, eval_frac=0.34, seed=0), make_persona_split(tiny_data),
              make_country_split(tiny_data, ["borduria"])):
        s.train_countries = s.eval_countries = ["atlantis", "borduria"]
        T.check_no_eval_cells(s, [])
        # Question q listed on both sides (held-out personas or not): its pairs are refused.
        s.train_questions, s.eval_questions = sorted(on), [q]
        with pytest.raises(LeakError, match=rf"^{len(on[q])} of {len(pairs)} training pairs .*"
                                            rf"{s.kind} split .*{q}, an evaluation"):
            T.check_no_eval_cells(s, pairs)
        s.eval_questions, s.validation_questions = [], [q]
        with pytest.raises(LeakError, match=f"{q}, a validation question"):
            T.check_no_eval_cells(s, pairs)
        s.validation_questions = []
        T.check_no_eval_cells(s, pairs)
    # A country split trains and evaluates the same question in different countries: allowed.
    csplit = make_country_split(tiny_data, ["borduria"])
    csplit.eval_questions = sorted(on)
    atl = [p for p in pairs if p.s1.country == "atlantis"]
    T.check_no_eval_cells(csplit, atl)
    with pytest.raises(LeakError, match="evaluation"):
        T.check_no_eval_cells(csplit, pairs)


def test_epoch_order_is_seeded_permutation():
    a = T.epoch_order(10, seed=3, epoch=0)
    assert sorted(a) == list(range(10)) and a == T.epoch_order(10, 3, 0)
    assert a != T.epoch_order(10, 3, 1) and a != T.epoch_order(10, 4, 0)
    steps = T.step_batches(list(range(10)), batch_size=3, grad_accum=2, n_proc=1)
    assert steps == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9]]]


def test_stage_schedule():
    def plan(overrides, spe):
        return [(st.name, st.objective, st.first_epoch, st.epochs, st.first_step, st.steps)
                for st in T.stages(T.resolve_config(None, overrides), spe)]

    # The paper's ace: an anchor stage, then a causal stage, 4 steps each.
    assert plan([], 4) == [("stage-1", "anchor", 0, 1, 0, 4), ("stage-2", "causal", 1, 1, 4, 4)]
    assert plan(['method="ace+distribution"'], 3) == [("stage-1", "distribution", 0, 1, 0, 3),
                                                      ("stage-2", "causal", 1, 1, 3, 3)]
    # Eq. 14 joint: anchor and causal in the same steps, one stage over both epochs.
    assert plan(['method="ace-joint"'], 4) == [("stage-1", "anchor+causal", 0, 2, 0, 8)]
    assert plan(['method="ace-joint"', 'methods.ace-joint=[{anchor=1.0, causal=0.5}]'], 4)[0][1] \
        == "anchor+0.5*causal"
    # Single-stage methods, and ace cut to one epoch, are one stage.
    assert plan(['method="anchor"', "train.epochs=3"], 4) == [("stage-1", "anchor", 0, 3, 0, 12)]
    assert plan(["train.epochs=1"], 4) == [("stage-1", "anchor", 0, 1, 0, 4)]
    # Consecutive equal epochs merge (the last entry repeats); non-consecutive ones do not.
    three = ["methods.ace=[{anchor=1},{anchor=1},{causal=1}]"]
    assert plan(three + ["train.epochs=4"], 2) == [("stage-1", "anchor", 0, 2, 0, 4),
                                                   ("stage-2", "causal", 2, 2, 4, 4)]
    assert [x[1] for x in plan(["methods.ace=[{anchor=1},{causal=1},{anchor=1}]", "train.epochs=3"], 2)] \
        == ["anchor", "causal", "anchor"]
    # max_steps splits the budget in proportion to the stages' lengths, each at least one step,
    # ties to the earlier stage; a budget at or above the full length changes nothing.
    budget = {m: [x[5] for x in plan([f"train.max_steps={m}"], 4)] for m in (2, 3, 7, 8, 100)}
    assert budget == {2: [1, 1], 3: [2, 1], 7: [4, 3], 8: [4, 4], 100: [4, 4]}
    assert [x[4:] for x in plan(["train.max_steps=3"], 4)] == [(0, 2), (2, 1)]
    assert [x[5] for x in plan(three + ["train.epochs=4", "train.max_steps=5"], 3)] == [3, 2]
    # 8 + 4 steps cut to 8: one each, then 6 split 7:3 (4.2, 1.8 -> 4 + 2 by largest remainder).
    assert [x[5] for x in plan(three + ["train.epochs=3", "train.max_steps=8"], 4)] == [5, 3]
    assert plan(['method="anchor"', "train.max_steps=3"], 4) == [("stage-1", "anchor", 0, 2, 0, 3)]
    with pytest.raises(ValueError, match="fewer than the 3 stages"):
        T.resolve_config(None, ["methods.ace=[{anchor=1},{causal=1},{anchor=1}]", "train.epochs=3",
                                "train.max_steps=2"])
    # Where each step runs: a cut stage leaves its epoch early, the next starts its own epoch.
    cut = T.stages(T.resolve_config(None, three + ["train.epochs=4", "train.max_steps=5"]), 3)
    assert [cut[0].position(k, 3) for k in range(3)] == [(0, 0), (0, 1), (0, 2)]
    assert [cut[1].position(k, 3) for k in range(2)] == [(2, 0), (2, 1)]
    assert [T.stage_at(cut, i).index for i in range(5)] == [0, 0, 0, 1, 1]
    assert [T.epochs_completed(cut, i, 3) for i in range(6)] == [0, 0, 0, 1, 1, 1]
    assert cut[1].record() == {"stage": 2, "name": "stage-2", "objective": "causal",
                               "weights": {"causal": 1.0}, "first_step": 4, "steps": 2,
                               "epochs": [3, 4]}


# -- training -------------------------------------------------------------------------------
PHASES = {
    # Each phase repeats the same 4-pair batch for 3 epochs (one step each), so its loss must fall.
    "ace": "[{anchor=1},{anchor=1},{anchor=1},{causal=1}]",
    "ace+distribution": "[{distribution=1},{distribution=1},{distribution=1},{causal=1}]",
    "anchor": None, "causal": None, "ace-joint": None, "distribution": None,
}


@pytest.mark.parametrize("method", list(PHASES))
def test_training_loss_falls_for_each_method(tmp_path, tiny_data, split, method):
    extra = [f'method="{method}"', "train.epochs=6" if PHASES[method] else "train.epochs=4"]
    if PHASES[method]:
        extra.append(f'methods."{method}"={PHASES[method]}')
    # A gentler lr than FAST: W1-type losses are piecewise linear and Adam at 1e-2 oscillates.
    result = run(tmp_path, tiny_data, split, extra + ["optim.lr=3e-3"])
    log = [r for r in read_log(result.out) if "loss" in r]
    by_objective: dict[str, list[float]] = {}
    for r in log:
        by_objective.setdefault(r["objective"], []).append(r["loss"])
    expected = {"ace": ["anchor", "causal"], "ace+distribution": ["distribution", "causal"],
                "ace-joint": ["anchor+causal"]}
    assert list(by_objective) == expected.get(method, [method])
    for objective, losses in by_objective.items():
        assert len(losses) >= 3
        assert losses[-1] < losses[0], (objective, losses)


def test_outputs_and_paper_schedule(tmp_path, tiny_data, split):
    from peft import PeftModel

    result = run(tmp_path, tiny_data, split, ["train.batch_size=2", "eval.train_cells=true"])
    out = result.out
    log = [r for r in read_log(out) if "loss" in r]
    # 4 pairs / 2 per step = 2 steps per epoch; paper schedule: anchor then causal.
    assert [(r["step"], r["epoch"], r["objective"]) for r in log] == [
        (1, 1, "anchor"), (2, 1, "anchor"), (3, 2, "causal"), (4, 2, "causal")]
    assert all({"step", "epoch", "stage", "objective", "loss", "lr"} <= set(r) for r in log)
    # One record as each stage starts: name, objective, first step, step count, optimizer.
    marks = [r for r in read_log(out) if r.get("event") == "stage"]
    assert [(r["step"], r["name"], r["objective"], r["first_step"], r["steps"], r["optimizer"])
            for r in marks] == [(1, "stage-1", "anchor", 1, 2, "fresh"), (3, "stage-2", "causal", 3, 2, "fresh")]
    assert result.stages == [{k: v for k, v in r.items() if k not in ("event", "optimizer", "step", "epoch")}
                             for r in marks]
    assert result.epochs_done == 2 and result.steps == 4
    for d in ("adapter", "epoch-1", "epoch-2"):
        assert (out / d / "adapter_config.json").is_file()
        assert (out / d / "adapter_model.safetensors").is_file()
    assert_same_adapter(out / "epoch-2", out / "adapter")
    saved = json.loads((out / "config.json").read_text())
    assert saved["method"] == "ace" and saved["data"]["max_pairs"] == 4
    assert saved["train"]["stage_optimizer"] == "fresh" and saved["train"]["scoring_mode"] == "whole"
    # pairs.csv names the trained pairs as the analyses' prediction pairs name them.
    from acealign.analyses.common import prediction_pairs
    from acealign.evaluate import EvalCell, predictions_frame
    from acealign.personas import eligible_cells

    trained = pd.read_csv(out / "pairs.csv", dtype=str, keep_default_na=False)
    assert len(trained) == 4 and list(trained.columns) == ["country", "question_key", "attribute", "context"]
    cells = eligible_cells(tiny_data, (4,), saved["data"]["min_n"]).cells
    frame = predictions_frame(tiny_data, [EvalCell(c, False, False, True) for c in cells], "m",
                              [np.full(len(c.counts), 1 / len(c.counts)) for c in cells])
    formed = prediction_pairs(frame)[list(trained.columns)].astype(str)
    assert set(map(tuple, trained.to_numpy())) <= set(map(tuple, formed.to_numpy()))
    evals = json.loads((out / "eval.json").read_text())
    assert set(evals["train"]) == {"before", "epoch-1", "epoch-2", "after"}
    assert all(0 <= v <= 1 for v in evals["train"].values())
    # The trained adapter changes the predictions; loading it both ways gives the same model.
    base, tok = tiny_model_and_tokenizer()
    peft_model = PeftModel.from_pretrained(base, out / "adapter")
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)
    # A second run into the same directory is refused (would mix two runs).
    with pytest.raises(ValueError, match="--resume"):
        run(tmp_path, tiny_data, split, [])


def test_same_seed_same_adapter_other_seed_other_adapter(tmp_path, tiny_data, split):
    a = run(tmp_path, tiny_data, split, ["train.batch_size=2"], name="a")
    b = run(tmp_path, tiny_data, split, ["train.batch_size=2"], name="b")
    c = run(tmp_path, tiny_data, split, ["train.batch_size=2", "seed=1"], name="c")
    assert_same_adapter(a.adapter, b.adapter)
    ta, tc = adapter_tensors(a.adapter), adapter_tensors(c.adapter)
    assert any(not torch.equal(ta[k], tc[k]) for k in ta)


def test_stop_and_resume_in_process_matches_uninterrupted(tmp_path, tiny_data, split):
    opts = ["train.batch_size=1", "train.checkpoint_every=2"]  # 4 steps per epoch, 8 in all
    full = run(tmp_path, tiny_data, split, opts, name="full")
    part = run(tmp_path, tiny_data, split, opts, name="part", stop_after=3)
    assert part.steps == 3 and not (tmp_path / "part" / "adapter").exists()
    # Resume from the step-2 checkpoint (step 3 was never saved): it redoes step 3.
    rest = run(tmp_path, tiny_data, split, opts, name="part", resume=True)
    assert rest.steps == full.steps == 8
    assert_same_adapter(full.adapter, rest.adapter)
    log = read_log(tmp_path / "part")
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 9))
    assert [r["step"] for r in log if r.get("event") == "stage"] == [1, 5]
    with pytest.raises(ValueError, match="different configuration"):
        run(tmp_path, tiny_data, split, opts + ["optim.lr=0.5"], name="part", resume=True)


def adapter_after_one_fresh_causal_step(tiny_data, split, overrides, stage1_adapter: Path):
    """Reference: the stage-1 adapter, a new AdamW (constant LR), one causal step on the first
    batch of epoch 2, outside the trainer."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from acealign.scoring import OptionScorer

    cfg = T.resolve_config(None, FAST + overrides)
    model, tok = tiny_model_and_tokenizer(seed=0)
    model = T.add_lora(model, cfg)
    set_peft_model_state_dict(model, adapter_tensors(stage1_adapter))
    model.train()
    pairs = T.training_pairs(tiny_data, split, cfg)
    batch = T.step_batches(T.epoch_order(len(pairs), cfg["seed"], 1), cfg["train"]["batch_size"], 1, 1)[0]
    assert len(batch) == 1
    mb = [pairs[i] for i in batch[0]]
    req = T.make_requests(tiny_data, [(p.s1, p.question_key) for p in mb]
                          + [(p.s0, p.question_key) for p in mb], tok, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg["optim"]
    optimizer = torch.optim.AdamW(params, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"],
                                  weight_decay=o["weight_decay"])
    loss, _ = T.batch_loss(mb, req[: len(mb)], req[len(mb):], {"causal": 1.0}, OptionScorer(model, tok))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, o["max_grad_norm"])
    optimizer.step()
    return {k: v.detach() for k, v in get_peft_model_state_dict(model).items()}


def test_first_causal_update_is_a_fresh_optimizers_step(tmp_path, tiny_data, split):
    # 2 pairs per step: stage 1 = steps 1-2 (anchor), stage 2 = steps 3-4 (causal); no dropout,
    # so the step is deterministic; every step checkpointed.
    opts = ["train.batch_size=2", "lora.dropout=0.0", "train.checkpoint_every=1",
            "train.keep_checkpoints=10"]
    fresh = run(tmp_path, tiny_data, split, opts, name="fresh")
    keep = run(tmp_path, tiny_data, split, opts + ['train.stage_optimizer="keep"'], name="keep")
    ckpt = {name: tmp_path / name / "checkpoints" for name in ("fresh", "keep")}
    # Stage 1 is the same run either way (constant LR): only the optimizer carried over differs.
    assert_same_adapter(fresh.out / "epoch-1", keep.out / "epoch-1")
    assert_same_adapter(fresh.out / "epoch-1", ckpt["fresh"] / "step-00000002")
    ref = adapter_after_one_fresh_causal_step(tiny_data, split, opts, fresh.out / "epoch-1")
    before = adapter_tensors(fresh.out / "epoch-1")
    got = {name: adapter_tensors(ckpt[name] / "step-00000003") for name in ckpt}
    assert ref.keys() == got["fresh"].keys()
    assert any(not torch.allclose(ref[k], before[k], atol=1e-4) for k in ref)  # the step moved it
    for k in ref:
        assert torch.allclose(got["fresh"][k], ref[k], rtol=1e-5, atol=1e-7), k
    # "keep": the anchor stage's AdamW moments shape the first causal update.
    diff = max((got["keep"][k] - ref[k]).abs().max().item() for k in ref)
    assert diff > 1e-4, diff
    assert [r["optimizer"] for r in read_log(keep.out) if r.get("event") == "stage"] == ["fresh", "kept"]


def test_each_stage_has_its_own_lr_schedule(tmp_path, tiny_data, split):
    opts = ["train.batch_size=1", 'optim.scheduler="linear"']  # 4 + 4 steps
    lrs = {}
    for mode in ("fresh", "keep"):
        out = run(tmp_path, tiny_data, split, opts + [f'train.stage_optimizer="{mode}"'], name=mode).out
        lrs[mode] = [r["lr"] / 1e-2 for r in read_log(out) if "loss" in r]
    # Linear decay over each stage's own 4 steps, restarting at the causal stage...
    assert lrs["fresh"] == pytest.approx([1, 0.75, 0.5, 0.25] * 2)
    # ...or over the whole run's 8 steps with one schedule.
    assert lrs["keep"] == pytest.approx([1 - i / 8 for i in range(8)])


def test_causal_stage_lr(tmp_path, tiny_data, split):
    # optim.causal_lr sets the base LR of the causal-only stage; the anchor stage keeps optim.lr.
    out = run(tmp_path, tiny_data, split, ["train.batch_size=1", "optim.causal_lr=1e-3"]).out
    assert [r["lr"] for r in read_log(out) if "loss" in r] == pytest.approx([1e-2] * 4 + [1e-3] * 4)


@pytest.mark.parametrize(
    ("stop", "every", "extra"),
    [
        (4, 1, []),                                  # checkpoint at the last step of stage 1
        (5, 1, []),                                  # ... at the first step of stage 2
        (6, 1, []),                                  # ... at its second step
        (5, 3, []),                                  # stopped after step 5, resumes from step 4
        (7, 3, []),                                  # resumes from step 6 (stage-2 optimizer)
        (6, 1, ["train.epochs=3"]),                  # stages of 4 and 8 steps: the resumed
                                                     # schedule must be stage 2's
        (3, 0, ["train.max_steps=6"]),               # end of a stage cut short by max_steps
                                                     # (checkpointed although not an epoch end)
        (5, 1, ['train.stage_optimizer="keep"']),
    ],
)
def test_resume_at_and_across_the_stage_boundary(tmp_path, tiny_data, split, stop, every, extra):
    # Linear LR: a resumed stage-2 schedule of the wrong length would change the adapter.
    opts = ["train.batch_size=1", f"train.checkpoint_every={every}", 'optim.scheduler="linear"'] + extra
    full = run(tmp_path, tiny_data, split, opts, name="full")
    part = run(tmp_path, tiny_data, split, opts, name="part", stop_after=stop)
    assert part.steps == stop and not (part.out / "adapter").exists()
    rest = run(tmp_path, tiny_data, split, opts, name="part", resume=True)
    assert rest.steps == full.steps and rest.stages == full.stages
    assert_same_adapter(full.adapter, rest.adapter)
    full_log, part_log = read_log(full.out), read_log(part.out)
    assert [r["step"] for r in part_log if "loss" in r] == list(range(1, full.steps + 1))
    assert [r["lr"] for r in part_log if "loss" in r] == [r["lr"] for r in full_log if "loss" in r]
    assert [r for r in part_log if r.get("event") == "stage"] == [
        r for r in full_log if r.get("event") == "stage"]


def test_max_steps_stops_early(tmp_path, tiny_data, split):
    result = run(tmp_path, tiny_data, split, ["train.batch_size=1", "train.max_steps=3"])
    assert result.steps == 3 and (result.out / "adapter" / "adapter_model.safetensors").is_file()
    assert not (result.out / "epoch-1").exists() and result.epochs_done == 0
    # ace (4 + 4 steps) cut to 3 still trains its causal stage: 2 anchor steps, then 1 causal
    # step on the first batch of epoch 2.
    log = [r for r in read_log(result.out) if "loss" in r]
    assert [(r["step"], r["epoch"], r["objective"]) for r in log] == [
        (1, 1, "anchor"), (2, 1, "anchor"), (3, 2, "causal")]
    assert [(st["objective"], st["first_step"], st["steps"]) for st in result.stages] == [
        ("anchor", 1, 2), ("causal", 3, 1)]
    # A single-stage method simply stops.
    one = run(tmp_path, tiny_data, split, ["train.batch_size=1", "train.max_steps=3",
                                           'method="anchor"'], name="anchor")
    assert [r["objective"] for r in read_log(one.out) if "loss" in r] == ["anchor"] * 3


# -- command line, subprocess killed mid-run --------------------------------------------------
@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "tiny-model"
    save_tiny_model(d, seed=0, chat=False)
    return d


def cli_args(data_dir, split_path, model_dir, out):
    return ["train", "--method", "ace", "--data", str(data_dir), "--split", str(split_path),
            "--model", str(model_dir), "--out", str(out), "--max-pairs", "6", "--batch-size", "1",
            "--set", "data.min_n=1", "--set", "train.checkpoint_every=2", "--set", "optim.lr=1e-2",
            "--no-progress"]


def checkpoint_step(out: Path) -> int:
    """Steps of the newest checkpoint of a run (-1 before the first one)."""
    try:
        return int(json.loads((out / "checkpoints" / "latest.json").read_text())["checkpoint"][5:])
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


def kill_after_checkpoint(cmd: list[str], env: dict, out: Path, step: int) -> None:
    """Start ``cmd`` and SIGKILL it as soon as a checkpoint of ``step`` or later exists."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while checkpoint_step(out) < step and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]  # killed, not done
    assert checkpoint_step(out) >= step and not (out / "adapter").exists()


@pytest.mark.slow
def test_cli_killed_mid_run_resumes_to_same_adapter(tmp_path, tiny_data_dir, tiny_data, split, model_dir):
    split_path = tmp_path / "split.json"
    split.save(split_path)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "acealign"]
    # Uninterrupted reference run: 6 pairs, 1 per step, 2 epochs = 12 steps, the causal stage
    # from step 7.
    ref = tmp_path / "ref"
    done = subprocess.run(cmd + cli_args(tiny_data_dir, split_path, model_dir, ref) + ["--json"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # Killed three times (steps take well under a second, checkpoints every 2 steps, so each kill
    # lands a few steps before the end): in the anchor stage, just after the stage-1 checkpoint
    # at step 6 (around the stage change), and in the causal stage; each time resumed with the
    # same command plus --resume.
    killed = tmp_path / "killed"
    args = cli_args(tiny_data_dir, split_path, model_dir, killed)
    kill_after_checkpoint(cmd + args, env, killed, 2)
    kill_after_checkpoint(cmd + args + ["--resume"], env, killed, 6)
    kill_after_checkpoint(cmd + args + ["--resume"], env, killed, 8)
    again = subprocess.run(cmd + args + ["--resume", "--json"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    summary = json.loads(again.stdout)
    assert summary["steps"] == 12 and summary["stages"] == json.loads(done.stdout)["stages"]
    assert [(st["objective"], st["first_step"], st["steps"]) for st in summary["stages"]] == [
        ("anchor", 1, 6), ("causal", 7, 6)]
    assert_same_adapter(ref / "adapter", killed / "adapter")
    assert_same_adapter(ref / "epoch-1", killed / "epoch-1")
    log = read_log(killed)
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 13))
    assert [r["step"] for r in log if r.get("event") == "stage"] == [1, 7]
    # The adapter loads through the engine's loader.
    from acealign.models import load_model

    model, _ = load_model(str(model_dir), adapter=str(killed / "adapter"))
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_cli_errors_are_one_line(tmp_path, tiny_data_dir, split, capsys):
    split_path = tmp_path / "split.json"
    split.save(split_path)
    assert cli_main(["train", "--data", str(tiny_data_dir), "--out", str(tmp_path / "r")]) == 2
    assert "--split" in capsys.readouterr().err
    assert cli_main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no run to continue" in capsys.readouterr().err
    assert cli_main(["train", "--data", str(tiny_data_dir), "--split", str(split_path),
                     "--out", str(tmp_path / "r"), "--set", "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and len(err.strip().splitlines()) == 1
    # ace has an anchor and a causal stage: one step cannot train both.
    assert cli_main(["train", "--data", str(tiny_data_dir), "--split", str(split_path),
                     "--out", str(tmp_path / "r"), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "fewer than the 2 stages" in err and len(err.strip().splitlines()) == 1
    # A run saved before train.stage_optimizer / train.scoring_mode existed: named, not a KeyError.
    old = tmp_path / "old"
    old.mkdir()
    cfg = T.resolve_config()
    del cfg["train"]["stage_optimizer"], cfg["train"]["scoring_mode"]
    (old / "config.json").write_text(json.dumps(cfg))
    assert cli_main(["train", "--out", str(old), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "train.scoring_mode, train.stage_optimizer" in err and len(err.strip().splitlines()) == 1


# -- cheaper variants: grouped order, shared ends scored once, top layers only ----------------
def test_group_by_question_order_and_subsample(tiny_data, split):
    cfg = T.resolve_config(None, ["data.min_n=1", "data.max_pairs=10", "data.group_by_question=true"])
    pairs = T.training_pairs(tiny_data, split, cfg)
    groups = T.question_groups(pairs)
    # Whole questions first: at most one group is cut.
    all_pairs = T.training_pairs(tiny_data, split, T.resolve_config(None, ["data.min_n=1"]))
    full = {tuple(sorted((p.s1.key, p.attribute) for p in all_pairs
                         if (p.s1.country, p.question_key) == (pairs[g[0]].s1.country, pairs[g[0]].question_key)))
            for g in groups}
    sizes = sorted(len(g) for g in groups)
    assert len(pairs) == 10 and sum(len(x) > s for x, s in zip(sorted(full, key=len), sizes, strict=True)) <= 1
    order = T.epoch_order(len(pairs), 0, 0, groups)
    assert sorted(order) == list(range(len(pairs)))
    # Each group's pairs are contiguous in the order.
    where = {i: k for k, g in enumerate(groups) for i in g}
    runs = [where[i] for i in order]
    assert len([k for j, k in enumerate(runs) if j == 0 or runs[j - 1] != k]) == len(groups)


def test_shared_ends_scored_once_give_the_same_loss_and_gradient(tiny_data, split):
    from acealign.scoring import OptionScorer

    cfg = T.resolve_config(None, ["data.min_n=1", "model.chat=false"])
    pairs = T.training_pairs(tiny_data, split, cfg)
    groups = T.question_groups(pairs)
    # The pairs of one question toggling away from one persona share that end (s0).
    base = pairs[groups[0][0]].s0
    mb = [pairs[i] for i in groups[0] if pairs[i].s0 == base or pairs[i].s1 == base]
    model, tok = tiny_model_and_tokenizer()
    model = T.add_lora(model, T.resolve_config(None, ["lora.dropout=0.0"]))
    # Make the adapter non-trivial so that gradients reach both LoRA matrices.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    req = T.make_requests(tiny_data, [(p.s1, p.question_key) for p in mb]
                          + [(p.s0, p.question_key) for p in mb], tok, cfg)
    req1, req0 = req[: len(mb)], req[len(mb):]
    assert len(mb) >= 2 and len(set(req)) < len(req)
    scorer = OptionScorer(model, tok)
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for dedup in (True, False):
        loss, terms = T.batch_loss(mb, req1, req0, {"anchor": 1.0, "causal": 1.0}, scorer, dedup)
        results.append((loss.detach(), torch.autograd.grad(loss, params)))
    (la, ga), (lb, gb) = results
    # Equal up to float rounding: the scorer batches a different set of prompts in each case.
    assert torch.allclose(la, lb, atol=1e-6)
    diffs = [((a - b).abs().max() / (b.abs().max() + 1e-12)).item() for a, b in zip(ga, gb, strict=True)]
    assert max(diffs) < 1e-4, max(diffs)


def test_top_layers_puts_lora_on_the_last_layers_only():
    model, _ = tiny_model_and_tokenizer()  # 2 layers
    peft_model = T.add_lora(model, T.resolve_config(None, ["lora.top_layers=1"]))
    names = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert names and all(".layers.1." in n for n in names)


@pytest.mark.slow
def test_two_processes_match_one_process_with_grad_accum(tmp_path, tiny_data_dir, split, model_dir):
    # torchrun with 2 CPU processes (gloo): each takes every 2nd micro-batch of a step and the
    # adapter gradients are averaged, which is one process with grad_accum=2 (dropout off).
    split_path = tmp_path / "split.json"
    split.save(split_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--set", "lora.dropout=0.0", "--max-pairs", "8", "--json"]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
         str(29500 + os.getpid() % 1000), "-m", "acealign"]
        + cli_args(tiny_data_dir, split_path, model_dir, tmp_path / "two") + common,
        env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count('"last_loss"') == 1  # one summary, from the main process
    one = subprocess.run(
        [sys.executable, "-m", "acealign"] + cli_args(tiny_data_dir, split_path, model_dir, tmp_path / "one")
        + common + ["--grad-accum", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    assert json.loads(two.stdout)["steps"] == json.loads(one.stdout)["steps"] == 8
    ta, tb = adapter_tensors(tmp_path / "two" / "adapter"), adapter_tensors(tmp_path / "one" / "adapter")
    assert all(torch.allclose(ta[k], tb[k], atol=1e-6) for k in ta)
    ckpt = T.latest_checkpoint(tmp_path / "two")
    assert (ckpt / "rng-0.pt").is_file() and (ckpt / "rng-1.pt").is_file()


def test_score_run_cells_reproduces_the_runs_own_evaluation(tmp_path, tiny_data_dir, split, model_dir):
    split_path = tmp_path / "split.json"
    split.save(split_path)
    cfg = T.resolve_config(None, FAST + ["train.epochs=1", "eval.train_cells=true",
                                         f"model.name={json.dumps(str(model_dir))}",
                                         f"data.dir={json.dumps(str(tiny_data_dir))}",
                                         f"data.split={json.dumps(str(split_path))}"])
    result = T.train(cfg, tmp_path / "run", progress=False)
    after, n = T.score_run_cells(result.out, "train")
    before, _ = T.score_run_cells(result.out, "train", adapter=None)
    assert n == len(T.pair_cells(T.training_pairs(read_tidy(tiny_data_dir), split, cfg)))
    assert after == pytest.approx(result.evals["train"]["after"], abs=1e-6)
    assert before == pytest.approx(result.evals["train"]["before"], abs=1e-6)
    assert after != pytest.approx(before, abs=1e-6)


def test_scoring_mode_reaches_the_scorer_and_the_saved_config(tmp_path, tiny_data_dir, split, model_dir):
    split_path = tmp_path / "split.json"
    split.save(split_path)
    base = FAST + ["train.epochs=1", "eval.train_cells=true",
                   f"model.name={json.dumps(str(model_dir))}",
                   f"data.dir={json.dumps(str(tiny_data_dir))}",
                   f"data.split={json.dumps(str(split_path))}"]
    before = {}
    for mode in ("whole", "literal"):
        result = T.train(T.resolve_config(None, base + [f'train.scoring_mode="{mode}"']),
                         tmp_path / mode, progress=False)
        assert json.loads((result.out / "config.json").read_text())["train"]["scoring_mode"] == mode
        before[mode] = result.evals["train"]["before"]
        # score_run_cells scores the way the run did (the untrained model: same numbers).
        assert T.score_run_cells(result.out, "train", adapter=None)[0] == pytest.approx(before[mode], abs=1e-6)
    assert before["whole"] != pytest.approx(before["literal"], abs=1e-4)
