"""Evaluation cells of a split, reference methods, and the predictions files (no model needed)."""

import json

import numpy as np
import pandas as pd
import pytest

from acealign import evaluate as ev
from acealign.analyses.common import validate_predictions
from acealign.splits import Split
from acealign.survey import (
    DataError,
    Option,
    Persona,
    Question,
    SurveyData,
    all_g4_personas,
    package_data_dir,
)

HELD = "Female_College_Urban_Married"


def tiny_survey() -> SurveyData:
    """Country x, three 2-option questions. Every G=4 cell is [10, 0] except the held-out
    combination Female_College_Urban_Married, [0, 10]; on q3 Male_No_College_Rural_Not_Married has
    only 5 respondents ([5, 0])."""
    qs = {}
    cells = {}
    for qid in ("q1", "q2", "q3"):
        q = Question("d", "t", qid, f"text {qid}", (Option("1", "a"), Option("2", "b")))
        qs[q.key] = q
        by = {}
        for p in all_g4_personas("x"):
            by[p] = np.array([0, 10] if p.combo == HELD else [10, 0])
            if qid == "q3" and p.combo == "Male_No_College_Rural_Not_Married":
                by[p] = np.array([5, 0])
        cells[("x", q.key)] = by
    return SurveyData(qs, cells, "tiny")


def split(kind="question", heldout=(HELD,)):
    return Split(kind, 0, ["d/t/q1", "d/t/q2"], [], ["d/t/q3"], list(heldout), ["x"], ["x"])


def test_evaluation_cells_question_split_with_heldout_combo():
    data = tiny_survey()
    cells = ev.evaluation_cells(data, split())
    evq = [c for c in cells if c.eval_question]
    # q3: 80 personas G=1..4; 1 dropped (the n=5 G=4 cell; coarser ones still have >= 10).
    assert len(evq) == 79 and {c.cell.question_key for c in evq} == {"d/t/q3"}
    held = [c for c in cells if c.heldout_persona]
    # The held-out combination on q1, q2 (training questions) and q3 (flagged on both counts).
    assert sorted(c.cell.question_key for c in held) == ["d/t/q1", "d/t/q2", "d/t/q3"]
    assert all(c.cell.persona.combo == HELD for c in held)
    assert [c.eval_question for c in held if c.cell.question_key != "d/t/q3"] == [False, False]


def test_evaluation_cells_persona_and_country_splits():
    data = tiny_survey()
    # A persona split has no evaluation questions: the held-out combination on every question.
    persona = Split("persona", None, ["d/t/q1", "d/t/q2", "d/t/q3"], [], [], [HELD], ["x"], ["x"])
    cells = ev.evaluation_cells(data, persona)
    assert len(cells) == 3 and not any(c.eval_question for c in cells) and all(c.heldout_persona for c in cells)
    country = Split("country", None, ["d/t/q1"], [], ["d/t/q1", "d/t/q2"], [], ["y"], ["x"])
    cells = ev.evaluation_cells(data, country)
    # The evaluation country never trained: q1 counts as unseen there too. 2 x 80 cells.
    assert len(cells) == 160 and all(c.eval_question for c in cells)
    with pytest.raises(DataError, match="evaluation countries"):
        ev.evaluation_cells(data, Split("country", None, [], [], [], [], ["x"], ["nowhere"]))


def test_country_marginal_reference():
    data = tiny_survey()
    cells = ev.evaluation_cells(data, split(heldout=()))
    frame = ev.reference_predictions(data, cells, "country-marginal")
    validate_predictions(frame)
    # q3 country total: 14 x [10,0] + [0,10] + [5,0] = [145, 10] -> (145/155, 10/155).
    assert frame["pred"].iloc[0] == pytest.approx([145 / 155, 10 / 155])
    female = frame[frame["persona"] == "x|gender=Female"].iloc[0]
    # gender=Female: 7 x [10,0] + [0,10] = [70, 10]; score 1 - |145/155 - 70/80|.
    assert female["survey_counts"] == [70, 10]
    from acealign.analyses.common import with_scores

    s = with_scores(frame[frame["persona"] == "x|gender=Female"])["score"].item()
    assert s == pytest.approx(1 - abs(145 / 155 - 70 / 80))


