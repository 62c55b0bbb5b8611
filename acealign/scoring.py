"""Option distributions from token likelihoods (paper Eq. 2-3), batched, with prefix sharing.

``OptionScorer.log_probs`` returns, for each (prompt, options) request, the renormalized
log-probabilities of the options. Two scoring modes:

- ``"whole"`` (default): the probability that the model's answer is *exactly* option y: the
  log-likelihood of y's tokens (Eq. 2) plus the log-probability that the next token does not
  continue it (:func:`answer_log_likelihood`). Without that term option "1" absorbs every "10",
  "11", ... continuation, and p("10") = p("1") p("0"|"1") can never beat p("1").
- ``"literal"``: the paper's literal Eq. 2 (the tokens' log-likelihood only), for reproducing it;
  it warns on questions where one option's tokens are a prefix of another's.

Either way Eq. 3 renormalizes over the options (over ``ScoringRequest.scale`` when it is given:
non-substantive options such as "Don't know" are scored but left out of the scale).

Which tokens "continue" an answer (:func:`continuation_token_ids`): after a verbalization ending
in a digit, any token whose text starts with a digit ("1" + "0" is another number); after one
ending in a letter, any token starting with a letter or digit (the word goes on); after anything
else, none. In every mode of text, a token that starts the remainder of a longer option (e.g.
"Agree" -> ", strongly") also counts as a continuation, so no option's probability contains
another option's.

The same code runs under ``torch.no_grad`` (evaluation) and with autograd (training
backpropagates through it). Work saved compared with a plain padded forward with full logits:

- the LM head is applied only where a log-probability is needed (the last prompt position and
  the option tokens), never to every prompt position;
- requests are sorted by their token ids, so a batch shares a long common prefix (chat header,
  persona sentence): that prefix runs once and its KV cache is repeated for the batch;
- the prompt runs once per request; all option tokens of a request then run in one extra pass
  from its KV cache as a token *tree* (options sharing first tokens, "10" and "11", share the
  node "1"), with a tree-shaped attention mask, so the prompt's cache is never copied.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_path
from .precision import model_precision

SCORING_MODES = ("whole", "literal")
CHAT_ESTIMATORS = ("first-token", "sampling")  # acealign.backends: the server applies its chat template


@dataclass(frozen=True)
class ScoringRequest:
    """A prompt (exact text fed to the tokenizer) and the verbalizations of its K options.

    ``scale``: indices of the options Eq. 3 renormalizes over (the substantive options, in
    order); ``None`` means all of them. The result then has ``len(scale)`` entries.
    """

    prompt: str
    options: tuple[str, ...]
    scale: tuple[int, ...] | None = None
    # The same prompt as chat messages ((role, content), ...), for backends whose server applies
    # its own chat template (acealign.backends: the chat estimators); the hf engine ignores it.
    messages: tuple[tuple[str, str], ...] | None = None


# -- the paper's formulas ------------------------------------------------------------------------
def option_log_likelihood(token_log_probs: torch.Tensor) -> torch.Tensor:
    """Eq. 2: l(y|g,q) = sum_j log p(t_j | prompt(g,q), t_<j), over the tokens of y's verbalization."""
    return token_log_probs.sum(-1)


def answer_log_likelihood(token_log_probs: torch.Tensor, stop_log_prob: torch.Tensor) -> torch.Tensor:
    """Eq. 2 for the *whole* answer: l(y) + log(1 - P(next token continues y | prompt, y)).

    ``stop_log_prob`` is log(1 - P(next token continues y)) = log P(next token is *not* in y's
    continuation set, e.g. not a digit after a number), computed by the caller as the logsumexp of
    the log-probabilities outside the set (exact, also when the continuation mass is near 1). With
    it, p("1") no longer contains p("10"), p("11"), ...; with 0 this is Eq. 2.
    """
    return option_log_likelihood(token_log_probs) + stop_log_prob


def renormalize(log_likelihoods: torch.Tensor) -> torch.Tensor:
    """Eq. 3 in log space: log p(y|g,q) = l(y|g,q) - log sum_y' exp(l(y'|g,q)), over the options."""
    return log_likelihoods - torch.logsumexp(log_likelihoods, dim=-1, keepdim=True)


# -- which tokens continue an answer -------------------------------------------------------------
def _continues(last: str, text: str) -> bool:
    """Does a token with text ``text`` extend a verbalization ending in character ``last``?"""
    if not text:
        return False
    if last.isdigit():
        return text[0].isdigit()
    if last.isalpha():
        return text[0].isalnum()
    return False


