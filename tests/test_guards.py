"""Guards against stale and leaking results (issue 8, parts 6 and 7): fingerprints of reused
artefacts, the adapter's own prompt template, the scoring-mode option, and inputs (model,
countries) refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acealign import fingerprint as F
from acealign.cli import main
from acealign.pipeline import Profile, make_split, run_pipeline
from acealign.splits import Split, make_question_split
from acealign.survey import DataError


def tiny_profile(**kw) -> Profile:
    base = dict(name="test", description="tiny", countries=None, eval_frac=0.34, validation_frac=0.0,
                methods=("anchor",), template="paper", prompt_baselines=(),
                train={"data.max_pairs": 4, "train.batch_size": 4})
    base.update(kw)
    return Profile(**base)


def fake_model_dir(path: Path) -> Path:
    """Passes the up-front model check (a directory with a config.json); never loaded here."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    return path


def run_cli(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err, *needles):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


# -- fingerprint helpers ---------------------------------------------------------------------------
def test_differences_name_nested_and_missing_fields():
    a = {"model": "m", "config": {"optim": {"lr": 1e-3}, "seed": 0}, "split": "s1", "dtype": "float32"}
    b = {"model": "m", "config": {"optim": {"lr": 2e-5}, "seed": 0}, "split": "s2"}
    assert F.differences(a, b) == ["config.optim.lr", "dtype", "split"]
    assert F.differences(a, json.loads(json.dumps(a))) == []
    assert F.differences({"g": (1, 2)}, {"g": [1, 2]}) == []  # as saved in JSON
    text = F.describe_differences(a, b)
    assert "config.optim.lr: 0.001 there, 2e-05 now" in text and "dtype: 'float32' there, (missing) now" in text
    with pytest.raises(F.StaleError, match=r"^X: the thing was made with other settings \(split: 's1' there, "
                                           r"'s2' now\); delete X to start fresh$"):
        F.require_same({"split": "s1"}, {"split": "s2"}, what="the thing", path="X", fresh="delete X to start fresh")
    with pytest.raises(F.StaleError, match="has no fingerprint"):
        F.require_same(None, {"split": "s2"}, what="the thing", path="X", fresh="delete X")
    F.require_same({"split": "s"}, {"split": "s"}, what="the thing", path="X", fresh="")


def test_adapter_digest_follows_content_not_path(tmp_path):
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text('{"r": 8}')
    (d / "adapter_model.safetensors").write_bytes(b"weights-1")
    first = F.adapter_digest(d)
    assert F.adapter_digest(d) == first and F.adapter_digest(None) is None
    (d / "adapter_model.safetensors").write_bytes(b"weights-2")  # retrained in place
    second = F.adapter_digest(d)
    assert second != first
    (d / "adapter_config.json").write_text('{"r": 16}')
    assert F.adapter_digest(d) not in (first, second)
    (d / "adapter_model.safetensors").unlink()
    with pytest.raises(DataError, match="no weight file"):
        F.adapter_digest(d)
    with pytest.raises(DataError, match="no adapter_config.json"):
        F.adapter_digest(tmp_path)


def test_data_and_training_fingerprints(tiny_data):
    split = make_question_split(tiny_data, 0.34, seed=0, countries=["atlantis"])
    assert F.data_digest(tiny_data, ["atlantis"]) == F.data_digest(tiny_data.subset(countries=["atlantis"]))
    assert F.data_digest(tiny_data, ["atlantis"]) != F.data_digest(tiny_data)
    cfg = {"method": "ace", "data": {"split": "/a/split.json", "dir": "/data", "min_n": 10}, "optim": {"lr": 1e-3}}
    fp = F.training_fingerprint(cfg, split, tiny_data)
    assert fp["config"]["data"] == {"min_n": 10} and cfg["data"]["split"] == "/a/split.json"  # paths left out, cfg intact
    assert fp["split"] == F.split_digest(split) and fp["data"] == F.data_digest(tiny_data, ["atlantis"])
    moved = Split(**{**split.__dict__, "source": "/elsewhere"})
    assert F.split_digest(moved) == F.split_digest(split)


