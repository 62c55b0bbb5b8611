"""benchmarks/bf16_error_sources.py: each simulated rounding does what its name says, and only that."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from acealign.precision import block_linear_layers
from acealign.testing import tiny_model

_bench = Path(__file__).parents[1] / "benchmarks"
sys.path.insert(0, str(_bench))  # the script imports bench_scoring's helpers lazily, by name
_spec = importlib.util.spec_from_file_location("bf16_error_sources", _bench / "bf16_error_sources.py")
sources = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sources)


def _bf16_exact(t: torch.Tensor) -> bool:
    return torch.equal(t, t.to(torch.bfloat16).float())


def _layer_io(model, name: str, ids):
    """The input (as given, before any rounding hook) and output of one named linear layer."""
    seen = {}
    layer = dict(model.named_modules())[name]
    handles = [layer.register_forward_pre_hook(lambda m, a: seen.update(x=a[0]), prepend=True),
               layer.register_forward_hook(lambda m, a, out: seen.update(y=out))]
    with torch.no_grad():
        model(input_ids=ids)
    for h in handles:
        h.remove()
    return seen["x"], seen["y"], layer.weight


IDS = torch.tensor([[5, 9, 14, 7, 11, 20]])


def test_weights_and_inputs_rounded_products_in_fp32():
    model = tiny_model(40)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sim = sources.rounded_copy(model, weights=True, inputs=True, outputs=False)
    for name, layer in block_linear_layers(sim):
        assert _bf16_exact(layer.weight), name
    x, y, w = _layer_io(sim, "model.layers.1.mlp.down_proj", IDS)
    # the layer is given an unrounded input; the product uses its bf16 rounding, in fp32
    assert not _bf16_exact(x)
    assert torch.equal(y, torch.nn.functional.linear(x.to(torch.bfloat16).float(), w))
    assert y.dtype == torch.float32 and not _bf16_exact(y)
    # the LM head and the original model are left alone
    assert not _bf16_exact(sim.lm_head.weight)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_output_rounding_only_where_named():
    model = tiny_model(40)
    sim = sources.rounded_copy(model, weights=False, inputs=False, outputs=True, output_kinds={"q_proj"})
    _, yq, _ = _layer_io(sim, "model.layers.0.self_attn.q_proj", IDS)
    _, yk, _ = _layer_io(sim, "model.layers.0.self_attn.k_proj", IDS)
    assert _bf16_exact(yq) and not _bf16_exact(yk)
    assert not _bf16_exact(sim.model.layers[0].self_attn.q_proj.weight)  # weights untouched
    every = sources.rounded_copy(model, weights=False, inputs=False, outputs=True)
    _, y, _ = _layer_io(every, "model.layers.1.mlp.up_proj", IDS)
    assert _bf16_exact(y)


def test_variants_name_known_roundings():
    for name, (w, x, y, kinds) in sources.VARIANTS.items():
        assert w or x or y, name
        assert kinds is None or y, name


def test_simulated_fp32_output_in_place_and_named():
    model = tiny_model(40)
    n = sources.simulate_fp32_output(model)
    assert n == 2 * 7 and model.config.acealign_precision == "simulated-bf16-fp32-output"
    x, y, w = _layer_io(model, "model.layers.0.self_attn.o_proj", IDS)
    assert _bf16_exact(w) and torch.equal(y, torch.nn.functional.linear(x.to(torch.bfloat16).float(), w))
    from acealign.precision import model_precision

    assert model_precision(model) == "simulated-bf16-fp32-output"