def test_noise_ceiling_reference():
    data = tiny_survey()
    cells = ev.evaluation_cells(data, split(heldout=()))
    frame = ev.reference_predictions(data, cells, "noise-ceiling", seed=3)
    # A cell with all respondents on one option cannot vary: ceiling 1, resample = the cell.
    g4 = frame[frame["persona"] == Persona("x", "Male", "College", "Urban", "Married").key].iloc[0]
    assert g4["score"] == 1.0 and g4["pred"] == [1.0, 0.0]
    # gender=Female [70, 10]: expected score < 1, equal to the closed form of acealign.metrics.
    from acealign.metrics import expected_ceiling_batch

    f = frame[frame["persona"] == "x|gender=Female"].iloc[0]
    assert f["score"] == pytest.approx(expected_ceiling_batch(np.array([[70, 10]]))[0]) and f["score"] < 1
    again = ev.reference_predictions(data, cells, "noise-ceiling", seed=3)
    assert again["pred"].tolist() == frame["pred"].tolist()  # seeded
    with pytest.raises(ValueError, match="unknown reference"):
        ev.reference_predictions(data, cells, "oracle")


def test_write_references_layout(tmp_path):
    data = tiny_survey()
    results = ev.write_references(data, split(), tmp_path / "eval")
    assert [r.method for r in results] == ["country-marginal", "noise-ceiling"]
    for r in results:
        d = tmp_path / "eval" / r.method
        frame = pd.read_parquet(d / "predictions.parquet")
        validate_predictions(frame, d)
        assert len(frame) == 79 + 2  # q3 cells + the held-out combination on q1 and q2
        scores = pd.read_csv(d / "cell_scores.csv")
        assert len(scores) == len(frame) and scores["score"].between(0, 100).all()
        meta = json.loads((d / "eval.json").read_text())
        assert meta["method"] == r.method and meta["heldout_persona_cells"] == 3
    assert not list((tmp_path / "eval").rglob("*.tmp"))


def test_predictions_frame_checks_lengths():
    data = tiny_survey()
    cells = ev.evaluation_cells(data, split())
    with pytest.raises(ValueError, match="predictions for"):
        ev.predictions_frame(data, cells, "m", [[0.5, 0.5]])


def test_default_method_names(tmp_path):
    assert ev._default_method_name(None, "plain") == "base"
    assert ev._default_method_name(None, "anthropological") == "anthropological"
    assert ev._default_method_name(tmp_path / "ace" / "adapter", "plain") == "ace"


