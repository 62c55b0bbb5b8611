"""Reader for World Values Survey wave 7 respondent-level CSV files plus a question catalog.

Respondent file: the official WVS-7 CSV (one row per respondent, comma- or semicolon-separated),
with at least the columns ``B_COUNTRY_ALPHA`` (ISO 3166 alpha-3), ``Q260`` (sex: 1 male, 2 female),
``Q275`` (highest education, ISCED 0-8; college = tertiary = ISCED >= 5), ``H_URBRURAL`` (1 urban,
2 rural), ``Q273`` (marital status: 1 married and 2 living together as married count as married;
3-6 divorced, separated, widowed, single as not married), and one column per catalog question.
Negative codes (WVS "don't know", "no answer", "not asked", "missing") are missing values: an
answer with a negative code is left out of the question, unless the catalog lists that code as an
option (then it is counted there, as a non-substantive option, so its share can be reported).

Catalog: JSONL, one question per line: ``{"question_id": "Q1", "text": "...", "options":
[{"code": "1", "label": "Very important"}, ...]}`` (``options`` may also be a ``{code: label}``
object; optional ``dataset`` (default ``wvs7``) and ``topic`` (default: the questionnaire section
of the question number, :func:`wvs_topic`)). Options may carry ``"substantive": false``; without
it, negative codes and labels such as "Don't know" are non-substantive
(:mod:`acealign.survey.options`). Option codes must be integers and must not repeat.
A byte-order mark and CRLF line ends are accepted in both files.

Cells are stored at G=4 only (coarser personas are exact sums of them), so a respondent missing any
of the four attributes is left out of every cell, and a respondent missing the answer to a question
is left out of that question's cells. Positive answer codes that the catalog does not list are an
error rather than being dropped silently.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from .data import SurveyData
from .options import parse_options
from .tidy import _rows, iter_jsonl
from .types import DataError, Persona, Question

# WVS-7 questionnaire sections by question number (inclusive ranges).
WVS_SECTIONS: tuple[tuple[int, int, str], ...] = (
    (1, 45, "social_values"),
    (46, 56, "happiness_wellbeing"),
    (57, 105, "social_capital_trust"),
    (106, 111, "economic_values"),
    (112, 120, "corruption"),
    (121, 130, "migration"),
    (131, 151, "security"),
    (152, 157, "postmaterialism"),
    (158, 163, "science_technology"),
    (164, 175, "religious_values"),
    (176, 198, "ethical_values"),
    (199, 234, "political_participation"),
    (235, 259, "political_culture"),
    (260, 290, "demographics"),
)

# Country slugs used by the tidy tables; other countries get their lower-case alpha-3 code.
COUNTRY_SLUGS = {
    "AUS": "australia", "CHL": "chile", "DEU": "germany", "EGY": "egypt", "ETH": "ethiopia",
    "GBR": "united_kingdom", "IND": "india", "JPN": "japan", "MEX": "mexico", "NGA": "nigeria",
    "NZL": "new_zealand", "PHL": "philippines", "RUS": "russia", "USA": "united_states",
}

ATTRIBUTE_COLUMNS = ("B_COUNTRY_ALPHA", "Q260", "Q275", "H_URBRURAL", "Q273")

_QNUM = re.compile(r"^Q(\d+)[A-Za-z]?$")


def wvs_topic(question_id: str, path=None, line=None) -> str:
    """The WVS-7 questionnaire section of a question id such as ``Q43`` (``Q82_AU`` is not one)."""
    m = _QNUM.match(question_id.strip())
    if m:
        num = int(m.group(1))
        for lo, hi, topic in WVS_SECTIONS:
            if lo <= num <= hi:
                return topic
    raise DataError(
        f"cannot assign a WVS-7 section to question id {question_id!r} (expected Q1..Q290; "
        "give a 'topic')", path, line,
    )


def add_question(questions: dict[str, Question], q: Question, path, line) -> None:
    """Add ``q``, or check it matches the question already known under the same key."""
    old = questions.get(q.key)
    if old is None:
        questions[q.key] = q
    elif old.options != q.options:
        raise DataError(f"{q.key}: options differ from an earlier definition", path, line)
    elif " ".join(old.text.split()) != " ".join(q.text.split()):
        raise DataError(f"{q.key}: text differs from an earlier definition", path, line)


def read_catalog(path) -> dict[str, Question]:
    """Read a WVS question catalog (JSONL); returns questions by ``question_id``."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        return _read_catalog(path)
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason})", path) from None


