"""Where mixed bf16's error comes from: each rounding of a bf16 matmul, simulated alone in fp32.

A block linear layer of acealign's mixed-bf16 scheme (``acealign.precision``) rounds three things
to bf16 (8 significant bits): its weights (once, when the model is prepared), its input, and its
output. PyTorch's CPU kernels accumulate a bf16 matmul in fp32 but return it in bf16; a variant
that returns fp32 (``torch.mm(..., out_dtype=torch.float32)``) exists for CUDA only (torch 2.13:
``aten::mm.dtype`` has no CPU kernel). Each variant below applies only some of those roundings to
the fp32 model and computes everything else in fp32, so every source's share of the error is
measured on the same cells against the fp32 engine. ``weights+inputs`` is what a bf16 matmul
returning fp32 would give; ``mixed`` is acealign's scheme itself (real bf16 kernels). Prints each
variant's mean and max per-cell |dS| (Eq. 15 against the survey) and its mean S x100 shift per G.
Only accuracy: the simulations run at fp32 speed.

    python benchmarks/bf16_error_sources.py [--prompts 160] [--seed 1] [--template paper]
        [--variants mixed,weights,inputs,outputs,weights+inputs,...]

On a whole evaluation set: ``python benchmarks/bf16_error_sources.py acealign eval ... --dtype
bfloat16 --out DIR`` runs acealign's own command with ``--dtype bfloat16`` standing for the
simulated bf16 matmul returning fp32 (``weights+inputs``), to compare with an ``--dtype float32``
run through benchmarks/compare_predictions.py. Its tables record the precision as
``simulated-bf16-fp32-output``.
"""

from __future__ import annotations

import argparse
import copy
import warnings

import torch

VARIANTS = {  # name -> (round weights, round inputs, round outputs, output rounding only in these layers)
    "weights": (True, False, False, None),
    "inputs": (False, True, False, None),
    "outputs": (False, False, True, None),
    "weights+inputs": (True, True, False, None),
    "all three": (True, True, True, None),
    "outputs of q,k,v": (False, False, True, {"q_proj", "k_proj", "v_proj"}),
    "outputs of o,down": (False, False, True, {"o_proj", "down_proj"}),
    "outputs of gate,up": (False, False, True, {"gate_proj", "up_proj"}),
}


def _bf16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).float()


def round_linears(m, weights: bool, inputs: bool, outputs: bool, output_kinds=None) -> int:
    """In place: the block linear layers of the fp32 model ``m`` round their weights, inputs and/or
    outputs to bf16 (and back), computing in fp32. ``output_kinds``: layer names (``q_proj``...)
    whose outputs are rounded; None rounds every block layer's output. Returns the layer count."""
    from acealign.precision import block_linear_layers

    layers = block_linear_layers(m)
    for name, layer in layers:
        if weights:
            with torch.no_grad():
                layer.weight.copy_(_bf16(layer.weight))
        if inputs:
            layer.register_forward_pre_hook(lambda _m, args: (_bf16(args[0]),) + tuple(args[1:]))
        if outputs and (output_kinds is None or name.rsplit(".", 1)[-1] in output_kinds):
            layer.register_forward_hook(lambda _m, _args, out: _bf16(out))
    return len(layers)


def rounded_copy(model, weights: bool, inputs: bool, outputs: bool, output_kinds=None):
    """A copy of ``model`` prepared by :func:`round_linears`."""
    m = copy.deepcopy(model)
    round_linears(m, weights, inputs, outputs, output_kinds)
    return m


def simulate_fp32_output(model, keep_fp32=None) -> int:
    """Stands in for ``acealign.precision.apply_mixed_bf16`` (same signature): what mixed bf16
    would give with a bf16 matmul that returns fp32, i.e. weights and inputs rounded, no output
    rounding. Records the precision as ``simulated-bf16-fp32-output`` (fingerprints, manifests)."""
    if keep_fp32 is not None:
        raise ValueError("simulate_fp32_output rounds every block linear layer")
    n = round_linears(model, weights=True, inputs=True, outputs=False)
    model.config.acealign_precision = "simulated-bf16-fp32-output"
    return n


def run_acealign_simulated(argv) -> int:
    """``acealign ARGS`` with ``--dtype bfloat16`` meaning :func:`simulate_fp32_output`."""
    import acealign.precision as precision
    from acealign.cli import main as acealign_main

    named = precision.precision_name

    def simulated_name(dtype: str, device: str = "cpu") -> str:
        got = named(dtype, device)
        return "simulated-bf16-fp32-output" if got == "mixed-bf16" else got

    # acealign looks both up in acealign.precision when it loads a model or names its precision
    precision.apply_mixed_bf16 = simulate_fp32_output
    precision.precision_name = simulated_name
    return acealign_main(argv)


def main(argv=None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["acealign"]:
        return run_acealign_simulated(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=160)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--template", default="paper")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--variants", default=None, help="comma-separated; default: mixed and all above")
    args = ap.parse_args(argv)

    from bf16_placement import fp32_baseline, mixed_copy, report_variant

    warnings.simplefilter("ignore")
    m32, tok, reqs, cells, s32, gran = fp32_baseline(args.prompts, args.seed, args.template, args.batch_size)
    names = args.variants.split(",") if args.variants else ["mixed", *VARIANTS]
    for name in names:
        if name == "mixed":  # acealign's scheme itself
            model = mixed_copy(m32, lambda layer, kind: False)
        else:
            model = rounded_copy(m32, *VARIANTS[name])
        report_variant(name, model, tok, reqs, cells, s32, gran, args.batch_size, width=19)
        del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
