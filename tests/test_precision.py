"""Mixed bf16 (acealign.precision): what stays fp32, dtype resolution, and scoring close to fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from acealign.precision import (
    apply_mixed_bf16,
    cpu_has_bf16,
    model_precision,
    precision_name,
    resolve_dtype,
)
from acealign.scoring import OptionScorer, ScoringRequest
from acealign.testing import tiny_model_and_tokenizer

REQUESTS = [
    ScoringRequest("Question: pick one.\nAnswer: ", tuple(str(k) for k in range(0, 11))),
    ScoringRequest("Question: pick another one, please.\nAnswer: ", ("1", "2", "3", "4")),
]


def test_cpu_flags():
    assert cpu_has_bf16("flags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_bf16("flags : fpu amx_bf16\n")
    assert not cpu_has_bf16("flags : fpu sse avx2 avx512f\n")
    assert not cpu_has_bf16("")


def test_cli_offers_the_precisions_the_library_knows():
    from acealign.cli import DTYPE_CHOICES
    from acealign.precision import DTYPE_CHOICES as LIBRARY

    assert DTYPE_CHOICES == LIBRARY


def test_dtype_resolution(monkeypatch):
    import acealign.precision as prec

    assert resolve_dtype("float32") == "float32" and resolve_dtype("bfloat16") == "bfloat16"
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda cpuinfo=None: True)
    assert resolve_dtype("auto") == "bfloat16" and precision_name("auto") == "mixed-bf16"
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda cpuinfo=None: False)
    assert resolve_dtype("auto") == "float32" and precision_name("auto") == "float32"
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8")


def test_mixed_bf16_keeps_head_norms_and_embeddings_fp32():
    model, _ = tiny_model_and_tokenizer(seed=0)
    n = apply_mixed_bf16(model)
    # 2 layers x (q, k, v, o, gate, up, down)
    assert n == 14
    assert model.lm_head.weight.dtype == torch.float32
    assert model.model.embed_tokens.weight.dtype == torch.float32
    assert model.model.norm.weight.dtype == torch.float32
    assert model.model.layers[0].input_layernorm.weight.dtype == torch.float32
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    assert model.model.layers[1].mlp.down_proj.weight.dtype == torch.bfloat16
    assert model_precision(model) == "mixed-bf16"


def test_mixed_bf16_keeps_named_layers_fp32_when_asked():
    model, _ = tiny_model_and_tokenizer(seed=0)
    n = apply_mixed_bf16(model, keep_fp32=lambda name: name.startswith("model.layers.0.self_attn."))
    assert n == 14 - 4  # layer 0's q, k, v, o stay fp32
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.model.layers[1].self_attn.q_proj.weight.dtype == torch.bfloat16


@pytest.mark.parametrize("mode", ["whole", "literal"])
def test_mixed_bf16_scores_close_to_fp32(mode):
    ref_model, tok = tiny_model_and_tokenizer(seed=0)
    model, _ = tiny_model_and_tokenizer(seed=0)
    apply_mixed_bf16(model)
    with pytest.warns(UserWarning) if mode == "literal" else _nothing():
        ref = OptionScorer(ref_model, tok, mode=mode).distributions(REQUESTS)
    with pytest.warns(UserWarning) if mode == "literal" else _nothing():
        got = OptionScorer(model, tok, mode=mode).distributions(REQUESTS)
    for a, b in zip(ref, got, strict=True):
        assert b.sum() == pytest.approx(1.0)
        # bf16 keeps ~3 significant digits in the block matmuls; fp32 elsewhere
        assert np.abs(a - b).max() < 2e-2
        assert not np.array_equal(a, b)  # it did run in bf16


def test_mixed_bf16_trains_with_lora():
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_model_and_tokenizer(seed=0)
    apply_mixed_bf16(model)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    assert model_precision(model) == "mixed-bf16"
    lp = OptionScorer(model, tok).log_probs(REQUESTS[1:], grad=True)[0]
    (-lp[0]).backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