def _read_catalog(path: Path) -> dict[str, Question]:
    out: dict[str, Question] = {}
    for line_no, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise DataError("expected a JSON object", path, line_no)
        for k in ("question_id", "text", "options"):
            if obj.get(k) in (None, "", [], {}):
                raise DataError(f"missing field {k!r}", path, line_no)
        qid = str(obj["question_id"]).strip()
        opts = obj["options"]
        if isinstance(opts, dict):
            opts = [{"code": c, "label": lab} for c, lab in opts.items()]
        if isinstance(opts, list):
            opts = [_int_code(o, path, line_no) for o in opts]
        options = parse_options(opts, path, line_no, negative_missing=True)
        topic = obj.get("topic") or wvs_topic(qid, path, line_no)
        if qid in out:
            raise DataError(f"duplicate question {qid}", path, line_no)
        out[qid] = Question(
            str(obj.get("dataset") or "wvs7"), str(topic), qid, str(obj["text"]), tuple(options)
        )
    if not out:
        raise DataError("no questions (empty file)", path)
    return out


def _int_code(o, path, line_no):
    """A catalog option with its code written canonically: respondent files hold integer codes,
    so "01" and "1.0" are code 1 (and repeat code "1" if both are listed)."""
    if not isinstance(o, dict) or "code" not in o:
        return o  # parse_options names the problem
    code = _int_or_none(str(o["code"]).strip())
    if code is None:
        raise DataError(f"option code {str(o['code']).strip()!r} is not an integer", path, line_no)
    return {**o, "code": str(code)}


def _int_or_none(s: str):
    try:
        f = float(s)
    except ValueError:
        return None
    return int(f) if f.is_integer() else None


def _sex(v):
    return {1: "Male", 2: "Female"}.get(v)


def _education(v):
    return None if not 0 <= v <= 8 else ("College" if v >= 5 else "No_College")


def _residence(v):
    return {1: "Urban", 2: "Rural"}.get(v)


def _marital(v):
    return None if not 1 <= v <= 6 else ("Married" if v in (1, 2) else "Not_Married")


_DECODERS = {
    "gender": ("Q260", _sex, "1 (male) or 2 (female)"),
    "education": ("Q275", _education, "an ISCED level 0-8"),
    "residence": ("H_URBRURAL", _residence, "1 (urban) or 2 (rural)"),
    "marital_status": ("Q273", _marital, "1-6"),
}


def read_wvs(path, catalog, countries=None) -> SurveyData:
    """Tabulate a WVS-7 respondent CSV into G=4 cells for the catalog's questions.

    ``catalog``: a path to the catalog JSONL or the dict :func:`read_catalog` returns.
    ``countries``: optional country slugs to keep (e.g. ``["egypt"]``).
    """
    path = Path(path)
    catalog_path = None
    if not isinstance(catalog, dict):
        catalog_path, catalog = Path(catalog), read_catalog(catalog)
    if not path.is_file():
        raise DataError("file not found", path)
    try:
        tallies = _tally(path, catalog, countries)
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason})", path) from None
    used = {qk for _, qk in tallies}
    questions = {q.key: q for q in catalog.values() if q.key in used}
    src = str(path) if catalog_path is None else f"{path} + {catalog_path}"
    return SurveyData.from_full_counts(questions, tallies, src)


