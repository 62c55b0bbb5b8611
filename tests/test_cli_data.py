"""``acealign data info | import | split | ceiling`` on the tiny dataset and the shipped default data."""

from __future__ import annotations

import json

from conftest import write_tiny_tidy
from test_survey_readers import WVS_HEADER, WVS_ROWS, write_catalog, write_release

from acealign.cli import main
from acealign.personas import eligible_cells
from acealign.splits import Split
from acealign.survey import package_data_dir, read_tidy


def run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert err == ""
    return out


def test_info_json(tiny_data_dir, capsys):
    info = json.loads(run(capsys, ["data", "info", "--data", str(tiny_data_dir), "--json", "--min-n", "1"]))
    assert info["min_n"] == 1
    rows = {r["country"]: r for r in info["countries"]}
    assert list(rows) == ["atlantis", "borduria"]
    a = rows["atlantis"]
    assert a["datasets"] == ["issp", "wvs7"] and a["topics"] == ["family", "security", "social_values"]
    assert a["questions"] == 3 and a["g4_rows"] == 47
    # With min_n=1 every persona with a respondent counts: 8, 24, 32 personas x 3 questions, and at
    # G=4 all 48 cells but the one left out of the tiny data.
    assert a["cells"] == {"1": 24, "2": 72, "3": 96, "4": 47}
    assert a["dropped"] == {"1": 0, "2": 0, "3": 0, "4": 1}
    assert rows["borduria"]["cells"]["4"] == 48 and rows["borduria"]["dropped"]["4"] == 0


def test_info_table(tiny_data_dir, capsys):
    out = run(capsys, ["data", "info", "--data", str(tiny_data_dir)])
    lines = out.splitlines()
    assert lines[1].split()[:10] == ["country", "datasets", "topics", "questions", "g4_rows", "G1", "G2", "G3", "G4", "dropped"]
    sel = eligible_cells(read_tidy(tiny_data_dir), granularities=(4,), min_n=10, countries=["atlantis"])
    atl = next(line.split() for line in lines if line.startswith("atlantis"))
    assert atl[:5] == ["atlantis", "issp,wvs7", "3", "3", "47"] and int(atl[8]) == len(sel.cells)
    assert any(line.startswith("all ") for line in lines)


def test_import_all_kinds(tmp_path, tiny_data_dir, capsys):
    out = run(capsys, ["data", "import", "tidy", str(tiny_data_dir), "--out", str(tmp_path / "t"), "--countries", "borduria", "--json"])
    assert json.loads(out)["countries"] == ["borduria"] and read_tidy(tmp_path / "t").n_cells() == 48
    ev = write_release(tmp_path / "rel")
    run(capsys, ["data", "import", "release", str(ev), "--out", str(tmp_path / "r")])
    assert read_tidy(tmp_path / "r").countries == ["australia", "egypt"]
    csv_path = tmp_path / "wvs.csv"
    csv_path.write_text("\n".join([WVS_HEADER, *WVS_ROWS]) + "\n")
    cat = write_catalog(tmp_path / "catalog.jsonl")
    out = run(capsys, ["data", "import", "wvs", str(csv_path), "--catalog", str(cat), "--out", str(tmp_path / "w"), "--countries", "egypt"])
    assert "2 questions" in out and read_tidy(tmp_path / "w").countries == ["egypt"]


def test_split_commands(tmp_path, tiny_data_dir, capsys):
    d = str(tiny_data_dir)
    run(capsys, ["data", "split", "--data", d, "--kind", "question", "--eval-frac", "0.34", "--seed", "2", "--out", str(tmp_path / "q.json")])
    q = Split.load(tmp_path / "q.json")
    # round(0.34 * 3) = 1 question held out, from one of the three one-question topics.
    assert q.kind == "question" and q.seed == 2 and len(q.eval_questions) == 1 and len(q.train_questions) == 2
    info = json.loads(run(capsys, ["data", "split", "--data", d, "--kind", "persona", "--json",
                                   "--heldout", "Female_No_College_Rural_Married", "--out", str(tmp_path / "p.json")]))
    assert info["heldout_personas"] == ["Female_No_College_Rural_Married"]
    assert Split.load(tmp_path / "p.json").heldout_personas == ["Female_No_College_Rural_Married"]
    run(capsys, ["data", "split", "--data", d, "--kind", "country", "--eval-countries", "atlantis", "--out", str(tmp_path / "c.json")])
    c = Split.load(tmp_path / "c.json")
    assert c.eval_countries == ["atlantis"] and c.train_countries == ["borduria"]


