"""Pure estimators over what an OpenAI-compatible server returns (no I/O; see
:mod:`acealign.backends.openai`).

- :func:`boundary_term`: the whole-answer term log P(next token does not continue the option)
  from a top-k next-token list, with a bound on its error;
- :func:`first_token_distribution`: option probabilities from the first answer token's top-k;
- :func:`parse_option` and :func:`sampling_estimate`: option probabilities from sampled answers,
  with their standard errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..scoring import extension_rests, token_continues
from . import BackendError, normalized


# -- whole-answer term from a top-k list -----------------------------------------------------
@dataclass(frozen=True)
class BoundaryTerm:
    """``stop_log_prob``: log P(the answer stops after the option), taking every token outside the
    returned top k not to continue it (the most it can be). ``gap``: log((N + R) / N) >= 0, with N
    the returned non-continuation mass and R = 1 - the returned mass: the true term lies in
    [stop_log_prob - gap, stop_log_prob] (``inf`` when N = 0, 0 when the top k is complete or
    nothing can continue the option)."""

    stop_log_prob: float
    gap: float


def log1mexp(x: float) -> float:
    """log(1 - exp(x)) for x <= 0, accurate both near 0 and for very negative x."""
    if x >= 0:
        return -math.inf
    return math.log(-math.expm1(x)) if x > -math.log(2) else math.log1p(-math.exp(x))


def logsumexp(values: Sequence[float]) -> float:
    if not values:
        return -math.inf
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values)) if m > -math.inf else -math.inf


def can_continue(option: str, options: Sequence[str]) -> bool:
    """Could any next token continue ``option`` (it ends in a letter or digit, or a longer option
    extends it)? If not, the whole-answer term is exactly 0 whatever the top k holds."""
    return bool(option) and (option[-1].isalnum() or bool(extension_rests(option, options)))


def boundary_term(top: Mapping[str, float], option: str, options: Sequence[str] = ()) -> BoundaryTerm:
    """The whole-answer term of ``option`` from the next-token ``top`` log-probabilities after it
    (token text -> log-prob; ``options``: the request's options, for :func:`extension_rests`).

    S = sum of exp(lp) over the returned tokens whose text continues the option
    (:func:`acealign.scoring.token_continues`); log P(stop) = log(1 - S), computed from
    logsumexp of those lps so that it stays accurate when S is near 1. Tokens *outside* the top k
    are taken not to continue; :attr:`BoundaryTerm.gap` bounds the error that makes.
    """
    if not can_continue(option, options):
        return BoundaryTerm(0.0, 0.0)
    rests = extension_rests(option, options)
    cont = [lp for t, lp in top.items() if token_continues(t, option, rests)]
    stop = [lp for t, lp in top.items() if not token_continues(t, option, rests)]
    log_n = logsumexp(stop)
    stop_lp = log1mexp(logsumexp(cont))
    # Rounding (or a server whose lps sum past 1) can put log(1 - S) below the returned
    # non-continuation mass, which P(stop) certainly includes.
    stop_lp = max(stop_lp, log_n)
    gap = math.inf if log_n == -math.inf else max(0.0, stop_lp - log_n)
    return BoundaryTerm(stop_lp, gap)


# -- first answer token --------------------------------------------------------------------------
def first_token_distribution(top: Sequence[tuple[str, float]], options: Sequence[str],
                             where: str = "") -> tuple[np.ndarray, float]:
    """(p, covered_mass): option probabilities from the first answer token's top-k
    ``(token text, log-prob)`` alternatives, matched on stripped text (alternatives that strip to
    the same option, "3" and " 3", add up), renormalized over ``options``; ``covered_mass`` is
    their total probability before renormalizing. An option absent from the top k is an error
    naming the options (``where``: what to add to it, e.g. the question), never a 0.
    """
    mass = dict.fromkeys((o.strip() for o in options), 0.0)
    found = set()
    for text, lp in top:
        key = text.strip()
        if key in mass and lp is not None:
            mass[key] += math.exp(lp)
            found.add(key)
    missing = [o for o in options if o.strip() not in found]
    if missing:
        raise BackendError(
            f"first-token estimate: option(s) {missing} of {list(options)} not among the "
            f"{len(top)} returned alternatives (raise top_logprobs, or use another estimator)"
            + (f"; {where}" if where else "")
        )
    p = np.array([mass[o.strip()] for o in options], dtype=np.float64)
    return normalized(p), float(p.sum())


# -- sampled answers -----------------------------------------------------------------------------
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _option_number(option: str) -> int | None:
    m = _NUMBER.search(option)
    return int(m.group()) if m and "." not in m.group() else None


def parse_option(text: str, options: Sequence[str]) -> int | None:
    """Index of the option a free-text answer names: the first integer in ``text`` that is one of
    the options' numbers ("Answer: 3" -> the option "3"; "2 or 3" -> "2"; "I'd say 10" -> "10",
    not "1"); ``None`` when no integer in it is an option's number. Decimals ("3.5") are not
    integers and name no option."""
    numbers = {}
    for i, o in enumerate(options):
        n = _option_number(o)
        if n is not None:
            numbers.setdefault(n, i)
    for m in _NUMBER.finditer(text or ""):
        if "." not in m.group() and int(m.group()) in numbers:
            return numbers[int(m.group())]
    return None


def sampling_estimate(answers: Sequence[str], options: Sequence[str],
                      where: str = "") -> tuple[np.ndarray, dict]:
    """(p, info) from sampled answers: p = counts of answers naming each of ``options`` (the
    request's scale) / the answers that name one of them (:func:`parse_option`). info: ``samples``
    (N), ``parsed`` (n_ok), ``unparseable`` (1 - n_ok / N: answers naming no option of the
    scale) and ``se`` (multinomial standard errors sqrt(p (1 - p) / n_ok)). No parseable answer
    is an error naming ``where``."""
    counts = np.zeros(len(options), dtype=np.float64)
    for a in answers:
        k = parse_option(a, options)
        if k is not None:
            counts[k] += 1
    n_ok = int(counts.sum())
    if n_ok == 0:
        raise BackendError(
            f"sampling estimate: none of {len(answers)} sampled answers names one of the options "
            f"{list(options)}" + (f"; {where}" if where else "")
        )
    p = counts / n_ok
    info = {"samples": len(answers), "parsed": n_ok, "unparseable": 1 - n_ok / len(answers),
            "se": [float(x) for x in np.sqrt(p * (1 - p) / n_ok)]}
    return p, info


__all__ = ["BoundaryTerm", "boundary_term", "can_continue", "first_token_distribution",
           "parse_option", "sampling_estimate"]
