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

    ``cells[(country, question_key)][persona4] = counts``: int array over the question's scale
    (its substantive options, ``Question.scale_indices``), in option order. Answers given to
    non-substantive options are not in it (the distribution is renormalized over the scale by
    construction); they are kept in ``nonsubstantive[(country, question_key)][persona4]``, an int
    array over ``Question.nonscale_indices``, so that reports can state the mass they carried. A
    G=4 cell whose respondents all gave non-substantive answers is only in ``nonsubstantive``.
    Readers build both with :meth:`from_full_counts`.

    Coarser personas are never stored: :meth:`counts` sums the G=4 cells they cover, so they are
    exact by construction.
    """

    questions: dict[str, Question] = field(default_factory=dict)
    cells: dict[tuple[str, str], dict[Persona, np.ndarray]] = field(default_factory=dict)
    source: str = ""
    nonsubstantive: dict[tuple[str, str], dict[Persona, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def from_full_counts(cls, questions: dict[str, Question], full: dict, source: str = "") -> SurveyData:
        """Split G=4 counts over all printed options (as files store them) into scale counts and
        non-substantive counts."""
        cells: dict[tuple[str, str], dict[Persona, np.ndarray]] = {}
        dropped: dict[tuple[str, str], dict[Persona, np.ndarray]] = {}
        for key, by_persona in full.items():
            q = questions[key[1]]
            scale, off = list(q.scale_indices), list(q.nonscale_indices)
            for p, c in by_persona.items():
                c = np.asarray(c, dtype=np.int64)
                on = c[scale]
                if off:
                    dropped.setdefault(key, {})[p] = c[off]
                if on.sum() > 0:
                    cells.setdefault(key, {})[p] = on
        return cls(questions, cells, source, dropped)

    def full_counts(self, persona: Persona, question_key: str) -> np.ndarray:
        """Counts of a G=4 cell over every printed option (scale and non-substantive), as stored
        in ``cells.csv``; zeros when the cell is absent."""
        q = self.questions[question_key]
        key = (persona.country, question_key)
        out = np.zeros(q.n_options, dtype=np.int64)
        on = self.cells.get(key, {}).get(persona)
        if on is not None:
            out[list(q.scale_indices)] = on
        off = self.nonsubstantive.get(key, {}).get(persona)
        if off is not None:
            out[list(q.nonscale_indices)] = off
        return out

    def dropped_counts(self, persona: Persona, question_key: str) -> np.ndarray:
        """Answers of ``persona`` (any G, summed over the G=4 cells it covers) to the question's
        non-substantive options (``Question.nonscale_indices`` order); empty when it has none."""
        q = self.questions[question_key]
        total = np.zeros(len(q.nonscale_indices), dtype=np.int64)
        for p4, c in self.nonsubstantive.get((persona.country, question_key), {}).items():
            if persona.covers(p4):
                total += c
        return total

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
        """Answer counts of any persona (G=0..4) over the question's scale: the exact sum of the
        G=4 cells it covers.

        Returns None when the country has no cell at all for the question.
        """
        by_persona = self.cells.get((persona.country, question_key))
        if not by_persona:
            return None
        if persona.granularity == 4:
            got = by_persona.get(persona)
            if got is not None:
                return got
            return np.zeros(self.questions[question_key].n_scale, dtype=np.int64)
        total = np.zeros(self.questions[question_key].n_scale, dtype=np.int64)
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

        def keep(key):
            return (cs is None or key[0] in cs) and (qs is None or key[1] in qs)

        cells = {k: v for k, v in self.cells.items() if keep(k)}
        dropped = {k: v for k, v in self.nonsubstantive.items() if keep(k)}
        used = {q for _, q in cells} | {q for _, q in dropped}
        return SurveyData(
            {k: v for k, v in self.questions.items() if k in used}, cells, self.source, dropped
        )


def all_g4_personas(country: str) -> list[Persona]:
    return [
        Persona(country, **dict(zip(ATTRIBUTES, values, strict=True)))
        for values in product(*(ATTRIBUTE_VALUES[a] for a in ATTRIBUTES))
    ]


def validate_counts(counts, n_options: int, where: str, path, line) -> np.ndarray:
    """Counts of one cell as read from a file: one per printed option, none negative."""
    arr = np.asarray(counts, dtype=np.int64)
    if arr.shape != (n_options,):
        raise DataError(f"{where}: {arr.size} counts for {n_options} options", path, line)
    if (arr < 0).any():
        raise DataError(f"{where}: negative count", path, line)
    return arr


#: Where the shipped default tables live, relative to the installed package (for messages).
PACKAGE_DATA_LABEL = "acealign/data/surveys"
#: Environment variable naming a tidy-table folder to use instead of the shipped one.
DATA_ENV = "ACEALIGN_DATA"


@dataclass(frozen=True)
class DataLocation:
    """A survey-table folder and how it was chosen: ``origin`` is ``"option"`` (``--data DIR`` or
    an explicit directory), ``"env"`` (``$ACEALIGN_DATA``) or ``"package"`` (the shipped copy)."""

    path: Path
    origin: str

    def describe(self, detail: str = "") -> str:
        """Names the source, e.g. ``package copy (acealign/data/surveys)``, ``$ACEALIGN_DATA
        (/some/dir)`` or ``--data (/some/dir)``; ``detail`` is added inside the parentheses."""
        where = PACKAGE_DATA_LABEL if self.origin == "package" else str(self.path)
        what = {"package": "package copy", "env": f"${DATA_ENV}"}.get(self.origin, "--data")
        return f"{what} ({where}{', ' + detail if detail else ''})"


def package_data_dir() -> Path | None:
    """The default survey tables shipped inside the package (``acealign/data/surveys``), or None
    when they are missing (a checkout or an install without the package data).

    Found through :mod:`importlib.resources`, so it is the same folder for an editable install,
    a wheel and a plain checkout on ``sys.path``.
    """
    from importlib.resources import files

    root = files("acealign")
    # Installed packages and checkouts are plain folders; a zip import (never made by pip) is not.
    base = root if isinstance(root, Path) else Path(__file__).resolve().parents[1]
    d = base / "data" / "surveys"
    return d if (d / "cells.csv").is_file() and (d / "questions.jsonl").is_file() else None


def resolve_data_dir(directory=None) -> DataLocation:
    """The survey tables to read: ``directory`` (``--data DIR``) when given, else
    ``$ACEALIGN_DATA`` when set, else the copy shipped in the package, else a :class:`DataError`."""
    if directory is not None and str(directory):
        return DataLocation(Path(directory), "option")
    env = os.environ.get(DATA_ENV)
    if env:
        return DataLocation(Path(env), "env")
    shipped = package_data_dir()
    if shipped is not None:
        return DataLocation(shipped, "package")
    raise DataError(
        f"no survey data found (the package copy {PACKAGE_DATA_LABEL} is missing from this "
        f"install): pass --data DIR, set {DATA_ENV}, or convert your data with "
        "`acealign data import KIND PATH --out DIR` (KIND: tidy, release, wvs)"
    )


def default_data_dir() -> Path:
    """``$ACEALIGN_DATA``, else the survey tables shipped in the package, else a :class:`DataError`."""
    return resolve_data_dir().path


def group_by_country(data: SurveyData) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for c, q in sorted(data.cells):
        out[c].append(q)
    return dict(out)


def duplicate_question_groups(questions) -> list[list[str]]:
    """Groups (2 or more keys, sorted) of questions with the same text (whitespace and case
    ignored) and the same options (codes, labels and substantive flags, in order).

    ``questions``: a ``{key: Question}`` dict or an iterable of questions. Such questions are one
    question asked twice; a split should keep them on the same side.
    """
    qs = questions.values() if isinstance(questions, dict) else questions
    groups: dict[tuple, list[str]] = {}
    for q in qs:
        sig = (" ".join(q.text.split()).lower(), q.options)
        groups.setdefault(sig, []).append(q.key)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)


def duplicate_answer_groups(data: SurveyData) -> list[list[str]]:
    """Groups (2 or more keys, sorted) of questions whose answers are identical in some country:
    the same G=4 cells with the same counts over all options (e.g. a source that copied one
    question's answers into another). Groups that share a question are merged. Countries where
    every persona's counts are the same are skipped: such cells cannot tell a copy from chance.
    """
    parent: dict[str, str] = {}

    def find(k):
        while parent.setdefault(k, k) != k:
            k = parent[k]
        return k

    by_sig: dict[tuple, str] = {}
    for (country, qkey) in sorted(set(data.cells) | set(data.nonsubstantive)):
        personas = sorted(set(data.cells.get((country, qkey), {})) | set(data.nonsubstantive.get((country, qkey), {})))
        sig = (country, tuple((p, tuple(data.full_counts(p, qkey).tolist())) for p in personas))
        if len({c for _, c in sig[1]}) < 2:
            continue  # every persona answered alike: two such questions match by chance, not by copy
        first = by_sig.setdefault(sig, qkey)
        if first != qkey:
            parent[find(qkey)] = find(first)
    groups: dict[str, list[str]] = {}
    for k in parent:
        groups.setdefault(find(k), []).append(k)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)