def test_ceiling_json_keys(tiny_data_dir, capsys):
    rows = json.loads(run(capsys, ["data", "ceiling", "--data", str(tiny_data_dir), "--json", "--boot", "5", "--countries", "borduria"]))
    assert [(r["country"], r["granularity"]) for r in rows] == [("borduria", g) for g in (1, 2, 3, 4)]
    data = read_tidy(tiny_data_dir)
    for r in rows:
        assert list(r) == ["country", "granularity", "cells", "ceiling", "marginal", "uniform"]
        n = len(eligible_cells(data, granularities=(r["granularity"],), min_n=10, countries=["borduria"]).cells)
        assert r["cells"] == n
        assert all(0 <= r[k] <= 100 for k in ("ceiling", "marginal", "uniform"))
    table = run(capsys, ["data", "ceiling", "--data", str(tiny_data_dir), "--boot", "5"])
    assert table.splitlines()[0].split() == ["country", "granularity", "cells", "ceiling", "marginal", "uniform"]
    # --boot 0: the exact expected ceiling; same cells and deterministic marginal/uniform scores.
    exact = json.loads(run(capsys, ["data", "ceiling", "--data", str(tiny_data_dir), "--json", "--boot", "0", "--countries", "borduria"]))
    assert [r["cells"] for r in exact] == [r["cells"] for r in rows]
    assert [r["uniform"] for r in exact] == [r["uniform"] for r in rows]


NINE = ["australia", "chile", "egypt", "ethiopia", "germany", "india", "japan", "philippines", "united_states"]


def test_info_on_default_data_lists_nine_countries(capsys, monkeypatch):
    """With neither --data nor $ACEALIGN_DATA, `data info` reads the tables shipped in the package."""
    monkeypatch.delenv("ACEALIGN_DATA", raising=False)
    info = json.loads(run(capsys, ["data", "info", "--json"]))
    assert [r["country"] for r in info["countries"]] == NINE
    assert sum(r["g4_rows"] for r in info["countries"]) == 7281
    assert info["source_kind"] == "package"
    assert info["source_label"] == "package copy (acealign/data/surveys)"
    assert info["source"] == str(package_data_dir())
    out = run(capsys, ["data", "info"])
    assert out.splitlines()[0].startswith("data: package copy (acealign/data/surveys, 9 countries)  (220 questions")


def test_info_names_env_and_option_sources(tiny_data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACEALIGN_DATA", str(tiny_data_dir))
    info = json.loads(run(capsys, ["data", "info", "--json"]))
    assert info["source_kind"] == "env" and info["source"] == str(tiny_data_dir)
    assert info["source_label"] == f"$ACEALIGN_DATA ({tiny_data_dir})"
    assert [r["country"] for r in info["countries"]] == ["atlantis", "borduria"]
    out = run(capsys, ["data", "info"])
    assert out.splitlines()[0].startswith(f"data: $ACEALIGN_DATA ({tiny_data_dir}, 2 countries)  (3 questions")
    # --data wins over $ACEALIGN_DATA.
    other = write_tiny_tidy(tmp_path / "other")
    info = json.loads(run(capsys, ["data", "info", "--data", str(other), "--json"]))
    assert info["source_kind"] == "option" and info["source"] == str(other)
    assert info["source_label"] == f"--data ({other})"
    out = run(capsys, ["data", "info", "--data", str(other)])
    assert out.splitlines()[0].startswith(f"data: --data ({other}, 2 countries)")
