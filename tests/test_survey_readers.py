"""Readers: tidy tables, the ACE-Align release layout, WVS-7 respondent CSV + catalog."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_COUNTRIES, TINY_QUESTIONS, write_tiny_tidy

from acealign.survey import (
    DataError,
    Option,
    Persona,
    Question,
    SurveyData,
    duplicate_answer_groups,
    duplicate_question_groups,
    package_data_dir,
    read_tidy,
    write_tidy,
)
from acealign.survey.importers import import_survey, read_any
from acealign.survey.options import infer_nonsubstantive, negative_codes_missing
from acealign.survey.release import read_release
from acealign.survey.wvs import WVS_SECTIONS, read_catalog, read_wvs, wvs_topic

G4 = "4_attributes/gender_education_residence_marital_status"


def P(country, g, e, r, m):
    return Persona(country, gender=g, education=e, residence=r, marital_status=m)


# -- tidy ---------------------------------------------------------------------------------------
def test_tidy_roundtrip(tiny_data_dir, tmp_path):
    data = read_tidy(tiny_data_dir)
    assert data.countries == list(TINY_COUNTRIES)
    assert len(data.questions) == len(TINY_QUESTIONS)
    assert data.n_cells() == 2 * 3 * 16 - 1  # one cell left out on purpose
    write_tidy(data, tmp_path / "copy")
    again = read_tidy(tmp_path / "copy")
    assert again.questions == data.questions
    assert again.cells.keys() == data.cells.keys()
    for k, by_p in data.cells.items():
        assert by_p.keys() == again.cells[k].keys()
        for p, c in by_p.items():
            np.testing.assert_array_equal(c, again.cells[k][p])


def test_default_data_has_nine_countries():
    d = package_data_dir()
    if not (d / "cells.csv").exists():
        pytest.skip("shared survey data not present")
    data = read_tidy(d)
    assert len(data.countries) == 9
    assert len(data.questions) == 220 and data.n_cells() == 7281


# -- release ------------------------------------------------------------------------------------
def release_record(qid, text, options, demo, p, n, category):
    keys = ("gender", "education", "residence", "marital_status")
    return {"question_id": qid, "question_text": text, "category": category, "options": options,
            "demographics": {**dict(zip(keys, demo, strict=True)), "country": "X"},
            "p_real": p, "sample_count": n}


def write_release(root):
    """A two-country release tree; returns the data/eval folder."""
    ev = root / "data" / "eval"
    q43 = {"1": "Good thing", "2": "Don't mind", "3": "Bad thing"}
    q136 = {"1": "Very", "2": "Quite", "3": "Not", "4": "Not at all"}
    egypt = [
        # Real values from the release: 42 x (2/42, 0, 40/42) = (2, 0, 40).
        release_record("Q43", "Less importance placed on work?", q43, ("Male", "College", "Rural", "Married"),
                       {"1": 0.047619047619047616, "2": 0.0, "3": 0.9523809523809523}, 42, "wvs_all"),
        release_record("Q43", "Less importance placed on work?", q43, ("Female", "No_College", "Rural", "Married"),
                       {"1": 11 / 197, "2": 6 / 197, "3": 180 / 197}, 197, "wvs_all"),
        release_record("Q136", "Drug sale in streets?", q136, ("Male", "College", "Rural", "Married"),
                       {"1": 0.1, "2": 0.2, "3": 0.3, "4": 0.4}, 10, "wvs_all"),
    ]
    # Codes listed out of order: the reader orders them numerically (0, 1, 2).
    v40 = {"2": "High", "0": "Low", "1": "Middle"}
    australia = [
        release_record("v40", "Government spending?", v40, ("Female", "College", "Urban", "Not_Married"),
                       {"0": 0.25, "1": 0.5, "2": 0.25}, 8, "family"),
    ]
    for country, name, recs in (("egypt", "wvs_all_real.json", egypt), ("australia", "family_real.json", australia)):
        d = ev / country / G4
        d.mkdir(parents=True)
        (d / name).write_text(json.dumps(recs, indent=2))
    # Coarser files are not read (they are derived from G=4): garbage there must not matter.
    (ev / "egypt" / "1_attributes" / "gender").mkdir(parents=True)
    (ev / "egypt" / "1_attributes" / "gender" / "wvs_all_real.json").write_text("not json")
    return ev


def test_release_reader_counts_topics_and_order(tmp_path):
    ev = write_release(tmp_path)
    data = read_release(ev)
    assert data.countries == ["australia", "egypt"]
    assert sorted(data.questions) == ["issp/family/v40", "wvs7/security/Q136", "wvs7/social_values/Q43"]
    q43 = "wvs7/social_values/Q43"
    np.testing.assert_array_equal(data.cells[("egypt", q43)][P("egypt", "Male", "College", "Rural", "Married")], [2, 0, 40])
    np.testing.assert_array_equal(data.cells[("egypt", q43)][P("egypt", "Female", "No_College", "Rural", "Married")], [11, 6, 180])
    np.testing.assert_array_equal(data.cells[("egypt", "wvs7/security/Q136")][P("egypt", "Male", "College", "Rural", "Married")], [1, 2, 3, 4])
    v40 = data.questions["issp/family/v40"]
    assert [o.code for o in v40.options] == ["0", "1", "2"]
    assert [o.label for o in v40.options] == ["Low", "Middle", "High"]
    # 8 x (0.25, 0.5, 0.25) = (2, 4, 2)
    np.testing.assert_array_equal(data.cells[("australia", "issp/family/v40")][P("australia", "Female", "College", "Urban", "Not_Married")], [2, 4, 2])
    # Coarser personas are derived: Male in egypt on Q43 is the single Male cell.
    np.testing.assert_array_equal(data.counts(Persona("egypt", gender="Male"), q43), [2, 0, 40])
    np.testing.assert_array_equal(data.counts(Persona("egypt", residence="Rural"), q43), [13, 6, 220])


def test_release_root_forms_and_country_filter(tmp_path):
    ev = write_release(tmp_path)
    for root in (tmp_path, tmp_path / "data", ev):
        assert read_release(root).n_cells() == 4
    only = read_release(ev, countries=["egypt"])
    assert only.countries == ["egypt"] and len(only.questions) == 2


def test_release_import_to_tidy(tmp_path):
    ev = write_release(tmp_path)
    import_survey("release", ev, tmp_path / "out")
    back = read_tidy(tmp_path / "out")
    assert back.n_cells() == 4
    np.testing.assert_array_equal(
        back.counts(Persona("egypt", gender="Female"), "wvs7/social_values/Q43"), [11, 6, 180]
    )


# -- WVS ------------------------------------------------------------------------------------------
WVS_HEADER = "B_COUNTRY_ALPHA,Q260,Q275,H_URBRURAL,Q273,Q1,Q131,Q46"
WVS_ROWS = [
    "EGY,1,5,1,1,1,2,1",     # Male College Urban Married
    "EGY,1,6,1,2,1,-1,1",    # idem (2 = living together as married); Q131 missing
    "EGY,1,8,1,1,3,4,1",     # idem
    "EGY,2,4,2,6,2,1,1",     # Female No_College Rural Not_Married (ISCED 4 is not tertiary; 6 single)
    "EGY,2,0,2,3,2,1,1",     # idem (3 divorced)
    "EGY,-2,5,1,1,1,1,1",    # sex missing: in no cell
    "EGY,2,-1,1,1,1,1,1",    # education missing
    "EGY,1,3,-5,1,1,1,1",    # residence missing
    "EGY,1,3,1,-4,1,1,1",    # marital status missing
    "EGY,2,5,1,5,-1,3,1",    # Female College Urban Not_Married (5 widowed); Q1 missing
    "ETH,1,2,2,1,2,2,1",     # ethiopia Male No_College Rural Married
    "XYZ,1,2,2,1,3,4,1",     # unknown country code: slug "xyz"
]


def write_catalog(path, extra=()):
    lines = [
        {"question_id": "Q1", "text": "Family important?", "options": [
            {"code": "1", "label": "Very"}, {"code": "2", "label": "Rather"}, {"code": "3", "label": "Not"}]},
        {"question_id": "Q131", "text": "Secure?", "options": {"1": "Very", "2": "Quite", "3": "Not very", "4": "Not at all"}},
        *extra,
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def write_wvs(tmp_path, rows=WVS_ROWS, header=WVS_HEADER, delim=","):
    p = tmp_path / "wvs.csv"
    p.write_text("\n".join([header, *rows]).replace(",", delim) + "\n")
    return p, write_catalog(tmp_path / "catalog.jsonl")


def test_wvs_hand_counted_cells(tmp_path):
    csv_path, cat = write_wvs(tmp_path)
    data = read_wvs(csv_path, cat)
    assert data.countries == ["egypt", "ethiopia", "xyz"]
    q1, q131 = "wvs7/social_values/Q1", "wvs7/security/Q131"
    assert sorted(data.questions) == [q131, q1]
    mcum = P("egypt", "Male", "College", "Urban", "Married")
    fnrn = P("egypt", "Female", "No_College", "Rural", "Not_Married")
    fcun = P("egypt", "Female", "College", "Urban", "Not_Married")
    eg1, eg131 = data.cells[("egypt", q1)], data.cells[("egypt", q131)]
    assert set(eg1) == {mcum, fnrn}  # the widow skipped Q1, so she has no Q1 cell
    np.testing.assert_array_equal(eg1[mcum], [2, 0, 1])   # answers 1, 1, 3
    np.testing.assert_array_equal(eg1[fnrn], [0, 2, 0])   # answers 2, 2
    assert set(eg131) == {mcum, fnrn, fcun}
    np.testing.assert_array_equal(eg131[mcum], [0, 1, 0, 1])  # 2, (missing), 4
    np.testing.assert_array_equal(eg131[fnrn], [2, 0, 0, 0])
    np.testing.assert_array_equal(eg131[fcun], [0, 0, 1, 0])
    mnrm = P("ethiopia", "Male", "No_College", "Rural", "Married")
    np.testing.assert_array_equal(data.cells[("ethiopia", q1)][mnrm], [0, 1, 0])
    np.testing.assert_array_equal(data.cells[("xyz", q131)][P("xyz", "Male", "No_College", "Rural", "Married")], [0, 0, 0, 1])
    # Egypt total on Q1: 5 respondents with all attributes and an answer.
    assert int(data.counts(Persona("egypt"), q1).sum()) == 5


def test_wvs_semicolons_country_filter_and_import(tmp_path):
    csv_path, cat = write_wvs(tmp_path, delim=";")
    data = read_wvs(csv_path, cat, countries=["egypt"])
    assert data.countries == ["egypt"]
    import_survey("wvs", csv_path, tmp_path / "out", catalog=cat)
    assert read_tidy(tmp_path / "out").countries == ["egypt", "ethiopia", "xyz"]
    with pytest.raises(ValueError, match="catalog"):
        read_any("wvs", csv_path)


def test_wvs_topic_boundaries():
    assert wvs_topic("Q1") == wvs_topic("Q45") == "social_values"
    assert wvs_topic("Q46") == wvs_topic("Q56") == "happiness_wellbeing"
    assert wvs_topic("Q57") == wvs_topic("Q105") == "social_capital_trust"
    assert wvs_topic("Q106") == "economic_values" and wvs_topic("Q112") == "corruption"
    assert wvs_topic("Q121") == "migration" and wvs_topic("Q151") == "security"
    assert wvs_topic("Q152") == "postmaterialism" and wvs_topic("Q158") == "science_technology"
    assert wvs_topic("Q164") == "religious_values" and wvs_topic("Q198") == "ethical_values"
    assert wvs_topic("Q199") == "political_participation" and wvs_topic("Q234") == "political_participation"
    assert wvs_topic("Q235") == "political_culture" and wvs_topic("Q259") == "political_culture"
    assert wvs_topic("Q260") == wvs_topic("Q290") == "demographics"
    # The sections tile 1..290 without gaps or overlaps.
    assert [lo for lo, _, _ in WVS_SECTIONS][1:] == [hi + 1 for _, hi, _ in WVS_SECTIONS][:-1]
    for bad in ("Q0", "Q291", "v5", "Q"):
        with pytest.raises(DataError):
            wvs_topic(bad)


def test_wvs_topics_match_shared_tidy_table():
    d = package_data_dir()
    if not (d / "questions.jsonl").exists():
        pytest.skip("shared survey data not present")
    qs = [json.loads(x) for x in (d / "questions.jsonl").read_text().splitlines() if x.strip()]
    wvs = [q for q in qs if q["dataset"] == "wvs7"]
    assert wvs and all(wvs_topic(q["question_id"]) == q["topic"] for q in wvs)


def test_catalog_topic_override(tmp_path):
    cat = write_catalog(tmp_path / "c.jsonl", extra=[
        {"question_id": "Q900", "topic": "custom", "dataset": "wvs7x", "text": "t",
         "options": [{"code": "1", "label": "a"}, {"code": "2", "label": "b"}]}])
    assert read_catalog(cat)["Q900"].key == "wvs7x/custom/Q900"


def test_tiny_fixture_is_readable_anywhere(tmp_path):
    assert read_tidy(write_tiny_tidy(tmp_path / "a")).countries == list(TINY_COUNTRIES)


def test_unknown_country_filter_is_an_error(tmp_path):
    ev = write_release(tmp_path)
    with pytest.raises(DataError, match="no files for countries mars"):
        read_release(ev, countries=["egypt", "mars"])
    csv_path, cat = write_wvs(tmp_path)
    with pytest.raises(DataError, match="countries mars"):
        read_wvs(csv_path, cat, countries=["egypt", "mars"])
    with pytest.raises(DataError, match="mars"):
        read_any("tidy", write_tiny_tidy(tmp_path / "t"), countries=["mars"])


def test_release_file_selection(tmp_path):
    ev = write_release(tmp_path)
    assert read_release(ev, files=["family"]).countries == ["australia"]
    with pytest.raises(DataError, match="no files match"):
        read_release(ev, files=["religion"])


# -- non-substantive options ------------------------------------------------------------------------
NS_Q = {"dataset": "issp", "topic": "family", "question_id": "v56", "text": "Satisfied with your job?",
        "options": [{"code": "0", "label": "Doesn't apply, no job"}, {"code": "1", "label": "Satisfied"},
                    {"code": "2", "label": "Dissatisfied"}]}
NS_HEADER = "dataset,country,topic,question_id,gender,education,residence,marital_status,n,counts"


def write_ns_tidy(d, questions=(NS_Q,), rows=("Male,College,Urban,Married,10,3|5|2",
                                               "Female,College,Urban,Married,4,4|0|0")):
    d.mkdir(parents=True, exist_ok=True)
    (d / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (d / "cells.csv").write_text("\n".join([NS_HEADER, *(f"issp,chile,family,v56,{r}" for r in rows)]) + "\n")
    return d


def test_nonsubstantive_answers_leave_the_scale(tmp_path):
    data = read_tidy(write_ns_tidy(tmp_path / "ns"))
    q = data.questions["issp/family/v56"]
    assert [o.substantive for o in q.options] == [False, True, True]
    assert q.options[0].inferred == "label" and q.n_options == 3
    assert q.scale_indices == (1, 2) and q.nonscale_indices == (0,) and q.n_scale == 2
    key = ("chile", "issp/family/v56")
    m = P("chile", "Male", "College", "Urban", "Married")
    f = P("chile", "Female", "College", "Urban", "Married")
    # 3|5|2 with option 0 off the scale: counts 5|2 (n = 7), 3 dropped.
    np.testing.assert_array_equal(data.cells[key][m], [5, 2])
    np.testing.assert_array_equal(data.nonsubstantive[key][m], [3])
    # 4|0|0: nobody on the scale, so no cell; its 4 answers are still on record.
    assert f not in data.cells[key]
    np.testing.assert_array_equal(data.nonsubstantive[key][f], [4])
    np.testing.assert_array_equal(data.counts(Persona("chile"), "issp/family/v56"), [5, 2])
    np.testing.assert_array_equal(data.dropped_counts(Persona("chile"), "issp/family/v56"), [7])
    np.testing.assert_array_equal(data.dropped_counts(Persona("chile", gender="Male"), "issp/family/v56"), [3])
    np.testing.assert_array_equal(data.full_counts(m, "issp/family/v56"), [3, 5, 2])
    # Absent personas get zeros of the scale's length.
    np.testing.assert_array_equal(data.counts(P("chile", "Male", "No_College", "Rural", "Married"), "issp/family/v56"), [0, 0])
    sub = data.subset(countries=["chile"])
    np.testing.assert_array_equal(sub.nonsubstantive[key][m], [3])


def test_nonsubstantive_roundtrip_through_tidy_writer(tmp_path):
    data = read_tidy(write_ns_tidy(tmp_path / "ns"))
    write_tidy(data, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "questions.jsonl").read_text())
    assert [o["substantive"] for o in written["options"]] == [False, True, True]
    # Counts over all options again, the all-non-substantive row included.
    rows = (tmp_path / "out" / "cells.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",", 8)[8] for r in rows) == ["10,3|5|2", "4,4|0|0"]
    back = read_tidy(tmp_path / "out")
    assert back.questions == data.questions
    assert back.questions["issp/family/v56"].options[0].inferred is None  # now declared in the file
    for attr in ("cells", "nonsubstantive"):
        a, b = getattr(data, attr), getattr(back, attr)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].keys() == b[k].keys()
            for p in a[k]:
                np.testing.assert_array_equal(a[k][p], b[k][p])


def test_explicit_substantive_field_overrides_inference(tmp_path):
    opts = [{"code": "0", "label": "Doesn't apply, no job", "substantive": True},
            {"code": "1", "label": "Satisfied"},
            {"code": "2", "label": "Dissatisfied", "substantive": False},
            {"code": "3", "label": "Very dissatisfied"}]
    d = write_ns_tidy(tmp_path / "x", questions=({**NS_Q, "options": opts},),
                      rows=("Male,College,Urban,Married,10,3|5|2|0",))
    data = read_tidy(d)
    q = data.questions["issp/family/v56"]
    assert q.scale_indices == (0, 1, 3) and [o.inferred for o in q.options] == [None] * 4
    np.testing.assert_array_equal(data.cells[("chile", q.key)][P("chile", "Male", "College", "Urban", "Married")], [3, 5, 0])
    bad = [{**opts[0], "substantive": "no"}, *opts[1:]]
    with pytest.raises(DataError, match="'substantive' must be true or false") as e:
        read_tidy(write_ns_tidy(tmp_path / "y", questions=({**NS_Q, "options": bad},)))
    assert e.value.line == 1


@pytest.mark.parametrize("label", [
    "Don't know", "Don\u2019t know", "Don\u00b4t know", "DON'T KNOW", "Do not know", "Can't choose",
    "Cannot choose", "No answer", "Refused", "Not applicable", "Doesn't apply, no job",
    "Does not apply", "8. Can't choose", "-9 No answer", "(Don't know)", "Don't know/Can't choose",
    "Missing; Not available", "DK", "N/A", "NAP", "Prefer not to say",
])
def test_labels_inferred_nonsubstantive(label):
    assert infer_nonsubstantive("5", label) == "label"


@pytest.mark.parametrize("label", [
    "Don't belong", "Hard to say", "Don't mind", "Not applicable to me at all", "No", "Not at all",
    "Agree", "I don't know anyone", "Refused to pay", "Nobody", "Knowledge", "Dkk", "Nap time",
])
def test_labels_kept_substantive(label):
    assert infer_nonsubstantive("5", label) is None


def test_negative_codes_are_missing_only_where_the_survey_says_so():
    assert infer_nonsubstantive("-1", "Minus one", negative_codes_missing=True) == "missing-value code"
    assert infer_nonsubstantive("-1", "Minus one") is None
    assert negative_codes_missing("wvs7") and negative_codes_missing("ISSP") and not negative_codes_missing("custom")


def test_negative_codes_in_tidy_files(tmp_path):
    # In a WVS file -2 is a missing-value code; in another survey -2..2 can be a bipolar scale.
    opts = [{"code": str(c), "label": f"l{c}"} for c in (-2, -1, 0, 1, 2)]
    qs = [{"dataset": "wvs7", "topic": "social_values", "question_id": "Q1", "text": "t", "options": opts},
          {"dataset": "custom", "topic": "t", "question_id": "q", "text": "t", "options": opts}]
    d = tmp_path / "neg"
    d.mkdir()
    (d / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    (d / "cells.csv").write_text(NS_HEADER + "\nwvs7,egypt,social_values,Q1,Male,College,Urban,Married,5,1|1|1|1|1\n"
                                 "custom,egypt,t,q,Male,College,Urban,Married,5,1|1|1|1|1\n")
    data = read_tidy(d)
    wvs, custom = data.questions["wvs7/social_values/Q1"], data.questions["custom/t/q"]
    assert wvs.scale_indices == (2, 3, 4) and wvs.options[0].inferred == "missing-value code"
    assert custom.scale_indices == (0, 1, 2, 3, 4)


@pytest.mark.parametrize("off, pattern", [
    ([True, True, True], "only 0 substantive"),
    ([True, False, True], "only 1 substantive"),
])
def test_fewer_than_two_substantive_options_is_an_error(tmp_path, off, pattern):
    opts = [{"code": str(i), "label": f"l{i}", "substantive": not o} for i, o in enumerate(off)]
    d = write_ns_tidy(tmp_path / "x", questions=({**NS_Q, "options": opts},))
    with pytest.raises(DataError, match=pattern) as e:
        read_tidy(d)
    assert e.value.line == 1 and e.value.path.endswith("questions.jsonl")


def test_release_infers_nonsubstantive(tmp_path):
    opts = {"0": "Doesn't apply, no job", "1": "Satisfied", "2": "Dissatisfied"}
    recs = [release_record("v56", "Job?", opts, ("Male", "College", "Urban", "Married"),
                           {"0": 0.3, "1": 0.5, "2": 0.2}, 10, "family")]
    d = tmp_path / "eval" / "chile" / G4
    d.mkdir(parents=True)
    (d / "family_real.json").write_text(json.dumps(recs))
    data = read_release(tmp_path / "eval")
    q = data.questions["issp/family/v56"]
    assert q.scale_indices == (1, 2)
    m = P("chile", "Male", "College", "Urban", "Married")
    np.testing.assert_array_equal(data.cells[("chile", q.key)][m], [5, 2])
    np.testing.assert_array_equal(data.nonsubstantive[("chile", q.key)][m], [3])


def test_wvs_counts_listed_negative_codes_as_nonsubstantive(tmp_path):
    # Q1 lists -1 "Don't know": the two respondents coded -1 are counted there (off the scale)
    # instead of vanishing; Q131 does not list -1, so its -1 answer is still left out.
    extra_q1 = {"question_id": "Q1", "text": "Family important?", "options": [
        {"code": "-1", "label": "Don't know"}, {"code": "1", "label": "Very"},
        {"code": "2", "label": "Rather"}, {"code": "3", "label": "Not"}]}
    cat = tmp_path / "catalog.jsonl"
    cat.write_text(json.dumps(extra_q1) + "\n" + json.dumps(
        {"question_id": "Q131", "text": "Secure?", "options": {"1": "Very", "2": "Quite", "3": "Not very", "4": "Not at all"}}) + "\n")
    rows = ["EGY,1,5,1,1,1,2,1", "EGY,1,6,1,2,-1,-1,1", "EGY,1,8,1,1,-1,4,1"]
    csv_path = tmp_path / "wvs.csv"
    csv_path.write_text("\n".join([WVS_HEADER, *rows]) + "\n")
    data = read_wvs(csv_path, cat)
    q1 = data.questions["wvs7/social_values/Q1"]
    assert q1.scale_indices == (1, 2, 3) and q1.options[0].inferred == "label"
    mcum = P("egypt", "Male", "College", "Urban", "Married")
    np.testing.assert_array_equal(data.cells[("egypt", q1.key)][mcum], [1, 0, 0])
    np.testing.assert_array_equal(data.nonsubstantive[("egypt", q1.key)][mcum], [2])
    np.testing.assert_array_equal(data.cells[("egypt", "wvs7/security/Q131")][mcum], [0, 1, 0, 1])
    assert ("egypt", "wvs7/security/Q131") not in data.nonsubstantive


# -- duplicate questions ----------------------------------------------------------------------------
def test_duplicate_question_groups():
    o2 = (Option("1", "Yes"), Option("2", "No"))
    qs = [Question("issp", "work", "v50", "Find a job?", o2),
          Question("issp", "work", "v56", "  find a   JOB? ", o2),    # same text up to spaces/case
          Question("issp", "work", "v57", "Find a job?", (Option("1", "Yes"), Option("2", "Nope"))),
          Question("issp", "work", "v58", "Find a job?", (Option("1", "Yes"), Option("2", "No", False))),
          Question("issp", "fam", "v1", "Other?", o2),
          Question("wvs7", "x", "Q1", "Other?", o2),
          Question("wvs7", "x", "Q2", "Another?", o2)]
    assert duplicate_question_groups(qs) == [["issp/fam/v1", "wvs7/x/Q1"], ["issp/work/v50", "issp/work/v56"]]
    assert duplicate_question_groups({q.key: q for q in qs}) == duplicate_question_groups(qs)
    assert duplicate_question_groups(qs[2:4]) == []


def test_duplicate_answer_groups():
    o2 = (Option("1", "Yes"), Option("2", "No"))
    qa, qb, qc = (Question("d", "t", i, f"text {i}", o2) for i in ("a", "b", "c"))
    m = P("x", "Male", "College", "Urban", "Married")
    f = P("x", "Female", "College", "Urban", "Married")
    cells = {("x", qa.key): {m: np.array([3, 4]), f: np.array([1, 1])},
             ("x", qb.key): {m: np.array([3, 4]), f: np.array([1, 1])},   # a copy of qa's answers
             ("x", qc.key): {m: np.array([3, 4]), f: np.array([1, 2])},   # one count differs
             ("y", qc.key): {P("y", "Male", "College", "Urban", "Married"): np.array([3, 4])}}
    data = SurveyData({q.key: q for q in (qa, qb, qc)}, cells)
    assert duplicate_answer_groups(data) == [["d/t/a", "d/t/b"]]


def test_default_data_duplicates():
    d = package_data_dir()
    if not (d / "cells.csv").exists():
        pytest.skip("shared survey data not present")
    data = read_tidy(d)
    # No two questions share text and options; India v50 and v56 share every answer count.
    assert duplicate_question_groups(data.questions) == []
    assert duplicate_answer_groups(data) == [["issp/work_orientations/v50", "issp/work_orientations/v56"]]
    v56 = data.questions["issp/family/v56"]
    assert v56.scale_indices == tuple(range(1, 8)) and v56.options[0].inferred == "label"
    assert sum(q.n_scale < q.n_options for q in data.questions.values()) == 1