def test_evaluate_with_a_tiny_model_is_resumable(tmp_path, monkeypatch):
    from acealign import scoring
    from acealign.testing import tiny_model_and_tokenizer

    data = tiny_survey()
    sp = split()
    model = tiny_model_and_tokenizer(seed=1)
    res = ev.evaluate(model, prompt="plain", data=data, split=sp, out_dir=tmp_path, granularities=(1, 4),
                      method_name="tiny", progress=False)
    frame = pd.read_parquet(res.predictions)
    validate_predictions(frame, res.predictions)
    # q3: 8 G=1 personas + 15 eligible G=4 ones; the held-out combination on q1 and q2.
    assert len(frame) == 8 + 15 + 2 and frame["method"].unique().tolist() == ["tiny"]
    assert np.allclose([sum(p) for p in frame["pred"]], 1.0)
    assert not (tmp_path / "tiny" / "partial.parquet").exists()
    meta = json.loads((tmp_path / "tiny" / "eval.json").read_text())
    assert meta["prompt"] == "plain" and meta["granularities"] == [1, 4]
    fp = meta["fingerprint"]
    assert (fp["template"], fp["scoring_mode"], fp["dtype"], fp["adapter"]) == ("paper", "whole", "float32", None)
    # Same settings again: the finished result is returned without scoring anything.
    monkeypatch.setattr(scoring, "score_cells_detailed", lambda *a, **k: pytest.fail("scored again"))
    again = ev.evaluate(model, prompt="plain", data=data, split=sp, out_dir=tmp_path, granularities=(1, 4),
                        method_name="tiny", progress=False)
    assert np.allclose(np.stack(again.table["pred"]), np.stack(frame["pred"]))
    with pytest.raises(DataError, match=r"other settings \(template: 'paper' there, 'anthropological' now\)"):
        ev.evaluate(model, prompt="anthropological", data=data, split=sp, out_dir=tmp_path,
                    granularities=(1, 4), method_name="tiny", progress=False)
    # Another split (same cells: the validation list differs) or other data: refused, named.
    other = Split("question", 0, ["d/t/q1"], ["d/t/q2"], ["d/t/q3"], [HELD], ["x"], ["x"])
    with pytest.raises(DataError, match=r"\(split: '[0-9a-f]+' there, '[0-9a-f]+' now\); delete .* to evaluate again"):
        ev.evaluate(model, prompt="plain", data=data, split=other, out_dir=tmp_path, granularities=(1, 4),
                    method_name="tiny", progress=False)
    changed = tiny_survey()
    changed.cells[("x", "d/t/q1")][all_g4_personas("x")[0]] = np.array([9, 1])
    with pytest.raises(DataError, match=r"\(data: "):
        ev.evaluate(model, prompt="plain", data=changed, split=sp, out_dir=tmp_path, granularities=(1, 4),
                    method_name="tiny", progress=False)
    # An evaluation written before fingerprints cannot be vouched for.
    meta_path = tmp_path / "tiny" / "eval.json"
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "fingerprint"}))
    with pytest.raises(DataError, match="has no fingerprint"):
        ev.evaluate(model, prompt="plain", data=data, split=sp, out_dir=tmp_path, granularities=(1, 4),
                    method_name="tiny", progress=False)
    with pytest.raises(ValueError, match="reserved"):
        ev.evaluate(model, data=data, split=sp, out_dir=tmp_path, method_name="noise-ceiling")


def test_prediction_columns_agree_with_the_engine():
    from acealign import scoring
    from acealign.analyses.common import PREDICTION_COLUMNS

    assert scoring.PREDICTION_COLUMNS == PREDICTION_COLUMNS


def test_pairs_from_predictions_match_the_survey_pairs():
    """Fidelity's pairs (formed inside a predictions table) are exactly acealign.pairs' pairs, and
    its no-effect reference equals acealign.references' on the same questions (real data)."""

    from acealign.analyses import fidelity
    from acealign.references import pair_references
    from acealign.splits import make_question_split
    from acealign.survey import load_survey

    data = load_survey(package_data_dir())
    egypt = data.subset(countries=["egypt"])
    sp = make_question_split(egypt, eval_frac=0.2, seed=0)
    frame = ev.reference_predictions(egypt, ev.evaluation_cells(egypt, sp, (4,)), "country-marginal")
    got = fidelity.effect_fidelity(frame, n_boot=5).set_index(["method", "country"])
    ref = pair_references(egypt, question_keys=sp.eval_questions, n_boot=5)[-1]
    assert ref["attribute"] == "all"
    assert got.loc[("no-effect", "egypt"), "pairs"] == ref["pairs"] > 100
    assert got.loc[("no-effect", "egypt"), "cdf_distance"] == pytest.approx(ref["no_effect"])
    # The country marginal predicts no persona effect at all: it sits exactly at the no-effect line.
    assert got.loc[("country-marginal", "egypt"), "cdf_distance"] == pytest.approx(ref["no_effect"])
