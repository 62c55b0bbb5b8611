"""Which backend scores, with which settings: :class:`BackendSpec`, chosen by the CLI and the
pipeline, turned into a backend by :meth:`BackendSpec.build`.

The spec's :meth:`~BackendSpec.settings` are known before anything is loaded, so a finished
evaluation can be recognized (fingerprints) without starting an engine or calling a server.
vLLM engines are kept per (model, dtype) for the life of the process: evaluating several
adapters of one base model loads the engine once and switches LoRA adapters.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import BACKENDS, ESTIMATORS, BackendError

DEFAULT_ESTIMATOR = {"hf": "exact", "vllm": "exact", "openai": "prompt-logprobs"}
_VLLM_ENGINES: dict[tuple, object] = {}


@dataclass(frozen=True)
class BackendSpec:
    """``name``: ``hf`` | ``vllm`` | ``openai``. The ``openai`` fields: ``base_url`` (ends in
    ``/v1``), ``api_key_env`` (the environment variable holding the key), ``estimator``,
    ``tokenizer`` (a local model whose tokenizer builds the prompts and token ids for
    ``prompt-logprobs``; None: plain-text prompts, located in the echo by text offsets),
    ``top_logprobs``, ``samples``, ``concurrency``, ``cache`` (SQLite response cache path;
    ``"auto"``: ``<acealign cache>/responses.sqlite``; None: no cache), ``sampling_seed`` (sent
    with sampling requests when given)."""

    name: str = "hf"
    base_url: str | None = None
    api_key_env: str | None = None
    estimator: str | None = None
    tokenizer: str | None = None
    top_logprobs: int = 20
    samples: int = 50
    concurrency: int = 4
    cache: str | None = "auto"
    sampling_seed: int | None = None

    def __post_init__(self):
        if self.name not in BACKENDS:
            raise BackendError(f"unknown backend {self.name!r} (choose from {', '.join(BACKENDS)})")
        est = self.estimator or DEFAULT_ESTIMATOR[self.name]
        if est not in ESTIMATORS:
            raise BackendError(f"unknown estimator {est!r} (choose from {', '.join(ESTIMATORS)})")
        if self.name != "openai" and est != "exact":
            raise BackendError(f"the {self.name} backend scores exactly: --estimator {est} needs --backend openai")
        if self.name == "openai" and est == "exact":
            raise BackendError("an OpenAI-compatible server cannot score exactly: choose the estimator "
                               "prompt-logprobs, first-token or sampling")
        if self.name == "openai" and not self.base_url:
            raise BackendError("--backend openai needs --base-url (e.g. http://localhost:8000/v1)")
        if self.name != "openai" and self.base_url:
            raise BackendError(f"--base-url is for --backend openai, not {self.name}")
        object.__setattr__(self, "estimator", est)

    def settings(self) -> dict:
        """The fields that determine scores beside model, adapter, template, mode and precision
        (empty for ``hf``, so hf fingerprints stay as they were). Never the API key."""
        if self.name == "hf":
            return {}
        out = {"backend": self.name, "estimator": self.estimator}
        if self.name == "openai":
            from .http import redacted_url

            out["base_url"] = redacted_url(self.base_url)
            out["tokenizer"] = self.tokenizer
            if self.estimator == "sampling":
                out.update(samples=self.samples, seed=self.sampling_seed)
            else:
                out["top_logprobs"] = self.top_logprobs
        return out

    def build(self, model: str, adapter=None, *, device: str = "cpu", dtype: str = "float32",
              mode: str = "whole", batch_size: int = 16, trust_remote_code: bool = False, seed: int = 0):
        """The backend object (:class:`acealign.backends.ScoringBackend`); loads or connects."""
        if self.name == "hf":
            from ..models import load_model
            from ..scoring import OptionScorer

            mdl, tok = load_model(model, adapter, device, dtype, trust_remote_code)
            return OptionScorer(mdl, tok, batch_size=batch_size, mode=mode)
        if self.name == "vllm":
            return _vllm_backend(model, adapter, dtype, mode, seed, trust_remote_code)
        return self._openai(model, mode, trust_remote_code)

    def _openai(self, model, mode, trust_remote_code):
        from .openai import OpenAIBackend

        tok = None
        if self.tokenizer is not None:
            from ..models import load_tokenizer

            tok = load_tokenizer(self.tokenizer, trust_remote_code)
        return OpenAIBackend(
            self.base_url, model=None if model in (None, "default") else model,
            api_key_env=self.api_key_env, estimator=self.estimator, mode=mode, tokenizer=tok,
            top_logprobs=self.top_logprobs, samples=self.samples, concurrency=self.concurrency,
            cache_path=_cache_path(self.cache), seed=self.sampling_seed,
        )


def _cache_path(cache):
    if cache != "auto":
        return cache
    from ..models import cache_dir

    return cache_dir() / "responses.sqlite"


def close_engines() -> None:
    """Shut down the vLLM engines this process started (their engine processes exit)."""
    while _VLLM_ENGINES:
        _, backend = _VLLM_ENGINES.popitem()
        backend.close()


def _vllm_backend(model, adapter, dtype, mode, seed, trust_remote_code):
    """One engine per (model, dtype), LoRA-enabled, shared by the adapters evaluated on it."""
    from .vllm import VLLMBackend

    key = (model, dtype, seed, trust_remote_code)
    base = _VLLM_ENGINES.get(key)
    if base is None:
        base = _VLLM_ENGINES[key] = VLLMBackend(model, None, mode, dtype=dtype, seed=seed,
                                                trust_remote_code=trust_remote_code, lora=True)
    return base.variant(adapter=adapter, mode=mode)
