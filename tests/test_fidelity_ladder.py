"""The effect-fidelity ladder: level assignment, the distances by hand, the in-sample evaluation
cells, and the report with and without the ``train_question`` column."""

import json
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from acealign import evaluate as ev
from acealign.analyses import fidelity, table1
from acealign.analyses.common import PREDICTION_COLUMNS, unique_pair_counts, with_scores
from acealign.personas import eligible_cells
from acealign.report import build_report
from acealign.splits import make_question_split
from acealign.survey import DataError, Persona, load_survey, package_data_dir

HELD = "Female_College_Urban_Married"


# -- level assignment ------------------------------------------------------------------------------


def test_pair_level_by_hand():
    lv = fidelity.pair_level
    # An evaluation question decides, whatever the ends are.
    assert lv(True, False, False, False, False) == "new_questions"
    assert lv(True, True, False, True, True) == "new_questions"
    # Training question: a held-out end makes it compositional, else in-sample.
    assert lv(False, True, False, True, True) == "new_combinations"
    assert lv(False, False, True, True, True) == "new_combinations"
    assert lv(False, False, False, True, True) == "in_sample"
    # Off the training questions (validation, or a table without the flag): no level.
    assert lv(False, False, False, False, False) is None
    assert lv(False, True, False, False, False) is None
    assert lv(False, False, False, True, False) is None


def test_pair_levels_on_a_hand_built_table():
    pairs = pd.DataFrame({
        "eval_question1": [True, False, False, False], "eval_question0": [True, False, False, False],
        "heldout_persona1": [False, True, False, False], "heldout_persona0": [False, False, False, False],
        "train_question1": [False, True, True, False], "train_question0": [False, True, True, False],
    })
    assert list(fidelity.pair_levels(pairs)) == ["new_questions", "new_combinations", "in_sample", None]


# -- the ladder on a hand-built predictions table ---------------------------------------------------

# One gender pair per question (context College, Urban, Married); survey cells as below.
C1, C0 = [6, 3, 1], [2, 3, 5]  # data effect (.4, 0, -.4): CDF (.4, .4, 0); no-effect d = .8/3
SAME = ([0.5, 0.3, 0.2], [0.3, 0.3, 0.4])  # model effect (.2, 0, -.2): d = (.2 + .2) / 3
FLIP = ([0.3, 0.3, 0.4], [0.5, 0.3, 0.2])  # model effect (-.2, 0, .2): d = (.6 + .6) / 3, flipped


def _rows(method, qid, preds, flags1, flags0):
    """The two G=4 ends (Female / Male, College, Urban, Married) of one gender pair."""
    rows = []
    for gender, pred, counts, flags in (("Female", preds[0], C1, flags1), ("Male", preds[1], C0, flags0)):
        p = Persona("x", gender, "College", "Urban", "Married")
        rows.append({
            "method": method, "country": "x", "question_key": f"d/t/{qid}", "dataset": "d", "topic": "t",
            "question_id": qid, "persona": p.key, "granularity": 4, **p.attributes, "n": sum(counts),
            "survey_counts": counts, "pred": pred,
            **dict(zip(("eval_question", "heldout_persona", "train_question"), flags, strict=True)),
        })
    return rows


TRAIN, HELDOUT_TRAIN, EVAL = (False, False, True), (False, True, True), (True, False, False)


def ladder_table(ace_preds=SAME) -> pd.DataFrame:
    """q1: in-sample; q2: a held-out end on a training question; q3, q4: evaluation questions.
    ``ace`` reproduces the effect's direction, ``anchor`` flips it; both on every pair."""
    rows = []
    for method, preds in (("ace", ace_preds), ("anchor", FLIP)):
        rows += _rows(method, "q1", preds, TRAIN, TRAIN)
        rows += _rows(method, "q2", preds, HELDOUT_TRAIN, TRAIN)
        rows += _rows(method, "q3", preds, EVAL, EVAL)
        rows += _rows(method, "q4", preds, EVAL, EVAL)
    return pd.DataFrame(rows)[PREDICTION_COLUMNS + ["eval_question", "heldout_persona", "train_question"]]


