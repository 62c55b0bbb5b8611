"""The backend options of the CLI: one-line errors before anything is written, and the report's
record of how each method was scored (no server, no vLLM needed)."""

from __future__ import annotations

import importlib.util
import json
import socket

import pandas as pd
import pytest

from acealign.backends import BackendError
from acealign.backends.spec import BackendSpec
from acealign.cli import main
from acealign.report.build import scoring_table


def run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def split(tmp_path, capsys):
    path = tmp_path / "split.json"
    assert main(["data", "split", "--kind", "question", "--countries", "egypt", "--out", str(path)]) == 0
    capsys.readouterr()
    return path


def test_unreachable_server_is_one_line_and_writes_nothing(tmp_path, split, capsys):
    out = tmp_path / "eval"
    rc, _, err = run(capsys, ["eval", "--split", str(split), "--out", str(out), "--backend", "openai",
                              "--base-url", f"http://127.0.0.1:{closed_port()}/v1", "--cache", "none"])
    assert rc == 2 and err.count("\n") == 1 and "cannot reach" in err
    assert not (out / "base" / "predictions.parquet").exists()
    rc, _, err = run(capsys, ["score", "--out", str(tmp_path / "p.parquet"), "--backend", "openai",
                              "--base-url", f"http://127.0.0.1:{closed_port()}/v1", "--countries", "egypt"])
    assert rc == 2 and err.count("\n") == 1 and not (tmp_path / "p.parquet").exists()


@pytest.mark.parametrize("argv, message", [
    (["--backend", "openai"], "needs --base-url"),
    (["--backend", "vllm", "--base-url", "http://x/v1"], "--base-url is for --backend openai"),
    (["--estimator", "sampling"], "needs --backend openai"),
    (["--backend", "openai", "--base-url", "http://x/v1", "--estimator", "exact"], "cannot score exactly"),
])
def test_inconsistent_backend_options(tmp_path, split, capsys, argv, message):
    rc, _, err = run(capsys, ["eval", "--split", str(split), "--out", str(tmp_path / "e"), *argv])
    assert rc == 2 and message in err and err.count("\n") == 1


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_says_how_to_install(tmp_path, split, capsys):
    rc, _, err = run(capsys, ["eval", "--split", str(split), "--out", str(tmp_path / "e"), "--backend", "vllm"])
    assert rc == 2 and "setup.sh --vllm" in err and err.count("\n") == 1


def test_run_with_a_server_backend_cannot_evaluate_trained_adapters(tmp_path, capsys):
    rc, _, err = run(capsys, ["run", "--out", str(tmp_path / "r"), "--backend", "openai",
                              "--base-url", "http://127.0.0.1:1/v1"])
    assert rc == 2 and "--methods none" in err
    assert not (tmp_path / "r").exists()


def test_spec_settings_never_hold_the_key_and_hf_adds_nothing(monkeypatch):
    assert BackendSpec().settings() == {}  # hf fingerprints stay as they were
    monkeypatch.setenv("MY_KEY", "sk-secret")
    s = BackendSpec("openai", base_url="http://user:pw@h:1/v1?token=t", api_key_env="MY_KEY",
                    estimator="sampling", samples=7, sampling_seed=3)
    text = json.dumps(s.settings())
    assert "sk-secret" not in text and "pw" not in text and "token=t" not in text
    assert s.settings()["samples"] == 7 and s.settings()["seed"] == 3
    with pytest.raises(BackendError, match="unknown backend"):
        BackendSpec("tgi")


def test_scoring_table_reports_each_methods_estimator():
    df = pd.DataFrame({
        "method": ["base", "base", "api", "api", "served", "country-marginal"],
        "scoring_mode": ["whole", "whole", "whole", "whole", "whole", None],
        "estimator": [None, None, "openai:sampling", "openai:sampling", "openai:prompt-logprobs", None],
        "score_info": [None, None, json.dumps({"samples": 40, "unparseable": 0.5}),
                       json.dumps({"samples": 40, "unparseable": 0.25}),
                       json.dumps({"boundary_gap": 0.125}), None],
    })
    t = scoring_table(df).set_index("method")
    assert t.loc["base", "estimator"] == "hf:exact"
    assert t.loc["country-marginal", "estimator"] == "reference"
    assert t.loc["api", "unparseable_share"] == pytest.approx(0.375)
    assert t.loc["api", "samples"] == 40
    assert t.loc["served", "max_boundary_gap"] == 0.125


def test_vllm_whole_answer_terms_by_hand():
    import math

    from acealign.backends.vllm import stop_log_prob_from_continuations, stop_log_prob_from_full

    # continuations with p = 0.1 and 0.2: log(1 - 0.3); none: 0
    got = stop_log_prob_from_continuations([math.log(0.1), math.log(0.2)])
    assert got == pytest.approx(math.log(0.7), rel=1e-12)
    assert stop_log_prob_from_continuations([]) == 0.0
    # a full distribution over 4 tokens, tokens 1 and 3 continue: log(p0 + p2)
    full = {0: math.log(0.4), 1: math.log(0.3), 2: math.log(0.2), 3: math.log(0.1)}
    assert stop_log_prob_from_full(full, {1, 3}) == pytest.approx(math.log(0.6), rel=1e-12)