def extension_rests(option: str, others: Sequence[str]) -> list[str]:
    """What the request's longer options add after ``option`` ("10" after "1" -> "0")."""
    return [o[len(option):] for o in others if o != option and o.startswith(option)]


def token_continues(text: str, option: str, rests: Sequence[str] = ()) -> bool:
    """Does a next token with text ``text`` continue ``option`` into a longer answer? (module
    docstring; ``rests``: :func:`extension_rests` of the request's options)."""
    if not option or not text:
        return False
    return _continues(option[-1], text) or any(r.startswith(text) or text.startswith(r) for r in rests)


def continuation_token_ids(token_texts: Sequence[str], option: str, others: Sequence[str] = ()) -> list[int]:
    """Ids of the tokens that would continue ``option`` into a longer answer (module docstring).

    ``token_texts[i]`` is the decoded text of token i. ``others``: the request's other options; a
    token that starts the remainder of an option extending ``option`` counts too.
    """
    rests = extension_rests(option, others)
    return [i for i, t in enumerate(token_texts) if token_continues(t, option, rests)]


def prefix_conflicts(options: Sequence[tuple[int, ...]]) -> list[tuple[int, int]]:
    """Pairs (i, j) where option i's tokens are a proper prefix of option j's: under the literal
    Eq. 2, p(option i) then contains p(option j)."""
    return [(i, j) for i, a in enumerate(options) for j, b in enumerate(options)
            if i != j and len(a) < len(b) and b[: len(a)] == a]


def vocabulary_texts(tokenizer) -> list[str]:
    """Decoded text of every token id ("" for special tokens), as :func:`token_continues` reads it."""
    n = len(tokenizer)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    texts = tokenizer.batch_decode([[i] for i in range(n)])
    # SentencePiece drops a token's leading "\u2581" (space) when it is decoded alone: "\u25810"
    # would read as "0", a continuation; put the space back from the raw token.
    raw = tokenizer.convert_ids_to_tokens(list(range(n)))
    texts = [" " + t if isinstance(r, str) and r.startswith("\u2581") and not t.startswith(" ")
             else t for t, r in zip(texts, raw, strict=True)]
    return ["" if i in special else t for i, t in enumerate(texts)]


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt. A chat-templated prompt already starting with BOS gets no second one."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and prompt.startswith(bos))
    ids = tokenizer(prompt, add_special_tokens=add_special)["input_ids"]
    # Some tokenizers append EOS with special tokens on; the answer must follow the prompt.
    eos = tokenizer.eos_token_id
    if add_special and eos is not None and len(ids) > 1 and ids[-1] == eos and not prompt.endswith(
        tokenizer.eos_token or "\0"
    ):
        ids = ids[:-1]
    if not ids:
        raise ValueError("empty prompt: nothing to condition the options on")
    return list(ids)


def encode_option(tokenizer, option: str) -> tuple[int, ...]:
    """Token ids of an option's verbalization t(y) (Eq. 2), checked to be representable."""
    ids = tuple(tokenizer(option, add_special_tokens=False)["input_ids"])
    unk = tokenizer.unk_token_id
    if not ids:
        raise ValueError(f"option {option!r} encodes to no tokens")
    if unk is not None and unk in ids and tokenizer.unk_token not in option:
        raise ValueError(f"option {option!r} contains characters the tokenizer cannot encode")
    return ids


