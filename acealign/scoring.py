"""Option distributions from token likelihoods (paper Eq. 2-3), batched, with prefix sharing.

``OptionScorer.log_probs`` returns, for each (prompt, options) request, the renormalized
log-probabilities of the options: Eq. 2 sums the log-probabilities of every token of an option's
verbalization after the prompt, Eq. 3 renormalizes over the options. The same code runs under
``torch.no_grad`` (evaluation) and with autograd (training backpropagates through it).

Work saved compared with a plain padded forward with full logits:

- the LM head is applied only where a log-probability is needed (the last prompt position, and the
  positions inside multi-token options), never to every prompt position;
- requests are sorted by their token ids, so a batch shares a long common prefix (chat header,
  persona sentence): that prefix runs once and its KV cache is repeated for the batch;
- the prompt runs once per request; multi-token options (e.g. "10" = "1","0") continue from its KV
  cache, with options sharing their first tokens ("10", "11") sharing one continuation row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ScoringRequest:
    """A prompt (exact text fed to the tokenizer) and the verbalizations of its K options."""

    prompt: str
    options: tuple[str, ...]


# -- the paper's formulas ------------------------------------------------------------------------
def option_log_likelihood(token_log_probs: torch.Tensor) -> torch.Tensor:
    """Eq. 2: l(y|g,q) = sum_j log p(t_j | prompt(g,q), t_<j), over the tokens of y's verbalization."""
    return token_log_probs.sum(-1)


def renormalize(log_likelihoods: torch.Tensor) -> torch.Tensor:
    """Eq. 3 in log space: log p(y|g,q) = l(y|g,q) - log sum_y' exp(l(y'|g,q)), over the options."""
    return log_likelihoods - torch.logsumexp(log_likelihoods, dim=-1, keepdim=True)


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


