"""Persona enumeration (G=1..4), exact aggregation from G=4 cells, and the minimum-support filter."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, product

import numpy as np

from .survey import ATTRIBUTE_VALUES, ATTRIBUTES, Persona, SurveyData

DEFAULT_MIN_N = 10


def enumerate_personas(country: str, granularities=(1, 2, 3, 4)) -> list[Persona]:
    """Every persona of the given granularities: C(4,G)·2^G each, 8 + 24 + 32 + 16 = 80 for G=1..4."""
    out: list[Persona] = []
    for g in granularities:
        if not 0 <= g <= len(ATTRIBUTES):
            raise ValueError(f"granularity must be 0..{len(ATTRIBUTES)}, got {g}")
        for attrs in combinations(ATTRIBUTES, g):
            for values in product(*(ATTRIBUTE_VALUES[a] for a in attrs)):
                out.append(Persona(country, **dict(zip(attrs, values, strict=True))))
    return out


@dataclass(frozen=True)
class EligibleCell:
    persona: Persona
    question_key: str
    counts: np.ndarray

    @property
    def n(self) -> int:
        return int(self.counts.sum())


@dataclass
class CellSelection:
    cells: list[EligibleCell]
    dropped: int  # persona-question cells below min_n (including empty ones)


def eligible_cells(
    data: SurveyData,
    granularities=(1, 2, 3, 4),
    min_n: int = DEFAULT_MIN_N,
    countries=None,
    question_keys=None,
    personas=None,
) -> CellSelection:
    """All persona-question cells with at least ``min_n`` respondents.

    Coarser personas are summed from every G=4 cell they cover (small ones included); the support
    filter applies to the persona being scored. Counts, and so ``min_n``, are over the question's
    scale: answers to non-substantive options ("Can't choose") are not respondents of the scale. ``personas`` optionally restricts to a set of
    personas (e.g. held-out combinations).
    """
    qsel = None if question_keys is None else set(question_keys)
    psel = None if personas is None else set(personas)
    out, dropped = [], 0
    for country in countries or data.countries:
        plist = [p for p in enumerate_personas(country, granularities) if psel is None or p in psel]
        for qkey in data.question_keys(country):
            if qsel is not None and qkey not in qsel:
                continue
            for p in plist:
                c = data.counts(p, qkey)
                if c is None:
                    continue
                if c.sum() >= min_n:
                    out.append(EligibleCell(p, qkey, c))
                else:
                    dropped += 1
    return CellSelection(out, dropped)
