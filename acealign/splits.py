"""Train / validation / evaluation splits by question, by held-out persona combination, by country.

A :class:`Split` is saved as a small JSON file so that training, evaluation and analyses all use
the same one. Its rule: a training cell (country, persona, question) is allowed only when

- the question is in ``train_questions`` (never in ``validation_questions`` or ``eval_questions``
  of a question split),
- the country is in ``train_countries``, and
- the persona covers none of the held-out G=4 combinations: a coarser persona such as
  ``gender=Female`` sums the held-out ``Female_College_Urban_Married`` cell, so training on it
  would leak held-out respondents.

Evaluation cells (as :mod:`acealign.evaluate` scores them) are every persona of ``eval_countries``
on ``eval_questions``, plus the held-out G=4 combinations of ``eval_countries`` on every question
of the split. A persona split therefore has no evaluation questions: its held-out combinations are
evaluated on its training questions, which no persona covering them was trained on.

:func:`check_split` refuses a split that can leak, whatever its kind: question lists that overlap
in a country on both sides, a validation question that is also a training or evaluation question,
identical questions (same text and options) on two sides. :meth:`Split.load` runs it, and
training runs it again before it starts.

Every split made here carries a ``fingerprint``: the digest of the data of its countries, the
countries, fractions, seed, held-out combinations and the version of the split algorithm, so a saved
split is never reused for other data or settings (:mod:`acealign.fingerprint`).
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
# Version of the split algorithm, part of every fingerprint: 2 keeps identical questions together,
# persona splits have no evaluation questions.
ALGORITHM = 2
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
    # What the split was made from (see the module docstring); {} for a hand-made split.
    fingerprint: dict = field(default_factory=dict)

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
        # Evaluation and validation before training: a question listed on two sides is refused.
        if question_key in val_q:
            return f"question {question_key} is a validation question"
        if persona.country not in train_c:
            return f"country {persona.country} is not a training country"
        if question_key in eval_q and persona.country in self.eval_countries:
            return f"question {question_key} is an evaluation question"
        if question_key not in train_q:
            return f"question {question_key} is not a training question"
        if self.covers_heldout(persona):
            return f"persona {persona.key} covers a held-out combination"
        return None

    def is_eval_cell(self, persona: Persona, question_key: str) -> bool:
        """True when the cell is evaluated: any persona on an evaluation question, or a held-out
        G=4 combination on any question of the split (in an evaluation country)."""
        if persona.country not in self.eval_countries:
            return False
        if question_key in self.eval_questions:
            return True
        return (persona.granularity == 4 and persona.combo in self.heldout_personas
                and question_key in self.questions())

    def questions(self) -> set[str]:
        """Every question the split lists, on any side."""
        return set(self.train_questions) | set(self.validation_questions) | set(self.eval_questions)

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
    def load(cls, path, data=None) -> Split:
        """Read a split file and check it (:func:`check_split`, with ``data`` when given): a split
        that can leak is refused here, before anything uses it."""
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
        fp = obj.get("fingerprint", {})
        if not isinstance(fp, dict):
            raise DataError("'fingerprint' must be an object", path)
        split = cls(kind=obj["kind"], seed=seed, source=str(obj.get("source", "")), fingerprint=fp, **kw)
        try:
            check_split(split, data)
        except LeakError as e:
            raise DataError(f"refusing this split: {e}", path) from None
        return split


def split_countries(split) -> list[str]:
    """The countries of a split (training and evaluation), sorted: the data its fingerprint covers."""
    return sorted(set(split.train_countries) | set(split.eval_countries))


def check_split(split: Split, data: SurveyData | None = None) -> None:
    """Raise :class:`LeakError` when ``split`` can leak evaluation data into training, whatever its kind.

    Refused: a validation question that is also a training or an evaluation question; a question
    that is both a training and an evaluation question while some country is on both sides (a
    country split trains and evaluates the same questions in *different* countries, which is
    allowed); a country split whose countries overlap; a persona split without held-out
    combinations. With ``data``: questions with identical text and options (one question asked
    twice) on different sides, and a split fingerprint whose data digest differs from ``data``'s.
    """
    tr, va, ev = set(split.train_questions), set(split.validation_questions), set(split.eval_questions)
    shared = sorted(set(split.train_countries) & set(split.eval_countries))
    if split.kind == "country" and shared:
        raise LeakError(f"{_few(shared)} {_is_are(shared)} both a training and an evaluation country")
    if split.kind == "persona" and not split.heldout_personas:
        raise LeakError("a persona split with no held-out persona combination")
    for a, b, name_a, name_b in ((tr, va, "a training", "a validation"), (va, ev, "a validation", "an evaluation")):
        both = sorted(a & b)
        if both:
            raise LeakError(f"{_count(both, 'question')} both {name_a} and {name_b} question ({_few(both)})")
    if shared:
        both = sorted(tr & ev)
        if both:
            hint = (" (persona splits made by older acealign versions listed every question on both "
                    "sides: make it again with `acealign data split --kind persona`)"
                    if split.kind == "persona" else "")
            raise LeakError(f"{_count(both, 'question')} both a training and an evaluation question in "
                            f"{_few(shared)} ({_few(both)}){hint}")
    if data is None:
        return
    # Evaluation questions of other countries only (a country split) cannot leak into training.
    sides = [("training", tr), ("validation", va)] + ([("evaluation", ev)] if shared else [])
    for group in _duplicate_groups(data, [k for k in sorted(split.questions()) if k in data.questions]):
        on = [(name, k) for k in group for name, qs in sides if k in qs]
        if len({name for name, _ in on}) > 1:
            where = ", ".join(f"{k} ({name})" for name, k in on)
            raise LeakError(f"duplicate questions (identical text and options, or identical answers) "
                            f"are on different sides: {where}")
    want = split.fingerprint.get("data")
    if want:
        from .fingerprint import data_digest

        got = data_digest(data, split_countries(split))
        if got != want:
            raise LeakError(f"the split was made from other data (data digest {want} in the split, {got} "
                            f"for {data.source or 'this data'} in {', '.join(split_countries(split))}): "
                            "make the split again for this data")


def _count(items, noun: str) -> str:
    return f"{len(items)} {noun}{'s are' if len(items) != 1 else ' is'}"


def _is_are(items) -> str:
    return "are" if len(items) != 1 else "is"


def _few(items, n: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _duplicate_groups(data: SurveyData, keys) -> list[list[str]]:
    """Groups of ``keys`` that are one question for splitting: identical text and options
    (:func:`~acealign.survey.duplicate_question_groups`), or identical answers in every cell of a
    country (:func:`~acealign.survey.duplicate_answer_groups`; India's v50/v56 in the default
    data, where the source copied one question's answers into another). Overlapping groups merge."""
    from .survey import duplicate_answer_groups, duplicate_question_groups

    keys = set(keys)
    parent = {k: k for k in keys}

    def root(k):
        while parent[k] != k:
            k = parent[k]
        return k

    sub = data.subset(question_keys=sorted(keys))
    for group in (duplicate_question_groups([data.questions[k] for k in sorted(keys)])
                  + duplicate_answer_groups(sub)):
        group = [k for k in group if k in keys]
        for k in group[1:]:
            parent[root(k)] = root(group[0])
    groups: dict[str, list[str]] = {}
    for k in sorted(keys):
        groups.setdefault(root(k), []).append(k)
    return sorted(g for g in groups.values() if len(g) > 1)


def _question_units(data: SurveyData, keys) -> list[list[str]]:
    """``keys`` grouped into splitting units: duplicate questions (:func:`_duplicate_groups`) form
    one unit so they land on the same side; units sorted by their first key."""
    in_group: dict[str, list[str]] = {}
    for g in _duplicate_groups(data, keys):
        for k in g:
            in_group[k] = g
    units, seen = [], set()
    for k in sorted(keys):
        if k in seen:
            continue
        unit = in_group.get(k, [k])
        seen.update(unit)
        units.append(unit)
    return units


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
    data: SurveyData, eval_frac: float = 0.2, validation_frac: float = 0.0, seed: int = 0, countries=None,
    heldout=(),
) -> Split:
    """Hold out ``eval_frac`` of the questions (stratified by dataset/topic, seeded), then carve
    ``validation_frac`` of the remaining training questions out as validation questions.
    ``heldout``: G=4 combinations also held out on every question (the run job's split).

    Identical questions (same text and options) are one unit: they land on the same side, and
    the fractions count units."""
    if not 0 < eval_frac < 1:
        raise ValueError(f"eval fraction must be in (0, 1), got {eval_frac}")
    if not 0 <= validation_frac < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {validation_frac}")
    combos = _combos(heldout)
    countries = _countries(data, countries)
    keys = sorted({q for c in countries for q in data.question_keys(c)})
    strata: dict[str, list[list[str]]] = {}
    for unit in _question_units(data, keys):
        q = data.questions[unit[0]]
        strata.setdefault(f"{q.dataset}/{q.topic}", []).append(unit)
    rng = np.random.default_rng(seed)
    shuffled = {s: [us[i] for i in rng.permutation(len(us))] for s, us in sorted(strata.items())}
    n_eval = _allocate({s: len(us) for s, us in shuffled.items()}, eval_frac)
    n_val = _allocate({s: len(us) - n_eval[s] for s, us in shuffled.items()}, validation_frac)
    train, val, ev = [], [], []
    for s, us in shuffled.items():
        ev += [k for u in us[: n_eval[s]] for k in u]
        val += [k for u in us[n_eval[s]: n_eval[s] + n_val[s]] for k in u]
        train += [k for u in us[n_eval[s] + n_val[s]:] for k in u]
    split = Split(
        "question", seed, sorted(train), sorted(val), sorted(ev), combos, countries, countries, data.source
    )
    split.fingerprint = split_fingerprint(
        data, split, eval_frac=eval_frac, validation_frac=validation_frac, seed=seed
    )
    return split