def test_fidelity_ladder_by_hand():
    df = ladder_table()
    pairs = fidelity.ladder_pairs(df)
    assert sorted(pairs.groupby("level")["question_key"].nunique().items()) == [
        ("in_sample", 1), ("new_combinations", 1), ("new_questions", 2)]
    lad = fidelity.fidelity_ladder(df, n_boot=50, n_ci=20).set_index(["level", "method"])
    assert list(lad.columns[:8]) == fidelity.LADDER_COLUMNS[2:]
    for level in fidelity.LEVELS:
        ace, anchor = lad.loc[(level, "ace")], lad.loc[(level, "anchor")]
        assert ace["d_cdf_x1000"] == pytest.approx(1000 * 0.4 / 3)
        assert anchor["d_cdf_x1000"] == pytest.approx(1000 * 1.2 / 3)
        assert (ace["flipped_share"], anchor["flipped_share"]) == (0.0, 1.0)
        assert ace["no_effect_x1000"] == pytest.approx(1000 * 0.8 / 3)
        # Every pair of the level has the same value: the CI over questions collapses onto it.
        assert ace["ci_low_x1000"] == pytest.approx(ace["d_cdf_x1000"]) == pytest.approx(ace["ci_high_x1000"])
        # The level's own noise floor: the references of its pairs alone.
        part = pairs[pairs["level"] == level]
        floor = fidelity.pair_references(unique_pair_counts(part), n_boot=50)["noise_floor"].mean()
        assert ace["noise_floor_x1000"] == pytest.approx(1000 * floor) and 0 < floor
    assert lad.loc[("new_questions", "ace"), ["n_pairs", "n_questions"]].tolist() == [2, 2]
    assert lad.loc[("in_sample", "ace"), ["n_pairs", "n_questions"]].tolist() == [1, 1]
    # ACE-Align minus anchor-only: (0.4 - 1.2) / 3 on every pair; two questions give four sign
    # patterns, two as extreme as the observed one (exact p = 1/2); one question: p = 1.
    tests = fidelity.ladder_tests(pairs, n_ci=20).set_index("level")
    assert tests["diff_x1000"].tolist() == pytest.approx([-800 / 3] * 3)
    assert tests.loc["new_questions", "p_value"] == 0.5 and tests.loc["in_sample", "p_value"] == 1.0
    assert tests.loc["new_questions", ["n_questions", "pairs"]].tolist() == [2, 2]


def test_trained_pairs_limit_the_in_sample_level_only():
    df = ladder_table()
    every = fidelity.ladder_pairs(df)
    in_sample = every[every["level"] == "in_sample"]
    key = in_sample[fidelity.PAIR_KEYS].iloc[[0]]
    other = key.assign(context="not,a,context")
    # The trained pair stays in-sample, for the method trained on it; a method without training
    # pairs of its own (here: anchor is absent from the dict... and so is every prompt method)
    # is measured on the union of the trained pairs.
    kept = fidelity.ladder_pairs(df, trained={"ace": key})
    assert (kept["level"] == "in_sample").sum() == (in_sample[fidelity.PAIR_KEYS] == key.iloc[0]).all(axis=1).sum()
    assert set(kept.loc[kept["level"] == "in_sample", "method"]) == {"ace", "anchor"}
    # Per method: anchor trained on other pairs keeps no in-sample pair, ace keeps its own.
    mixed = fidelity.ladder_pairs(df, trained={"ace": key, "anchor": other})
    assert set(mixed.loc[mixed["level"] == "in_sample", "method"]) == {"ace"}
    none = fidelity.ladder_pairs(df, trained={"ace": other, "anchor": other})
    assert "in_sample" not in set(none["level"])
    for frame in (kept, mixed, none):
        for level in ("new_combinations", "new_questions"):
            assert (frame["level"] == level).sum() == (every["level"] == level).sum()


