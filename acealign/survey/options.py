"""Answer options: parsing, the non-substantive rule, and the checks every reader applies.

An option is *non-substantive* when it is not a point of the answer scale (don't know, can't
choose, no answer, refusals, not applicable). Such options stay in the question as printed, but
every distribution (counts, metrics, pairs, references, training) is over the substantive options
only, as OpinionQA does with refusals.

Where the input says so (``"substantive": true|false`` on an option), that is used. Otherwise it is
inferred, conservatively:

- **label**: the label (apostrophes normalized, case ignored, an optional leading code such as
  ``"8. "`` skipped) *starts with* one of :data:`NONSUBSTANTIVE_PHRASES` followed by the end of the
  label or punctuation (``"Doesn't apply, no job"``, ``"Don't know/Can't choose"``), or is one of
  :data:`NONSUBSTANTIVE_ABBREVIATIONS` (``"DK"``, ``"N/A"``). A phrase followed by more words is
  not matched ("Not applicable to me at all" can be a scale end; "Don't belong" is not a phrase);
- **missing-value code**: a negative code in a survey that uses negative codes for missing values
  (World Values Survey, ISSP since 2010; ``negative_codes_missing``).

Anything else is substantive; mark other cases explicitly in ``questions.jsonl``.
"""

from __future__ import annotations

import re

from .types import DataError, Option

NONSUBSTANTIVE_PHRASES: tuple[str, ...] = (
    "don't know", "do not know", "dont know",
    "can't choose", "cannot choose", "can not choose", "cant choose",
    "no answer", "no response",
    "refused", "refusal", "refuse to answer", "refused to answer",
    "prefer not to say", "prefer not to answer", "declined to answer",
    "not applicable", "doesn't apply", "does not apply", "doesnt apply",
    "not asked", "missing",
)
NONSUBSTANTIVE_ABBREVIATIONS: tuple[str, ...] = ("dk", "na", "n/a", "dk/na", "nap", "dk/ref")

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u00b4": "'", "`": "'", "\u2032": "'"})
_PHRASE = re.compile(
    r"^[^\w]*(?:-?\d+\s*[.):=-]?\s*)?(?:"
    + "|".join(re.escape(p) for p in sorted(NONSUBSTANTIVE_PHRASES, key=len, reverse=True))
    + r")(?=$|\s*[,;:/()\[\].!?\-\u2013\u2014])"
)
_INT = re.compile(r"[+-]?\d+")

LABEL = "label"
MISSING_CODE = "missing-value code"


def _normalize(label: str) -> str:
    return " ".join(label.translate(_APOSTROPHES).lower().split())


def infer_nonsubstantive(code: str, label: str, negative_codes_missing: bool = False) -> str | None:
    """Why an option is non-substantive (``"label"`` or ``"missing-value code"``), or None."""
    text = _normalize(label)
    if text in NONSUBSTANTIVE_ABBREVIATIONS or _PHRASE.match(text):
        return LABEL
    code = code.strip()
    if negative_codes_missing and _INT.fullmatch(code) and int(code) < 0:
        return MISSING_CODE
    return None


def negative_codes_missing(dataset: str) -> bool:
    """Surveys whose codebooks use negative codes for missing values (WVS; ISSP since 2010)."""
    return dataset.strip().lower().startswith(("wvs", "issp"))


def make_option(code, label, substantive=None, negative_missing: bool = False, path=None, line=None) -> Option:
    """An :class:`Option`; ``substantive=None`` (not given in the input) is inferred."""
    code, label = str(code).strip(), str(label)
    if substantive is None:
        why = infer_nonsubstantive(code, label, negative_missing)
        return Option(code, label, why is None, why)
    if not isinstance(substantive, bool):
        raise DataError(f"option {code}: 'substantive' must be true or false, got {substantive!r}", path, line)
    return Option(code, label, substantive)


def parse_options(raw, path, line, negative_missing: bool = False) -> tuple[Option, ...]:
    """Options from a JSON list of ``{code, label[, substantive]}`` objects (or a ``{code: label}``
    object), checked with :func:`check_options`."""
    if isinstance(raw, dict):
        raw = [{"code": c, "label": lab} for c, lab in raw.items()]
    if not isinstance(raw, list) or len(raw) < 2:
        raise DataError("'options' must list at least 2 options", path, line)
    out = []
    for o in raw:
        if not isinstance(o, dict) or "code" not in o or "label" not in o:
            raise DataError("each option needs 'code' and 'label'", path, line)
        out.append(make_option(o["code"], o["label"], o.get("substantive"), negative_missing, path, line))
    options = tuple(out)
    check_options(options, path, line)
    return options


def check_options(options, path, line) -> None:
    """Codes must not repeat ("1" and "01" are the same code) and at least 2 options must be
    substantive (a scale needs two points)."""
    seen: dict[object, int] = {}
    for i, o in enumerate(options, 1):
        key = int(o.code) if _INT.fullmatch(o.code) else o.code
        if key in seen:
            raise DataError(
                f"duplicate option code {o.code!r} (options {seen[key]} and {i} share it)", path, line
            )
        seen[key] = i
    n_scale = sum(o.substantive for o in options)
    if n_scale < 2:
        labels = ", ".join(repr(o.label) for o in options if not o.substantive)
        raise DataError(
            f"only {n_scale} substantive option(s) (non-substantive: {labels}); a scale needs 2",
            path, line,
        )
