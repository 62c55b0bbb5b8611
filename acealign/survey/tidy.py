"""Reader and writer for the tidy tables: ``questions.jsonl`` + ``cells.csv`` (see README).

Files saved by spreadsheet programs read as well: a UTF-8 byte-order mark and CRLF line ends are
accepted. ``counts`` in ``cells.csv`` are over every option of the question; options may carry
``"substantive": false`` (else it is inferred, :mod:`acealign.survey.options`), and the reader
keeps the counts of non-substantive options apart (:meth:`SurveyData.from_full_counts`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from .data import SurveyData, validate_counts
from .options import negative_codes_missing, parse_options
from .types import ATTRIBUTES, DataError, Persona, Question

CELL_COLUMNS = ["dataset", "country", "topic", "question_id", *ATTRIBUTES, "n", "counts"]


class RepeatedKey(ValueError):
    """A JSON object names the same key twice (json would silently keep the last value)."""


def unique_keys(pairs):
    """``object_pairs_hook`` that rejects repeated keys, e.g. an option code given twice."""
    out = {}
    for k, v in pairs:
        if k in out:
            raise RepeatedKey(k)
        out[k] = v
    return out


def iter_jsonl(path: Path):
    """``(line number, object)`` for every non-blank line of a JSONL file; bad JSON (a repeated
    key included) is a DataError. A byte-order mark and CRLF line ends are accepted."""
    with open(path, encoding="utf-8-sig") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line, object_pairs_hook=unique_keys)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON ({e.msg})", path, line_no) from None
            except RepeatedKey as e:
                raise DataError(f"key {e.args[0]!r} repeated in one JSON object", path, line_no) from None


def read_questions_jsonl(path: Path) -> dict[str, Question]:
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", path)
    questions: dict[str, Question] = {}
    for line_no, obj in iter_jsonl(path):
        questions_add(questions, parse_question(obj, path, line_no), path, line_no)
    if not questions:
        raise DataError("no questions (empty file)", path)
    return questions


def questions_add(questions: dict[str, Question], q: Question, path, line_no) -> None:
    if q.key in questions:
        raise DataError(f"duplicate question {q.key}", path, line_no)
    questions[q.key] = q


def parse_question(obj, path, line_no) -> Question:
    if not isinstance(obj, dict):
        raise DataError("expected a JSON object", path, line_no)
    for k in ("dataset", "topic", "question_id", "text", "options"):
        if k not in obj or obj[k] in (None, ""):
            raise DataError(f"missing field {k!r}", path, line_no)
    if not isinstance(obj["options"], list):
        raise DataError("'options' must list at least 2 options", path, line_no)
    dataset = str(obj["dataset"])
    options = parse_options(obj["options"], path, line_no, negative_codes_missing(dataset))
    return Question(dataset, str(obj["topic"]), str(obj["question_id"]), str(obj["text"]), options)


def read_tidy(directory) -> SurveyData:
    """Read ``questions.jsonl`` and ``cells.csv`` from ``directory``, validating every row."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError("not a directory (expected questions.jsonl and cells.csv inside)", directory)
    try:
        questions = read_questions_jsonl(directory / "questions.jsonl")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason})", directory / "questions.jsonl") from None
    path = directory / "cells.csv"
    if not path.exists():
        raise DataError("file not found", path)
    try:
        cells = _read_cells(path, questions)
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason})", path) from None
    return SurveyData.from_full_counts(questions, cells, str(directory))


def _read_cells(path: Path, questions: dict[str, Question]) -> dict:
    """G=4 counts over all options of each question, by (country, question) and persona."""
    cells: dict[tuple[str, str], dict[Persona, np.ndarray]] = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, strict=True)
        header = next(reader, None)
        if header is None:
            raise DataError("empty file", path)
        header = [h.strip() for h in header]
        missing = [c for c in CELL_COLUMNS if c not in header]
        if missing:
            raise DataError(f"missing column(s) {', '.join(missing)}", path, 1)
        idx = {c: header.index(c) for c in CELL_COLUMNS}
        for line_no, row in _rows(reader, path):
            if not row or all(not x.strip() for x in row):
                continue
            if len(row) != len(header):
                raise DataError(f"{len(row)} fields, expected {len(header)}", path, line_no)
            rec = {c: row[i].strip() for c, i in idx.items()}
            for c, v in rec.items():
                if v == "":
                    raise DataError(f"empty value in column {c!r}", path, line_no)
            qkey = f"{rec['dataset']}/{rec['topic']}/{rec['question_id']}"
            q = questions.get(qkey)
            if q is None:
                raise DataError(f"question {qkey} is not in questions.jsonl", path, line_no)
            try:
                persona = Persona(rec["country"], **{a: rec[a] for a in ATTRIBUTES})
            except ValueError as e:
                raise DataError(str(e), path, line_no) from None
            try:
                n = int(rec["n"])
                counts = [int(x) for x in rec["counts"].split("|")]
            except ValueError:
                raise DataError("n and counts must be integers (counts separated by '|')", path, line_no) from None
            arr = validate_counts(counts, q.n_options, qkey, path, line_no)
            if int(arr.sum()) != n:
                raise DataError(f"counts sum to {int(arr.sum())}, not n={n}", path, line_no)
            if n == 0:
                raise DataError(f"empty cell (n=0) {persona.key} {qkey}: leave it out instead", path, line_no)
            by_persona = cells.setdefault((persona.country, qkey), {})
            if persona in by_persona:
                raise DataError(f"duplicate cell {persona.key} {qkey}", path, line_no)
            by_persona[persona] = arr
    if not cells:
        raise DataError("no cells (empty file)", path)
    return cells


def _rows(reader, path):
    """``(line, row)`` pairs; a CSV syntax error becomes a DataError naming the line."""
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(f"malformed CSV ({e})", path, reader.line_num) from None
        yield reader.line_num, row


def _atomic_write(path: Path, write) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        write(f)


def write_tidy(data: SurveyData, directory) -> None:
    """Write ``questions.jsonl`` and ``cells.csv`` (each atomically) into ``directory``.

    Every option is written with its ``substantive`` flag (inferred ones included, so the file
    says what was decided); counts are over all options again (non-substantive answers restored).
    """
    directory = Path(directory)
    keys = set(data.cells) | set(data.nonsubstantive)
    used = {q for _, q in keys}

    def write_questions(f):
        for key in sorted(used):
            q = data.questions[key]
            obj = {
                "dataset": q.dataset,
                "topic": q.topic,
                "question_id": q.question_id,
                "text": q.text,
                "options": [{"code": o.code, "label": o.label, "substantive": o.substantive}
                            for o in q.options],
            }
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")

    def write_cells(f):
        w = csv.writer(f, lineterminator="\n")
        w.writerow(CELL_COLUMNS)
        for country, qkey in sorted(keys):
            q = data.questions[qkey]
            personas = set(data.cells.get((country, qkey), {})) | set(data.nonsubstantive.get((country, qkey), {}))
            for p in sorted(personas):
                c = data.full_counts(p, qkey)
                w.writerow(
                    [q.dataset, country, q.topic, q.question_id]
                    + [getattr(p, a) for a in ATTRIBUTES]
                    + [int(c.sum()), "|".join(str(int(x)) for x in c)]
                )

    _atomic_write(directory / "questions.jsonl", write_questions)
    _atomic_write(directory / "cells.csv", write_cells)