def _continuation_rows(options: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Token paths to run after the prompt so every token of every option gets its log-probability.

    Option y with tokens t1..tm needs the logits after t1..t_{m-1}; a path that is a prefix of
    another needed path is dropped (its logits come with the longer row).
    """
    needed = {o[:-1] for o in options if len(o) > 1}
    return sorted(p for p in needed if not any(q != p and q[: len(p)] == p for q in needed))


class OptionScorer:
    """Score the options of many prompts with a causal LM (Eq. 2-3).

    ``batch_size``: prompts per forward pass. ``max_length``: context limit in tokens (default:
    the model's ``max_position_embeddings``); longer prompts raise ``ValueError``.
    ``prefix_sharing``: run a batch's common prefix once (results are identical either way).
    """

    def __init__(self, model, tokenizer, batch_size: int = 16, max_length: int | None = None,
                 prefix_sharing: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length if max_length is not None else model_context_length(model)
        self.prefix_sharing = prefix_sharing
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.pad_id = int(pad)
        self._option_cache: dict[str, tuple[int, ...]] = {}

    # -- tokenization --------------------------------------------------------------------------
    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a prompt. A chat-templated prompt already starting with BOS gets no second one."""
        bos = getattr(self.tokenizer, "bos_token", None)
        add_special = not (bos and prompt.startswith(bos))
        ids = self.tokenizer(prompt, add_special_tokens=add_special)["input_ids"]
        # Some tokenizers append EOS with special tokens on; the answer must follow the prompt.
        eos = self.tokenizer.eos_token_id
        if add_special and eos is not None and len(ids) > 1 and ids[-1] == eos and not prompt.endswith(
            self.tokenizer.eos_token or "\0"
        ):
            ids = ids[:-1]
        if not ids:
            raise ValueError("empty prompt: nothing to condition the options on")
        return list(ids)

    def encode_option(self, option: str) -> tuple[int, ...]:
        """Token ids of an option's verbalization t(y) (Eq. 2), checked to be representable."""
        got = self._option_cache.get(option)
        if got is not None:
            return got
        ids = tuple(self.tokenizer(option, add_special_tokens=False)["input_ids"])
        unk = self.tokenizer.unk_token_id
        if not ids:
            raise ValueError(f"option {option!r} encodes to no tokens")
        if unk is not None and unk in ids and self.tokenizer.unk_token not in option:
            raise ValueError(f"option {option!r} contains characters the tokenizer cannot encode")
        self._option_cache[option] = ids
        return ids

    # -- public API ----------------------------------------------------------------------------
    def log_probs(self, requests: Sequence[ScoringRequest], grad: bool = False) -> list[torch.Tensor]:
        """Renormalized log p(y|prompt) over each request's options (Eq. 2-3), shape (K,) each.

        With ``grad=True`` the results are differentiable w.r.t. the model's trainable parameters.
        """
        encoded = []
        for i, r in enumerate(requests):
            if len(r.options) == 0:
                raise ValueError(f"request {i} has no options")
            p = self.encode_prompt(r.prompt)
            opts = [self.encode_option(o) for o in r.options]
            longest = len(p) + max(len(o) for o in opts) - 1
            if self.max_length is not None and longest > self.max_length:
                raise ValueError(
                    f"request {i}: prompt of {len(p)} tokens plus its options needs {longest} "
                    f"positions, more than the model's context of {self.max_length}"
                )
            encoded.append((p, opts))
        # Sorting by token ids puts prompts with long common prefixes into the same batch.
        order = sorted(range(len(encoded)), key=lambda i: encoded[i][0])
        out: list[torch.Tensor | None] = [None] * len(encoded)
        ctx = torch.enable_grad() if grad else torch.inference_mode()
        with ctx:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                lls = self._score_batch([encoded[i][0] for i in idx], [encoded[i][1] for i in idx])
                for i, ll in zip(idx, lls, strict=True):
                    out[i] = renormalize(ll)
        return out  # type: ignore[return-value]

    def distributions(self, requests: Sequence[ScoringRequest]) -> list[np.ndarray]:
        """Option probabilities p(y|g,q) (Eq. 3) as float64 numpy arrays summing to 1."""
        out = []
        for lp in self.log_probs(requests, grad=False):
            p = lp.double().exp().cpu().numpy()
            out.append(p / p.sum())
        return out

    # -- one batch -----------------------------------------------------------------------------
    def _device(self):
        return next(self.model.parameters()).device

    def _score_batch(self, prompts: list[list[int]], options: list[list[tuple[int, ...]]]):
        """Eq. 2 log-likelihoods (unnormalized) of each prompt's options, as (K,) tensors."""
        dev = self._device()
        B = len(prompts)
        lens = [len(p) for p in prompts]
        # Shared prefix (leave >= 1 token per prompt for the batched pass).
        L = _common_prefix_length(prompts) if (self.prefix_sharing and B > 1) else 0
        L = min(L, min(lens) - 1)
        cache = None
        if L > 0:
            ids = torch.tensor([prompts[0][:L]], device=dev)
            out = self.model(input_ids=ids, position_ids=torch.arange(L, device=dev)[None],
                             use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
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
        out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # (B, V)

        # Continuation rows for multi-token options, from each prompt's KV cache.
        rows: list[tuple[int, tuple[int, ...]]] = []
        for b, opts in enumerate(options):
            rows += [(b, r) for r in _continuation_rows(opts)]
        row_lp = None
        if rows:
            cache = out.past_key_values
            R, T = len(rows), max(len(r) for _, r in rows)
            sel = torch.tensor([b for b, _ in rows], device=dev)
            cache.batch_select_indices(sel)
            rids = torch.full((R, T), self.pad_id, dtype=torch.long)
            rmask = torch.cat([mask[sel.cpu()], torch.zeros((R, T), dtype=torch.long)], dim=1)
            rpos = torch.zeros((R, T), dtype=torch.long)
            for k, (b, r) in enumerate(rows):
                rids[k, : len(r)] = torch.tensor(r)
                rmask[k, L + S : L + S + len(r)] = 1
                rpos[k, : len(r)] = torch.arange(lens[b], lens[b] + len(r))
            rout = self.model(input_ids=rids.to(dev), attention_mask=rmask.to(dev),
                              position_ids=rpos.to(dev), past_key_values=cache, use_cache=False)
            row_lp = torch.log_softmax(rout.logits.float(), dim=-1)  # (R, T, V)

        results = []
        row_of = {}
        for k, (b, r) in enumerate(rows):
            row_of[(b, r)] = k
        for b, opts in enumerate(options):
            my_rows = [r for (bb, r) in rows if bb == b]
            lls = []
            for o in opts:
                parts = [first[b, o[0]]]
                if len(o) > 1:
                    r = next(r for r in my_rows if r[: len(o) - 1] == o[:-1])
                    k = row_of[(b, r)]
                    tgt = torch.tensor(o[1:], device=dev)
                    parts.append(row_lp[k, torch.arange(len(o) - 1, device=dev), tgt])
                lls.append(option_log_likelihood(torch.cat([x.reshape(-1) for x in parts])))
            results.append(torch.stack(lls))
        return results
