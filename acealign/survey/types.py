"""Core survey types: questions, personas and cells.

A *persona* is a country plus values for any subset of the four binary attributes. A *cell* holds
the survey's answer counts of one persona on one question.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

# Attribute order is fixed everywhere (keys, tables, prompts).
ATTRIBUTES: tuple[str, ...] = ("gender", "education", "residence", "marital_status")

# Index 0 is A=0, index 1 is A=1 (the "treated" value, paper §3.2.1).
ATTRIBUTE_VALUES: dict[str, tuple[str, str]] = {
    "gender": ("Male", "Female"),
    "education": ("College", "No_College"),
    "residence": ("Urban", "Rural"),
    "marital_status": ("Married", "Not_Married"),
}


class DataError(ValueError):
    """Bad input data. ``str(err)`` is a one-line message naming the file (and line) and the problem."""

    def __init__(self, message: str, path: object = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "") + ": "
        super().__init__(where + message)


def check_attribute(attr: str, value: str) -> None:
    if attr not in ATTRIBUTE_VALUES:
        raise ValueError(f"unknown attribute {attr!r} (expected one of {', '.join(ATTRIBUTES)})")
    if value not in ATTRIBUTE_VALUES[attr]:
        allowed = "/".join(ATTRIBUTE_VALUES[attr])
        raise ValueError(f"unknown value {value!r} for {attr} (expected {allowed})")


@dataclass(frozen=True)
class Option:
    """One answer option. ``substantive=False`` marks an answer that is not a point of the scale
    ("Don't know", "Not applicable", ...): it is printed with the question but left out of every
    distribution. ``inferred`` says why it was marked when the input did not say so ("label" or
    "missing-value code"; :mod:`acealign.survey.options`); it does not take part in equality."""

    code: str
    label: str
    substantive: bool = True
    inferred: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Question:
    """A survey question with ordered answer options (ordinal order = list order).

    ``options`` are all the printed options (``n_options``); the answer scale is the substantive
    ones only (``scale_indices``, ``n_scale``): survey counts and predicted distributions are over
    the scale, in list order.
    """

    dataset: str
    topic: str
    question_id: str
    text: str
    options: tuple[Option, ...]

    @property
    def key(self) -> str:
        """Unique id: ISSP ids such as ``v5`` repeat across modules, so dataset and topic are part of it."""
        return question_key(self.dataset, self.topic, self.question_id)

    @property
    def n_options(self) -> int:
        """Number of printed options, non-substantive ones included."""
        return len(self.options)

    @cached_property
    def scale_indices(self) -> tuple[int, ...]:
        """Indices (into ``options``) of the substantive options, in list order."""
        return tuple(i for i, o in enumerate(self.options) if o.substantive)

    @cached_property
    def nonscale_indices(self) -> tuple[int, ...]:
        """Indices of the non-substantive options, in list order."""
        return tuple(i for i, o in enumerate(self.options) if not o.substantive)

    @property
    def n_scale(self) -> int:
        """Number of points on the answer scale (the length of every count and distribution)."""
        return len(self.scale_indices)


def question_key(dataset: str, topic: str, question_id: str) -> str:
    return f"{dataset}/{topic}/{question_id}"


@dataclass(frozen=True, order=True)
class Persona:
    """A country plus a value (or None) for each of the four attributes."""

    country: str
    gender: str | None = None
    education: str | None = None
    residence: str | None = None
    marital_status: str | None = None

    def __post_init__(self):
        for attr in ATTRIBUTES:
            value = getattr(self, attr)
            if value is not None:
                check_attribute(attr, value)

    @property
    def granularity(self) -> int:
        return sum(getattr(self, a) is not None for a in ATTRIBUTES)

    @property
    def attributes(self) -> dict[str, str]:
        """The given attributes, in canonical order."""
        return {a: getattr(self, a) for a in ATTRIBUTES if getattr(self, a) is not None}

    def with_value(self, attr: str, value: str | None) -> Persona:
        return replace(self, **{attr: value})

    def toggled(self, attr: str) -> Persona:
        """The same persona with ``attr`` switched to its other value."""
        value = getattr(self, attr)
        if value is None:
            raise ValueError(f"persona {self.key} has no {attr} to toggle")
        a0, a1 = ATTRIBUTE_VALUES[attr]
        return self.with_value(attr, a1 if value == a0 else a0)

    def covers(self, other: Persona) -> bool:
        """True when every attribute given here has the same value in ``other`` (same country)."""
        return self.country == other.country and all(
            getattr(other, a) == v for a, v in self.attributes.items()
        )

    @property
    def key(self) -> str:
        """Stable text form, e.g. ``egypt|gender=Female,residence=Rural`` (``egypt|`` at G=0)."""
        return self.country + "|" + ",".join(f"{a}={v}" for a, v in self.attributes.items())

    @classmethod
    def from_key(cls, key: str) -> Persona:
        country, _, rest = key.partition("|")
        attrs = parse_attribute_list(rest) if rest else {}
        return cls(country=country, **attrs)

    @property
    def combo(self) -> str:
        """Attribute values only, e.g. ``Female_College_Urban_Married`` (used for held-out combos)."""
        return "_".join(self.attributes.values())


def parse_attribute_list(text: str) -> dict[str, str]:
    """Parse ``gender=Female,residence=Rural`` into a dict, validating names and values."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        attr, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"expected attribute=value, got {part!r}")
        attr, value = attr.strip(), value.strip()
        check_attribute(attr, value)
        out[attr] = value
    return out


@dataclass(frozen=True)
class Cell:
    """Answer counts of one persona on one question (over the question's scale, in option order)."""

    persona: Persona
    question_key: str
    counts: np.ndarray = field(compare=False)

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def distribution(self) -> np.ndarray:
        return self.counts / self.counts.sum()