def test_fidelity_ladder_levels_without_pairs_are_absent_and_seeds_collapse():
    df = ladder_table()
    old = df[df["eval_question"]].drop(columns=["train_question"])  # a table from before the flag
    lad = fidelity.fidelity_ladder(old, n_boot=10, n_ci=0)
    assert set(lad["level"]) == {"new_questions"} and lad["ci_low_x1000"].isna().all()
    assert fidelity.fidelity_ladder(df.iloc[:0], n_ci=0).empty
    # Two seeds of ace: the ladder shows the mean over seeds of each seed's d_CDF.
    seeds = pd.concat([df[df.method == "anchor"], ladder_table(SAME).query("method == 'ace'").assign(method="ace-s0"),
                       ladder_table(FLIP).query("method == 'ace'").assign(method="ace-s1")])
    lad = fidelity.fidelity_ladder(seeds, n_boot=10, n_ci=10).set_index(["level", "method"])
    row = lad.loc[("in_sample", "ace")]
    assert row["d_cdf_x1000"] == pytest.approx(1000 * (0.4 + 1.2) / 6) and row["seeds"] == 2
    tests = fidelity.ladder_tests(fidelity.ladder_pairs(seeds), n_ci=0).set_index("level")
    assert tests.loc["in_sample", "diff_x1000"] == pytest.approx(1000 * ((0.4 + 1.2) / 6 - 1.2 / 3))


# -- in-sample evaluation cells (real package data) ------------------------------------------------


@pytest.fixture(scope="module")
def egypt():
    data = load_survey(package_data_dir()).subset(countries=["egypt"])
    split = make_question_split(data, eval_frac=0.2, validation_frac=0.1, seed=0, heldout=[HELD])
    return data, split


def test_in_sample_cells_add_exactly_the_training_question_cells(egypt):
    data, sp = egypt
    base = ev.evaluation_cells(data, sp, (1, 4))
    more = ev.evaluation_cells(data, sp, (1, 4), in_sample=True)

    def key(c):
        return (c.cell.persona, c.cell.question_key)

    flags = {key(c): (c.eval_question, c.heldout_persona, c.train_question) for c in more}
    assert all(flags[key(c)] == (c.eval_question, c.heldout_persona, c.train_question) for c in base)
    added = [c for c in more if key(c) not in {key(b) for b in base}]
    expected = {(c.persona, c.question_key)
                for c in eligible_cells(data, (1, 4), ev.DEFAULT_MIN_N, ["egypt"], sp.train_questions).cells}
    assert {key(c) for c in added} == expected - {key(b) for b in base} and len(added) > 100
    # ... and none is a held-out combination: the compositional analysis keeps its rows.
    assert all(c.train_question and not c.eval_question and not c.heldout_persona for c in added)
    assert {c.cell.question_key for c in added} <= set(sp.train_questions)
    # train_question marks exactly the cells on training questions, held-out ones included.
    assert {k for k, f in flags.items() if f[2]} == {k for k in flags if k[1] in set(sp.train_questions)}
    assert not any(f[2] for k, f in flags.items() if k[1] in set(sp.validation_questions))
    # Table 1 (S) is unchanged: it uses the evaluation-question cells only.
    s = [table1.average_scores(ev.reference_predictions(data, cells, "country-marginal"), n_boot=0)
         for cells in (base, more)]
    pd.testing.assert_frame_equal(s[0], s[1])


def test_country_marginal_sits_on_the_no_effect_line_at_every_level(egypt):
    data, sp = egypt
    frame = ev.reference_predictions(data, ev.evaluation_cells(data, sp, (4,), in_sample=True), "country-marginal")
    lad = fidelity.fidelity_ladder(frame, n_boot=5, n_ci=0)
    assert list(lad["level"]) == list(fidelity.LEVELS)
    assert np.allclose(lad["d_cdf_x1000"], lad["no_effect_x1000"])  # it predicts no persona effect
    assert (lad["noise_floor_x1000"] < lad["no_effect_x1000"]).all()