def make_persona_split(data: SurveyData, heldout=PAPER_HELDOUT, countries=None) -> Split:
    """Hold out whole G=4 persona combinations (default: the paper's two) on every question.

    Every question is a training question (for the other personas) and none is an evaluation
    question: the held-out combinations are evaluated on the training questions."""
    combos = _combos(heldout)
    if not combos:
        raise ValueError("no held-out persona combination given")
    countries = _countries(data, countries)
    keys = sorted({q for c in countries for q in data.question_keys(c)})
    split = Split("persona", None, keys, [], [], combos, countries, countries, data.source)
    split.fingerprint = split_fingerprint(data, split)
    return split


def make_country_split(data: SurveyData, eval_countries, train_countries=None) -> Split:
    """Train on some countries, evaluate on others (default: train on all the rest)."""
    ev = _countries(data, eval_countries)
    tr = [c for c in data.countries if c not in ev] if train_countries is None else _countries(data, train_countries)
    overlap = sorted(set(ev) & set(tr))
    if overlap:
        raise ValueError(f"countries in both training and evaluation: {', '.join(overlap)}")
    if not tr:
        raise ValueError("no training country left")
    split = Split(
        "country", None,
        sorted({q for c in tr for q in data.question_keys(c)}), [],
        sorted({q for c in ev for q in data.question_keys(c)}), [], tr, ev, data.source,
    )
    split.fingerprint = split_fingerprint(data, split)
    return split


def _combos(heldout) -> list[str]:
    """Held-out combinations, validated, in canonical form, without repeats."""
    combos: list[str] = []
    for c in heldout:
        p = combo_persona("x", c)
        if p.combo not in combos:
            combos.append(p.combo)
    return combos


def split_fingerprint(data: SurveyData, split: Split, **settings) -> dict:
    """The fingerprint of ``split`` made from ``data`` with ``settings`` (fractions, seed): data
    digest of its countries, its countries and held-out combinations, the algorithm version."""
    from .fingerprint import data_digest

    return {
        "algorithm": ALGORITHM,
        "kind": split.kind,
        "data": data_digest(data, split_countries(split)),
        "train_countries": list(split.train_countries),
        "eval_countries": list(split.eval_countries),
        "heldout_personas": list(split.heldout_personas),
        **settings,
    }


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
