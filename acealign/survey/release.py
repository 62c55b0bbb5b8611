"""Reader for the public ACE-Align data release (github.com/Wells-Luo/ACE-Align, ``data/eval``).

Layout: ``<root>/<country>/<G>_attributes/<combo>/<topic>_real.json``, each file a JSON array of
records ``{question_id, question_text, category, options: {code: label}, demographics: {gender,
education, residence, marital_status, country}, p_real: {code: p}, sample_count}``.

Only the G=4 files (``4_attributes/gender_education_residence_marital_status``) are read: every
coarser persona in the release is an aggregate of them, and acealign derives coarser personas by
summing G=4 counts exactly, so reading the 1..3-attribute files would add nothing but rounding.
Counts are ``round(p_real * sample_count)``; a record whose ``p_real * sample_count`` is not (close
to) whole numbers, or whose rounded counts do not sum to ``sample_count``, is rejected.

Options whose label says they are not a scale point ("Can't choose", ...) or whose code is negative
(WVS/ISSP missing-value codes) are non-substantive (:mod:`acealign.survey.options`). A JSON object
that repeats a key (e.g. an option code) is rejected. A byte-order mark and CRLF line ends are
accepted.

Country is the directory name (e.g. ``united_states``). A file named ``wvs*_real.json`` holds World
Values Survey wave 7 items: dataset ``wvs7``, topic = the questionnaire section of the question
number (:func:`acealign.survey.wvs.wvs_topic`). Any other file is an ISSP module: dataset ``issp``,
topic = the file name without ``_real.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .data import SurveyData
from .options import check_options, make_option, negative_codes_missing
from .tidy import RepeatedKey, unique_keys
from .types import ATTRIBUTE_VALUES, ATTRIBUTES, DataError, Persona, Question
from .wvs import add_question, wvs_topic

G4_DIR = "4_attributes/" + "_".join(ATTRIBUTES)
# |p*n - round(p*n)| above this means p_real was not computed from whole counts of sample_count.
_WHOLE_TOL = 0.01


def release_files(root) -> list[tuple[str, Path]]:
    """``(country, path)`` of every G=4 ``*_real.json`` file under ``root`` (the ``data/eval`` folder)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("not a directory (expected the release's data/eval folder)", root)
    # Accept the data/eval folder, the release's data/ folder, or the repository root.
    for cand in (root, root / "eval", root / "data" / "eval"):
        if cand.is_dir() and any((cand / d / G4_DIR).is_dir() for d in _subdirs(cand)):
            root = cand
            break
    files = [
        (country, f)
        for country in _subdirs(root)
        for f in sorted((root / country / G4_DIR).glob("*_real.json"))
    ]
    if not files:
        raise DataError(f"no <country>/{G4_DIR}/<topic>_real.json files found", root)
    return files


def _subdirs(p: Path) -> list[str]:
    return sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))


def read_release(root, countries=None, files=None) -> SurveyData:
    """Read the G=4 files of an ACE-Align release into a :class:`SurveyData`.

    ``countries``: country folder names to keep; ``files``: file stems to keep (``family``,
    ``wvs_all``, ...), e.g. one ISSP module per country.
    """
    questions: dict[str, Question] = {}
    cells: dict[tuple[str, str], dict[Persona, np.ndarray]] = {}
    wanted = None if countries is None else set(countries)
    stems = None if files is None else set(files)
    for country, path in release_files(root):
        stem = path.name[: -len("_real.json")]
        if (wanted is not None and country not in wanted) or (stems is not None and stem not in stems):
            continue
        for line, rec in _json_array_records(path):
            q, persona, counts = _parse_record(rec, country, stem, path, line)
            add_question(questions, q, path, line)
            by_persona = cells.setdefault((country, q.key), {})
            if persona in by_persona:
                raise DataError(f"duplicate cell {persona.key} {q.key}", path, line)
            by_persona[persona] = counts
    missing = sorted((wanted or set()) - {c for c, _ in cells})
    if missing:
        raise DataError(f"no files for countries {', '.join(missing)}", root)
    if not cells:
        raise DataError("no files match the selection", root)
    return SurveyData.from_full_counts(questions, cells, str(root))


