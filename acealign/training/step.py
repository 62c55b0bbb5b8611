"""One optimizer step: the objective of micro-batches of pairs, gradients averaged over processes.

Both ends of each pair are scored with :class:`acealign.scoring.OptionScorer` (``grad=True``);
the objective is computed by :mod:`acealign.objectives`.
"""

from __future__ import annotations

import torch

from ..objectives import TERMS, combined_loss, pair_terms


def batch_loss(pairs, req1, req0, weights, scorer, dedup: bool = True):
    """Objective of one micro-batch: ``(loss, {term: value})`` with gradients attached.

    ``dedup``: a persona end shared by several pairs (same persona, same question) is scored
    once; its log-probs then enter the loss wherever it appears (same value, same gradient).
    """
    if dedup:
        slot: dict = {}
        idx1 = [slot.setdefault(r, len(slot)) for r in req1]
        idx0 = [slot.setdefault(r, len(slot)) for r in req0]
        unique = list(slot)
    else:
        unique = list(req1) + list(req0)
        idx1, idx0 = list(range(len(req1))), list(range(len(req1), len(unique)))
    lp = [x.float() for x in scorer.log_probs(unique, grad=True)]
    terms = pair_terms([lp[j] for j in idx1], [lp[j] for j in idx0],
                       [p.counts1 for p in pairs], [p.counts0 for p in pairs])
    return combined_loss(terms, weights), terms


def optimizer_step(micro_batches, pairs, req1, req0, weights, scorer, params, optimizer,
                   scheduler, accelerator, max_grad_norm) -> dict[str, float]:
    """One optimizer step over this process' micro-batches (lists of pair indices); returns the
    step's mean loss and terms (averaged over processes too)."""
    sums = dict.fromkeys(("loss", *TERMS), 0.0)
    n_mb = max(1, len(micro_batches))
    for mb in micro_batches:
        with accelerator.autocast():
            loss, terms = batch_loss([pairs[i] for i in mb], [req1[i] for i in mb],
                                     [req0[i] for i in mb], weights, scorer)
        accelerator.backward(loss / n_mb)
        sums["loss"] += loss.item() / n_mb
        for k, v in terms.items():
            sums[k] += v.item() / n_mb
    if accelerator.num_processes > 1:
        average_gradients(params, accelerator)
    if max_grad_norm:
        accelerator.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if accelerator.num_processes > 1:
        t = torch.tensor(list(sums.values()), device=accelerator.device)
        sums = dict(zip(sums, accelerator.reduce(t, "mean").tolist(), strict=True))
    return sums


def average_gradients(params, accelerator) -> None:
    """All-reduce the adapter's gradients (mean over processes) in one flat buffer."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = accelerator.reduce(torch.cat([g.reshape(-1) for g in grads]), "mean")
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n
