"""Files as spreadsheet programs export them (UTF-8 byte-order mark, CRLF line ends) read like
plain ones, in every reader; a question whose options repeat a code is rejected with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_tidy
from test_survey_readers import WVS_HEADER, WVS_ROWS, write_catalog, write_release

from acealign.cli import main
from acealign.survey import DataError, Persona, read_tidy
from acealign.survey.importers import import_survey
from acealign.survey.release import G4_DIR, read_release
from acealign.survey.wvs import read_catalog, read_wvs

BOM = b"\xef\xbb\xbf"


def spreadsheet(path: Path) -> Path:
    """Rewrite ``path`` as a spreadsheet export: BOM first, CRLF line ends."""
    text = path.read_text(encoding="utf-8")
    path.write_bytes(BOM + text.replace("\n", "\r\n").encode("utf-8"))
    return path


def same_data(a, b) -> None:
    assert a.questions == b.questions and a.cells.keys() == b.cells.keys()
    for k in a.cells:
        assert a.cells[k].keys() == b.cells[k].keys()
        for p in a.cells[k]:
            np.testing.assert_array_equal(a.cells[k][p], b.cells[k][p])


# -- BOM + CRLF -----------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["questions.jsonl", "cells.csv", "both"])
def test_tidy_bom_and_crlf(tmp_path, which):
    plain = read_tidy(write_tiny_tidy(tmp_path / "plain"))
    d = write_tiny_tidy(tmp_path / "excel")
    for name in ("questions.jsonl", "cells.csv"):
        if which in (name, "both"):
            assert spreadsheet(d / name).read_bytes().startswith(BOM)
    same_data(read_tidy(d), plain)


def test_tidy_import_of_spreadsheet_files(tmp_path):
    d = write_tiny_tidy(tmp_path / "excel")
    spreadsheet(d / "questions.jsonl")
    spreadsheet(d / "cells.csv")
    import_survey("tidy", d, tmp_path / "out")
    # The written tables are plain UTF-8 with LF line ends.
    assert not (tmp_path / "out" / "cells.csv").read_bytes().startswith(BOM)
    assert b"\r\n" not in (tmp_path / "out" / "cells.csv").read_bytes()
    same_data(read_tidy(tmp_path / "out"), read_tidy(write_tiny_tidy(tmp_path / "plain")))


def test_release_bom_and_crlf(tmp_path):
    ev = write_release(tmp_path / "rel")
    plain = read_release(ev)
    for f in ev.rglob("*_real.json"):
        if G4_DIR in f.as_posix():
            spreadsheet(f)
    same_data(read_release(ev), plain)


def test_release_error_line_with_crlf(tmp_path):
    # Line numbers still count CRLF lines: the bad record starts on line 2.
    d = tmp_path / "eval" / "egypt" / G4_DIR
    d.mkdir(parents=True)
    f = d / "wvs_all_real.json"
    f.write_text('[\n{"question_id": "Q43"}\n]\n')
    spreadsheet(f)
    with pytest.raises(DataError, match="missing field") as e:
        read_release(tmp_path / "eval")
    assert e.value.line == 2


def test_wvs_respondents_and_catalog_bom_and_crlf(tmp_path):
    csv_path = tmp_path / "wvs.csv"
    csv_path.write_text("\n".join([WVS_HEADER, *WVS_ROWS]) + "\n")
    cat = write_catalog(tmp_path / "catalog.jsonl")
    plain = read_wvs(csv_path, cat)
    spreadsheet(csv_path)
    spreadsheet(cat)
    got = read_wvs(csv_path, cat)
    same_data(got, plain)
    # A hand-counted cell survives: Male College Urban Married in Egypt answered Q1 with 1, 1, 3.
    mcum = Persona("egypt", gender="Male", education="College", residence="Urban", marital_status="Married")
    np.testing.assert_array_equal(got.cells[("egypt", "wvs7/social_values/Q1")][mcum], [2, 0, 1])
    import_survey("wvs", csv_path, tmp_path / "out", catalog=cat)
    assert read_tidy(tmp_path / "out").countries == ["egypt", "ethiopia", "xyz"]


# -- repeated option codes --------------------------------------------------------------------------
def question(options) -> str:
    return json.dumps({"dataset": "wvs7", "topic": "social_values", "question_id": "Q1",
                       "text": "How important is family?", "options": options})


REPEATS = {
    "same_code": [{"code": "1", "label": "a"}, {"code": "2", "label": "b"}, {"code": "1", "label": "c"}],
    "padded_code": [{"code": "1", "label": "a"}, {"code": "01", "label": "b"}, {"code": "3", "label": "c"}],
}


@pytest.mark.parametrize("case", sorted(REPEATS))
def test_tidy_repeated_code(tmp_path, case):
    d = write_tiny_tidy(tmp_path / "t")
    lines = (d / "questions.jsonl").read_text().splitlines()
    lines[0] = question(REPEATS[case])  # tiny Q1 has 3 options, like these
    (d / "questions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="duplicate option code") as e:
        read_tidy(d)
    assert Path(e.value.path).name == "questions.jsonl" and e.value.line == 1
    assert "options 1 and " in str(e.value)


def test_release_repeated_code(tmp_path):
    # JSON objects cannot hold a key twice once parsed, so the raw text is checked.
    d = tmp_path / "eval" / "egypt" / G4_DIR
    d.mkdir(parents=True)
    rec = ('{"question_id": "Q43", "question_text": "t", "options": {"1": "a", "2": "b", "1": "c"}, '
           '"demographics": {"gender": "Male", "education": "College", "residence": "Rural", '
           '"marital_status": "Married"}, "p_real": {"1": 0.25, "2": 0.75}, "sample_count": 8}')
    (d / "wvs_all_real.json").write_text("[\n" + rec + "\n]\n")
    with pytest.raises(DataError, match="key '1' repeated") as e:
        read_release(tmp_path / "eval")
    assert e.value.line == 2 and Path(e.value.path).name == "wvs_all_real.json"
    # "1" and "01" are different keys but the same code.
    (d / "wvs_all_real.json").write_text("[\n" + rec.replace('"1": "c"', '"01": "c"') + "\n]\n")
    with pytest.raises(DataError, match="duplicate option code") as e:
        read_release(tmp_path / "eval")
    assert e.value.line == 2


@pytest.mark.parametrize("options, pattern", [
    ('{"1": "a", "2": "b", "1": "c"}', "key '1' repeated"),
    ('[{"code": "1", "label": "a"}, {"code": "1.0", "label": "b"}]', "duplicate option code"),
])
def test_catalog_repeated_code(tmp_path, options, pattern):
    f = tmp_path / "catalog.jsonl"
    f.write_text('{"question_id": "Q2", "text": "t", "options": [{"code": "1", "label": "a"}, {"code": "2", "label": "b"}]}\n'
                 '{"question_id": "Q1", "text": "t", "options": ' + options + "}\n")
    with pytest.raises(DataError, match=pattern) as e:
        read_catalog(f)
    assert e.value.line == 2 and Path(e.value.path).name == "catalog.jsonl"


def test_cli_info_repeated_code_exits_2_with_one_line(tmp_path, capsys):
    d = write_tiny_tidy(tmp_path / "t")
    lines = (d / "questions.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"code": "2"', '"code": "1"')  # Q131: codes 1, 1, 3, 4
    (d / "questions.jsonl").write_text("\n".join(lines) + "\n")
    rc = main(["data", "info", "--data", str(d)])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{d / 'questions.jsonl'}:2:" in err and "duplicate option code '1'" in err


# -- data info reports non-substantive options ------------------------------------------------------
def test_cli_info_reports_nonsubstantive_share(tmp_path, capsys):
    from test_survey_readers import write_ns_tidy

    d = write_ns_tidy(tmp_path / "ns")  # chile v56: 3|5|2 and 4|0|0, option 0 "Doesn't apply"
    assert main(["data", "info", "--data", str(d), "--json", "--min-n", "1"]) == 0
    info = json.loads(capsys.readouterr().out)
    # 3 + 4 = 7 of the 10 + 4 = 14 respondents: half.
    assert info["nonsubstantive"] == [{
        "country": "chile", "question": "issp/family/v56", "code": "0", "label": "Doesn't apply, no job",
        "how": "label", "respondents": 7, "total": 14, "share": 0.5}]
    # Only the 5|2 cell is on the scale: one G=4 row, and G=1 cells Male, College, Urban, Married.
    (row,) = info["countries"]
    assert row["g4_rows"] == 1 and row["cells"] == {"1": 4, "2": 6, "3": 4, "4": 1}
    assert main(["data", "info", "--data", str(d)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("chile") and "v56" in x)
    assert line.split() == ["chile", "issp/family/v56", "0:", "Doesn't", "apply,", "no", "job", "label", "7", "50.0%"]
    assert main(["data", "info", "--data", str(write_tiny_tidy(tmp_path / "tiny"))]) == 0
    assert "non-substantive options: none" in capsys.readouterr().out