class ContinuationSets:
    """The continuation token ids of options (:func:`continuation_token_ids`) for one tokenizer,
    each computed once: a set scans the whole vocabulary, and the same options recur in every
    request of a question. Shared by the hf engine and the vllm backend."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._texts: list[str] | None = None
        self._cache: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}

    def texts(self) -> list[str]:
        """Decoded text of every token id (:func:`vocabulary_texts`), computed once."""
        if self._texts is None:
            self._texts = vocabulary_texts(self.tokenizer)
        return self._texts

    def ids(self, option: str, options: Sequence[str]) -> torch.Tensor:
        """Token ids that continue ``option`` among ``options``, as a LongTensor."""
        key = (option, tuple(o for o in options if o != option and o.startswith(option)))
        got = self._cache.get(key)
        if got is None:
            got = torch.tensor(continuation_token_ids(self.texts(), option, key[1]), dtype=torch.long)
            self._cache[key] = got
        return got


# -- engine --------------------------------------------------------------------------------------
def model_context_length(model) -> int | None:
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


def _batch_cost(rows: int, shared: int, longest: int) -> float:
    """Token-equivalents run by one batch: the shared prefix once (its own pass), then every row
    padded to the longest suffix."""
    if shared <= 0:
        return rows * longest + _PASS_OVERHEAD_TOKENS
    return shared + _PASS_OVERHEAD_TOKENS + rows * (longest - shared) + _PASS_OVERHEAD_TOKENS


def _sharing_pays(rows: int, shared: int) -> bool:
    """A separate prefix pass saves (rows - 1) x shared tokens and costs one more pass."""
    return shared > 0 and (rows - 1) * shared > _PASS_OVERHEAD_TOKENS


def option_tree(options: Sequence[tuple[int, ...]], whole: bool) -> list[tuple[int, ...]]:
    """Token paths (tree nodes) to run after the prompt, parents before children.

    The logits at node t1..tj give log p(t_{j+1} | prompt, t1..tj). Option y = t1..tm needs the
    nodes t1..t_{m-1} (Eq. 2) and, for the whole-answer term, t1..tm itself. Options sharing
    first tokens ("10", "11") share nodes ("1").
    """
    nodes = set()
    for o in options:
        for j in range(1, len(o) + (1 if whole else 0)):
            nodes.add(o[:j])
    return sorted(nodes, key=lambda p: (len(p), p))


def _returned_cache(out):
    """The KV cache a forward pass returned (``cache`` in newer transformers, else
    ``past_key_values``); see :meth:`OptionScorer._cache_kw`."""
    return getattr(out, "cache", None) or out.past_key_values


_FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"


@contextmanager
def _grouped_query_sdpa(on: bool):
    """Let transformers' sdpa attention pass grouped-query heads to PyTorch's SDPA as they are
    (``enable_gqa``) instead of copying every key/value head to each of its query heads first.

    transformers does so on CPU only without an attention mask, which the engine always passes;
    PyTorch's CPU kernels take the mask with ``enable_gqa``, giving the same values bit for bit
    without the copies (README, "Scoring benchmark": 8-16% faster). Inference only: a backward
    pass through either form sums the key/value gradients in another order. Set through
    transformers' own switch, ``TRANSFORMERS_SDPA_FORCE_GQA``, read at each attention call;
    a value the user set is left alone.
    """
    if not on or _FORCE_GQA in os.environ:
        yield
        return
    os.environ[_FORCE_GQA] = "1"
    try:
        yield
    finally:
        os.environ.pop(_FORCE_GQA, None)


# Fixed cost of one forward pass, in token-equivalents: a pass runs ~15 ops per layer whatever
# its size, and small matmuls run far below peak on CPU, so tiny batches and short shared
# prefixes do not pay off.
_PASS_OVERHEAD_TOKENS = 48


class OptionScorer:
    """Score the options of many prompts with a causal LM (Eq. 2-3).

    ``mode``: ``"whole"`` (the answer is exactly the option; default) or ``"literal"`` (Eq. 2 as
    printed); see the module docstring. ``batch_size``: prompts per forward pass. ``max_length``:
    context limit in tokens (default: the model's ``max_position_embeddings``); longer prompts
    raise ``ValueError``. ``prefix_sharing``: run a batch's common prefix once (results are
    identical either way).
    """

    name = "hf"  # acealign.backends.ScoringBackend
    estimator = "exact"

    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: int | None = None,
                 prefix_sharing: bool = True, mode: str = "whole"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if mode not in SCORING_MODES:
            raise ValueError(f"unknown scoring mode {mode!r} (expected one of {', '.join(SCORING_MODES)})")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length if max_length is not None else model_context_length(model)
        self.prefix_sharing = prefix_sharing
        self.mode = mode
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self._option_cache: dict[str, tuple[int, ...]] = {}
        self.continuations = ContinuationSets(tokenizer)
        self._warned: set[tuple[str, ...]] = set()

    # -- tokenization --------------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a prompt (:func:`encode_prompt`)."""
        return encode_prompt(self.tokenizer, prompt)

    def encode_option(self, option: str) -> tuple[int, ...]:
        """Token ids of an option's verbalization t(y) (Eq. 2), checked to be representable."""
        got = self._option_cache.get(option)
        if got is None:
            got = self._option_cache[option] = encode_option(self.tokenizer, option)
        return got

    def token_texts(self) -> list[str]:
        """Decoded text of every token id (computed once; used for the continuation sets)."""
        return self.continuations.texts()

    def continuation_ids(self, option: str, options: Sequence[str]) -> torch.Tensor:
        """Token ids that continue ``option`` (:class:`ContinuationSets`), cached."""
        return self.continuations.ids(option, options)

    # -- public API ----------------------------------------------------------------------------
    def log_probs(self, requests: Sequence[ScoringRequest], grad: bool = False) -> list[torch.Tensor]:
        """Renormalized log p(y|prompt) over each request's scale (Eq. 3), shape (K,) each.

        With ``grad=True`` the results are differentiable w.r.t. the model's trainable parameters.
        """
        return [renormalize(ll if r.scale is None else ll[list(r.scale)])
                for r, ll in zip(requests, self.log_likelihoods(requests, grad=grad), strict=True)]

    def log_likelihoods(self, requests: Sequence[ScoringRequest], grad: bool = False) -> list[torch.Tensor]:
        """Unnormalized log-likelihood of every option of each request (Eq. 2, plus the
        whole-answer term in ``"whole"`` mode), shape (K,) each, before Eq. 3."""
        encoded = []
        for i, r in enumerate(requests):
            if len(r.options) == 0:
                raise ValueError(f"request {i} has no options")
            if r.scale is not None and (not r.scale or any(not 0 <= k < len(r.options) for k in r.scale)):
                raise ValueError(f"request {i}: scale {r.scale} does not index its {len(r.options)} options")
            p = self.encode_prompt(r.prompt)
            opts = [self.encode_option(o) for o in r.options]
            longest = len(p) + max(len(o) for o in opts) - (0 if self.mode == "whole" else 1)
            if self.max_length is not None and longest > self.max_length:
                raise ValueError(
                    f"request {i}: prompt of {len(p)} tokens plus its options needs {longest} "
                    f"positions, more than the model's context of {self.max_length}"
                )
            if self.mode == "literal":
                self._warn_prefixes(r.options, opts)
            cont = ([self.continuation_ids(o, r.options) for o in r.options]
                    if self.mode == "whole" else None)
            encoded.append((p, opts, cont))
        out: list[torch.Tensor | None] = [None] * len(encoded)
        ctx = torch.enable_grad() if grad else torch.inference_mode()
        with ctx, _grouped_query_sdpa(not grad and self._device().type == "cpu"):
            for idx in self.plan_batches([e[0] for e in encoded]):
                lls = self._score_batch([encoded[i] for i in idx])
                for i, ll in zip(idx, lls, strict=True):
                    out[i] = ll
        return out  # type: ignore[return-value]

    def _warn_prefixes(self, texts: tuple[str, ...], opts: list[tuple[int, ...]]) -> None:
        conflicts = prefix_conflicts(opts)
        if conflicts and texts not in self._warned:
            import warnings

            self._warned.add(texts)
            i, j = conflicts[0]
            warnings.warn(
                f"literal Eq. 2 scoring: option {texts[i]!r}'s tokens are a prefix of {texts[j]!r}'s, "
                f"so p({texts[i]!r}) also counts answers that go on to {texts[j]!r} "
                f"({len(conflicts)} such pair(s)); use scoring mode 'whole' to score whole answers",
                stacklevel=3,
            )

    def distributions(self, requests: Sequence[ScoringRequest]) -> list[np.ndarray]:
        """Option probabilities p(y|g,q) (Eq. 3) as float64 numpy arrays summing to 1."""
        out = []
        for lp in self.log_probs(requests, grad=False):
            p = lp.double().exp().cpu().numpy()
            out.append(p / p.sum())
        return out

    def score(self, requests: Sequence[ScoringRequest]) -> list:
        """:meth:`distributions` as :class:`acealign.backends.Scored` (the backend interface)."""
        from .backends import Scored

        return [Scored(p) for p in self.distributions(requests)]

    def describe(self) -> dict:
        """Model, its class and precision, and the scoring mode (see :func:`scoring_fingerprint`)."""
        cfg = getattr(self.model, "config", None)
        return {
            "model": str(getattr(cfg, "_name_or_path", "") or getattr(cfg, "name_or_path", "")),
            "model_class": type(self.model).__name__,
            "scoring_mode": self.mode,
            "dtype": model_precision(self.model),
        }

    def plan_batches(self, prompts: Sequence[Sequence[int]]) -> list[list[int]]:
        """Split request indices into batches of at most ``batch_size``, ordered to save work.

        Cost of a batch, in tokens run: its shared prefix once, plus every row padded to the
        longest suffix. Prompts sorted by token ids put shared prefixes (chat header, persona,
        instruction) next to each other; batch boundaries are then chosen by dynamic programming
        so that batches do not straddle two prefix groups. That plan is compared with fixed-size
        batches of length-sorted prompts (least padding when prompts share little); the cheaper
        plan is used.
        """
        n, bs = len(prompts), self.batch_size
        if n == 0:
            return []
        order = sorted(range(n), key=lambda i: prompts[i])
        seqs = [prompts[i] for i in order]
        lens = [len(q) for q in seqs]
        # lcp[k] = common prefix of seqs[k-1] and seqs[k]; in sorted order the common prefix of a
        # range is the minimum over its adjacent pairs.
        lcp = [0] + [_common_prefix_length([seqs[k - 1], seqs[k]]) for k in range(1, n)]
        best = [0.0] + [float("inf")] * n
        cut = [0] * (n + 1)
        for j in range(1, n + 1):  # batch = seqs[i:j]
            shared, longest, shortest = 1 << 30, 0, 1 << 30
            for i in range(j - 1, max(0, j - bs) - 1, -1):
                longest, shortest = max(longest, lens[i]), min(shortest, lens[i])
                if i < j - 1:
                    shared = min(shared, lcp[i + 1])
                m = j - i
                L = 0 if (m < 2 or not self.prefix_sharing) else min(shared, shortest - 1)
                L = L if _sharing_pays(m, L) else 0
                c = best[i] + _batch_cost(m, L, longest)
                if c < best[j]:
                    best[j], cut[j] = c, i
        batches, j = [], n
        while j > 0:
            batches.append(order[cut[j] : j])
            j = cut[j]
        batches.reverse()

        by_length = sorted(range(n), key=lambda i: (len(prompts[i]), prompts[i]))
        fixed = [by_length[s : s + bs] for s in range(0, n, bs)]
        fixed_cost = sum(
            _batch_cost(len(b), self._shared_length([prompts[i] for i in b]),
                        max(len(prompts[i]) for i in b))
            for b in fixed
        )
        return batches if best[n] <= fixed_cost else fixed

    def _shared_length(self, prompts: Sequence[Sequence[int]]) -> int:
        """Tokens of the batch's common prefix run once (each prompt keeps >= 1 token of its own);
        0 when a separate prefix pass would not pay for itself."""
        if not self.prefix_sharing or len(prompts) < 2:
            return 0
        L = min(_common_prefix_length(prompts), min(len(p) for p in prompts) - 1)
        return L if _sharing_pays(len(prompts), L) else 0

    # -- one batch -----------------------------------------------------------------------------
    def _device(self):
        return next(self.model.parameters()).device

    def _cache_kw(self) -> str:
        """Name of the forward's KV-cache argument: ``cache`` in newer transformers (where
        ``past_key_values`` is deprecated), ``past_key_values`` before."""
        if not hasattr(self, "_cache_arg"):
            import inspect

            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            params = inspect.signature(base.forward).parameters
            self._cache_arg = "cache" if "cache" in params else "past_key_values"
        return self._cache_arg

    def _score_batch(self, encoded: list[tuple[list[int], list[tuple[int, ...]], list | None]]):
        """Log-likelihoods (before Eq. 3) of each request's options, as (K,) tensors.

        Pass 1 runs the prompts (after a shared-prefix pass when it pays); pass 2 runs every
        request's option tree from pass 1's KV cache, each node attending to its prompt and its
        ancestors only (a 4-D attention mask), at the positions the option tokens would take.
        """
        dev = self._device()
        prompts = [e[0] for e in encoded]
        B = len(prompts)
        lens = [len(p) for p in prompts]
        L = self._shared_length(prompts)
        cache = None
        if L > 0:
            ids = torch.tensor([prompts[0][:L]], device=dev)
            # only the KV cache is needed: no position goes through the LM head
            out = self.model(input_ids=ids, position_ids=torch.arange(L, device=dev)[None],
                             use_cache=True, logits_to_keep=torch.empty(0, dtype=torch.long, device=dev))
            cache = _returned_cache(out)
            cache.batch_repeat_interleave(B)
        # Suffixes, left-padded so every prompt ends at the last column; padding sits between the
        # shared prefix and the suffix, masked out, with explicit position ids.
        S = max(lens) - L
        ids = torch.full((B, S), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, L + S), dtype=torch.long)
        mask[:, :L] = 1
        pos = torch.zeros((B, S), dtype=torch.long)
        for b, p in enumerate(prompts):
            n = len(p) - L
            ids[b, S - n :] = torch.tensor(p[L:])
            mask[b, L + S - n :] = 1
            pos[b, S - n :] = torch.arange(L, len(p))
        # The last column as an index, not logits_to_keep=1: that slice is not contiguous, and
        # torch.matmul runs such a 3-D input against a weight that does not require grad (the
        # frozen LM head of every peft model) as a bmm over B copies of the weight, about twice
        # the time of the single mm it gets otherwise. The index gives a contiguous copy: one mm,
        # the values a model whose LM head requires grad got already.
        out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         use_cache=True, logits_to_keep=torch.tensor([S - 1], device=dev),
                         **{self._cache_kw(): cache})
        first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # (B, V)

        whole = self.mode == "whole"
        trees = [option_tree(opts, whole) for _, opts, _ in encoded]
        node_lp = None
        if any(trees):
            node_lp = self._tree_pass(_returned_cache(out), mask, lens, trees, dev)  # (B, T, V)
        return _option_log_likelihoods(first, node_lp, encoded, trees, whole, dev)

    def _tree_pass(self, cache, mask, lens, trees, dev) -> torch.Tensor:
        """Log-softmax at every node of every request's option tree, (B, T, V)."""
        B, P = mask.shape
        T = max(len(t) for t in trees)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)
        pos = torch.zeros((B, T), dtype=torch.long)
        allowed = torch.zeros((B, 1, T, P + T), dtype=torch.bool)
        allowed[:, 0, :, :P] = mask.bool()[:, None, :]
        for b, nodes in enumerate(trees):
            index = {p: j for j, p in enumerate(nodes)}
            for j, p in enumerate(nodes):
                ids[b, j] = p[-1]
                pos[b, j] = lens[b] + len(p) - 1
                for d in range(1, len(p) + 1):  # the node and its ancestors
                    allowed[b, 0, j, P + index[p[:d]]] = True
            for j in range(len(nodes), T):  # padding nodes see only themselves (no empty rows)
                allowed[b, 0, j, P + j] = True
        mask4 = allowed
        impl = getattr(self.model.config, "_attn_implementation", "sdpa")
        if impl not in ("sdpa", "eager"):
            # flash / flex attention do not take an arbitrary 4-D mask: the tree would be wrong
            raise ValueError(f"option scoring needs sdpa or eager attention (the model uses {impl!r}): "
                             "load it with attn_implementation='sdpa'")
        if impl == "eager":
            # eager attention adds the mask to its scores: an additive float mask
            dtype = self.model.get_input_embeddings().weight.dtype
            mask4 = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
        out = self.model(input_ids=ids.to(dev), attention_mask=mask4.to(dev), position_ids=pos.to(dev),
                         use_cache=False, **{self._cache_kw(): cache})
        return torch.log_softmax(out.logits.float(), dim=-1)


