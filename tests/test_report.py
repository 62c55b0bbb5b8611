"""The report of a synthetic run built from a small slice of the real survey data."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from acealign import evaluate as ev
from acealign.analyses.common import with_scores
from acealign.cli import main
from acealign.report import build_report, load_predictions, read_manifest, update_manifest
from acealign.splits import make_question_split
from acealign.survey import DataError, load_survey, package_data_dir

DATA = package_data_dir()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Egypt and the United States, 20% of their questions for evaluation, one held-out combo.
    Methods: references, `base` (half uniform, half country marginal) and `ace` (20% uniform, 80%
    the survey cell itself)."""
    data = load_survey(DATA).subset(countries=["egypt", "united_states"])
    split = make_question_split(data, eval_frac=0.2, seed=0)
    split.heldout_personas = ["Female_College_Urban_Married"]
    run = tmp_path_factory.mktemp("run")
    split.save(run / "split.json")
    ev.write_references(data, split, run / "eval")
    marg = pd.read_parquet(run / "eval" / "country-marginal" / "predictions.parquet")

    def mix(w_uniform, target):
        return [list(w_uniform / len(t) + (1 - w_uniform) * np.asarray(t, float) / np.sum(t)) for t in target]

    for method, preds in (("base", mix(0.5, marg["pred"])), ("ace", mix(0.2, marg["survey_counts"]))):
        ev.write_predictions(marg.assign(method=method, pred=preds), run / "eval" / method)
    (run / "run.json").write_text(json.dumps({
        "name": "synthetic", "profile": "test",
        "slice": {"countries": ["egypt", "united_states"], "description": "SLICE-DESCRIPTION-XYZ"},
    }))
    return run


def test_report_files_and_values(run_dir):
    res = build_report(run_dir, n_boot=50, n_perm=100)
    out = run_dir / "report"
    html = (out / "report.html").read_text()
    assert "SLICE-DESCRIPTION-XYZ" in html and html.count("data:image/png;base64,") >= 8
    md = (out / "report.md").read_text()
    assert "![" in md and "figures/table1.png" in md and "SLICE-DESCRIPTION-XYZ" in md
    for name in ("table1", "fidelity", "tier_summary", "heldout", "heterogeneity", "taxonomy_shares",
                 "attribute_changes", "topic_scores", "fairness", "best_worst_personas", "summary"):
        assert (out / "tables" / f"{name}.csv").is_file() and (out / "tables" / f"{name}.json").is_file()
    assert not list(out.rglob("*.tmp"))
    assert res.missing_figures == {}
    # Table 1 equals the direct computation: mean cell score of egypt's G=2 evaluation cells.
    t1 = pd.read_csv(out / "tables" / "table1.csv")
    preds = with_scores(pd.read_parquet(run_dir / "eval" / "ace" / "predictions.parquet"))
    cells = preds[preds.eval_question & (preds.country == "egypt") & (preds.granularity == 2)]
    got = t1[(t1.method == "ace") & (t1.granularity == 2)]["egypt"].item()
    assert got == pytest.approx(100 * cells["score"].mean())
    summary = res.summary.set_index("method")
    # The cell-informed `ace` beats the persona-blind `base`; the ceiling bounds both from above.
    assert summary.loc["ace", "S"] > summary.loc["base", "S"]
    assert summary.loc["noise-ceiling", "S"] > summary.loc["ace", "S"]
    # base mixes the country marginal (no persona effect) with uniform: no-effect fidelity.
    assert summary.loc["base", "d_cdf_x1000"] == pytest.approx(summary.loc["no-effect", "d_cdf_x1000"])
    assert 10 < summary.loc["noise-floor", "d_cdf_x1000"] < summary.loc["no-effect", "d_cdf_x1000"] < 200
    # The country marginal has seen each evaluation question's answers: labelled an oracle.
    assert "Country marginal (oracle)" in html and "Country marginal (oracle)" in md
    assert "Country marginal (reference)" not in html
    # Fidelity CIs over questions (x1000), raw and Holm p-values, independent questions counted.
    fid = pd.read_csv(out / "tables" / "fidelity.csv")
    avg = fid[fid.country == "Avg"].set_index("method")
    assert (avg["ci_low_x1000"] <= avg["d_cdf_x1000"] + 1e-9).all() and (avg["d_cdf_x1000"] <= avg["ci_high_x1000"] + 1e-9).all()
    assert (avg["n_questions"] == len(preds[preds.eval_question].question_key.unique())).all()
    tests = pd.read_csv(out / "tables" / "paired_tests.csv")
    assert {"p_value", "p_holm", "n_questions"} <= set(tests.columns)
    assert (tests["p_holm"] >= tests["p_value"]).all()
    assert "Holm" in md and "×1000" in md
    assert summary.loc["base", "p_holm_vs_primary"].count("/") == 3  # one p-value per G


def test_duplicate_method_and_bad_files(tmp_path, run_dir):
    src = run_dir / "eval" / "base" / "predictions.parquet"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "predictions.parquet").write_bytes(src.read_bytes())
    with pytest.raises(DataError, match="method 'base' is also in"):
        load_predictions([src, tmp_path / "a" / "predictions.parquet"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "predictions.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="cannot read predictions"):
        load_predictions([tmp_path / "b" / "predictions.parquet"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no predictions.parquet"):
        build_report(tmp_path / "empty")


def test_cli_report_and_figures_without_data(run_dir, tmp_path, capsys):
    # Only the base model and no held-out rows: every comparison with ACE-Align and the held-out
    # figure have no data, and the report says so instead of crashing.
    only = tmp_path / "only"
    (only / "eval" / "base").mkdir(parents=True)
    df = pd.read_parquet(run_dir / "eval" / "base" / "predictions.parquet")
    df.assign(heldout_persona=False).to_parquet(only / "eval" / "base" / "predictions.parquet")
    assert main(["report", str(only), "--out", str(tmp_path / "r"), "--boot", "0", "--perm", "10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in out["summary"]} == {"base", "no-effect", "noise-floor"}
    assert "heldout" in out["missing_figures"] and "attribute_changes" in out["missing_figures"]
    assert out["figures"]["heldout"] is None and Path(out["figures"]["table1"]).is_file()
    html = Path(out["html"]).read_text()
    assert "no data — the split holds out no persona combination" in html
    assert "No `run.json` manifest" in Path(out["markdown"]).read_text()
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run directory not found" in capsys.readouterr().err


def test_cli_eval_references(tmp_path, capsys):
    split = tmp_path / "split.json"
    data = load_survey(DATA).subset(countries=["egypt"])
    make_question_split(data, eval_frac=0.2, seed=0).save(split)
    args = ["eval", "--data", str(DATA), "--split", str(split), "--out", str(tmp_path / "eval"),
            "--references", "--granularity", "1", "--json"]
    assert main(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["method"] for r in rows} == {"country-marginal", "noise-ceiling"}
    assert all(r["granularity"] == 1 and r["country"] == "egypt" for r in rows)
    assert main(["eval", "--split", str(split), "--out", str(tmp_path), "--granularity", "5"]) == 2


def test_update_manifest(tmp_path):
    update_manifest(tmp_path, name="r", slice={"countries": ["egypt"]})
    m = update_manifest(tmp_path, wall_time_s=12.5)
    assert m == read_manifest(tmp_path) == {
        "format": "acealign-run/1", "name": "r", "slice": {"countries": ["egypt"]}, "wall_time_s": 12.5
    }
    (tmp_path / "run.json").write_text("{oops")
    with pytest.raises(DataError, match="run.json:1: invalid JSON"):
        read_manifest(tmp_path)