def test_cli_scoring_modes_match_the_engine(capsys):
    from acealign.cli import SCORING_MODES
    from acealign.scoring import SCORING_MODES as ENGINE

    assert SCORING_MODES == ENGINE
    from acealign.cli import build_parser

    parser = build_parser()
    for cmd in (["score", "--out", "x"], ["eval", "--split", "s", "--out", "x"], ["run"]):
        assert parser.parse_args([*cmd, "--scoring-mode", "literal"]).scoring_mode == "literal"
        with pytest.raises(SystemExit):
            parser.parse_args([*cmd, "--scoring-mode", "exact"])
    capsys.readouterr()
    assert parser.parse_args(["score", "--out", "x"]).scoring_mode == "whole"
    assert parser.parse_args(["run"]).scoring_mode is None  # the profile's (whole by default)
    assert Profile(name="p", description="", countries=None).scoring_mode == "whole"


# -- part 7: bad input refused before anything is written ----------------------------------------
@pytest.mark.parametrize("model,needle", [
    ("/nonexistent/model", "no such file or directory"),
    ("./missing-model", "no such file or directory"),
    ("EMPTY_DIR", "no config.json"),
])
def test_run_with_a_missing_model_writes_nothing(tmp_path, tiny_data_dir, capsys, monkeypatch, model, needle):
    monkeypatch.chdir(tmp_path)
    if model == "EMPTY_DIR":
        (tmp_path / "empty").mkdir()
        model = str(tmp_path / "empty")
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["run", "--model", model, "--data", str(tiny_data_dir), "--countries",
                                  "atlantis", "--out", str(out), "--no-progress"])
    one_line_error(rc, err, model, needle)
    assert not out.exists()


def test_hub_id_not_cached_while_offline(tmp_path, tiny_data_dir, capsys, monkeypatch):
    from acealign.models import check_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["run", "--model", "some-org/not-cached", "--data", str(tiny_data_dir),
                                  "--countries", "atlantis", "--out", str(out)])
    one_line_error(rc, err, "some-org/not-cached", "not in the local Hugging Face cache", "offline")
    assert not out.exists()
    # The same id, once in the cache, passes.
    snap = tmp_path / "hub" / "models--some-org--not-cached"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    (snap / "snapshots" / "abc123" / "config.json").write_text("{}")
    check_model("some-org/not-cached")


def test_unknown_country_is_named_and_writes_nothing(tmp_path, tiny_data_dir, capsys):
    out = tmp_path / "run"
    rc, _, err = run_cli(capsys, ["run", "--model", str(fake_model_dir(tmp_path / "m")), "--data",
                                  str(tiny_data_dir), "--countries", "atlantis,narnia", "--out", str(out)])
    one_line_error(rc, err, "country narnia not in the data", "atlantis, borduria")
    assert "profile" not in err and not out.exists()


def test_eval_with_a_missing_model_writes_nothing(tmp_path, tiny_data, tiny_data_dir, capsys):
    split = make_question_split(tiny_data, 0.34, seed=0)
    split.save(tmp_path / "s.json")
    out = tmp_path / "eval"
    rc, _, err = run_cli(capsys, ["eval", "--model", "/nonexistent", "--data", str(tiny_data_dir),
                                  "--split", str(tmp_path / "s.json"), "--out", str(out)])
    one_line_error(rc, err, "/nonexistent")
    assert not out.exists()


def test_unknown_scoring_mode_writes_nothing(tmp_path, tiny_data_dir):
    with pytest.raises(ValueError, match="unknown scoring mode"):
        run_pipeline(tmp_path / "run", tiny_profile(), model=str(fake_model_dir(tmp_path / "m")),
                     data_dir=tiny_data_dir, scoring_mode="exact")
    assert not (tmp_path / "run").exists()