def test_in_sample_joins_fingerprints_only_when_set(egypt, tmp_path, monkeypatch):
    data, sp = egypt
    small = data.subset(question_keys=sp.eval_questions[:2] + sp.train_questions[:3])
    res = ev.write_references(small, sp, tmp_path / "refs", (4,), in_sample=True)
    meta = json.loads((res[0].directory / "eval.json").read_text())
    assert meta["fingerprint"]["in_sample"] is True and meta["train_question_cells"] > 0
    res = ev.write_references(small, sp, tmp_path / "plain", (4,))
    assert "in_sample" not in json.loads((res[0].directory / "eval.json").read_text())["fingerprint"]
    # evaluate without a model: a stand-in scorer predicting uniform distributions.
    from acealign import scoring

    monkeypatch.setattr(ev, "_dtype_of", lambda *a, **k: "float32")
    monkeypatch.setattr(scoring, "OptionScorer", lambda *a, **k: SimpleNamespace(name="hf"))
    monkeypatch.setattr(scoring, "score_cells_detailed", lambda *a, **k: [
        SimpleNamespace(dist=np.full(len(c.counts), 1 / len(c.counts)), info=None) for c in a[3]])
    model = (object(), object())
    kw = dict(data=small, split=sp, out_dir=tmp_path / "eval", granularities=(4,), progress=False)
    plain = ev.evaluate(model, prompt="plain", method_name="a", **kw)
    assert "in_sample" not in json.loads((plain.directory / "eval.json").read_text())["fingerprint"]
    assert not plain.table["train_question"].any() or plain.table["heldout_persona"][plain.table["train_question"]].all()
    ins = ev.evaluate(model, prompt="plain", method_name="b", in_sample=True, **kw)
    assert json.loads((ins.directory / "eval.json").read_text())["fingerprint"]["in_sample"] is True
    assert ins.table["train_question"].sum() > plain.table["train_question"].sum()
    assert ins.table[ins.table["eval_question"]]["persona"].tolist() == plain.table[plain.table["eval_question"]]["persona"].tolist()
    with pytest.raises(DataError, match=r"in_sample: \(missing\) there, True now"):
        ev.evaluate(model, prompt="plain", method_name="a", in_sample=True, **kw)


# -- the report -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ladder_run(tmp_path_factory, egypt):
    """Egypt, G=1 and G=4 cells with the in-sample cells; references, `anchor` (40% uniform, 60%
    the survey cell) and `ace` (20% uniform, 80% the survey cell)."""
    data, sp = egypt
    run = tmp_path_factory.mktemp("ladder")
    ev.write_references(data, sp, run / "eval", (1, 4), in_sample=True)
    marg = pd.read_parquet(run / "eval" / "country-marginal" / "predictions.parquet")
    for method, w in (("anchor", 0.4), ("ace", 0.2)):
        preds = [list(w / len(t) + (1 - w) * np.asarray(t, float) / np.sum(t)) for t in marg["survey_counts"]]
        ev.write_predictions(marg.assign(method=method, pred=preds), run / "eval" / method)
    return run


def test_report_with_the_ladder(ladder_run):
    res = build_report(ladder_run, n_boot=20, n_perm=50)
    out = ladder_run / "report"
    lad = pd.read_csv(out / "tables" / "fidelity_ladder.csv")
    assert set(lad["level"]) == set(fidelity.LEVELS) and (out / "tables" / "fidelity_ladder.json").is_file()
    assert res.figures["fidelity_ladder"] is not None and "fidelity_ladder" not in res.missing_figures
    md = (out / "report.md").read_text()
    assert "## Effect fidelity at three levels" in md and "figures/fidelity_ladder.png" in md
    # One generated sentence per level: the cell-informed ace is closest at every level.
    assert md.count("lowest mean d_CDF ×1000 ACE-Align") == 3 and md.count("ACE-Align beats Anchor-only") == 3
    # Table 1 counts the evaluation-question cells only.
    scored = with_scores(pd.read_parquet(ladder_run / "eval" / "ace" / "predictions.parquet"))
    t1 = pd.read_csv(out / "tables" / "table1.csv")
    cells = scored[scored.eval_question & (scored.granularity == 1)]
    assert t1[(t1.method == "ace") & (t1.granularity == 1)]["egypt"].item() == pytest.approx(100 * cells["score"].mean())