def _option_log_likelihoods(first, node_lp, encoded, trees, whole: bool, dev) -> list[torch.Tensor]:
    """Eq. 2 (and the whole-answer term) of every option of a batch, as one (K,) tensor per request.

    ``first``: (B, V) log-probs after each prompt; ``node_lp``: (B, T, V) log-probs at the nodes of
    each request's option tree (``trees``), or None. All look-ups are a few batched gathers:
    indexing the (B, T, V) tensor once per option would, in a backward pass, allocate and add a
    zero-filled (B, T, V) gradient per look-up (gigabytes per training step).
    """
    counts = [len(opts) for _, opts, _ in encoded]
    M = sum(counts)
    width = max(len(o) for _, opts, _ in encoded for o in opts)
    # token j of option m: (request, node, token) to look up, and its (m, j) place
    fb, ft = [], []                                   # first tokens: first[b, t]
    qb, qn, qt, qm, qj = [], [], [], [], []           # later tokens: node_lp[b, n, t]
    rb, rn, rm, cr, cc = [], [], [], [], []           # stop rows: node_lp[b, n] without cont ids
    m = 0
    for b, (_, opts, cont) in enumerate(encoded):
        node_of = {p: j for j, p in enumerate(trees[b])}
        for k, o in enumerate(opts):
            fb.append(b)
            ft.append(o[0])
            for j in range(1, len(o)):
                qb.append(b), qn.append(node_of[o[:j]]), qt.append(o[j]), qm.append(m), qj.append(j)
            if whole and cont[k].numel():
                cr.extend([len(rm)] * cont[k].numel())
                cc.extend(cont[k].tolist())
                rb.append(b), rn.append(node_of[o]), rm.append(m)
            m += 1

    def ix(values):
        return torch.tensor(values, dtype=torch.long, device=dev)

    values = [first[ix(fb), ix(ft)]]
    rows, cols = list(range(M)), [0] * M
    if qb:
        values.append(node_lp[ix(qb), ix(qn), ix(qt)])
        rows, cols = rows + qm, cols + qj
    token_lp = first.new_zeros(M, width).index_put((ix(rows), ix(cols)), torch.cat(values))
    if not whole:
        lls = option_log_likelihood(token_lp)
    else:
        stop = first.new_zeros(M)
        if rb:
            ends = node_lp[ix(rb), ix(rn)]  # (R, V): the logits after each whole option
            banned = torch.zeros(ends.shape, dtype=torch.bool, device=dev)
            banned[ix(cr), ix(cc)] = True
            stop = stop.index_put((ix(rm),), torch.logsumexp(ends.masked_fill(banned, float("-inf")), dim=-1))
        lls = answer_log_likelihood(token_lp, stop)
    return list(torch.split(lls, counts))


