"""Train / validation / evaluation splits by question, by held-out persona combination, by country.

A :class:`Split` is saved as a small JSON file so that training, evaluation and analyses all use
the same one. Its rule: a training cell (country, persona, question) is allowed only when

- the question is in ``train_questions`` (never in ``validation_questions`` or ``eval_questions``
  of a question split),
- the country is in ``train_countries``, and
- the persona covers none of the held-out G=4 combinations: a coarser persona such as
  ``gender=Female`` sums the held-out ``Female_College_Urban_Married`` cell, so training on it
  would leak held-out respondents.

Evaluation cells are those of ``eval_countries`` x ``eval_questions``, restricted to the held-out
G=4 personas when the split holds personas out.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .fileio import atomic_write_json
from .survey import ATTRIBUTE_VALUES, ATTRIBUTES, DataError, Persona, SurveyData

FORMAT = "acealign-split/1"
KINDS = ("question", "persona", "country")
# The paper's held-out combinations (section 4): the two "opposite corners" of the attribute cube.
PAPER_HELDOUT = ("Female_College_Urban_Married", "Male_No_College_Rural_Not_Married")


class LeakError(ValueError):
    """A training request touches evaluation cells of the split."""


@dataclass
class Split:
    kind: str
    seed: int | None = None
    train_questions: list[str] = field(default_factory=list)
    validation_questions: list[str] = field(default_factory=list)
    eval_questions: list[str] = field(default_factory=list)
    heldout_personas: list[str] = field(default_factory=list)  # G=4 combos, Persona.combo form
    train_countries: list[str] = field(default_factory=list)
    eval_countries: list[str] = field(default_factory=list)
    source: str = ""

    # -- rules -----------------------------------------------------------------------------
    def heldout_in(self, country: str) -> list[Persona]:
        """The held-out G=4 personas of ``country``."""
        return [combo_persona(country, c) for c in self.heldout_personas]

    def covers_heldout(self, persona: Persona) -> bool:
        """True when ``persona``'s counts include a held-out G=4 cell (it is one, or is coarser)."""
        return any(persona.covers(p) for p in self.heldout_in(persona.country))

    def training_allowed(self, persona: Persona, question_key: str) -> str | None:
        """None when the cell may be trained on, else the reason it may not."""
        return self._reason(persona, question_key, self._rule_sets())

    def _rule_sets(self):
        return (set(self.train_questions), set(self.validation_questions),
                set(self.eval_questions), set(self.train_countries))

    def _reason(self, persona, question_key, sets) -> str | None:
        train_q, val_q, eval_q, train_c = sets
        if question_key not in train_q:
            role = "an evaluation" if question_key in eval_q else "a validation" if question_key in val_q else "not a training"
            return f"question {question_key} is {role} question"
        if persona.country not in train_c:
            return f"country {persona.country} is not a training country"
        if self.covers_heldout(persona):
            return f"persona {persona.key} covers a held-out combination"
        return None

    def is_eval_cell(self, persona: Persona, question_key: str) -> bool:
        if persona.country not in self.eval_countries or question_key not in self.eval_questions:
            return False
        return not self.heldout_personas or (
            persona.granularity == 4 and persona.combo in self.heldout_personas
        )

    def check_training(self, items) -> int:
        """Raise :class:`LeakError` if any training item is not allowed; return the number checked.

        ``items``: counterfactual pairs (``.s1``, ``.s0``, ``.question_key``), eligible cells
        (``.persona``, ``.question_key``) or ``(persona, question_key)`` tuples.
        """
        sets = self._rule_sets()
        n, bad, first = 0, 0, None
        for item in items:
            for persona, qkey in _cells_of(item):
                n += 1
                reason = self._reason(persona, qkey, sets)
                if reason:
                    bad += 1
                    first = first or reason
        if bad:
            raise LeakError(f"{bad} of {n} training cells leak into the evaluation side ({first})")
        return n

    # -- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    def save(self, path) -> None:
        """Write the split as JSON (atomically)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> Split:
        path = Path(path)
        if not path.is_file():
            raise DataError("split file not found", path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON ({e.msg})", path, e.lineno) from None
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            raise DataError(f"not an acealign split file (expected \"format\": \"{FORMAT}\")", path)
        if obj.get("kind") not in KINDS:
            raise DataError(f"unknown split kind {obj.get('kind')!r}", path)
        kw = {}
        for k in ("train_questions", "validation_questions", "eval_questions", "heldout_personas",
                  "train_countries", "eval_countries"):
            v = obj.get(k, [])
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise DataError(f"{k!r} must be a list of strings", path)
            kw[k] = v
        try:
            for c in kw["heldout_personas"]:
                combo_persona("x", c)
        except ValueError as e:
            raise DataError(str(e), path) from None
        seed = obj.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise DataError("'seed' must be an integer or null", path)
        return cls(kind=obj["kind"], seed=seed, source=str(obj.get("source", "")), **kw)


def _cells_of(item):
    if hasattr(item, "s1") and hasattr(item, "s0"):
        return [(item.s1, item.question_key), (item.s0, item.question_key)]
    if hasattr(item, "persona"):
        return [(item.persona, item.question_key)]
    persona, qkey = item
    return [(persona, qkey)]


def combo_persona(country: str, combo: str) -> Persona:
    """``Female_College_Urban_Married`` -> the G=4 persona of ``country`` (values in attribute order)."""
    values, rest = [], combo
    for attr in ATTRIBUTES:
        # Values may contain '_' (No_College, Not_Married): match the longest allowed value.
        for v in sorted(ATTRIBUTE_VALUES[attr], key=len, reverse=True):
            if rest == v or rest.startswith(v + "_"):
                values.append(v)
                rest = rest[len(v) + 1:]
                break
        else:
            raise ValueError(
                f"bad persona combination {combo!r}: expected gender_education_residence_marital_status "
                f"values such as {PAPER_HELDOUT[0]}"
            )
    if rest:
        raise ValueError(f"bad persona combination {combo!r}: trailing {rest!r}")
    return Persona(country, **dict(zip(ATTRIBUTES, values, strict=True)))


def _allocate(sizes: dict[str, int], frac: float) -> dict[str, int]:
    """Per-stratum counts summing to round(frac * total), proportional to size (largest remainder)."""
    total = sum(sizes.values())
    target = int(round(frac * total))
    exact = {k: frac * n for k, n in sizes.items()}
    out = {k: int(np.floor(x)) for k, x in exact.items()}
    order = sorted(sizes, key=lambda k: (-(exact[k] - out[k]), k))
    for k in order[: target - sum(out.values())]:
        out[k] += 1
    return out


def make_question_split(
    data: SurveyData, eval_frac: float = 0.2, validation_frac: float = 0.0, seed: int = 0, countries=None
) -> Split:
    """Hold out ``eval_frac`` of the questions (stratified by dataset/topic, seeded), then carve
    ``validation_frac`` of the remaining training questions out as validation questions."""
    if not 0 < eval_frac < 1:
        raise ValueError(f"eval fraction must be in (0, 1), got {eval_frac}")
    if not 0 <= validation_frac < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {validation_frac}")
    countries = _countries(data, countries)
    keys = sorted({q for c in countries for q in data.question_keys(c)})
    strata: dict[str, list[str]] = {}
    for k in keys:
        q = data.questions[k]
        strata.setdefault(f"{q.dataset}/{q.topic}", []).append(k)
    rng = np.random.default_rng(seed)
    shuffled = {s: [ks[i] for i in rng.permutation(len(ks))] for s, ks in sorted(strata.items())}
    n_eval = _allocate({s: len(ks) for s, ks in shuffled.items()}, eval_frac)
    n_val = _allocate({s: len(ks) - n_eval[s] for s, ks in shuffled.items()}, validation_frac)
    train, val, ev = [], [], []
    for s, ks in shuffled.items():
        ev += ks[: n_eval[s]]
        val += ks[n_eval[s]: n_eval[s] + n_val[s]]
        train += ks[n_eval[s] + n_val[s]:]
    return Split(
        "question", seed, sorted(train), sorted(val), sorted(ev), [], countries, countries, data.source
    )


def make_persona_split(data: SurveyData, heldout=PAPER_HELDOUT, countries=None) -> Split:
    """Hold out whole G=4 persona combinations (default: the paper's two) on every question."""
    combos = []
    for c in heldout:
        p = combo_persona("x", c)
        if p.combo not in combos:
            combos.append(p.combo)
    if not combos:
        raise ValueError("no held-out persona combination given")
    countries = _countries(data, countries)
    keys = sorted({q for c in countries for q in data.question_keys(c)})
    return Split("persona", None, keys, [], keys, combos, countries, countries, data.source)


def make_country_split(data: SurveyData, eval_countries, train_countries=None) -> Split:
    """Train on some countries, evaluate on others (default: train on all the rest)."""
    ev = _countries(data, eval_countries)
    tr = [c for c in data.countries if c not in ev] if train_countries is None else _countries(data, train_countries)
    overlap = sorted(set(ev) & set(tr))
    if overlap:
        raise ValueError(f"countries in both training and evaluation: {', '.join(overlap)}")
    if not tr:
        raise ValueError("no training country left")
    return Split(
        "country", None,
        sorted({q for c in tr for q in data.question_keys(c)}), [],
        sorted({q for c in ev for q in data.question_keys(c)}), [], tr, ev, data.source,
    )


def _countries(data: SurveyData, countries) -> list[str]:
    if countries is None:
        return data.countries
    countries = list(dict.fromkeys(countries))
    unknown = [c for c in countries if c not in data.countries]
    if unknown:
        raise ValueError(f"unknown countries {', '.join(unknown)} (data has {', '.join(data.countries)})")
    if not countries:
        raise ValueError("no country given")
    return countries