# -- part 6: stale artefacts are refused, naming the field -----------------------------------------
def test_run_refuses_a_split_made_for_other_countries(tmp_path, tiny_data, tiny_data_dir, capsys):
    out = tmp_path / "run"
    out.mkdir()
    # An earlier `acealign run --countries atlantis` left its split.
    make_split(tiny_data.subset(countries=["atlantis"]), tiny_profile(countries=("atlantis",)), out / "split.json")
    before = (out / "split.json").read_text()
    rc, _, err = run_cli(capsys, ["run", "--model", str(fake_model_dir(tmp_path / "m")), "--data",
                                  str(tiny_data_dir), "--countries", "borduria", "--out", str(out)])
    one_line_error(rc, err, "split.json", "train_countries: ['atlantis'] there, ['borduria'] now",
                   "give another --out or delete")
    assert (out / "split.json").read_text() == before and not (out / "train").exists()
    # Same settings: reused.
    again = make_split(tiny_data.subset(countries=["atlantis"]), tiny_profile(countries=("atlantis",)), out / "split.json")
    assert again == Split.load(out / "split.json")


def test_run_refuses_a_split_without_fingerprint_or_with_a_leak(tmp_path, tiny_data_dir):
    out = tmp_path / "run"
    out.mkdir()
    s = Split("question", 0, ["wvs7/social_values/Q1"], [], ["wvs7/security/Q131"], [], ["atlantis"], ["atlantis"])
    s.save(out / "split.json")
    kw = dict(model=str(fake_model_dir(tmp_path / "m")), data_dir=tiny_data_dir, progress=False)
    with pytest.raises(F.StaleError, match="has no fingerprint"):
        run_pipeline(out, tiny_profile(countries=("atlantis",)), **kw)
    s.train_questions.append("wvs7/security/Q131")
    s.save(out / "split.json")
    with pytest.raises(DataError, match="refusing this split: 1 question is both a training and an evaluation"):
        run_pipeline(out, tiny_profile(countries=("atlantis",)), **kw)


def test_run_refuses_a_training_run_made_with_another_config(tmp_path, tiny_data_dir, monkeypatch):
    from acealign import pipeline, train

    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr(pipeline, "_fresh", lambda *a, **k: pytest.fail("model loaded"))
    out = tmp_path / "run"
    kw = dict(model=str(fake_model_dir(tmp_path / "m")), data_dir=tiny_data_dir, progress=False,
              dtype="float32")
    run_dir = out / "train" / "anchor"
    (run_dir / "adapter").mkdir(parents=True)
    (run_dir / "adapter" / "adapter_config.json").write_text("{}")
    # A finished run from before fingerprints: cannot tell what it was trained with.
    with pytest.raises(F.StaleError, match=r"training run anchor has no fingerprint.*delete .*train/anchor"):
        run_pipeline(out, tiny_profile(), **kw)
    # A run trained with another learning rate.
    prof = tiny_profile(train={"data.max_pairs": 4, "train.batch_size": 4, "optim.lr": 0.5})
    from acealign.survey import load_survey
    from acealign.train import resolve_config

    data = load_survey(tiny_data_dir)
    split = Split.load(out / "split.json", data)
    cfg = resolve_config(None, ["method=\"anchor\"", "seed=0", f"model.name={json.dumps(kw['model'])}",
                                "model.template=\"paper\"", "model.dtype=\"float32\"", "data.min_n=10",
                                "train.scoring_mode=\"whole\"", "data.max_pairs=4", "train.batch_size=4"])
    (run_dir / F.FINGERPRINT_NAME).write_text(json.dumps(F.training_fingerprint(cfg, split, data)))
    with pytest.raises(F.StaleError, match=r"training run anchor was made with other settings \(config.optim.lr: "):
        run_pipeline(out, prof, **kw)
    # ... and another scoring mode.
    with pytest.raises(F.StaleError, match="config.train.scoring_mode: 'whole' there, 'literal' now"):
        run_pipeline(out, tiny_profile(), scoring_mode="literal", **kw)
    # The same settings: the finished run is reused (evaluation is stubbed out here).
    from acealign import evaluate as ev
    from acealign.report import build

    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: None)
    monkeypatch.setattr(build, "build_report", lambda *a, **k: type("R", (), {"html": "x"})())
    manifest = run_pipeline(out, tiny_profile(), **kw)
    assert manifest["scoring_mode"] == "whole"


