"""Benchmark training throughput: the trainer's step against a plain reference loop, same pairs.

Both sides start from the same base model and the same LoRA initialization (peft, paper settings
r=8, alpha=16, all attention and MLP projections; dropout off so the two losses can be compared) and optimize the same objective (Eq. 14 with
alpha = beta = 1, so both the anchor and the causal terms are computed) with AdamW, one optimizer
step per batch of pairs. Steps alternate (trainer, reference, trainer, ...) on the same batches,
so that a change in machine load hits both.

- trainer: :func:`acealign.train.batch_loss`, i.e. :class:`acealign.scoring.OptionScorer` with
  ``grad=True`` (LM head only where needed, shared prompt prefixes run once, one prompt pass for
  all options) and persona ends shared by pairs of a batch scored once;
- reference: for each pair and each of its two ends, one padded batch of K sequences
  (prompt + option tokens), full logits at every position, option log-likelihoods summed and
  renormalized (Eq. 2-3); no prefix reuse, no sharing.

The first batch's losses must agree (same model, same objective); the script checks that.

    python benchmarks/bench_training.py [--pairs 24] [--batch-size 4] [--countries egypt]
        [--model default] [--group-by-question] [--max-options K] [--json]

On a shared CPU set OMP_NUM_THREADS=1 (oversubscribed OpenMP threads slow both sides ~10x).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time

import torch


def reference_log_probs(model, scorer, requests) -> list[torch.Tensor]:
    """Plain Eq. 2-3: one padded forward of K (prompt + option) rows per request, full logits; in
    the default "whole" scoring mode, plus log(1 - P(next token continues the option)) read from
    the logits after the option's last token (the continuation sets are the scorer's)."""
    device = next(model.parameters()).device
    out = []
    for r in requests:
        prompt = scorer.encode_prompt(r.prompt)
        options = [scorer.encode_option(o) for o in r.options]
        rows = [prompt + list(o) for o in options]
        width = max(len(x) for x in rows)
        ids = torch.full((len(rows), width), scorer.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, x in enumerate(rows):  # right padding: prompts align at position 0
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        whole = scorer.mode == "whole"
        if whole:  # one more position: the token after the option
            ids = torch.cat([ids, torch.full((len(rows), 1), scorer.pad_id, dtype=torch.long)], 1)
            mask = torch.cat([mask, torch.zeros((len(rows), 1), dtype=torch.long)], 1)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        lls = []
        for i, o in enumerate(options):
            pos = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(o) + whole, device=device)
            logp = torch.log_softmax(logits[i, pos].float(), dim=-1)
            ll = logp[torch.arange(len(o), device=device), torch.tensor(o, device=device)].sum()
            cont = scorer.continuation_ids(r.options[i], r.options).to(device)
            if whole and cont.numel():
                ll = ll + torch.log1p(-logp[len(o), cont].exp().sum())
            lls.append(ll)
        ll = torch.stack(lls)
        if r.scale is not None:  # Eq. 3 over the substantive options
            ll = ll[list(r.scale)]
        out.append(ll - torch.logsumexp(ll, dim=0))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="survey tables (default: $ACEALIGN_DATA, else the shipped copy)")
    ap.add_argument("--split", help="split JSON (default: a question split, seed 0, made here)")
    ap.add_argument("--countries", default="egypt", help="comma-separated countries (egypt)")
    ap.add_argument("--pairs", type=int, default=24, help="training pairs, seeded sample (24)")
    ap.add_argument("--batch-size", type=int, default=4, help="pairs per optimizer step (4)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--group-by-question", action="store_true",
                    help="sample whole questions (pairs share ends: the trainer scores them once)")
    ap.add_argument("--max-options", type=int, default=0,
                    help="only questions with at most this many options (0 = all): the reference "
                         "keeps K full-logit rows per end with autograd, ~1 GB per option row "
                         "at SmolLM2's 49k vocabulary")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from acealign import train as T
    from acealign.models import load_model
    from acealign.objectives import combined_loss, pair_terms
    from acealign.scoring import OptionScorer
    from acealign.splits import Split, make_question_split
    from acealign.survey import load_survey

    countries = [c.strip() for c in args.countries.split(",") if c.strip()]
    cfg = T.resolve_config(None, [
        f"data.countries={json.dumps(countries)}", f"data.max_pairs={args.pairs}",
        f"seed={args.seed}", f"data.group_by_question={str(args.group_by_question).lower()}",
        # No dropout, so that both sides compute the same loss (checked on the first batch);
        # dropout does not change the amount of work.
        "lora.dropout=0.0",
    ])
    data = load_survey(args.data)
    split = Split.load(args.split) if args.split else make_question_split(data, 0.2, 0.15, seed=0)
    if args.max_options:
        split.train_questions = [q for q in split.train_questions
                                 if data.questions[q].n_options <= args.max_options]
    pairs = T.training_pairs(data, split, cfg)
    base, tok = load_model(args.model, dtype="float32")
    torch.manual_seed(args.seed)
    trainer_model = T.add_lora(base, cfg)
    ref_model = copy.deepcopy(trainer_model)  # same LoRA init
    bf16_base, _ = load_model(args.model, dtype="bfloat16")  # mixed bf16 (acealign.precision)
    torch.manual_seed(args.seed)
    bf16_model = T.add_lora(bf16_base, cfg)  # same seed, same LoRA init
    for m in (trainer_model, ref_model, bf16_model):
        m.train()
    mode = cfg["train"]["scoring_mode"]
    scorer = OptionScorer(trainer_model, tok, batch_size=16, mode=mode)
    bf16_scorer = OptionScorer(bf16_model, tok, batch_size=16, mode=mode)
    ref_tok = OptionScorer(ref_model, tok, mode=mode)  # tokenization helpers and continuation sets
    opt_t = torch.optim.AdamW([p for p in trainer_model.parameters() if p.requires_grad], lr=2e-5)
    opt_r = torch.optim.AdamW([p for p in ref_model.parameters() if p.requires_grad], lr=2e-5)
    opt_b = torch.optim.AdamW([p for p in bf16_model.parameters() if p.requires_grad], lr=2e-5)
    weights = {"anchor": 1.0, "causal": 1.0}

    requests = T.make_requests(data, [(p.s1, p.question_key) for p in pairs]
                               + [(p.s0, p.question_key) for p in pairs], tok, cfg)
    req1, req0 = requests[: len(pairs)], requests[len(pairs):]
    order = T.epoch_order(len(pairs), args.seed, 0,
                          T.question_groups(pairs) if args.group_by_question else None)
    batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]

    times = {"trainer": 0.0, "reference": 0.0, "bf16": 0.0}
    bf16_first = None
    first_losses = None
    unique_ends = 0
    def engine_step(name, mp, mb, step_scorer, optimizer):
        """One optimizer step of the trainer's engine (fp32 or bf16), timed into ``times``."""
        t0 = time.perf_counter()
        loss, _ = T.batch_loss(mp, [req1[i] for i in mb], [req0[i] for i in mb], weights, step_scorer)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times[name] += time.perf_counter() - t0
        return loss

    for b, mb in enumerate(batches):
        mp = [pairs[i] for i in mb]
        loss_t = engine_step("trainer", mp, mb, scorer, opt_t)
        unique_ends += len({req1[i] for i in mb} | {req0[i] for i in mb})
        loss_b = engine_step("bf16", mp, mb, bf16_scorer, opt_b)
        bf16_first = loss_b.item() if bf16_first is None else bf16_first

        t0 = time.perf_counter()
        # Pair by pair (the batch loss is the mean of the per-pair losses, so the gradient is
        # the same): full logits of K rows per end would not fit in memory for a whole batch.
        loss_r = 0.0
        for i, p in zip(mb, mp, strict=True):
            lp1 = reference_log_probs(ref_model, ref_tok, [req1[i]])
            lp0 = reference_log_probs(ref_model, ref_tok, [req0[i]])
            terms = pair_terms(lp1, lp0, [p.counts1], [p.counts0])
            loss_i = combined_loss(terms, weights) / len(mb)
            loss_i.backward()
            loss_r += loss_i.item()
        opt_r.step()
        opt_r.zero_grad(set_to_none=True)
        times["reference"] += time.perf_counter() - t0
        if first_losses is None:
            first_losses = (loss_t.item(), loss_r)
        print(f"batch {b + 1}/{len(batches)}: trainer {times['trainer']:.1f}s, bf16 {times['bf16']:.1f}s, "
              f"reference {times['reference']:.1f}s (cumulative)", file=sys.stderr, flush=True)

    n = len(pairs)
    result = {
        "model": args.model, "countries": countries, "pairs": n, "batch_size": args.batch_size,
        "group_by_question": args.group_by_question,
        "prompts_per_pair_trainer": round(unique_ends / n, 3), "prompts_per_pair_reference": 2.0,
        "max_options": args.max_options or None,
        "mean_options": round(sum(len(r.options) for r in requests) / len(requests), 2),
        "threads": torch.get_num_threads(),
        "trainer_pairs_per_s": n / times["trainer"], "reference_pairs_per_s": n / times["reference"],
        "speedup": times["reference"] / times["trainer"],
        "scoring_mode": mode,
        "bf16_pairs_per_s": n / times["bf16"], "bf16_speedup": times["reference"] / times["bf16"],
        "bf16_vs_fp32_trainer": times["trainer"] / times["bf16"],
        "first_batch_loss": {"trainer": first_losses[0], "reference": first_losses[1], "bf16": bf16_first},
    }
    if abs(first_losses[0] - first_losses[1]) > 1e-3 * max(1.0, abs(first_losses[1])):
        print(f"losses disagree: {first_losses}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{n} pairs ({result['mean_options']} options on average), batch {args.batch_size}, "
              f"{result['threads']} threads")
        print(f"trainer:   {result['trainer_pairs_per_s']:.3f} pairs/s "
              f"({result['prompts_per_pair_trainer']} prompt passes per pair)")
        print(f"reference: {result['reference_pairs_per_s']:.3f} pairs/s (2 ends x K option rows, full logits)")
        print(f"speedup:   {result['speedup']:.2f}x")
        print(f"bf16:      {result['bf16_pairs_per_s']:.3f} pairs/s, {result['bf16_speedup']:.2f}x the reference, "
              f"{result['bf16_vs_fp32_trainer']:.2f}x the fp32 trainer (first-batch loss "
              f"{bf16_first:.4f} vs {first_losses[0]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
