"""Shared fixtures: a tiny synthetic tidy dataset (two countries, three questions).

Other test modules may use the fixtures ``tiny_data_dir`` / ``tiny_data`` or import
``write_tiny_tidy`` / ``TINY_QUESTIONS`` from here. Keep this stable: tests elsewhere count on it.

Counts are a deterministic formula (``tiny_counts``): every G=4 cell of both countries is present,
except ``atlantis`` has no ``Female_No_College_Rural_Not_Married`` cell on ``issp/family/v5``; some
cells are small (n < 10) on purpose.
"""

from __future__ import annotations

import json
from itertools import product
from pathlib import Path

import pytest

ATTR_VALUES = (("Male", "Female"), ("College", "No_College"), ("Urban", "Rural"), ("Married", "Not_Married"))


@pytest.fixture(autouse=True)
def _unmanaged_allocator(monkeypatch):
    """A test that runs the CLI turns acealign.memory's allocator phases on; the next test starts
    unmanaged again (only tests that ask for it set glibc's thresholds)."""
    from acealign import memory

    monkeypatch.setattr(memory, "_state", {"enabled": False, "phase": None})


@pytest.fixture
def allocator_spy(monkeypatch):
    """acealign.memory managed, with its mallopt step recording the phases it would set (the list
    returned) instead of setting them."""
    from acealign import memory

    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    applied = []
    monkeypatch.setattr(memory, "_libc", lambda: object())
    monkeypatch.setattr(memory, "_apply", lambda phase: (applied.append(phase),
                                                         memory._state.update(phase=phase)))
    assert memory.manage_allocator()
    return applied


TINY_COUNTRIES = ("atlantis", "borduria")
TINY_QUESTIONS = (
    {"dataset": "wvs7", "topic": "social_values", "question_id": "Q1", "text": "How important is family?",
     "options": [{"code": "1", "label": "Very important"}, {"code": "2", "label": "Rather important"},
                 {"code": "3", "label": "Not important"}]},
    {"dataset": "wvs7", "topic": "security", "question_id": "Q131", "text": "How secure do you feel?",
     "options": [{"code": "1", "label": "Very secure"}, {"code": "2", "label": "Quite secure"},
                 {"code": "3", "label": "Not very secure"}, {"code": "4", "label": "Not at all secure"}]},
    {"dataset": "issp", "topic": "family", "question_id": "v5", "text": "A working mother can be warm.",
     "options": [{"code": "0", "label": "Disagree"}, {"code": "1", "label": "Agree"}]},
)
MISSING_CELL = ("atlantis", "issp/family/v5", ("Female", "No_College", "Rural", "Not_Married"))


def tiny_personas():
    """The 16 G=4 value tuples in a fixed order (gender, education, residence, marital_status)."""
    return list(product(*ATTR_VALUES))


def tiny_counts(country_index: int, question_index: int, persona_index: int, n_options: int) -> list[int]:
    counts = [(persona_index * (k + 1) + 3 * question_index + 5 * country_index) % 7 for k in range(n_options)]
    if sum(counts) == 0:
        counts[0] = 1
    return counts


def write_tiny_tidy(directory) -> Path:
    """Write ``questions.jsonl`` + ``cells.csv`` of the tiny dataset into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "questions.jsonl", "w", encoding="utf-8") as f:
        for q in TINY_QUESTIONS:
            f.write(json.dumps(q) + "\n")
    lines = ["dataset,country,topic,question_id,gender,education,residence,marital_status,n,counts"]
    for ci, country in enumerate(TINY_COUNTRIES):
        for qi, q in enumerate(TINY_QUESTIONS):
            key = f"{q['dataset']}/{q['topic']}/{q['question_id']}"
            for pi, values in enumerate(tiny_personas()):
                if (country, key, values) == MISSING_CELL:
                    continue
                c = tiny_counts(ci, qi, pi, len(q["options"]))
                lines.append(",".join([q["dataset"], country, q["topic"], q["question_id"], *values,
                                       str(sum(c)), "|".join(map(str, c))]))
    (directory / "cells.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.fixture
def tiny_data_dir(tmp_path) -> Path:
    return write_tiny_tidy(tmp_path / "tiny")


@pytest.fixture
def tiny_data(tiny_data_dir):
    from acealign.survey import read_tidy

    return read_tidy(tiny_data_dir)


def shared_data_dir() -> Path:
    """The real tidy tables beside the repository (tests using them skip when absent)."""
    return Path(__file__).resolve().parents[2] / "shared/data/surveys"
