"""Every reader rejects bad input with a DataError naming the file (and line); the CLI turns it
into one stderr line, exit code 2, no traceback and no output files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import write_tiny_tidy
from test_survey_readers import WVS_HEADER, WVS_ROWS, write_catalog, write_release

from acealign.cli import main
from acealign.splits import Split
from acealign.survey import DataError, read_tidy
from acealign.survey.release import G4_DIR, read_release
from acealign.survey.wvs import read_catalog, read_wvs

CELL_HEADER = "dataset,country,topic,question_id,gender,education,residence,marital_status,n,counts"
GOOD_ROW = "wvs7,atlantis,social_values,Q1,Male,College,Urban,Married,6,1|2|3"


# -- tidy ---------------------------------------------------------------------------------------
def tidy_with(tmp_path, cells=None, questions=None) -> Path:
    d = write_tiny_tidy(tmp_path / "bad")
    if cells is not None:
        (d / "cells.csv").write_text(cells)
    if questions is not None:
        (d / "questions.jsonl").write_text(questions)
    return d


Q1 = json.dumps({"dataset": "wvs7", "topic": "social_values", "question_id": "Q1", "text": "t",
                 "options": [{"code": "1", "label": "a"}, {"code": "2", "label": "b"}, {"code": "3", "label": "c"}]})

TIDY_CASES = {
    # name: (cells.csv text or None, questions.jsonl text or None, file, line, message pattern)
    "cells_empty_file": ("", None, "cells.csv", None, "empty file"),
    "cells_header_only": (CELL_HEADER + "\n", None, "cells.csv", None, "no cells"),
    "cells_missing_column": ("dataset,country\nwvs7,atlantis\n", None, "cells.csv", 1, "missing column"),
    "cells_wrong_field_count": (f"{CELL_HEADER}\n{GOOD_ROW}\nwvs7,atlantis,x\n", None, "cells.csv", 3, "fields"),
    "cells_bad_quote": (f'{CELL_HEADER}\n{GOOD_ROW}\nwvs7,"atlantis,social_values\n', None, "cells.csv", 3, "malformed CSV"),
    "unknown_attribute_value": (f"{CELL_HEADER}\n{GOOD_ROW}\n" + GOOD_ROW.replace("Male", "Femme") + "\n", None, "cells.csv", 3, "Femme"),
    "counts_not_summing_to_n": (f"{CELL_HEADER}\n" + GOOD_ROW.replace(",6,", ",7,") + "\n", None, "cells.csv", 2, "not n=7"),
    "too_few_counts": (f"{CELL_HEADER}\n" + GOOD_ROW.replace("6,1|2|3", "3,1|2") + "\n", None, "cells.csv", 2, "2 counts for 3 options"),
    "negative_count": (f"{CELL_HEADER}\n" + GOOD_ROW.replace("6,1|2|3", "2,-1|0|3") + "\n", None, "cells.csv", 2, "negative"),
    "duplicate_cell": (f"{CELL_HEADER}\n{GOOD_ROW}\n{GOOD_ROW}\n", None, "cells.csv", 3, "duplicate cell"),
    "empty_value": (f"{CELL_HEADER}\n" + GOOD_ROW.replace("Urban", "") + "\n", None, "cells.csv", 2, "empty value"),
    "empty_cell_n0": (f"{CELL_HEADER}\n" + GOOD_ROW.replace("6,1|2|3", "0,0|0|0") + "\n", None, "cells.csv", 2, "n=0"),
    "non_integer_counts": (f"{CELL_HEADER}\n" + GOOD_ROW.replace("1|2|3", "1|x|3") + "\n", None, "cells.csv", 2, "integers"),
    "unknown_question": (f"{CELL_HEADER}\n" + GOOD_ROW.replace("Q1,", "Q9,") + "\n", None, "cells.csv", 2, "not in questions.jsonl"),
    "questions_bad_json": (None, Q1 + "\n{oops\n", "questions.jsonl", 2, "invalid JSON"),
    "questions_missing_options": (None, json.dumps({"dataset": "d", "topic": "t", "question_id": "q", "text": "x"}) + "\n", "questions.jsonl", 1, "options"),
    "questions_one_option": (None, Q1.replace(', {"code": "2", "label": "b"}, {"code": "3", "label": "c"}', "") + "\n", "questions.jsonl", 1, "at least 2"),
    "questions_duplicate": (None, Q1 + "\n" + Q1 + "\n", "questions.jsonl", 2, "duplicate question"),
    "questions_empty_file": (None, "", "questions.jsonl", None, "empty"),
}


def check_error(err: DataError, file: str, line, pattern: str) -> None:
    msg = str(err)
    assert "\n" not in msg
    assert err.path is not None and Path(err.path).name == file
    assert err.line == line
    assert re.search(pattern, msg), msg


@pytest.mark.parametrize("case", sorted(TIDY_CASES))
def test_tidy_bad_input(tmp_path, case):
    cells, questions, file, line, pattern = TIDY_CASES[case]
    d = tidy_with(tmp_path, cells, questions)
    with pytest.raises(DataError) as e:
        read_tidy(d)
    check_error(e.value, file, line, pattern)


def test_tidy_not_a_directory(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        read_tidy(tmp_path / "nope")


# -- release ------------------------------------------------------------------------------------
def rec(**over):
    r = {"question_id": "Q43", "question_text": "t", "category": "wvs_all",
         "options": {"1": "a", "2": "b"},
         "demographics": {"gender": "Male", "education": "College", "residence": "Rural",
                          "marital_status": "Married", "country": "Egypt"},
         "p_real": {"1": 0.25, "2": 0.75}, "sample_count": 8}
    r.update(over)
    return r


def other_persona():
    return {"gender": "Female", "education": "College", "residence": "Rural", "marital_status": "Married"}


RELEASE_CASES = {
    # name: (file text, line of the error or None, message pattern)
    "bad_json": ('[\n  {"question_id": "Q43",\n  oops\n]', 3, "invalid JSON"),
    "empty_file": ("", None, "empty file"),
    "empty_array": ("[]", 1, "no records"),
    "not_an_array": ('{"a": 1}', 1, "JSON array"),
    "trailing_text": (json.dumps([rec()]) + " x", 1, "after the JSON array"),
    "missing_options": (json.dumps([rec(), {k: v for k, v in rec().items() if k != "options"}], indent=1), "second", "missing field 'options'"),
    "option_missing_from_p_real": (json.dumps([rec(options={"1": "a", "2": "b", "3": "c"})], indent=1), 2, "do not match options"),
    "unknown_attribute_value": (json.dumps([rec(demographics={**rec()["demographics"], "education": "PhD"})], indent=1), 2, "PhD"),
    "missing_attribute": (json.dumps([rec(demographics={"gender": "Male"})], indent=1), 2, "missing education"),
    "counts_not_summing_to_n": (json.dumps([rec(p_real={"1": 0.25, "2": 0.625})], indent=1), 2, "sum to 7, not sample_count=8"),
    "not_whole_counts": (json.dumps([rec(p_real={"1": 0.3, "2": 0.7})], indent=1), 2, "not a whole count"),
    "negative_p": (json.dumps([rec(p_real={"1": -0.25, "2": 1.25})], indent=1), 2, "negative"),
    "empty_cell": (json.dumps([rec(sample_count=0)], indent=1), 2, "positive"),
    "duplicate_cell": (json.dumps([rec(), rec()], indent=1), "second", "duplicate cell"),
    "conflicting_options": (json.dumps([rec(), rec(options={"1": "a", "2": "z"}, demographics={**other_persona(), "country": "E"})], indent=1), "second", "options differ"),
    "not_wvs_question_id": (json.dumps([rec(question_id="v5")], indent=1), 2, "WVS-7 section"),
}


@pytest.mark.parametrize("case", sorted(RELEASE_CASES))
def test_release_bad_input(tmp_path, case):
    text, line, pattern = RELEASE_CASES[case]
    d = tmp_path / "eval" / "egypt" / G4_DIR
    d.mkdir(parents=True)
    f = d / "wvs_all_real.json"
    f.write_text(text)
    if line == "second":  # the second record starts on the line of the second top-level '{' at indent 1
        line = next(i for i, s in enumerate(text.splitlines(), 1) if s == " {" and i > 2)
    with pytest.raises(DataError) as e:
        read_release(tmp_path / "eval")
    check_error(e.value, f.name, line, pattern)


def test_release_without_files(tmp_path):
    (tmp_path / "egypt").mkdir()
    with pytest.raises(DataError, match="no <country>"):
        read_release(tmp_path)


# -- WVS ----------------------------------------------------------------------------------------
def swap(row: str, i: int, value: str) -> str:
    parts = row.split(",")
    parts[i] = value
    return ",".join(parts)


WVS_CASES = {
    # name: (csv text, line or None, message pattern)
    "empty_file": ("", None, "empty file"),
    "header_only": (WVS_HEADER + "\n", None, "no respondent rows"),
    "missing_column": ("B_COUNTRY_ALPHA,Q260,Q275,Q273,Q1,Q131\nEGY,1,5,1,1,1\n", 1, "H_URBRURAL"),
    "duplicate_column": (WVS_HEADER + ",Q1\n" + WVS_ROWS[0] + ",1\n", 1, "duplicate column"),
    "wrong_field_count": (f"{WVS_HEADER}\n{WVS_ROWS[0]}\nEGY,1\n", 3, "fields"),
    "bad_quote": (f'{WVS_HEADER}\n{WVS_ROWS[0]}\n"EGY,1,5,1,1,1,2,1\n', 3, "malformed CSV"),
    "unknown_sex_code": (f"{WVS_HEADER}\n" + swap(WVS_ROWS[0], 1, "3") + "\n", 2, "Q260: unknown code 3"),
    "unknown_isced": (f"{WVS_HEADER}\n" + swap(WVS_ROWS[0], 2, "9") + "\n", 2, "Q275: unknown code 9"),
    "unknown_urban_code": (f"{WVS_HEADER}\n" + swap(WVS_ROWS[0], 3, "4") + "\n", 2, "H_URBRURAL"),
    "unknown_marital_code": (f"{WVS_HEADER}\n" + swap(WVS_ROWS[0], 4, "7") + "\n", 2, "Q273"),
    "empty_value": (f"{WVS_HEADER}\n" + swap(WVS_ROWS[0], 5, "") + "\n", 2, "empty value in column 'Q1'"),
    "non_integer": (f"{WVS_HEADER}\n" + swap(WVS_ROWS[0], 6, "abc") + "\n", 2, "not an integer"),
    "answer_not_in_catalog": (f"{WVS_HEADER}\n{WVS_ROWS[0]}\n" + swap(WVS_ROWS[0], 5, "7") + "\n", 3, "answer code 7"),
    "nobody_complete": (f"{WVS_HEADER}\n" + swap(WVS_ROWS[0], 1, "-1") + "\n", None, "no respondent with all four"),
}


@pytest.mark.parametrize("case", sorted(WVS_CASES))
def test_wvs_bad_input(tmp_path, case):
    text, line, pattern = WVS_CASES[case]
    f = tmp_path / "wvs.csv"
    f.write_text(text)
    cat = write_catalog(tmp_path / "catalog.jsonl")
    with pytest.raises(DataError) as e:
        read_wvs(f, cat)
    check_error(e.value, "wvs.csv", line, pattern)


OPT2 = [{"code": "1", "label": "a"}, {"code": "2", "label": "b"}]
CATALOG_CASES = {
    "bad_json": ('{"question_id": "Q1"\n', 1, "invalid JSON"),
    "missing_options": (json.dumps({"question_id": "Q1", "text": "t"}) + "\n", 1, "options"),
    "empty_file": ("", None, "empty"),
    "duplicate_question": ("".join(json.dumps({"question_id": "Q1", "text": "t", "options": OPT2}) + "\n" for _ in range(2)), 2, "duplicate question"),
    "non_integer_code": (json.dumps({"question_id": "Q1", "text": "t", "options": [{"code": "a", "label": "x"}, {"code": "2", "label": "y"}]}) + "\n", 1, "not an integer"),
    "duplicate_code": (json.dumps({"question_id": "Q1", "text": "t", "options": [{"code": "1", "label": "x"}, {"code": "1", "label": "y"}]}) + "\n", 1, "duplicate option"),
    "no_topic_for_id": (json.dumps({"question_id": "V7", "text": "t", "options": OPT2}) + "\n", 1, "WVS-7 section"),
}


@pytest.mark.parametrize("case", sorted(CATALOG_CASES))
def test_catalog_bad_input(tmp_path, case):
    text, line, pattern = CATALOG_CASES[case]
    f = tmp_path / "catalog.jsonl"
    f.write_text(text)
    with pytest.raises(DataError) as e:
        read_catalog(f)
    check_error(e.value, "catalog.jsonl", line, pattern)


def test_catalog_question_without_column(tmp_path):
    f = tmp_path / "wvs.csv"
    f.write_text("B_COUNTRY_ALPHA,Q260,Q275,H_URBRURAL,Q273,Q1\nEGY,1,5,1,1,1\n")
    with pytest.raises(DataError) as e:
        read_wvs(f, write_catalog(tmp_path / "catalog.jsonl"))
    check_error(e.value, "wvs.csv", 1, "Q131")


# -- split files ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text,pattern", [
    ("{oops", "invalid JSON"),
    ('{"kind": "question"}', "not an acealign split"),
    ('{"format": "acealign-split/1", "kind": "bogus"}', "unknown split kind"),
    ('{"format": "acealign-split/1", "kind": "persona", "heldout_personas": ["Female_PhD_Urban_Married"]}', "bad persona combination"),
    ('{"format": "acealign-split/1", "kind": "question", "train_questions": "Q1"}', "list of strings"),
    ('{"format": "acealign-split/1", "kind": "question", "fingerprint": 3}', "'fingerprint' must be an object"),
    ('{"format": "acealign-split/1", "kind": "question", "train_questions": ["Q1"], "eval_questions": ["Q1"], '
     '"train_countries": ["x"], "eval_countries": ["x"]}', "refusing this split: 1 question is both"),
])
def test_split_file_bad_input(tmp_path, text, pattern):
    f = tmp_path / "split.json"
    f.write_text(text)
    with pytest.raises(DataError, match=pattern) as e:
        Split.load(f)
    assert Path(e.value.path).name == "split.json"


# -- CLI: one stderr line, exit code 2, no traceback, no output --------------------------------------
def run_cli(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clean_failure(rc, out, err, name):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and name in err
    assert out == ""


@pytest.mark.parametrize("case", ["cells_wrong_field_count", "counts_not_summing_to_n", "questions_bad_json", "duplicate_cell"])
def test_cli_import_tidy_bad(tmp_path, capsys, case):
    cells, questions, file, line, _ = TIDY_CASES[case]
    d = tidy_with(tmp_path, cells, questions)
    out_dir = tmp_path / "out"
    rc, out, err = run_cli(capsys, ["data", "import", "tidy", str(d), "--out", str(out_dir)])
    assert_clean_failure(rc, out, err, f"{file}:{line}")
    assert not out_dir.exists()


@pytest.mark.parametrize("case", ["bad_json", "counts_not_summing_to_n", "unknown_attribute_value", "empty_file"])
def test_cli_import_release_bad(tmp_path, capsys, case):
    text, _, _ = RELEASE_CASES[case]
    ev = write_release(tmp_path / "rel")
    (ev / "egypt" / G4_DIR / "wvs_all_real.json").write_text(text)
    out_dir = tmp_path / "out"
    rc, out, err = run_cli(capsys, ["data", "import", "release", str(ev), "--out", str(out_dir)])
    assert_clean_failure(rc, out, err, "wvs_all_real.json")
    assert not out_dir.exists()


@pytest.mark.parametrize("case", ["unknown_sex_code", "answer_not_in_catalog", "empty_file"])
def test_cli_import_wvs_bad(tmp_path, capsys, case):
    text, _, _ = WVS_CASES[case]
    f = tmp_path / "wvs.csv"
    f.write_text(text)
    cat = write_catalog(tmp_path / "catalog.jsonl")
    out_dir = tmp_path / "out"
    rc, out, err = run_cli(capsys, ["data", "import", "wvs", str(f), "--catalog", str(cat), "--out", str(out_dir)])
    assert_clean_failure(rc, out, err, "wvs.csv")
    assert not out_dir.exists()


def test_cli_wvs_needs_catalog(tmp_path, capsys):
    f = tmp_path / "wvs.csv"
    f.write_text("\n".join([WVS_HEADER, *WVS_ROWS]) + "\n")
    rc, out, err = run_cli(capsys, ["data", "import", "wvs", str(f), "--out", str(tmp_path / "out")])
    assert_clean_failure(rc, out, err, "--catalog")


def test_cli_bad_catalog(tmp_path, capsys):
    f = tmp_path / "wvs.csv"
    f.write_text("\n".join([WVS_HEADER, *WVS_ROWS]) + "\n")
    cat = tmp_path / "catalog.jsonl"
    cat.write_text("{oops\n")
    rc, out, err = run_cli(capsys, ["data", "import", "wvs", str(f), "--catalog", str(cat), "--out", str(tmp_path / "out")])
    assert_clean_failure(rc, out, err, "catalog.jsonl:1")


@pytest.mark.parametrize("argv_tail", [["info"], ["ceiling", "--boot", "2"], ["split", "--kind", "question", "--out", "S"]])
def test_cli_bad_data_dir(tmp_path, capsys, argv_tail):
    d = tidy_with(tmp_path, cells=f"{CELL_HEADER}\n" + GOOD_ROW.replace("Male", "Femme") + "\n")
    argv = ["data", argv_tail[0], "--data", str(d), *[str(tmp_path / a) if a == "S" else a for a in argv_tail[1:]]]
    rc, out, err = run_cli(capsys, argv)
    assert_clean_failure(rc, out, err, "cells.csv:2")
    assert not (tmp_path / "S").exists()


def test_cli_usage_errors(tmp_path, capsys):
    d = write_tiny_tidy(tmp_path / "tiny")
    for argv in (
        ["data", "split", "--kind", "country", "--data", str(d), "--out", str(tmp_path / "s.json")],
        ["data", "split", "--kind", "persona", "--heldout", "Female_PhD", "--data", str(d), "--out", str(tmp_path / "s.json")],
        ["data", "split", "--kind", "question", "--eval-frac", "1.5", "--data", str(d), "--out", str(tmp_path / "s.json")],
        ["data", "ceiling", "--countries", "mars", "--data", str(d)],
    ):
        rc, out, err = run_cli(capsys, argv)
        assert_clean_failure(rc, out, err, "error")
    assert not (tmp_path / "s.json").exists()


def test_non_utf8_files(tmp_path):
    d = tidy_with(tmp_path)
    (d / "cells.csv").write_bytes(CELL_HEADER.encode() + b"\n" + GOOD_ROW.replace("atlantis", "atl\xe4ntis").encode("latin-1") + b"\n")
    with pytest.raises(DataError, match="not UTF-8") as e:
        read_tidy(d)
    assert Path(e.value.path).name == "cells.csv"
    rel = tmp_path / "eval" / "egypt" / G4_DIR
    rel.mkdir(parents=True)
    (rel / "wvs_all_real.json").write_bytes(b'[{"question_id": "Q1\xff"}]')
    with pytest.raises(DataError, match="not UTF-8"):
        read_release(tmp_path / "eval")
    (tmp_path / "wvs.csv").write_bytes((WVS_HEADER + "\n" + WVS_ROWS[0] + "\n").encode() + b"\xff\xfe,1\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_wvs(tmp_path / "wvs.csv", write_catalog(tmp_path / "catalog.jsonl"))