# -- eval: the adapter's own template; its content, not its path ------------------------------------
@pytest.fixture
def trained_run(tmp_path):
    """RUN/adapter (LoRA on a tiny model) + RUN/config.json saying it was trained with the
    anthropological template."""
    from peft import LoraConfig, get_peft_model

    from acealign.testing import save_tiny_model

    model_dir = tmp_path / "tiny-model"
    base = save_tiny_model(model_dir, seed=4)
    run = tmp_path / "train" / "ace"
    peft = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(run / "adapter")
    (run / "config.json").write_text(json.dumps({"model": {"name": str(model_dir), "template": "anthropological",
                                                           "chat": "auto"}}))
    return model_dir, run


def test_eval_uses_the_adapters_template_and_its_content(tmp_path, tiny_data, tiny_data_dir, trained_run, capsys):
    from acealign.testing import save_tiny_model

    model_dir, run = trained_run
    make_question_split(tiny_data, 0.34, seed=0).save(tmp_path / "s.json")
    out = tmp_path / "eval"
    # No --model, no --prompt: the run's model and template.
    argv = ["eval", "--adapter", str(run / "adapter"), "--data", str(tiny_data_dir), "--split",
            str(tmp_path / "s.json"), "--out", str(out), "--granularity", "1", "--json"]
    rc, _, err = run_cli(capsys, argv)
    assert rc == 0, err
    meta = json.loads((out / "ace" / "eval.json").read_text())
    fp = meta["fingerprint"]
    assert meta["prompt"] == fp["template"] == meta["trained_template"] == "anthropological"
    assert fp["model"] == str(model_dir.resolve()) and fp["scoring_mode"] == "whole"
    from acealign.precision import precision_name

    assert fp["dtype"] == precision_name("auto")  # the CLI default: bf16 matmuls where the CPU has them
    assert fp["adapter"] == F.adapter_digest(run / "adapter")
    assert fp["split"] == F.split_digest(Split.load(tmp_path / "s.json"))
    # Same command: reused (nothing to score). Another scoring mode: refused, named.
    rc, _, err = run_cli(capsys, argv)
    assert rc == 0, err
    rc, _, err = run_cli(capsys, [*argv, "--scoring-mode", "literal"])
    one_line_error(rc, err, "scoring_mode: 'whole' there, 'literal' now", "delete")
    # The adapter retrained in place (same path, other weights): refused, named.
    from peft import LoraConfig, get_peft_model

    other = get_peft_model(save_tiny_model(tmp_path / "other", seed=5),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    other.save_pretrained(run / "adapter")
    capsys.readouterr()
    rc, _, err = run_cli(capsys, argv)
    one_line_error(rc, err, "adapter: ", "there", "delete")
    # An explicit --prompt wins over the trained template.
    rc, _, err = run_cli(capsys, [*argv, "--prompt", "plain", "--method-name", "ace-plain"])
    assert rc == 0, err
    assert json.loads((out / "ace-plain" / "eval.json").read_text())["fingerprint"]["template"] == "paper"


def test_eval_of_a_foreign_adapter_needs_a_prompt(tmp_path, tiny_data, tiny_data_dir, trained_run, capsys):
    model_dir, run = trained_run
    (run / "config.json").unlink()
    make_question_split(tiny_data, 0.34, seed=0).save(tmp_path / "s.json")
    out = tmp_path / "eval"
    rc, _, err = run_cli(capsys, ["eval", "--model", str(model_dir), "--adapter", str(run / "adapter"), "--data",
                                  str(tiny_data_dir), "--split", str(tmp_path / "s.json"), "--out", str(out)])
    one_line_error(rc, err, "no training config beside the adapter", "--prompt")
    assert not out.exists()


# -- score --side ------------------------------------------------------------------------------------
def test_score_side_without_questions_is_an_error(tmp_path, tiny_data, tiny_data_dir, capsys):
    make_question_split(tiny_data, 0.34, validation_frac=0.0, seed=0).save(tmp_path / "s.json")
    out = tmp_path / "p.parquet"
    rc, _, err = run_cli(capsys, ["score", "--model", str(fake_model_dir(tmp_path / "m")), "--data",
                                  str(tiny_data_dir), "--split", str(tmp_path / "s.json"), "--side",
                                  "validation", "--out", str(out)])
    one_line_error(rc, err, "--side validation", "no validation questions")
    assert not out.exists()
