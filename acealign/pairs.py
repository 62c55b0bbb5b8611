"""Counterfactual persona pairs (toggle one attribute, hold the rest) and data-side effects (Eq. 8-10)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .personas import DEFAULT_MIN_N, enumerate_personas
from .survey import ATTRIBUTE_VALUES, ATTRIBUTES, Persona, SurveyData


@dataclass(frozen=True)
class CounterfactualPair:
    """s1 = (A=1, X) and s0 = (A=0, X) for treatment attribute A, on one question."""

    attribute: str
    s1: Persona
    s0: Persona
    question_key: str
    counts1: np.ndarray
    counts0: np.ndarray

    @property
    def context(self) -> Persona:
        """X: the persona without the treatment attribute."""
        return self.s1.with_value(self.attribute, None)

    @property
    def data_effect(self) -> np.ndarray:
        """Eq. 8: p_data(y|s1,q) - p_data(y|s0,q)."""
        return data_effect(self.counts1, self.counts0)

    @property
    def data_cdf_effect(self) -> np.ndarray:
        """Eq. 10: cumulative form of the data-side effect."""
        return np.cumsum(self.data_effect)


def data_effect(counts1: np.ndarray, counts0: np.ndarray) -> np.ndarray:
    """Data-side causal effect vector, paper Eq. 8: p̂(y|s1,q) − p̂(y|s0,q) from survey counts."""
    c1 = np.asarray(counts1, dtype=float)
    c0 = np.asarray(counts0, dtype=float)
    return c1 / c1.sum() - c0 / c0.sum()


def build_pairs(
    data: SurveyData,
    context_granularity: int = 4,
    min_n: int = DEFAULT_MIN_N,
    countries=None,
    question_keys=None,
    attributes=ATTRIBUTES,
    exclude_personas=None,
) -> list[CounterfactualPair]:
    """Every (A, X, q) pair whose two ends both have at least ``min_n`` respondents.

    ``context_granularity`` is the G of the two ends (the paper uses 4: X holds all other
    attributes). ``exclude_personas``: a pair is dropped if either end is in this set (held-out
    persona combinations must not be trained on).
    """
    if not 1 <= context_granularity <= 4:
        raise ValueError("context_granularity must be 1..4")
    qsel = None if question_keys is None else set(question_keys)
    excl = set(exclude_personas or ())
    pairs: list[CounterfactualPair] = []
    for country in countries or data.countries:
        ends = [
            p
            for p in enumerate_personas(country, (context_granularity,))
            if p not in excl
        ]
        for qkey in data.question_keys(country):
            if qsel is not None and qkey not in qsel:
                continue
            cache: dict[Persona, np.ndarray | None] = {}

            def counts(p, qkey=qkey, cache=cache):
                if p not in cache:
                    cache[p] = data.counts(p, qkey)
                return cache[p]

            for attr in attributes:
                a0, a1 = ATTRIBUTE_VALUES[attr]
                for s1 in ends:
                    if getattr(s1, attr) != a1:
                        continue
                    s0 = s1.with_value(attr, a0)
                    if s0 in excl:
                        continue
                    c1, c0 = counts(s1), counts(s0)
                    if c1 is None or c0 is None or c1.sum() < min_n or c0.sum() < min_n:
                        continue
                    pairs.append(CounterfactualPair(attr, s1, s0, qkey, c1, c0))
    return pairs