def test_report_without_the_train_question_column(ladder_run, tmp_path):
    # Tables written before the flag: one method without it (mixed), then none with it.
    run = tmp_path / "old"
    shutil.copytree(ladder_run / "eval", run / "eval")
    for i, method in enumerate(("ace", "anchor", "country-marginal", "noise-ceiling")):
        path = run / "eval" / method / "predictions.parquet"
        df = pd.read_parquet(path)
        df[~df["train_question"] | df["heldout_persona"]].drop(columns="train_question").to_parquet(path)
        if i == 0:
            res = build_report(run, n_boot=0, n_perm=10)
            assert "fidelity_ladder" not in res.missing_figures
    res = build_report(run, n_boot=0, n_perm=10)
    lad = pd.read_csv(run / "report" / "tables" / "fidelity_ladder.csv")
    assert set(lad["level"]) == {"new_questions"} and res.figures["fidelity_ladder"] is not None
    # No G=4 pair at all: the report says so instead of drawing an empty ladder.
    for method in ("ace", "anchor", "country-marginal", "noise-ceiling"):
        path = run / "eval" / method / "predictions.parquet"
        df = pd.read_parquet(path)
        df[df["granularity"] == 1].to_parquet(path)
    res = build_report(run, n_boot=0, n_perm=10)
    assert "fidelity_ladder" in res.missing_figures
    md = (run / "report" / "report.md").read_text()
    assert "no data — no counterfactual pair at any level" in md
    assert "No counterfactual pair at any level" in md


def test_cli_eval_references_in_sample(tmp_path, capsys):
    import pandas as pd

    from acealign.cli import main

    split = tmp_path / "split.json"
    assert main(["data", "split", "--kind", "question", "--countries", "egypt", "--out", str(split)]) == 0
    assert main(["eval", "--split", str(split), "--references", "--granularity", "4", "--in-sample",
                 "--out", str(tmp_path / "eval")]) == 0
    capsys.readouterr()
    df = pd.read_parquet(tmp_path / "eval" / "country-marginal" / "predictions.parquet")
    assert df["train_question"].any() and df["eval_question"].any()
    assert not (df["train_question"] & df["eval_question"]).any()


def test_in_sample_granularities_limit_only_the_added_cells(egypt, tmp_path):
    data, sp = egypt
    all_g = ev.evaluation_cells(data, sp, (1, 4), in_sample=True)
    g4 = ev.evaluation_cells(data, sp, (1, 4), in_sample=True, in_sample_granularities=(4,))
    base = ev.evaluation_cells(data, sp, (1, 4))

    def keys(cells):
        return [(c.cell.persona, c.cell.question_key, c.eval_question, c.heldout_persona,
                 c.train_question) for c in cells]

    added = {k for k in keys(g4)} - set(keys(base))
    assert added and {k[0].granularity for k in added} == {4}
    assert set(keys(base)) <= set(keys(g4))  # the evaluation cells are unchanged
    assert [k for k in keys(all_g) if k[4] and k[0].granularity == 4] == [k for k in keys(g4) if k[4]]
    # The ladder's two training-question levels need only G=4 pairs: same levels either way.
    lads = [fidelity.fidelity_ladder(ev.reference_predictions(data, cells, "country-marginal"), n_boot=5, n_ci=0)
            for cells in (all_g, g4)]
    pd.testing.assert_frame_equal(lads[0], lads[1])
    # The references record the G in their fingerprint only when they differ from the evaluation's.
    def fingerprint(gs, in_gs, name):
        res = ev.write_references(data, sp, tmp_path / name, gs, in_sample=True, in_sample_granularities=in_gs)
        return json.loads((res[0].directory / "eval.json").read_text())["fingerprint"]

    assert fingerprint((1, 4), (4,), "a")["in_sample_granularities"] == [4]
    assert "in_sample_granularities" not in fingerprint((4,), (4,), "b")
    assert fingerprint((4,), (4,), "b") == fingerprint((4,), None, "c")


def test_trained_pairs_are_read_per_method_and_bad_files_are_named(tmp_path):
    from acealign.report.tables import trained_pairs
    from acealign.survey import DataError

    assert trained_pairs(tmp_path, ["ace"]) is None
    (tmp_path / "train" / "ace").mkdir(parents=True)
    (tmp_path / "train" / "ace" / "pairs.csv").write_text(
        'country,question_key,attribute,context\nNA,"issp/a, b",gender,"College,Urban,Married"\n')
    got = trained_pairs(tmp_path, ["ace", "base"])
    assert list(got) == ["ace"]
    assert got["ace"].iloc[0].tolist() == ["NA", "issp/a, b", "gender", "College,Urban,Married"]
    (tmp_path / "train" / "anchor").mkdir()
    (tmp_path / "train" / "anchor" / "pairs.csv").write_text("country,question\nx,y\n")
    with pytest.raises(DataError, match="anchor.pairs.csv.*expected the columns"):
        trained_pairs(tmp_path, ["ace", "anchor"])