def _tally(path: Path, catalog: dict[str, Question], countries) -> dict:
    wanted = None if countries is None else set(countries)
    code_index = {qid: {o.code: i for i, o in enumerate(q.options)} for qid, q in catalog.items()}
    # Normalized integer codes ("01" == "1") so exported files with padded codes still match.
    code_index = {qid: {_int_or_none(c): i for c, i in m.items()} for qid, m in code_index.items()}
    tallies: dict[tuple[str, str], dict[Persona, np.ndarray]] = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        first = f.readline()
        if not first.strip():
            raise DataError("empty file", path)
        delim = ";" if first.count(";") > first.count(",") else ","
        f.seek(0)
        reader = csv.reader(f, delimiter=delim, strict=True)
        header = [h.strip() for h in next(reader)]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"duplicate column(s) {', '.join(dupes)}", path, 1)
        missing = [c for c in ATTRIBUTE_COLUMNS if c not in header]
        if missing:
            raise DataError(f"missing column(s) {', '.join(missing)}", path, 1)
        absent = [qid for qid in catalog if qid not in header]
        if absent:
            raise DataError(
                f"catalog question(s) {', '.join(absent[:5])} have no column in the respondent file",
                path, 1,
            )
        col = {h: i for i, h in enumerate(header)}
        qcols = [(qid, col[qid], catalog[qid]) for qid in catalog]
        n_rows = 0
        for line_no, row in _rows(reader, path):
            if not row or all(not x.strip() for x in row):
                continue
            n_rows += 1
            if len(row) != len(header):
                raise DataError(f"{len(row)} fields, expected {len(header)}", path, line_no)
            alpha = row[col["B_COUNTRY_ALPHA"]].strip().upper()
            if not alpha:
                raise DataError("empty value in column 'B_COUNTRY_ALPHA'", path, line_no)
            country = COUNTRY_SLUGS.get(alpha, alpha.lower())
            if wanted is not None and country not in wanted:
                continue
            attrs = {}
            for attr, (column, decode, expected) in _DECODERS.items():
                v = _code(row, col[column], column, path, line_no)
                if v < 0:
                    break  # missing attribute: this respondent is in no G=4 cell
                value = decode(v)
                if value is None:
                    raise DataError(f"{column}: unknown code {v} (expected {expected})", path, line_no)
                attrs[attr] = value
            else:
                persona = Persona(country, **attrs)
                for qid, ci, q in qcols:
                    v = _code(row, ci, qid, path, line_no)
                    k = code_index[qid].get(v)
                    if k is None and v < 0:
                        continue  # missing answer the catalog does not list: left out of this question
                    if k is None:
                        raise DataError(
                            f"{qid}: answer code {v} is not among the catalog's options "
                            f"({', '.join(o.code for o in q.options)})", path, line_no,
                        )
                    by_p = tallies.setdefault((country, q.key), {})
                    arr = by_p.get(persona)
                    if arr is None:
                        arr = by_p[persona] = np.zeros(q.n_options, dtype=np.int64)
                    arr[k] += 1
        if n_rows == 0:
            raise DataError("no respondent rows", path)
    if not tallies:
        what = "" if wanted is None else f" for {', '.join(sorted(wanted))}"
        raise DataError(f"no respondent with all four attributes and an answer{what}", path)
    missing = sorted((wanted or set()) - {c for c, _ in tallies})
    if missing:
        raise DataError(f"no usable respondents for countries {', '.join(missing)}", path)
    return tallies


def _code(row, i, column, path, line_no) -> int:
    s = row[i].strip()
    if s == "":
        raise DataError(f"empty value in column {column!r} (WVS codes missing answers as negative numbers)", path, line_no)
    v = _int_or_none(s)
    if v is None:
        raise DataError(f"column {column!r}: {s!r} is not an integer code", path, line_no)
    return v