def _json_array_records(path: Path):
    """Yield ``(line, record)`` for each element of the top-level JSON array in ``path``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason})", path) from None
    if not text.strip():
        raise DataError("empty file", path)
    dec = json.JSONDecoder(object_pairs_hook=unique_keys)
    ws = " \t\r\n"

    mark = [0, 1]  # (position, line) of the last lookup: records come in order, count forward

    def line_of(pos):
        if pos < mark[0]:
            mark[:] = [0, 1]
        mark[1] += text.count("\n", mark[0], pos)
        mark[0] = pos
        return mark[1]

    def skip(pos):
        while pos < len(text) and text[pos] in ws:
            pos += 1
        return pos

    pos = skip(0)
    if text[pos] != "[":
        raise DataError("expected a JSON array of records", path, line_of(pos))
    pos = skip(pos + 1)
    n = 0
    if pos < len(text) and text[pos] == "]":
        raise DataError("no records (empty array)", path, line_of(pos))
    while True:
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg})", path, e.lineno) from None
        except RepeatedKey as e:
            raise DataError(f"key {e.args[0]!r} repeated in one JSON object", path, line_of(pos)) from None
        yield line_of(pos), obj
        n += 1
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            if skip(pos + 1) != len(text):
                raise DataError("unexpected text after the JSON array", path, line_of(skip(pos + 1)))
            return
        raise DataError("invalid JSON (expected ',' or ']')", path, line_of(min(pos, len(text) - 1)))


def _parse_record(rec, country: str, stem: str, path, line):
    if not isinstance(rec, dict):
        raise DataError("expected a JSON object", path, line)
    for k in ("question_id", "question_text", "options", "demographics", "p_real", "sample_count"):
        if k not in rec or rec[k] in (None, "", {}, []):
            raise DataError(f"missing field {k!r}", path, line)
    qid = str(rec["question_id"])
    options = rec["options"]
    if not isinstance(options, dict) or len(options) < 2:
        raise DataError("'options' must map at least 2 codes to labels", path, line)
    codes = [str(c) for c in options]
    if all(_is_int(c) for c in codes):
        codes.sort(key=int)  # ordinal order = numeric code order
    if stem.lower().startswith("wvs"):
        dataset, topic = "wvs7", wvs_topic(qid, path, line)
    else:
        dataset, topic = "issp", stem
    opts = tuple(make_option(c, options[c], None, negative_codes_missing(dataset)) for c in codes)
    check_options(opts, path, line)
    q = Question(dataset, topic, qid, str(rec["question_text"]), opts)
    demo = rec["demographics"]
    if not isinstance(demo, dict):
        raise DataError("'demographics' must be an object", path, line)
    attrs = {}
    for a in ATTRIBUTES:
        v = demo.get(a)
        if v is None:
            raise DataError(f"demographics: missing {a}", path, line)
        if v not in ATTRIBUTE_VALUES[a]:
            raise DataError(
                f"demographics: unknown value {v!r} for {a} (expected {'/'.join(ATTRIBUTE_VALUES[a])})",
                path, line,
            )
        attrs[a] = v
    persona = Persona(country, **attrs)
    n = rec["sample_count"]
    if isinstance(n, bool) or not isinstance(n, (int, float)) or n != int(n) or n <= 0:
        raise DataError(f"sample_count must be a positive whole number, got {n!r}", path, line)
    n = int(n)
    p = rec["p_real"]
    if not isinstance(p, dict):
        raise DataError("'p_real' must map option codes to probabilities", path, line)
    if set(map(str, p)) != set(codes):
        missing = sorted(set(codes) - set(map(str, p)))
        extra = sorted(set(map(str, p)) - set(codes))
        raise DataError(
            f"{q.key}: p_real codes do not match options (missing {missing}, extra {extra})", path, line
        )
    p = {str(k): v for k, v in p.items()}
    counts = []
    for c in codes:
        v = p[c]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise DataError(f"{q.key}: p_real[{c}] is not a number", path, line)
        if v < 0:
            raise DataError(f"{q.key}: negative p_real[{c}]", path, line)
        x = v * n
        if abs(x - round(x)) > _WHOLE_TOL:
            raise DataError(
                f"{q.key}: p_real[{c}] x sample_count = {x:.4f} is not a whole count", path, line
            )
        counts.append(int(round(x)))
    arr = np.asarray(counts, dtype=np.int64)
    if int(arr.sum()) != n:
        raise DataError(f"{q.key}: counts sum to {int(arr.sum())}, not sample_count={n}", path, line)
    return q, persona, arr


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False
