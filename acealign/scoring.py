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

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_path


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


def _batch_cost(rows: int, shared: int, longest: int) -> float:
    """Token-equivalents run by one batch: the shared prefix once (its own pass), then every row
    padded to the longest suffix."""
    if shared <= 0:
        return rows * longest + _PASS_OVERHEAD_TOKENS
    return shared + _PASS_OVERHEAD_TOKENS + rows * (longest - shared) + _PASS_OVERHEAD_TOKENS


def _sharing_pays(rows: int, shared: int) -> bool:
    """A separate prefix pass saves (rows - 1) x shared tokens and costs one more pass."""
    return shared > 0 and (rows - 1) * shared > _PASS_OVERHEAD_TOKENS


def _continuation_rows(options: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Token paths to run after the prompt so every token of every option gets its log-probability.

    Option y with tokens t1..tm needs the logits after t1..t_{m-1}; a path that is a prefix of
    another needed path is dropped (its logits come with the longer row).
    """
    needed = {o[:-1] for o in options if len(o) > 1}
    return sorted(p for p in needed if not any(q != p and q[: len(p)] == p for q in needed))


# Fixed cost of one forward pass, in token-equivalents: a pass runs ~15 ops per layer whatever
# its size, and small matmuls run far below peak on CPU, so tiny batches and short shared
# prefixes do not pay off.
_PASS_OVERHEAD_TOKENS = 48


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
        out: list[torch.Tensor | None] = [None] * len(encoded)
        ctx = torch.enable_grad() if grad else torch.inference_mode()
        with ctx:
            for idx in self.plan_batches([p for p, _ in encoded]):
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

    def _score_batch(self, prompts: list[list[int]], options: list[list[tuple[int, ...]]]):
        """Eq. 2 log-likelihoods (unnormalized) of each prompt's options, as (K,) tensors."""
        dev = self._device()
        B = len(prompts)
        lens = [len(p) for p in prompts]
        L = self._shared_length(prompts)
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


# -- scoring survey cells ------------------------------------------------------------------------
PREDICTION_COLUMNS = [
    "method", "country", "question_key", "dataset", "topic", "question_id", "persona",
    "granularity", "gender", "education", "residence", "marital_status", "n", "survey_counts",
    "pred",
]
_PARTIAL_META_KEY = b"acealign.partial"


def _cell_request(data, cell, template, tokenizer, chat) -> ScoringRequest:
    from .prompts import build_prompt, option_verbalizations

    q = data.questions[cell.question_key]
    return ScoringRequest(
        build_prompt(cell.persona, q, template, tokenizer=tokenizer, chat=chat),
        tuple(option_verbalizations(q)),
    )


def _fingerprint(model, template, chat) -> dict:
    cfg = getattr(model, "config", None)
    return {
        "model": str(getattr(cfg, "_name_or_path", "") or getattr(cfg, "name_or_path", "")),
        "model_class": type(model).__name__,
        "template": template if isinstance(template, str) else template.name,
        "chat": chat,
    }


def _read_partial(path, fingerprint: dict) -> dict[tuple[str, str], np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = (table.schema.metadata or {}).get(_PARTIAL_META_KEY)
    got = json.loads(meta) if meta else None
    if got != fingerprint:
        raise ValueError(
            f"{path}: partial results were scored with other settings ({got}, now {fingerprint}); "
            "delete it to start over"
        )
    cols = table.to_pydict()
    return {
        (p, q): np.asarray(v, dtype=float)
        for p, q, v in zip(cols["persona"], cols["question_key"], cols["pred"], strict=True)
    }


def _write_partial(path, done: dict, fingerprint: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = list(done)
    table = pa.table({
        "persona": [k[0] for k in keys],
        "question_key": [k[1] for k in keys],
        "pred": [done[k].tolist() for k in keys],
    })
    table = table.replace_schema_metadata({_PARTIAL_META_KEY: json.dumps(fingerprint).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def score_cells(
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
    scorer: OptionScorer | None = None,
) -> list[np.ndarray]:
    """Predicted option distributions (Eq. 3) of survey cells, in the order of ``cells``.

    ``cells``: objects with ``.persona`` and ``.question_key`` (``EligibleCell``, ``Cell``).
    ``chat=None`` uses the chat template when the tokenizer has one. With ``partial_path``, results
    are checkpointed there (Parquet, rewritten atomically after every chunk) and a rerun skips the
    cells already in it; settings that differ from the checkpoint's are an error. Cells are scored
    in the order of their prompt text, so a batch shares the longest common prefix (chat header
    and persona sentence, or the whole question for question-first templates).
    """
    from .prompts import get_template, has_chat_template

    if chat is None:
        chat = has_chat_template(tokenizer)
    tname = get_template(template).name
    scorer = scorer or OptionScorer(model, tokenizer, batch_size=batch_size)
    fp = _fingerprint(model, tname, chat)
    done: dict[tuple[str, str], np.ndarray] = {}
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
        reqs_all = sorted(
            ((_cell_request(data, c, tname, tokenizer, chat), k) for k, c in todo),
            key=lambda rk: rk[0].prompt,
        )
        for start in range(0, len(reqs_all), chunk_size):
            chunk = reqs_all[start : start + chunk_size]
            dists = scorer.distributions([r for r, _ in chunk])
            for (_, k), p in zip(chunk, dists, strict=True):
                done[k] = p
            if partial_path is not None:
                _write_partial(partial_path, done, fp)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return [done[k] for k in keys]


def predictions_frame(data, cells, preds, method: str = "base"):
    """The predictions table (one row per persona x question; columns ``PREDICTION_COLUMNS``)."""
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
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


def predict_cells(scorer: OptionScorer, data, cells, template="paper", chat: bool | None = None,
                  method: str = "base", partial_path=None, progress: bool = True):
    """Score ``cells`` and return the predictions DataFrame (resumable through ``partial_path``)."""
    preds = score_cells(scorer.model, scorer.tokenizer, data, cells, template=template, chat=chat,
                        partial_path=partial_path, progress=progress, scorer=scorer)
    return predictions_frame(data, cells, preds, method)
