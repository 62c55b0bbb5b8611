"""The ``vllm`` backend: offline ``vllm.LLM`` in-process, exact like the hf engine.

Each request's options are scored as a token tree (as :class:`acealign.scoring.OptionScorer`
does): one vLLM request per node (the prompt, then the prompt followed by each option's leading
tokens), each generating one token and returning the log-probabilities of just the token ids that
node needs (``SamplingParams.logprob_token_ids``): its children in the tree (Eq. 2) and, in
``whole`` mode, the tokens that would continue an option ending there. The whole-answer term is
then log(1 - sum of the continuation probabilities). When a node needs more ids than vLLM returns
by id (128), it asks for the full next-token distribution (``logprobs=-1``) and the term is the
log-sum over the non-continuation tokens.

No prompt log-probabilities are requested: vLLM skips its prefix cache for requests that ask for
them (a cached prefix has no log-probabilities), while every node here shares the prompt, so the
prefix cache does the work a KV-cache tree does in the hf engine. The engine returns raw
log-probabilities (``logprobs_mode="raw_logprobs"``: before temperature, penalties or other logit
processing); every id asked for must come back, else :class:`~acealign.backends.BackendError`.

LoRA adapters saved by acealign (peft format) are applied with vLLM's LoRA support.

vLLM spawns an engine process: a script using this backend must guard its entry point with
``if __name__ == "__main__":`` (the ``acealign`` command does).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ..scoring import (
    SCORING_MODES,
    ContinuationSets,
    ScoringRequest,
    encode_option,
    encode_prompt,
    option_tree,
    renormalize,
)
from . import BackendError, Scored, normalized
from .estimates import log1mexp, logsumexp

MAX_IDS_BY_NAME = 128  # vllm.sampling_params.MAX_LOGPROB_TOKEN_IDS


def stop_log_prob_from_continuations(continuation_log_probs: Sequence[float]) -> float:
    """log(1 - sum_c p(c)): the whole-answer term (Eq. 2 for the *whole* answer, see
    :func:`acealign.scoring.answer_log_likelihood`) from the log-probabilities of the tokens that
    would continue the answer, in log space. An empty set gives 0."""
    return log1mexp(logsumexp(continuation_log_probs))


def stop_log_prob_from_full(log_probs: dict[int, float], continuation: set[int]) -> float:
    """The whole-answer term from a full next-token distribution: logsumexp over the tokens
    outside the continuation set (exact also when the continuation mass is near 1)."""
    return logsumexp([lp for t, lp in log_probs.items() if t not in continuation])


class VLLMBackend:
    """Score options with an offline ``vllm.LLM`` (see the module docstring).

    ``model``: as for :func:`acealign.models.load_model` (``default`` = the bundled model's
    safetensors conversion). ``dtype``: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (vLLM's
    choice). ``llm_kwargs``: passed on to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``).
    """

    name = "vllm"
    estimator = "exact"

    def __init__(self, model: str = "default", adapter: str | None = None, mode: str = "whole",
                 dtype: str = "float32", max_model_len: int | None = None, seed: int = 0,
                 trust_remote_code: bool = False, lora: bool = False, max_lora_rank: int = 64,
                 llm_kwargs: dict | None = None):
        if mode not in SCORING_MODES:
            raise ValueError(f"unknown scoring mode {mode!r} (expected one of {', '.join(SCORING_MODES)})")
        try:
            import vllm
        except ImportError:
            raise BackendError("the vllm backend needs vLLM: install it in its own environment "
                               "(bash scripts/setup.sh --vllm .venv-vllm; see the README)") from None
        from ..fingerprint import adapter_digest
        from ..models import check_model, load_tokenizer, resolve_model_path

        check_model(model)
        self.model_name, self.adapter, self.mode = model, adapter, mode
        self.adapter_digest = adapter_digest(adapter)
        path = resolve_model_path(model)
        self.tokenizer = load_tokenizer(model, trust_remote_code)
        kwargs = dict(model=path, tokenizer=path, dtype=dtype, seed=seed, logprobs_mode="raw_logprobs",
                      max_logprobs=-1, enable_prefix_caching=True, trust_remote_code=trust_remote_code,
                      # the weight-loading bar follows vLLM's log level (the CLI's quiet mode sets it)
                      use_tqdm_on_load=_verbose())
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        self._lora, self.max_lora_rank = None, 0
        if adapter is not None or lora:
            self.max_lora_rank = _allowed_rank(max(max_lora_rank, _adapter_rank(adapter) if adapter else 1))
            kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=self.max_lora_rank)
        kwargs.update(_cpu_settings(kwargs, llm_kwargs or {}))
        if not _verbose():  # the engine's own processes do not inherit this process's filters
            os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
        kwargs.update(llm_kwargs or {})
        self.llm = vllm.LLM(**kwargs)
        self._adapters: dict[str, int] = {}
        if adapter is not None:
            self._lora = self._lora_request(adapter)
        self.dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self.max_length = self.llm.llm_engine.model_config.max_model_len
        self._continuations = ContinuationSets(self.tokenizer)

    def close(self) -> None:
        """Stop the engine process now rather than at interpreter exit."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    def variant(self, adapter=None, mode: str | None = None) -> VLLMBackend:
        """The same engine with another LoRA adapter (None: the base model) or scoring mode."""
        import copy

        from ..fingerprint import adapter_digest

        other = copy.copy(self)
        other.mode = mode or self.mode
        other.adapter, other.adapter_digest = adapter, adapter_digest(adapter)
        other._lora = None if adapter is None else self._lora_request(adapter)
        return other

    def _lora_request(self, adapter):
        from vllm.lora.request import LoRARequest

        if not self.max_lora_rank:
            raise BackendError("this vLLM engine was started without LoRA: build it with lora=True")
        rank = _adapter_rank(adapter)
        if rank > self.max_lora_rank:
            raise BackendError(f"{adapter}: LoRA rank {rank} is above the engine's maximum {self.max_lora_rank}")
        path = str(Path(adapter).resolve())
        # vLLM caches adapters by id: one id per adapter directory
        lora_id = self._adapters.setdefault(path, len(self._adapters) + 1)
        return LoRARequest(f"acealign-{lora_id}", lora_id, path)

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_name, "adapter": self.adapter_digest,
                "estimator": self.estimator, "scoring_mode": self.mode, "dtype": self.dtype}

    # -- scoring -------------------------------------------------------------------------------
    def score(self, requests: Sequence[ScoringRequest]) -> list[Scored]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        plans = [self._plan(i, r) for i, r in enumerate(requests)]
        prompts, params, where = [], [], []
        for b, (ids, _, nodes, _) in enumerate(plans):
            for node, want in nodes.items():
                prompts.append(TokensPrompt(prompt_token_ids=ids + list(node)))
                by_name = len(want) <= MAX_IDS_BY_NAME
                params.append(SamplingParams(max_tokens=1, temperature=1.0, top_p=1.0,
                                             logprob_token_ids=sorted(want) if by_name else None,
                                             logprobs=None if by_name else -1))
                where.append((b, node))
        outs = self.llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora)
        got: list[dict] = [{} for _ in plans]
        for (b, node), out in zip(where, outs, strict=True):
            lps = out.outputs[0].logprobs
            if not lps:
                raise BackendError(f"vLLM returned no log-probabilities for request {b}")
            got[b][node] = {t: lp.logprob for t, lp in lps[0].items()}
        return [self._combine(requests[b], plans[b], got[b]) for b in range(len(plans))]

    def _plan(self, i: int, r: ScoringRequest):
        """(prompt ids, option token ids, {tree node: token ids needed there}, each option's
        continuation ids (whole mode)) of one request."""
        ids = encode_prompt(self.tokenizer, r.prompt)
        opts = [encode_option(self.tokenizer, o) for o in r.options]
        longest = len(ids) + max(len(o) for o in opts)
        if longest >= self.max_length:  # the engine also needs one position to generate into
            raise ValueError(f"request {i}: prompt of {len(ids)} tokens plus its options needs {longest} "
                             f"positions, more than the model's context of {self.max_length}")
        whole = self.mode == "whole"
        conts = [set(self._continuations.ids(o, r.options).tolist()) for o in r.options] if whole else []
        nodes: dict[tuple[int, ...], set[int]] = {(): set()}
        for node in option_tree(opts, whole):
            nodes.setdefault(node, set())
        for k, o in enumerate(opts):
            for j in range(len(o)):
                nodes[o[:j]].add(o[j])  # Eq. 2: the option's j-th token after its first j
            if whole:
                nodes[o] |= conts[k]
        return ids, opts, nodes, conts

    def _combine(self, r: ScoringRequest, plan, got: dict) -> Scored:
        _, opts, nodes, conts = plan
        lls = []
        for k, o in enumerate(opts):
            ll = math.fsum(_lookup(got[o[:j]], o[j], r) for j in range(len(o)))
            if self.mode == "whole":
                cont = conts[k]
                if len(nodes[o]) <= MAX_IDS_BY_NAME:
                    ll += stop_log_prob_from_continuations([_lookup(got[o], c, r) for c in cont])
                else:
                    ll += stop_log_prob_from_full(got[o], cont)
            lls.append(ll)
        lls = torch.tensor(lls, dtype=torch.float64)
        if r.scale is not None:
            lls = lls[list(r.scale)]
        return Scored(normalized(renormalize(lls).exp().numpy()))  # Eq. 3


