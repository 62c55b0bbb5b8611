"""The in-memory survey: questions plus G=4 cells, from which every coarser persona is derived."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import numpy as np

from .types import ATTRIBUTE_VALUES, ATTRIBUTES, Cell, DataError, Persona, Question


@dataclass
class SurveyData:
    """Questions and the finest (G=4) cells of a survey.

    ``cells[(country, question_key)][persona4] = counts`` (int array in option order).
    Coarser personas are never stored: :meth:`counts` sums the G=4 cells they cover, so they are
    exact by construction.
    """

    questions: dict[str, Question] = field(default_factory=dict)
    cells: dict[tuple[str, str], dict[Persona, np.ndarray]] = field(default_factory=dict)
    source: str = ""

    # -- inventory -------------------------------------------------------------------------
    @property
    def countries(self) -> list[str]:
        return sorted({c for c, _ in self.cells})

    def question_keys(self, country: str | None = None) -> list[str]:
        """Questions with at least one cell (in ``country`` if given), sorted."""
        return sorted({q for c, q in self.cells if country is None or c == country})

    def datasets(self, country: str | None = None) -> list[str]:
        return sorted({self.questions[q].dataset for q in self.question_keys(country)})

    def topics(self, country: str | None = None) -> list[str]:
        return sorted({self.questions[q].topic for q in self.question_keys(country)})

    def n_cells(self) -> int:
        return sum(len(v) for v in self.cells.values())

    # -- cells ------------------------------------------------------------------------------
    def counts(self, persona: Persona, question_key: str) -> np.ndarray | None:
        """Answer counts of any persona (G=0..4): the exact sum of the G=4 cells it covers.

        Returns None when the country has no cell at all for the question.
        """
        by_persona = self.cells.get((persona.country, question_key))
        if not by_persona:
            return None
        if persona.granularity == 4:
            got = by_persona.get(persona)
            if got is not None:
                return got
            return np.zeros(self.questions[question_key].n_options, dtype=np.int64)
        total = np.zeros(self.questions[question_key].n_options, dtype=np.int64)
        for p4, c in by_persona.items():
            if persona.covers(p4):
                total += c
        return total

    def cell(self, persona: Persona, question_key: str) -> Cell | None:
        c = self.counts(persona, question_key)
        return None if c is None else Cell(persona, question_key, c)

    def subset(self, countries=None, question_keys=None) -> SurveyData:
        """A view restricted to some countries and/or questions (arrays are shared, not copied)."""
        cs = None if countries is None else set(countries)
        qs = None if question_keys is None else set(question_keys)
        cells = {
            (c, q): v
            for (c, q), v in self.cells.items()
            if (cs is None or c in cs) and (qs is None or q in qs)
        }
        used = {q for _, q in cells}
        return SurveyData(
            {k: v for k, v in self.questions.items() if k in used}, cells, self.source
        )


def all_g4_personas(country: str) -> list[Persona]:
    return [
        Persona(country, **dict(zip(ATTRIBUTES, values, strict=True)))
        for values in product(*(ATTRIBUTE_VALUES[a] for a in ATTRIBUTES))
    ]


def validate_counts(counts, n_options: int, where: str, path, line) -> np.ndarray:
    arr = np.asarray(counts, dtype=np.int64)
    if arr.shape != (n_options,):
        raise DataError(f"{where}: {arr.size} counts for {n_options} options", path, line)
    if (arr < 0).any():
        raise DataError(f"{where}: negative count", path, line)
    return arr


def default_data_dir() -> Path:
    """``$ACEALIGN_DATA``, else ``../shared/data/surveys`` beside the repository, else an error."""
    env = os.environ.get("ACEALIGN_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for candidate in (repo.parent / "shared" / "data" / "surveys", Path.cwd().parent / "shared" / "data" / "surveys"):
        if (candidate / "cells.csv").exists():
            return candidate
    raise DataError(
        "no survey data found: pass --data DIR, set ACEALIGN_DATA, or convert your data with "
        "`acealign data import KIND PATH --out DIR` (KIND: tidy, release, wvs)"
    )


def group_by_country(data: SurveyData) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for c, q in sorted(data.cells):
        out[c].append(q)
    return dict(out)
