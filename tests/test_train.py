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
    # A hand-edited split listing an evaluation question as a training question too.
    split.train_questions = sorted(set(split.train_questions) | set(split.eval_questions))
    with pytest.raises(LeakError, match="evaluation cell"):
        T.training_pairs(tiny_data, split, T.resolve_config(None, ["data.min_n=1"]))


def test_epoch_order_is_seeded_permutation():
    a = T.epoch_order(10, seed=3, epoch=0)
    assert sorted(a) == list(range(10)) and a == T.epoch_order(10, 3, 0)
    assert a != T.epoch_order(10, 3, 1) and a != T.epoch_order(10, 4, 0)
    steps = T.step_batches(list(range(10)), batch_size=3, grad_accum=2, n_proc=1)
    assert steps == [[[0, 1, 2], [3, 4, 5]], [[6, 7, 8], [9]]]


# -- training -------------------------------------------------------------------------------
PHASES = {
    # Each phase repeats the same 4-pair batch for 3 epochs (one step each), so its loss must fall.
    "ace": "[{anchor=1},{anchor=1},{anchor=1},{causal=1}]",
    "ace+distribution": "[{distribution=1},{distribution=1},{distribution=1},{causal=1}]",
    "anchor": None, "causal": None, "distribution": None,
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
    expected = {"ace": ["anchor", "causal"], "ace+distribution": ["distribution", "causal"]}
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
    assert all({"step", "epoch", "objective", "loss", "lr"} <= set(r) for r in log)
    for d in ("adapter", "epoch-1", "epoch-2"):
        assert (out / d / "adapter_config.json").is_file()
        assert (out / d / "adapter_model.safetensors").is_file()
    assert_same_adapter(out / "epoch-2", out / "adapter")
    saved = json.loads((out / "config.json").read_text())
    assert saved["method"] == "ace" and saved["data"]["max_pairs"] == 4
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
    assert [r["step"] for r in read_log(tmp_path / "part")] == list(range(1, 9))
    with pytest.raises(ValueError, match="different configuration"):
        run(tmp_path, tiny_data, split, opts + ["optim.lr=0.5"], name="part", resume=True)


def test_max_steps_stops_early(tmp_path, tiny_data, split):
    result = run(tmp_path, tiny_data, split, ["train.batch_size=1", "train.max_steps=3"])
    assert result.steps == 3 and (result.out / "adapter" / "adapter_model.safetensors").is_file()
    assert not (result.out / "epoch-1").exists()


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


@pytest.mark.slow
def test_cli_killed_mid_run_resumes_to_same_adapter(tmp_path, tiny_data_dir, tiny_data, split, model_dir):
    split_path = tmp_path / "split.json"
    split.save(split_path)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "acealign"]
    # Uninterrupted reference run: 6 pairs, 1 per step, 2 epochs = 12 steps.
    ref = tmp_path / "ref"
    done = subprocess.run(cmd + cli_args(tiny_data_dir, split_path, model_dir, ref), env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # Killed run: SIGKILL as soon as a checkpoint exists (steps take well under a second, so the
    # run is far from done).
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + cli_args(tiny_data_dir, split_path, model_dir, killed), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pointer = killed / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 240
    while not pointer.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert pointer.exists() and not (killed / "adapter").exists()
    # Resume with the same command plus --resume.
    again = subprocess.run(cmd + cli_args(tiny_data_dir, split_path, model_dir, killed) + ["--resume", "--json"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["steps"] == 12
    assert_same_adapter(ref / "adapter", killed / "adapter")
    assert_same_adapter(ref / "epoch-1", killed / "epoch-1")
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
    assert two.stdout.count('"steps"') == 1  # one summary, from the main process
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
