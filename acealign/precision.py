"""Weight precision: fp32, or bf16 matmuls with fp32 where precision matters.

Casting a whole model to bf16 moves option distributions too much (the residual stream and the
log-softmax over ~50k tokens lose digits). ``mixed-bf16`` keeps:

- the residual stream, every norm and the embeddings in fp32 (residual additions promote to fp32),
- the LM head in fp32 (log-softmax over the vocabulary is computed from fp32 logits),

and runs only the matmuls of the linear layers inside the blocks (attention projections, MLP) in
bf16, which accumulate in fp32 on CPUs with AVX512-BF16/AMX and on GPUs. Hooks cast each such
layer's input to bf16 and its output back to fp32, so attention, rotary embeddings, activations and
residual additions all run in fp32. Measured on the default model (benchmarks/bench_scoring.py,
README): about 1.9x the fp32 engine, mean per-cell |dS| 0.002 against fp32 predictions; keeping
attention or the MLP in bf16 as well was faster but moved the distributions more.

``resolve_dtype("auto")`` picks mixed bf16 where the hardware runs bf16 matmuls natively (a CPU
with ``avx512_bf16`` or ``amx_bf16``, a CUDA GPU with bf16 support), fp32 elsewhere.
"""

from __future__ import annotations

from pathlib import Path

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU flags list native bf16 matmul support (``avx512_bf16`` or ``amx_bf16``)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_dtype(dtype: str, device: str = "cpu") -> str:
    """``auto`` -> ``bfloat16`` (mixed, see module docstring) on bf16-capable hardware, else
    ``float32``; other names pass through after validation (``float16`` casts the whole model,
    for GPUs)."""
    if dtype not in DTYPE_CHOICES:
        raise ValueError(f"unknown dtype {dtype!r} (expected one of {', '.join(DTYPE_CHOICES)})")
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_bf16() else "float32"


def _to_bf16_input(module, args, kwargs):
    import torch

    if args and args[0].dtype != torch.bfloat16 and args[0].is_floating_point():
        args = (args[0].to(torch.bfloat16),) + tuple(args[1:])
    return args, kwargs


def _fp32_output(module, args, output):
    return output.float()


def block_linear_layers(model) -> list:
    """``(name, layer)`` of the linear layers mixed bf16 runs in bf16: every ``torch.nn.Linear``
    but the LM head, also when the head is only recognisable by its tied weight."""
    import torch

    head = model.get_output_embeddings()
    embed = model.get_input_embeddings().weight
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and m is not head and m.weight is not embed]


def apply_mixed_bf16(model, keep_fp32=None) -> int:
    """Cast the linear layers inside the transformer blocks to bf16, in place (their inputs are
    cast to bf16, their outputs back to fp32); keep embeddings, norms, and the LM head in fp32.
    Returns the number of layers cast. ``keep_fp32``: a predicate on a linear layer's module name
    (``model.layers.0.self_attn.q_proj``) that keeps that layer in fp32 too (for experiments:
    benchmarks/bf16_placement.py); None casts them all.

    Works on any model whose blocks use ``torch.nn.Linear`` (Llama, Mistral, Qwen, GPT-NeoX...).
    Call it before adding LoRA adapters: peft keeps adapter weights in fp32 and adds their output
    to the bf16 base layer's, promoting to fp32.
    """
    import torch

    n = 0
    for name, module in block_linear_layers(model):
        if not (keep_fp32 and keep_fp32(name)):
            module.to(torch.bfloat16)
            module.register_forward_pre_hook(_to_bf16_input, with_kwargs=True)
            module.register_forward_hook(_fp32_output)
            n += 1
    if n == 0:
        raise ValueError(f"{type(model).__name__}: no linear layers to run in bf16")
    # Weights loaded from safetensors are views of the memory-mapped file: while any of them (the
    # fp32 embeddings, norms, head) still points into it, the whole file's pages stay resident
    # beside the new bf16 copies. Owned copies let the mapping go.
    with torch.no_grad():
        for p in model.parameters():
            if p.dtype == torch.float32:
                p.data = p.data.clone()
        for b in model.buffers():
            if b.dtype == torch.float32:
                b.data = b.data.clone()
    model.config.acealign_precision = "mixed-bf16"
    return n


def precision_name(dtype: str, device: str = "cpu") -> str:
    """The name :func:`model_precision` will give a model loaded with ``dtype`` on ``device``."""
    resolved = resolve_dtype(dtype, device)
    return "mixed-bf16" if resolved == "bfloat16" else resolved


def model_precision(model) -> str:
    """``mixed-bf16`` for a model prepared by :func:`apply_mixed_bf16`, else its parameters' dtype."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    got = getattr(getattr(base, "config", None), "acealign_precision", None)
    if got:
        return got
    return str(next(model.parameters()).dtype).replace("torch.", "")