# -- scoring survey cells ------------------------------------------------------------------------
PREDICTION_COLUMNS = [
    "method", "country", "question_key", "dataset", "topic", "question_id", "persona",
    "granularity", "gender", "education", "residence", "marital_status", "n", "survey_counts",
    "pred",
]
_PARTIAL_META_KEY = b"acealign.partial"


def question_request(prompt: str, question) -> ScoringRequest:
    """The scoring request of one prompt on ``question``: its option numbers (see
    :func:`acealign.prompts.option_verbalizations`), renormalized over its substantive options."""
    from .prompts import option_verbalizations

    scale = question.scale_indices
    return ScoringRequest(prompt, tuple(option_verbalizations(question)),
                          None if len(scale) == question.n_options else scale)


def _cell_request(data, cell, template, tokenizer, chat) -> ScoringRequest:
    from .prompts import build_prompt, prompt_messages

    q = data.questions[cell.question_key]
    req = question_request(build_prompt(cell.persona, q, template, tokenizer=tokenizer, chat=chat), q)
    messages = tuple((m["role"], m["content"]) for m in prompt_messages(cell.persona, q, template))
    return ScoringRequest(req.prompt, req.options, req.scale, messages)


def scoring_fingerprint(scorer, template, chat, extra: dict | None = None) -> dict:
    """What determines a cell's predicted distribution: the backend's :meth:`describe` (model,
    scoring mode, precision; backend and estimator when not ``hf``), template and chat, plus the
    caller's ``extra`` (adapter content digest, split digest)."""
    fp = {**scorer.describe(), "template": template if isinstance(template, str) else template.name,
          "chat": chat}
    fp.update(extra or {})
    return fp


