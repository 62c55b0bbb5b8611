"""What a run trains on: the pairs of a split's training side, their order, batches and prompts.

Pairs come from the training side of a saved split only (training questions and countries,
held-out persona combinations excluded), checked with ``check_split``, ``Split.check_training``
and :func:`check_no_eval_cells`. The data order of epoch e is a permutation seeded by (seed, e).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from ..pairs import CounterfactualPair, build_pairs
from ..survey import Persona, SurveyData


def load_run_data(cfg: dict, data: SurveyData | None = None, split=None):
    """``(data, split)`` of a run: the given objects, or those that ``cfg["data"]`` names."""
    from ..splits import Split
    from ..survey import load_survey

    if data is None:
        data = load_survey(cfg["data"]["dir"] or None)
    if split is None:
        if not cfg["data"]["split"]:
            raise ValueError("no split given: pass --split FILE (see `acealign split`)")
        split = Split.load(cfg["data"]["split"])
    return data, split


def training_countries(split, countries: Sequence[str]) -> list[str]:
    """Requested countries (default: all of the split's training countries), checked."""
    from ..splits import LeakError

    if not countries:
        return list(split.train_countries)
    outside = [c for c in countries if c not in split.train_countries]
    if outside:
        raise LeakError(
            f"countries {', '.join(outside)} are not training countries of the split "
            f"(training countries: {', '.join(split.train_countries) or 'none'})"
        )
    return list(countries)


def split_pairs(
    data: SurveyData, split, question_keys, countries, context_granularity=4, min_n=10
) -> list[CounterfactualPair]:
    """Pairs on ``question_keys`` whose ends avoid the split's held-out persona combinations."""
    heldout = [p for c in countries for p in split.heldout_in(c)]
    return build_pairs(
        data, context_granularity=context_granularity, min_n=min_n, countries=countries,
        question_keys=question_keys, exclude_personas=heldout,
    )


def training_pairs(data: SurveyData, split, cfg: dict) -> list[CounterfactualPair]:
    """The training pairs of a run: training side of ``split`` only, then a seeded subsample.

    Raises ``LeakError`` if any pair end is an evaluation/validation cell or covers a held-out
    persona combination, and ValueError if nothing is left.
    """
    from ..splits import check_split

    check_split(split, data)  # the split as a whole (also done by Split.load): overlaps, data
    d = cfg["data"]
    countries = training_countries(split, d["countries"])
    pairs = split_pairs(data, split, split.train_questions, countries,
                        d["context_granularity"], d["min_n"])
    split.check_training(pairs)
    check_no_eval_cells(split, pairs)
    if not pairs:
        raise ValueError(
            f"no training pairs: no question of the split's training side has both ends with "
            f">= {d['min_n']} respondents in {', '.join(countries)}"
        )
    return subsample(pairs, d["max_pairs"], cfg["seed"], by_question=d["group_by_question"])


PAIRS_NAME = "pairs.csv"  # a run's training pairs, one row each: the ladder's in-sample level
PAIR_KEY_COLUMNS = ["country", "question_key", "attribute", "context"]


def pairs_table(pairs: Sequence[CounterfactualPair]) -> str:
    """CSV of the pairs' keys as :func:`acealign.analyses.common.prediction_pairs` names them
    (``context``: the other attributes' values, in attribute order, joined by commas)."""
    import pandas as pd

    from ..survey import ATTRIBUTES

    rows = [(p.s1.country, p.question_key, p.attribute,
             ",".join(str(getattr(p.s1, a)) for a in ATTRIBUTES if a != p.attribute)) for p in pairs]
    return pd.DataFrame(rows, columns=PAIR_KEY_COLUMNS).to_csv(index=False)


def check_no_eval_cells(split, pairs: Sequence[CounterfactualPair]) -> None:
    """Refuse pairs on an evaluation question (in an evaluation country) or a validation question.

    Whatever the split kind: held-out persona combinations do not make the other personas' cells
    on an evaluation question trainable (``Split.is_eval_cell`` counts only the held-out personas
    there). A second line of defence behind ``check_split`` and ``Split.check_training``, in
    case a split lists a question on two sides (persona splits of older versions did).
    """
    from ..splits import LeakError

    val, ev, ev_c = (set(split.validation_questions), set(split.eval_questions),
                     set(split.eval_countries))
    bad = [p for p in pairs if p.question_key in val
           or (p.question_key in ev and (p.s1.country in ev_c or p.s0.country in ev_c))]
    if bad:
        p = bad[0]
        side = "a validation" if p.question_key in val else f"an evaluation ({p.s1.country})"
        raise LeakError(
            f"{len(bad)} of {len(pairs)} training pairs touch evaluation cells or validation "
            f"questions of the {split.kind} split (first: {p.question_key}, {side} question that "
            f"the split also lists for training): refusing to train on them")


def subsample(pairs: list, n: int, seed: int, by_question: bool = False) -> list:
    """``n`` pairs chosen with a seeded RNG, kept in their original order (all when n=0 or more).

    ``by_question``: take whole (country, question) groups in a seeded order (the last one cut),
    so that pair ends shared between pairs can be scored once per micro-batch.
    """
    if n <= 0 or n >= len(pairs):
        return list(pairs)
    rng = np.random.default_rng([seed, 7])
    if not by_question:
        idx = np.sort(rng.choice(len(pairs), size=n, replace=False))
        return [pairs[i] for i in idx]
    groups = question_groups(pairs)
    chosen: list[int] = []
    for g in rng.permutation(len(groups)):
        chosen += groups[g][: n - len(chosen)]
        if len(chosen) == n:
            break
    return [pairs[i] for i in sorted(chosen)]


def question_groups(pairs: Sequence[CounterfactualPair]) -> list[list[int]]:
    """Indices of the pairs of each (country, question), in first-seen order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(pairs):
        groups.setdefault((p.s1.country, p.question_key), []).append(i)
    return list(groups.values())


def validation_pairs(data: SurveyData, split, cfg: dict) -> list[CounterfactualPair]:
    """Pairs on the split's validation questions, same countries and persona rule as training."""
    d = cfg["data"]
    countries = training_countries(split, d["countries"])
    return split_pairs(data, split, split.validation_questions, countries,
                       d["context_granularity"], d["min_n"])


def pair_cells(pairs: Sequence[CounterfactualPair]) -> list[tuple[Persona, str, np.ndarray]]:
    """Unique (persona, question, counts) cells at the ends of ``pairs``, in first-seen order."""
    seen: dict[tuple[Persona, str], np.ndarray] = {}
    for p in pairs:
        seen.setdefault((p.s1, p.question_key), p.counts1)
        seen.setdefault((p.s0, p.question_key), p.counts0)
    return [(s, q, c) for (s, q), c in seen.items()]


def pairs_digest(pairs: Sequence[CounterfactualPair]) -> str:
    """A short hash of the pair list, to check that a resumed run trains on the same pairs."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(f"{p.attribute}|{p.s1.key}|{p.s0.key}|{p.question_key}\n".encode())
    return h.hexdigest()[:16]


def epoch_order(n: int, seed: int, epoch: int, groups: list[list[int]] | None = None) -> list[int]:
    """The order of the ``n`` pairs in ``epoch``: a permutation seeded by (seed, epoch).

    With ``groups`` (:func:`question_groups`), the groups are shuffled and each group's pairs are
    shuffled, but a group's pairs stay together.
    """
    rng = np.random.default_rng([seed, epoch])
    if groups is None:
        return rng.permutation(n).tolist()
    out: list[int] = []
    for g in rng.permutation(len(groups)):
        out += [groups[g][i] for i in rng.permutation(len(groups[g]))]
    return out


def steps_per_epoch(n: int, cfg: dict, n_proc: int) -> int:
    """Optimizer steps of an epoch over ``n`` pairs on ``n_proc`` processes."""
    t = cfg["train"]
    return len(step_batches(list(range(n)), t["batch_size"], t["grad_accum"], n_proc))


def epoch_steps(n: int, cfg: dict, epoch: int, n_proc: int, groups=None) -> list[list[list[int]]]:
    """The optimizer steps of ``epoch``: its order of the ``n`` pairs (:func:`epoch_order`) cut
    into :func:`step_batches`."""
    t = cfg["train"]
    return step_batches(epoch_order(n, cfg["seed"], epoch, groups), t["batch_size"], t["grad_accum"],
                        n_proc)


def step_batches(order: list[int], batch_size: int, grad_accum: int, n_proc: int) -> list[list[list[int]]]:
    """Group an epoch order into optimizer steps of ``grad_accum * n_proc`` micro-batches."""
    micro = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    per_step = grad_accum * n_proc
    return [micro[i:i + per_step] for i in range(0, len(micro), per_step)]


def make_requests(data: SurveyData, cells, tokenizer, cfg: dict) -> list:
    """One :class:`ScoringRequest` per (persona, question) of ``cells``."""
    from ..prompts import build_prompt
    from ..scoring import question_request

    chat = {"auto": None, True: True, False: False}[cfg["model"]["chat"]]
    out = []
    for persona, qkey in cells:
        q = data.questions[qkey]
        prompt = build_prompt(persona, q, template=cfg["model"]["template"], tokenizer=tokenizer,
                              chat=chat)
        # option numbers, renormalized over the substantive options (the scale of the counts)
        out.append(question_request(prompt, q))
    return out


def pair_requests(data: SurveyData, pairs: Sequence[CounterfactualPair], tokenizer, cfg: dict):
    """``(req1, req0)``: the scoring requests of the ``s1`` and the ``s0`` end of every pair."""
    requests = make_requests(data, [(p.s1, p.question_key) for p in pairs]
                             + [(p.s0, p.question_key) for p in pairs], tokenizer, cfg)
    return requests[: len(pairs)], requests[len(pairs):]