def _lookup(log_probs: dict[int, float], token: int, r: ScoringRequest) -> float:
    """A token's log-probability from vLLM's answer: missing is an error, never a silent -inf."""
    if token not in log_probs:
        raise BackendError(f"vLLM returned no log-probability for token {token} "
                           f"(prompt {r.prompt[:60]!r}...)")
    return log_probs[token]


def _verbose() -> bool:
    return os.environ.get("VLLM_LOGGING_LEVEL", "INFO").upper() in ("DEBUG", "INFO")


def _cpu_settings(kwargs: dict, user: dict) -> dict:
    """On a CPU: KV blocks of 32 tokens, not vLLM's 128, so that the prefix cache holds all but
    the last few tokens of a shared prompt (every tree node repeats its prompt); and on a small
    machine the worker's threads bound to every core (vLLM's auto binding keeps one core for its
    scheduler, half of a 2-core machine); and a KV cache of 2 GiB (vLLM's CPU default takes most
    of the machine's memory, and the engine's worker was killed for it here).
    ``VLLM_CPU_OMP_THREADS_BIND`` and ``VLLM_CPU_KVCACHE_SPACE`` (GiB) override these."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return {}
    cores = sorted(os.sched_getaffinity(0))
    if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ and len(cores) <= 4:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cores))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    return {} if "block_size" in user else {"block_size": 32}


def _allowed_rank(rank: int) -> int:
    """The smallest LoRA rank vLLM accepts as ``max_lora_rank`` that holds ``rank``."""
    for r in (1, 8, 16, 32, 64, 128, 256, 320, 512):
        if r >= rank:
            return r
    raise BackendError(f"LoRA rank {rank} is above vLLM's largest ({512})")


def _adapter_rank(adapter) -> int:
    """The LoRA rank of a peft adapter directory (vLLM sizes its LoRA slots by it)."""
    path = Path(adapter) / "adapter_config.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["r"])
    except (OSError, ValueError, KeyError, TypeError):
        raise BackendError(f"{path}: not a peft LoRA adapter config (no rank 'r')") from None
