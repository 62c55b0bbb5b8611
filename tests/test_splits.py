"""Question, held-out persona and country splits; JSON save/load; the no-leak check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from acealign.fingerprint import data_digest, differences
from acealign.pairs import build_pairs
from acealign.personas import eligible_cells
from acealign.splits import (
    KINDS,
    PAPER_HELDOUT,
    LeakError,
    Split,
    _duplicate_groups,
    check_split,
    combo_persona,
    make_country_split,
    make_persona_split,
    make_question_split,
)
from acealign.survey import DataError, Option, Persona, Question, SurveyData, all_g4_personas

OPTS = (Option("1", "a"), Option("2", "b"))


def synthetic(sizes=(("a", 10), ("b", 5), ("c", 1)), countries=("x", "y")) -> SurveyData:
    qs = {}
    for topic, n in sizes:
        for i in range(n):
            q = Question("d", topic, f"q{i}", f"text {topic}{i}", OPTS)
            qs[q.key] = q
    cells = {(c, k): {p: np.array([5, 5]) for p in all_g4_personas(c)} for c in countries for k in qs}
    return SurveyData(qs, cells, "synthetic")


def topic_of(key):
    return key.split("/")[1]


# -- question split ---------------------------------------------------------------------------------
def test_question_split_stratified_counts():
    data = synthetic()
    s = make_question_split(data, eval_frac=0.2, validation_frac=0.25, seed=0)
    tr, va, ev = set(s.train_questions), set(s.validation_questions), set(s.eval_questions)
    assert tr | va | ev == set(data.questions) and not (tr & va or tr & ev or va & ev)
    # eval: round(0.2 * 16) = 3, allotted 0.2 * (10, 5, 1) = (2, 1, 0.2) -> (2, 1, 0)
    assert sorted(topic_of(k) for k in ev) == ["a", "a", "b"]
    # validation: 0.25 * (8, 4, 1) = (2, 1, 0.25), total round(3.25) = 3 -> (2, 1, 0)
    assert sorted(topic_of(k) for k in va) == ["a", "a", "b"]
    assert len(tr) == 10 and "d/c/q0" in tr
    assert s.kind == "question" and s.seed == 0 and s.train_countries == s.eval_countries == ["x", "y"]


def test_question_split_largest_remainder_and_seed():
    data = synthetic()
    # 0.5 * (10, 5, 1) = (5, 2.5, 0.5), total round(8) = 8: floors give 7, the tie on .5 goes to
    # "d/b" (sorted first) -> (5, 3, 0).
    s = make_question_split(data, eval_frac=0.5, seed=3)
    assert sorted(topic_of(k) for k in s.eval_questions) == ["a"] * 5 + ["b"] * 3
    assert make_question_split(data, 0.2, seed=7).eval_questions == make_question_split(data, 0.2, seed=7).eval_questions
    assert make_question_split(data, 0.2, seed=0).eval_questions != make_question_split(data, 0.2, seed=1).eval_questions
    assert make_question_split(data, 0.2, seed=0).validation_questions == []


@pytest.mark.parametrize("kw", [{"eval_frac": 0}, {"eval_frac": 1.0}, {"validation_frac": -0.1}, {"countries": ["mars"]}])
def test_question_split_bad_arguments(kw):
    with pytest.raises(ValueError):
        make_question_split(synthetic(), **kw)


def test_question_split_leak_check():
    data = synthetic()
    s = make_question_split(data, eval_frac=0.2, validation_frac=0.25, seed=0)
    p = Persona("x", gender="Female")
    assert s.check_training([(p, k) for k in s.train_questions]) == len(s.train_questions)
    with pytest.raises(LeakError, match="evaluation question"):
        s.check_training([(p, s.train_questions[0]), (p, s.eval_questions[0])])
    with pytest.raises(LeakError, match="validation question"):
        s.check_training([(p, s.validation_questions[0])])
    pairs = build_pairs(data, min_n=10, question_keys=s.train_questions)
    assert s.check_training(pairs) == 2 * len(pairs)
    with pytest.raises(LeakError, match=r"^\d+ of \d+ training cells"):
        s.check_training(build_pairs(data, min_n=10))
    assert s.is_eval_cell(p, s.eval_questions[0]) and not s.is_eval_cell(p, s.train_questions[0])


# -- persona split -----------------------------------------------------------------------------------
def test_combo_parsing():
    p = combo_persona("x", "Male_No_College_Rural_Not_Married")
    assert p == Persona("x", gender="Male", education="No_College", residence="Rural", marital_status="Not_Married")
    assert p.combo == "Male_No_College_Rural_Not_Married"
    for bad in ("Female_College_Urban", "Female_PhD_Urban_Married", "Female_College_Urban_Married_X", ""):
        with pytest.raises(ValueError):
            combo_persona("x", bad)


def test_persona_split_default_and_leaks(tiny_data):
    s = make_persona_split(tiny_data)
    assert s.heldout_personas == list(PAPER_HELDOUT)
    # Every question trains the other personas; none is an evaluation question (no overlap).
    assert s.train_questions == tiny_data.question_keys() and s.eval_questions == []
    held = s.heldout_in("atlantis")
    assert [p.combo for p in held] == list(PAPER_HELDOUT) and all(p.granularity == 4 for p in held)
    # Coarser personas sum held-out cells: Female covers Female_College_Urban_Married, Male covers
    # Male_No_College_Rural_Not_Married, so every G=1 persona leaks; a G=4 non-held-out one does not.
    assert s.covers_heldout(Persona("atlantis", gender="Female"))
    assert s.covers_heldout(Persona("atlantis", gender="Male"))
    ok = Persona("atlantis", gender="Male", education="College", residence="Urban", marital_status="Married")
    assert not s.covers_heldout(ok) and s.training_allowed(ok, s.train_questions[0]) is None
    assert "covers a held-out" in s.training_allowed(held[0], s.train_questions[0])
    # G=4 pairs that exclude the held-out personas pass; without the exclusion they leak.
    excl = [p for c in tiny_data.countries for p in s.heldout_in(c)]
    good = build_pairs(tiny_data, min_n=1, exclude_personas=excl)
    assert good and s.check_training(good) == 2 * len(good)
    with pytest.raises(LeakError):
        s.check_training(build_pairs(tiny_data, min_n=1))
    with pytest.raises(LeakError):
        s.check_training(eligible_cells(tiny_data, granularities=(1,), min_n=1).cells)
    # The held-out combinations are evaluated on the training questions; the other personas are not.
    assert s.is_eval_cell(held[1], s.train_questions[0]) and not s.is_eval_cell(ok, s.train_questions[0])
    custom = make_persona_split(tiny_data, ["Female_No_College_Rural_Married"], countries=["borduria"])
    assert custom.heldout_personas == ["Female_No_College_Rural_Married"] and custom.train_countries == ["borduria"]


# -- country split -----------------------------------------------------------------------------------
def test_country_split(tiny_data):
    s = make_country_split(tiny_data, ["atlantis"])
    assert s.eval_countries == ["atlantis"] and s.train_countries == ["borduria"]
    p_b, p_a = Persona("borduria", gender="Female"), Persona("atlantis", gender="Female")
    k = s.train_questions[0]
    assert s.training_allowed(p_b, k) is None
    assert "not a training country" in s.training_allowed(p_a, k)
    assert s.is_eval_cell(p_a, k) and not s.is_eval_cell(p_b, k)
    with pytest.raises(ValueError, match="both"):
        make_country_split(tiny_data, ["atlantis"], ["atlantis", "borduria"])
    with pytest.raises(ValueError, match="unknown"):
        make_country_split(tiny_data, ["mars"])
    with pytest.raises(ValueError, match="no training country"):
        make_country_split(tiny_data, ["atlantis", "borduria"])


# -- files -------------------------------------------------------------------------------------------
def test_save_load_roundtrip(tmp_path, tiny_data):
    for s in (make_question_split(synthetic(), 0.2, 0.25, seed=5), make_persona_split(tiny_data),
              make_country_split(tiny_data, ["borduria"])):
        path = tmp_path / "sub" / f"{s.kind}.json"
        s.save(path)
        assert Split.load(path) == s
        obj = json.loads(path.read_text())
        assert obj["format"] == "acealign-split/1"
        assert set(obj) == {"format", "kind", "seed", "train_questions", "validation_questions", "eval_questions",
                            "heldout_personas", "train_countries", "eval_countries", "source", "fingerprint"}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["country.json", "persona.json", "question.json"]


# -- leak guards (issue 8, part 6) --------------------------------------------------------------------
def leaky(kind="question", heldout=(PAPER_HELDOUT[0],)):
    """A question split with held-out combinations whose evaluation question q9 is also listed as
    a training question (the run job's split, hand-edited)."""
    return Split(kind, 0, ["d/a/q0", "d/a/q1", "d/a/q9"], ["d/a/q2"], ["d/a/q9"], list(heldout), ["x"], ["x"])


def test_overlapping_question_lists_are_leaks_whatever_the_kind():
    # With held-out personas the old check let non-held-out personas train on the evaluation
    # question (160 pairs were accepted that way).
    s = leaky()
    p = Persona("x", gender="Male")
    assert s.is_eval_cell(p, "d/a/q9") and "evaluation question" in s.training_allowed(p, "d/a/q9")
    with pytest.raises(LeakError, match="1 of 1 training cells"):
        s.check_training([(p, "d/a/q9")])
    with pytest.raises(LeakError, match=r"1 question is both a training and an evaluation question in x \(d/a/q9\)"):
        check_split(s)
    with pytest.raises(LeakError, match="make it again"):  # the old persona split format
        check_split(Split("persona", None, ["d/a/q0"], [], ["d/a/q0"], [PAPER_HELDOUT[0]], ["x"], ["x"]))
    with pytest.raises(LeakError, match="training and a validation"):
        check_split(Split("question", 0, ["d/a/q0", "d/a/q2"], ["d/a/q2"], ["d/a/q9"], [], ["x"], ["x"]))
    with pytest.raises(LeakError, match="validation and an evaluation"):
        check_split(Split("question", 0, ["d/a/q0"], ["d/a/q9"], ["d/a/q9"], [], ["x"], ["x"]))
    with pytest.raises(LeakError, match="x is both a training and an evaluation country"):
        check_split(Split("country", None, ["d/a/q0"], [], ["d/a/q0"], [], ["x", "y"], ["x"]))
    with pytest.raises(LeakError, match="no held-out"):
        check_split(Split("persona", None, ["d/a/q0"], [], [], [], ["x"], ["x"]))
    # A country split trains and evaluates the same questions in different countries: no leak.
    check_split(Split("country", None, ["d/a/q0"], [], ["d/a/q0"], [], ["y"], ["x"]))


@pytest.mark.parametrize("kind", KINDS)
def test_leaky_split_files_are_refused_when_loaded(tmp_path, kind):
    s = leaky(kind) if kind != "country" else Split("country", None, ["q"], [], ["q"], [], ["x", "y"], ["y"])
    path = tmp_path / "split.json"
    path.write_text(json.dumps(s.to_dict()))
    with pytest.raises(DataError, match="refusing this split") as e:
        Split.load(path)
    assert e.value.path == str(path) and "\n" not in str(e.value)


def test_every_made_split_passes_its_own_check(tiny_data):
    for s in (make_question_split(tiny_data, 0.34, 0.5, seed=1, heldout=PAPER_HELDOUT),
              make_persona_split(tiny_data), make_country_split(tiny_data, ["atlantis"])):
        check_split(s, tiny_data)


# -- identical questions (5c) -------------------------------------------------------------------------
def with_duplicates() -> SurveyData:
    """synthetic() plus two copies of one question: same text (up to whitespace and case) and
    options, in two topics."""
    data = synthetic()
    for topic, text in (("a", "Is it  the same?"), ("b", "is it the same?")):
        q = Question("d", topic, "dup", text, OPTS)
        data.questions[q.key] = q
        for c in ("x", "y"):
            data.cells[(c, q.key)] = {p: np.array([5, 5]) for p in all_g4_personas(c)}
    return data


def test_identical_questions_land_on_the_same_side():
    data = with_duplicates()
    assert _duplicate_groups(data, data.questions) == [["d/a/dup", "d/b/dup"]]
    sides = set()
    for seed in range(40):
        s = make_question_split(data, eval_frac=0.3, validation_frac=0.3, seed=seed)
        side = [name for name, qs in (("train", s.train_questions), ("val", s.validation_questions),
                                      ("eval", s.eval_questions)) for k in ("d/a/dup", "d/b/dup") if k in qs]
        assert len(side) == 2 and side[0] == side[1], (seed, side)
        sides.add(side[0])
        check_split(s, data)
    assert sides == {"train", "val", "eval"}  # the pair moves as one unit, to every side


def test_questions_with_copied_answers_are_one_unit():
    # Different texts, but q1 carries q0's answers in every cell (as India's v56 repeats v50's):
    # one unit. Questions whose cells are all alike (5|5 everywhere) match by chance: not grouped.
    data = synthetic(sizes=(("a", 3),))
    for c in ("x", "y"):
        varied = {p: np.array([1 + i, 2]) for i, p in enumerate(all_g4_personas(c))}
        data.cells[(c, "d/a/q0")] = varied
        data.cells[(c, "d/a/q1")] = {p: v.copy() for p, v in varied.items()}
    assert _duplicate_groups(data, data.questions) == [["d/a/q0", "d/a/q1"]]


def test_split_separating_identical_questions_is_refused(tmp_path):
    data = with_duplicates()
    s = make_question_split(data, eval_frac=0.2, seed=0)
    a, b = "d/a/dup", "d/b/dup"
    s.train_questions = sorted((set(s.train_questions) | {a}) - {b})
    s.eval_questions = sorted((set(s.eval_questions) | {b}) - {a})
    check_split(s)  # without data nothing tells they are one question
    with pytest.raises(LeakError, match=r"identical text and options.*d/a/dup \(training\), d/b/dup \(evaluation\)"):
        check_split(s, data)
    s.save(tmp_path / "s.json")
    with pytest.raises(DataError, match="identical text"):
        Split.load(tmp_path / "s.json", data)


# -- fingerprints ---------------------------------------------------------------------------------------
def test_split_fingerprint_names_what_made_it(tmp_path):
    data = synthetic()
    s = make_question_split(data, eval_frac=0.2, validation_frac=0.25, seed=3, countries=["x"],
                            heldout=[PAPER_HELDOUT[1]])
    fp = s.fingerprint
    assert fp["data"] == data_digest(data, ["x"]) != data_digest(data, ["y"])
    assert (fp["eval_frac"], fp["validation_frac"], fp["seed"]) == (0.2, 0.25, 3)
    assert fp["train_countries"] == fp["eval_countries"] == ["x"] and fp["heldout_personas"] == [PAPER_HELDOUT[1]]
    assert s.heldout_personas == [PAPER_HELDOUT[1]]
    other = make_question_split(data, eval_frac=0.2, validation_frac=0.25, seed=3, countries=["y"])
    assert {"data", "train_countries", "eval_countries", "heldout_personas"} <= set(differences(fp, other.fingerprint))
    # The data of the split's countries changed since it was made: refused when loaded with it.
    s.save(tmp_path / "s.json")
    assert Split.load(tmp_path / "s.json", data) == s
    changed = synthetic()
    changed.cells[("x", "d/a/q0")][all_g4_personas("x")[0]] = np.array([6, 4])
    with pytest.raises(DataError, match="made from other data"):
        Split.load(tmp_path / "s.json", changed)
    unrelated = synthetic()
    unrelated.cells[("y", "d/a/q0")][all_g4_personas("y")[0]] = np.array([6, 4])
    assert Split.load(tmp_path / "s.json", unrelated) == s  # another country's data does not matter
