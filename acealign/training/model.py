"""The model a run trains: a base model plus a fresh LoRA adapter (peft)."""

from __future__ import annotations

import random

import torch


def lora_config(cfg: dict, model=None):
    from peft import LoraConfig

    lo = cfg["lora"]
    layers = None
    if lo["top_layers"]:
        n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
        if not isinstance(n, int):
            raise ValueError("lora.top_layers needs a model config with num_hidden_layers")
        layers = list(range(max(0, n - lo["top_layers"]), n))
    return LoraConfig(
        r=lo["r"], lora_alpha=lo["alpha"], lora_dropout=lo["dropout"],
        target_modules=list(lo["target_modules"]), layers_to_transform=layers, bias="none",
        task_type="CAUSAL_LM",
    )


def add_lora(model, cfg: dict):
    """Wrap ``model`` with a fresh LoRA adapter; a clear error if no target module matches."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(cfg, model))
    except ValueError as e:
        raise ValueError(f"lora.target_modules {cfg['lora']['target_modules']}: {e}") from None


def seeded_lora_model(cfg: dict, model, tokenizer, accelerator):
    """``(model with a fresh adapter on the accelerator's device, tokenizer)``.

    Seeded so that the adapter's initial weights depend on the seed only; ``model=None`` loads
    ``cfg["model"]["name"]``. Then seeds this process' dropout stream (rank 0 keeps the seed).
    """
    seed = cfg["seed"]
    torch.manual_seed(seed)
    random.seed(seed)
    if model is None:
        from ..models import load_model

        model, tokenizer = load_model(cfg["model"]["name"], dtype=cfg["model"]["dtype"])
    model = add_lora(model, cfg).to(accelerator.device)
    # Dropout masks: a different stream per process (rank 0 keeps the plain seed).
    torch.manual_seed(seed + 1_000_003 * accelerator.process_index)
    return model, tokenizer