def _read_partial(path, fingerprint: dict) -> dict:
    import pyarrow.parquet as pq

    from .backends import Scored

    table = pq.read_table(path)
    meta = (table.schema.metadata or {}).get(_PARTIAL_META_KEY)
    got = json.loads(meta) if meta else {}
    if got != fingerprint:
        diff = [f"{k}: {got.get(k)!r} -> {fingerprint.get(k)!r}"
                for k in sorted(set(got) | set(fingerprint)) if got.get(k) != fingerprint.get(k)]
        raise ValueError(
            f"{path}: partial results were scored with other settings ({'; '.join(diff)}); "
            "delete it to start over"
        )
    cols = table.to_pydict()
    infos = cols.get("info") or [None] * len(cols["pred"])
    return {
        (p, q): Scored(np.asarray(v, dtype=float), json.loads(i) if i else {})
        for p, q, v, i in zip(cols["persona"], cols["question_key"], cols["pred"], infos, strict=True)
    }


def _write_partial(path, done: dict, fingerprint: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = list(done)
    table = pa.table({
        "persona": [k[0] for k in keys],
        "question_key": [k[1] for k in keys],
        "pred": [done[k].dist.tolist() for k in keys],
        "info": [json.dumps(done[k].info) if done[k].info else "" for k in keys],
    })
    table = table.replace_schema_metadata({_PARTIAL_META_KEY: json.dumps(fingerprint).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def score_cells(model, tokenizer, data, cells, template="paper", chat: bool | None = None, **kw) -> list[np.ndarray]:
    """Predicted option distributions (Eq. 3) of survey cells, in the order of ``cells``
    (:func:`score_cells_detailed` without the estimators' details)."""
    return [s.dist for s in score_cells_detailed(model, tokenizer, data, cells, template, chat, **kw)]


def score_cells_detailed(
    model,
    tokenizer,
    data,
    cells,
    template="paper",
    chat: bool | None = None,
    partial_path=None,
    batch_size: int = 16,
    progress: bool = True,
    chunk_size: int = 128,
    scorer=None,
    fingerprint: dict | None = None,
) -> list:
    """Predicted option distributions (Eq. 3) of survey cells as :class:`acealign.backends.Scored`,
    in the order of ``cells``.

    ``cells``: objects with ``.persona`` and ``.question_key`` (``EligibleCell``, ``Cell``).
    ``scorer``: any :class:`acealign.backends.ScoringBackend` (default: an :class:`OptionScorer`
    over ``model``); its tokenizer builds the prompts (``None``: the server applies its own chat
    template to the requests' messages, recorded as chat ``"server"``). ``chat=None`` uses the
    chat template when the tokenizer has one. With ``partial_path``, results are checkpointed
    there (Parquet, rewritten atomically after every chunk) and a rerun skips the cells already in
    it; settings that differ from the checkpoint's are an error. Cells are scored in the order of
    their prompt text, so a batch shares the longest common prefix (chat header and persona
    sentence, or the whole question for question-first templates). ``fingerprint``: extra fields
    (adapter content digest, split digest) that must match the checkpoint's, beside the backend's
    description, template and chat (:func:`scoring_fingerprint`).
    """
    from .prompts import get_template, has_chat_template

    scorer = scorer or OptionScorer(model, tokenizer, batch_size=batch_size)
    tokenizer = scorer.tokenizer
    if tokenizer is None:
        # no local chat template: the server applies its own (chat estimators), else plain prompts
        chat = "server" if getattr(scorer, "estimator", "") in CHAT_ESTIMATORS else False
    elif chat is None:
        chat = has_chat_template(tokenizer)
    tname = get_template(template).name
    fp = scoring_fingerprint(scorer, tname, chat, fingerprint)
    done: dict = {}
    if partial_path is not None and Path(partial_path).is_file():
        done = _read_partial(partial_path, fp)
    keys = [(c.persona.key, c.question_key) for c in cells]
    todo = sorted({k: c for k, c in zip(keys, cells, strict=True) if k not in done}.items())
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(set(keys)), initial=len(set(keys)) - len(todo), unit="cell", desc="scoring")
    try:
        # Prompts sorted by text put those sharing a prefix side by side, whatever the template
        # puts first (persona or question); each chunk is then planned into prefix batches.
        build_chat = chat if chat != "server" else False
        reqs_all = sorted(
            ((_cell_request(data, c, tname, tokenizer, build_chat), k) for k, c in todo),
            key=lambda rk: rk[0].prompt,
        )
        for start in range(0, len(reqs_all), chunk_size):
            chunk = reqs_all[start : start + chunk_size]
            for (_, k), got in zip(chunk, scorer.score([r for r, _ in chunk]), strict=True):
                done[k] = got
            if partial_path is not None:
                _write_partial(partial_path, done, fp)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return [done[k] for k in keys]


def predictions_frame(data, cells, preds, method: str = "base", scoring_mode: str | None = None,
                      estimator: str | None = None, infos=None):
    """The predictions table (one row per persona x question; columns ``PREDICTION_COLUMNS``, plus
    ``scoring_mode`` when given: how the model's distributions were scored; ``estimator`` (see
    :mod:`acealign.backends`) when given; ``score_info`` (JSON) when an estimator reported details
    such as sampling uncertainty)."""
    import pandas as pd

    from .survey import ATTRIBUTES

    rows = []
    for c, pred in zip(cells, preds, strict=True):
        p, q = c.persona, data.questions[c.question_key]
        counts = np.asarray(c.counts)
        rows.append({
            "method": method,
            "country": p.country,
            "question_key": c.question_key,
            "dataset": q.dataset,
            "topic": q.topic,
            "question_id": q.question_id,
            "persona": p.key,
            "granularity": p.granularity,
            **{a: getattr(p, a) for a in ATTRIBUTES},
            "n": int(counts.sum()),
            "survey_counts": [int(x) for x in counts],
            "pred": [float(x) for x in pred],
        })
    frame = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
    if scoring_mode is not None:
        frame["scoring_mode"] = scoring_mode
    if estimator is not None:
        frame["estimator"] = estimator
    if infos is not None and any(infos):
        frame["score_info"] = [json.dumps(i, sort_keys=True) if i else "" for i in infos]
    return frame


def predict_cells(scorer, data, cells, template="paper", chat: bool | None = None,
                  method: str = "base", partial_path=None, progress: bool = True,
                  fingerprint: dict | None = None):
    """Score ``cells`` with any backend and return the predictions DataFrame (resumable through
    ``partial_path``)."""
    scored = score_cells_detailed(getattr(scorer, "model", None), scorer.tokenizer, data, cells,
                                  template=template, chat=chat, partial_path=partial_path,
                                  progress=progress, scorer=scorer, fingerprint=fingerprint)
    return predictions_frame(data, cells, [s.dist for s in scored], method, scoring_mode=scorer.mode,
                             estimator=estimator_label(scorer), infos=[s.info for s in scored])


def estimator_label(scorer) -> str | None:
    """The ``estimator`` column: absent for the hf engine (exact; tables as before), else
    ``backend:estimator``, e.g. ``openai:sampling``."""
    return None if scorer.name == "hf" else f"{scorer.name}:{scorer.estimator}"
