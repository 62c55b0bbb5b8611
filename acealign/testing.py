"""Tiny random models for tests: a 2-layer Llama and a character-level tokenizer, no download.

>>> model, tok = tiny_model_and_tokenizer()
"""

from __future__ import annotations

import string

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def tiny_tokenizer(chat: bool = True):
    """Character-level fast tokenizer (printable ASCII): digits are single tokens, so "10" is two."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    chars = sorted(set(string.printable) - set("\r\x0b\x0c"))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=TINY_CHAT_TEMPLATE if chat else None,
    )
    return tok


def tiny_model(vocab_size: int, seed: int = 0, layers: int = 2, hidden: int = 32,
               max_positions: int = 2048, init_std: float = 0.2):
    """Randomly initialised LlamaForCausalLM (float32, eval mode). A larger ``init_std`` than
    Llama's default makes the next-token distributions far from uniform, so tests can tell
    options apart."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        initializer_range=init_std,
        tie_word_embeddings=False,
        pad_token_id=3,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.eval()
    return model


def tiny_model_and_tokenizer(seed: int = 0, chat: bool = True, **model_kwargs):
    """``(model, tokenizer)``: a 2-layer random Llama over a character-level vocabulary."""
    tok = tiny_tokenizer(chat=chat)
    return tiny_model(len(tok), seed=seed, **model_kwargs), tok


def save_tiny_model(directory, seed: int = 0, chat: bool = True):
    """Save a tiny random model + tokenizer to ``directory`` (safetensors), for code that loads by
    path (``load_model``, the CLI, subprocesses); returns the in-memory model."""
    model, tok = tiny_model_and_tokenizer(seed=seed, chat=chat)
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return model
