"""Analyses on small synthetic predictions with hand-checked results, and Table 1 against the paper."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from acealign.analyses import (
    attributes,
    common,
    compositional,
    fairness,
    fidelity,
    heterogeneity,
    table1,
    taxonomy,
    tiers,
)
from acealign.survey import ATTRIBUTES, DataError, Persona

# the paper's Table 1 (copied from ../shared/docs/paper_table1.csv)
PAPER_TABLE1 = Path(__file__).resolve().parent / "data" / "paper_table1.csv"
PAPER_METHODS = {
    "Base model": "base",
    "AdPrompt": "anthropological",
    "Anchor-only": "anchor",
    "Causal-only": "causal",
    "ACE-Align": "ace",
}


def row(method, persona, qid, counts, pred, topic="t1", eval_question=True, heldout=False):
    p = Persona.from_key(persona)
    return {
        "method": method,
        "country": p.country,
        "question_key": f"d/{topic}/{qid}",
        "dataset": "d",
        "topic": topic,
        "question_id": qid,
        "persona": p.key,
        "granularity": p.granularity,
        **{a: getattr(p, a) for a in ATTRIBUTES},
        "n": int(sum(counts)),
        "survey_counts": list(counts),
        "pred": list(pred),
        "eval_question": eval_question,
        "heldout_persona": heldout,
    }


@pytest.fixture
def two_countries():
    """Two-option questions: the cell score is 1 - |p0 - q0|.

    egypt, gender=Female: q1 survey (0.8, 0.2), q2 (0.5, 0.5); chile, gender=Female: q1 (1, 0).
    base: egypt q1 pred (0.5,0.5) -> 0.7, q2 (0.5,0.5) -> 1.0; chile (0.6,0.4) -> 0.6.
    ace:  egypt q1 (0.8,0.2) -> 1.0,     q2 (0.7,0.3) -> 0.8; chile (0.9,0.1) -> 0.9.
    """
    e, c = "egypt|gender=Female", "chile|gender=Female"
    rows = [
        row("base", e, "q1", [8, 2], [0.5, 0.5]),
        row("base", e, "q2", [5, 5], [0.5, 0.5]),
        row("base", c, "q1", [10, 0], [0.6, 0.4]),
        row("ace", e, "q1", [8, 2], [0.8, 0.2]),
        row("ace", e, "q2", [5, 5], [0.7, 0.3]),
        row("ace", c, "q1", [10, 0], [0.9, 0.1]),
    ]
    return pd.DataFrame(rows)


def test_country_scores_and_average(two_countries):
    s = table1.country_scores(two_countries, n_boot=200)
    got = {(r.method, r.country): r.score for r in s.itertuples()}
    # egypt base (0.7 + 1.0)/2 = 85; ace (1.0 + 0.8)/2 = 90; chile base 60, ace 90.
    assert got == pytest.approx({("base", "egypt"): 85.0, ("base", "chile"): 60.0,
                                 ("ace", "egypt"): 90.0, ("ace", "chile"): 90.0})
    chile = s[(s.country == "chile") & (s.method == "base")].iloc[0]
    assert (chile.ci_low, chile.ci_high) == pytest.approx((60.0, 60.0))  # one question: no spread
    egypt = s[(s.country == "egypt") & (s.method == "base")].iloc[0]
    assert 70.0 <= egypt.ci_low <= egypt.ci_high <= 100.0  # resamples: 70, 85 or 100
    wide = table1.table1_wide(s)
    # Avg base (85 + 60)/2 = 72.5; ace (90 + 90)/2 = 90; diff 17.5.
    assert list(wide["method"]) == ["base", "ace"]
    assert wide["Avg"].tolist() == pytest.approx([72.5, 90.0])
    assert wide["diff"].tolist() == pytest.approx([0.0, 17.5])
    avg = table1.average_scores(two_countries, n_boot=0)
    assert avg.set_index("method")["avg"].to_dict() == pytest.approx({"base": 72.5, "ace": 90.0})
    # d/t1/q1 is asked in egypt and chile: 2 independent questions behind the average, not 3.
    assert avg["n_questions"].tolist() == [2, 2]
    assert s.set_index(["method", "country"]).loc[("base", "egypt"), "n_questions"] == 2


def test_paired_sign_flip_test_flips_whole_questions(two_countries):
    t = table1.paired_tests(two_countries, n_perm=20000)
    assert len(t) == 1 and t.iloc[0].baseline == "base"
    # Per-question differences ace - base: egypt q1 +0.3, q2 -0.2; chile q1 +0.3.
    # T = mean over countries of country mean diff = ((0.3 - 0.2)/2 + 0.3)/2 = 0.175 -> 17.5.
    assert t.iloc[0]["diff"] == pytest.approx(17.5)
    # q1 is one question asked in both countries: its egypt and chile differences flip together.
    # v_q1 = (0.3/2 + 0.3/1)/2 = 0.225, v_q2 = (-0.2/2)/2 = -0.05; the 4 patterns give
    # T* = +-0.175, +-0.275, all >= 0.175 in size: p = 4/4 (exact enumeration).
    assert t.iloc[0].p_value == 1.0 and t.iloc[0].n_questions == 2 and t.iloc[0].cells == 3
    # Had chile asked a different question (3 independent units), half of the 8 patterns
    # ((+,-,+), (+,+,+), (-,-,-), (-,+,-)) reach |T*| >= 0.175: p = 0.5.
    other = two_countries.assign(question_key=np.where(two_countries.country == "chile", "d/t1/q9", two_countries.question_key))
    t2 = table1.paired_tests(other, n_perm=20000)
    assert t2.iloc[0].p_value == 0.5 and t2.iloc[0].n_questions == 3


def test_paired_tests_holm_over_the_table(two_countries):
    # A second baseline, "worse": every prediction the opposite of the survey's first option.
    worse = two_countries[two_countries.method == "base"].assign(method="worse", pred=[[0.0, 1.0]] * 3)
    t = table1.paired_tests(pd.concat([two_countries, worse]), n_perm=20000).set_index("baseline")
    # ace - worse: egypt q1 1.0 - 0.2 = +0.8, q2 0.8 - 0.5 = +0.3; chile q1 0.9 - 0 = +0.9.
    # v_q1 = (0.8/2 + 0.9)/2 = 0.65, v_q2 = (0.3/2)/2 = 0.075: T = 0.725, only the all-same
    # patterns reach it: p = 2/4 = 0.5. Holm over {1.0 (base), 0.5}: 0.5 * 2 = 1.0, then 1.0.
    assert t.loc["worse", "p_value"] == 0.5 and t.loc["base", "p_value"] == 1.0
    assert t["p_holm"].tolist() == [1.0, 1.0]


def test_with_scores_keeps_given_score_and_validates(two_countries):
    df = two_countries.assign(score=[np.nan, 0.42, np.nan, np.nan, np.nan, np.nan])
    s = common.with_scores(df)
    assert s["score"].tolist() == pytest.approx([0.7, 0.42, 0.6, 1.0, 0.8, 0.9])
    assert s["modal_hit"].tolist() == [True, True, True, True, True, True]
    common.validate_predictions(two_countries)
    with pytest.raises(DataError, match="lacks column"):
        common.validate_predictions(two_countries.drop(columns="pred"), "x.parquet")
    with pytest.raises(DataError, match="duplicate row"):
        common.validate_predictions(pd.concat([two_countries, two_countries.iloc[:1]]), "x.parquet")


def test_table1_differences_match_paper():
    raw = pd.read_csv(PAPER_TABLE1).rename(columns={"G": "granularity"})
    raw["method"] = raw["method"].map(PAPER_METHODS)
    diffs = table1.add_differences(raw).set_index(["granularity", "method"])["diff"].round(2)
    # The paper's bracketed differences (Table 1, Avg column).
    assert diffs.loc[(1, "ace")] == 4.30 and diffs.loc[(2, "ace")] == 4.12
    assert diffs.loc[(3, "ace")] == 4.22 and diffs.loc[(4, "ace")] == 4.38
    assert diffs.loc[(1, "anthropological")] == 0.26 and diffs.loc[(4, "anthropological")] == -0.02
    assert diffs.loc[(2, "anchor")] == -1.31 and diffs.loc[(3, "causal")] == 1.48


def test_paper_avg_column_is_not_the_mean_of_its_14_countries():
    # Recorded finding: the paper's Avg differs from the plain mean of its 14 country columns
    # (by up to 0.45 points); 15 x Avg - sum(14) is 75-81, consistent with a 15th country
    # (Venezuela is in the paper's data tables) being averaged in. Our Avg is the plain mean.
    raw = pd.read_csv(PAPER_TABLE1)
    long = table1.paper_table1(PAPER_TABLE1)
    long["method"] = long["method"].map(PAPER_METHODS)
    ours = table1.table1_wide(long).set_index(["granularity", "method"])["Avg"]
    paper = raw.assign(method=raw["method"].map(PAPER_METHODS)).set_index(["G", "method"])["Avg"]
    delta = (ours.sort_index().to_numpy() - paper.sort_index().to_numpy())
    assert ours.loc[(1, "base")] == pytest.approx(1137.52 / 14)  # sum of the 14 base G=1 scores
    assert 0.4 < np.abs(delta).max() < 0.5


def test_tiers_reproduce_paper_equity_figures():
    long = table1.paper_table1(PAPER_TABLE1)
    long["method"] = long["method"].map(PAPER_METHODS)
    t = tiers.load_tiers()
    assert t.code("united_states") == "USA" and t.tier("egypt") == 3 and t.tier("DEU") == 1
    summary = tiers.tier_summary(long, t).set_index("method")
    assert summary.loc["base", "tier_gap"] == pytest.approx(9.81, abs=0.005)
    assert summary.loc["ace", "gain_tier3"] == pytest.approx(8.48, abs=0.005)
    assert summary.loc["ace", "gain_tier1"] == pytest.approx(2.99, abs=0.005)
    assert summary.loc["ace", "tier_gap"] == pytest.approx(4.31, abs=0.005)  # text says 4.92
    gaps = tiers.tier_gaps(long, t).set_index(["method", "granularity"])
    # "a substantial alignment gap of 12.43 points between NZL and EGY at G=1"
    assert gaps.loc[("base", 1), "best_minus_worst"] == pytest.approx(12.43)
    assert (gaps.loc[("base", 1), "best"], gaps.loc[("base", 1), "worst"]) == ("NZL", "EGY")
    per_tier = tiers.tier_scores(long, t)
    assert len(per_tier) == 5 * 4 * 3


def test_load_tiers_rejects_bad_files(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text('[[tier]]\nid = 1\ncountries = ["USA"]\n[[tier]]\nid = 2\ncountries = ["USA"]\n')
    with pytest.raises(DataError, match="tier 1 and tier 2"):
        tiers.load_tiers(bad)
    bad.write_text("[[tier]\n")
    with pytest.raises(DataError, match="invalid TOML"):
        tiers.load_tiers(bad)


X = "education=College,residence=Urban,marital_status=Married"


@pytest.fixture
def pair_preds():
    """One gender pair in egypt: survey s1 (Female) (0.6, 0.4), s0 (Male) (0.4, 0.6).

    Data effect (0.2, -0.2), ΔCDF_data = (0.2, 0); expected-position shift dd = 0.4 - 0.6 = -0.2.
    """
    f, m = f"egypt|gender=Female,{X}", f"egypt|gender=Male,{X}"
    preds = {
        "ace": ([0.6, 0.4], [0.4, 0.6]),  # same effect: d_CDF 0, aligned
        "base": ([0.5, 0.5], [0.5, 0.5]),  # no effect: d_CDF (0.2 + 0)/2 = 0.1, erasure
        "flip": ([0.4, 0.6], [0.6, 0.4]),  # ΔCDF (-0.2, 0): d_CDF 0.4/2 = 0.2, dm +0.2, flipped
        "stereo": ([0.9, 0.1], [0.1, 0.9]),  # dm 0.1 - 0.9 = -0.8: same sign, |dm| > |dd|
    }
    rows = []
    for method, (p1, p0) in preds.items():
        rows.append(row(method, f, "q1", [6, 4], p1))
        rows.append(row(method, m, "q1", [4, 6], p0))
    return pd.DataFrame(rows)


def test_effect_fidelity(pair_preds):
    t = fidelity.effect_fidelity(pair_preds, n_boot=50)
    eg = t[t.country == "egypt"].set_index("method")
    assert eg.loc["ace", "cdf_distance"] == pytest.approx(0.0)
    assert eg.loc["base", "cdf_distance"] == pytest.approx(0.1)
    assert eg.loc["flip", "cdf_distance"] == pytest.approx(0.2)
    # stereo: effect (0.8, -0.8), ΔCDF (0.8, 0); minus data (0.2, 0): 0.6/2 = 0.3.
    assert eg.loc["stereo", "cdf_distance"] == pytest.approx(0.3)
    assert eg.loc["flip", "flipped_share"] == 1.0 and eg.loc["ace", "flipped_share"] == 0.0
    assert eg.loc["no-effect", "cdf_distance"] == pytest.approx(0.1)  # = the base model here
    assert 0 < eg.loc["noise-floor", "cdf_distance"] < 0.5
    assert set(t.country) == {"egypt", "Avg"} and (eg["pairs"] == 1).all()
    # One question: every resample draws it, so each CI is the point itself.
    assert (eg["n_questions"] == 1).all()
    assert np.allclose(eg["ci_low"], eg["cdf_distance"]) and np.allclose(eg["ci_high"], eg["cdf_distance"])
    shown = fidelity.per_mille(t).set_index(["method", "country"])
    assert shown.loc[("flip", "egypt"), "d_cdf_x1000"] == pytest.approx(200.0)
    assert "cdf_distance" not in shown.columns and "ci_high_x1000" in shown.columns


def test_effect_fidelity_ci_resamples_questions(pair_preds):
    # "flip" again on a second question q2 where it predicts the survey effect exactly: d_CDF 0.2
    # on q1, 0 on q2. Resamples of the 2 questions give 0.2, 0.1 or 0 (p = 1/4, 1/2, 1/4):
    # the 95% percentile interval is [0, 0.2] around the estimate 0.1.
    flip = pair_preds[pair_preds.method == "flip"]
    q2 = flip.assign(question_id="q2", question_key="d/t1/q2", pred=[[0.6, 0.4], [0.4, 0.6]])
    t = fidelity.effect_fidelity(pd.concat([flip, q2]), n_boot=20, n_ci=2000)
    r = t[(t.method == "flip") & (t.country == "Avg")].iloc[0]
    assert (r.cdf_distance, r.ci_low, r.ci_high, r.n_questions) == pytest.approx((0.1, 0.0, 0.2, 2))


def test_taxonomy(pair_preds):
    eff = taxonomy.taxonomy(pair_preds).set_index("method")
    assert eff.loc["ace", "dd"] == pytest.approx(-0.2)
    assert eff.loc["stereo", "dm"] == pytest.approx(-0.8)  # E1 = 0.1, E0 = 0.9 (position / (N-1))
    assert eff["category"].to_dict() == {
        "ace": "aligned", "base": "erasure", "flip": "flipped", "stereo": "stereotyping"
    }
    shares = taxonomy.taxonomy_shares(eff.reset_index())
    all_rows = shares[shares.country == "All"].set_index("method")
    assert all_rows.loc["flip", "flipped"] == 1.0 and all_rows.loc["flip", "aligned"] == 0.0
    assert np.allclose(shares[["aligned", "flipped", "stereotyping", "erasure"]].sum(axis=1), 1.0)


def test_taxonomy_averages_pairs_of_a_topic():
    # Two gender pairs on one topic: data shifts -0.2 and 0.0 (mean -0.1); model shifts -0.1, -0.1.
    rows = []
    for marital, c1, c0 in (("Married", [6, 4], [4, 6]), ("Not_Married", [5, 5], [5, 5])):
        x = f"education=College,residence=Urban,marital_status={marital}"
        rows.append(row("m", f"egypt|gender=Female,{x}", "q1", c1, [0.55, 0.45]))
        rows.append(row("m", f"egypt|gender=Male,{x}", "q1", c0, [0.45, 0.55]))
    eff = taxonomy.taxonomy(pd.DataFrame(rows))
    g = eff[eff.attribute == "gender"].iloc[0]
    assert (g.pairs, g.dm, g.dd) == (2, pytest.approx(-0.1), pytest.approx(-0.1))
    assert g.category == "aligned"


def test_heterogeneity():
    # Gender pairs of one question: context Married: (0.6,0.4) vs (0.4,0.6), effect (0.2,-0.2);
    # context Not_Married: (0.5,0.5) vs (0.4,0.6), effect (0.1,-0.1). Mean effect (0.15,-0.15),
    # ΔCDF (0.15, 0): magnitude (0.15 + 0)/2 = 0.075.
    # Marital pairs: Female: s1 Not_Married (0.5,0.5) - s0 Married (0.6,0.4) = (-0.1, 0.1);
    # Male: (0.4,0.6) - (0.4,0.6) = 0. Mean (-0.05, 0.05): magnitude 0.05/2 = 0.025.
    cells = {
        ("Female", "Married"): [6, 4], ("Male", "Married"): [4, 6],
        ("Female", "Not_Married"): [5, 5], ("Male", "Not_Married"): [4, 6],
    }
    rows = [
        row(meth, f"egypt|gender={g},education=College,residence=Urban,marital_status={m}", "q1", c, [0.5, 0.5])
        for (g, m), c in cells.items()
        for meth in ("base", "ace")  # duplicated per method: counted once
    ]
    h = heterogeneity.heterogeneity(pd.DataFrame(rows)).set_index("attribute")
    assert h.loc["gender", "magnitude"] == pytest.approx(0.075)
    assert h.loc["marital_status", "magnitude"] == pytest.approx(0.025)
    assert h.loc["gender", "pairs"] == 2 and h.loc["gender", "questions"] == 1
    assert set(h.index) == {"gender", "marital_status"}
    dom = heterogeneity.dominant_attributes(h.reset_index())
    assert dom.iloc[0].attribute == "gender"


def test_heldout_scores():
    combo = "egypt|gender=Female,education=College,residence=Urban,marital_status=Married"
    combo_c = combo.replace("egypt", "chile")
    rows = [
        # egypt topic t1: base 1 - |0.5-0.8| = 0.7, ace 1 - |0.7-0.8| = 0.9 (a training question);
        row("base", combo, "q1", [8, 2], [0.5, 0.5], eval_question=False, heldout=True),
        row("ace", combo, "q1", [8, 2], [0.7, 0.3], eval_question=False, heldout=True),
        # chile topic t1: base 0.5, ace 1.0.
        row("base", combo_c, "q1", [10, 0], [0.5, 0.5], eval_question=False, heldout=True),
        row("ace", combo_c, "q1", [10, 0], [1.0, 0.0], eval_question=False, heldout=True),
        # not held out: ignored
        row("ace", "egypt|gender=Female", "q1", [8, 2], [0.0, 1.0]),
    ]
    t = compositional.heldout_scores(pd.DataFrame(rows)).set_index("method")
    # base (70 + 50)/2 = 60; ace (90 + 100)/2 = 95.
    assert t.loc["base", "score"] == pytest.approx(60.0) and t.loc["ace", "score"] == pytest.approx(95.0)
    assert t.loc["ace", "combo"] == "Female_College_Urban_Married" and t.loc["ace", "questions"] == "train"
    s = compositional.heldout_summary(t.reset_index()).set_index("method")
    assert s.loc["ace", "diff"] == pytest.approx(35.0)
    assert compositional.heldout_scores(pd.DataFrame(rows[-1:])).empty


def test_attribute_value_changes_and_topic_scores(two_countries):
    ch = attributes.attribute_value_changes(two_countries)
    got = ch.set_index("country")["change"].to_dict()
    assert got == pytest.approx({"egypt": 5.0, "chile": 30.0})  # 90 - 85, 90 - 60
    assert set(ch["value"]) == {"Female"}
    ts = attributes.topic_scores(two_countries)
    assert ts[(ts.method == "ace") & (ts.country == "egypt")]["score"].item() == pytest.approx(90.0)


def test_fairness():
    # egypt, base: gender=Female cells 0.7 and 1.0 (mean 0.85), gender=Male one cell 0.6.
    rows = [
        row("base", "egypt|gender=Female", "q1", [8, 2], [0.5, 0.5]),  # 0.7, mode 0 vs pred tie->0: hit
        row("base", "egypt|gender=Female", "q2", [5, 5], [0.5, 0.5]),  # 1.0, tie in survey: hit
        row("base", "egypt|gender=Male", "q1", [10, 0], [0.4, 0.6]),  # 0.4, predicted mode 1: miss
    ]
    t = fairness.persona_fairness(pd.DataFrame(rows))
    r = t[t.granularity == "1"].iloc[0]
    assert r.personas == 2 and r.modal_accuracy == pytest.approx(2 / 3)
    # per-persona means 85 and 40: worst 40, best 85, gap 45, population std 22.5.
    assert (r.worst, r.best, r.gap, r["std"]) == pytest.approx((40.0, 85.0, 45.0, 22.5))
    assert r.worst_persona == "egypt|gender=Male" and r.best_persona == "egypt|gender=Female"
    bw = fairness.best_worst_personas(pd.DataFrame(rows), k=1)
    assert bw[bw.end == "best"].persona.item() == "egypt|gender=Female"
    after = pd.DataFrame(rows).assign(method="ace", pred=[[0.8, 0.2], [0.5, 0.5], [0.9, 0.1]])
    ch = fairness.fairness_changes(fairness.persona_fairness(pd.concat([pd.DataFrame(rows), after])))
    c = ch[ch.granularity == "1"].iloc[0]
    # ace persona means (1.0 + 1.0)/2 = 100 and 90: worst 90 (+50), gap 10 (-35), accuracy 1 (+1/3).
    assert (c.d_worst, c.d_gap, c.d_modal_accuracy) == pytest.approx((50.0, -35.0, 1 / 3))


def test_seed_runs_are_scored_one_by_one_never_averaged():
    """Two seeds of ace on one gender pair; the mean of the per-seed metrics differs from the
    metric of the seed-averaged prediction (an ensemble) for S, fidelity, taxonomy and modal
    accuracy. Survey: Female (0.6, 0.4), Male (0.4, 0.6); data effect (0.2, -0.2), dd = -0.2."""
    from acealign.analyses import seeds
    from acealign.report.tables import analyse

    f, m = f"egypt|gender=Female,{X}", f"egypt|gender=Male,{X}"
    preds = {
        "base": ([0.5, 0.5], [0.5, 0.5]),
        # s0: effect (0.4, -0.4): d_CDF |0.4 - 0.2|/2 = 0.1; dm = 0.2 - 0.6 = -0.4, stereotyping;
        # both modes right; cell scores 1 - 0.2 = 0.8 and 1.0.
        "ace-s0": ([0.8, 0.2], [0.4, 0.6]),
        # s1: effect (-0.2, 0.2): d_CDF |-0.2 - 0.2|/2 = 0.2; dm = +0.2, flipped; both modes
        # wrong (argmax 1 vs survey mode 0; tie -> 0 vs survey mode 1); scores 0.7 and 0.9.
        "ace-s1": ([0.3, 0.7], [0.5, 0.5]),
    }
    df = pd.DataFrame([r for meth, (p1, p0) in preds.items()
                       for r in (row(meth, f, "q1", [6, 4], p1), row(meth, m, "q1", [4, 6], p0))])
    assert seeds.seed_groups(df["method"].unique()) == {"ace": ["ace-s0", "ace-s1"]}
    t = analyse(df, n_boot=0, n_perm=100)
    summary = t["summary"].set_index("method")
    ace = summary.loc["ace"]
    # Per seed, then mean. The averaged prediction ((0.55, 0.45), (0.45, 0.55)) would give
    # S 95, d_CDF |0.1 - 0.2|/2 = 0.05 (x1000: 50), erasure (no flip) and modal accuracy 1.
    assert ace["S"] == pytest.approx(85.0)  # (90 + 80)/2
    assert ace["d_cdf_x1000"] == pytest.approx(150.0)  # (100 + 200)/2
    assert ace["flipped_share"] == pytest.approx(0.5)  # (0 + 1)/2
    assert ace["modal_accuracy"] == pytest.approx(0.5)  # (1 + 0)/2
    assert ace["worst_persona"] == pytest.approx(75.0)  # (80 + 70)/2
    assert ace["seeds"] == 2 and summary.loc["base", "seeds"] == 1
    fid = t["fidelity"].set_index(["method", "country"])
    assert fid.loc[("ace", "egypt"), "d_cdf_x1000_sd"] == pytest.approx(np.std([100, 200], ddof=1))
    shares = t["taxonomy_shares"].set_index(["method", "country"])
    assert shares.loc[("ace", "All"), ["flipped", "stereotyping", "erasure"]].tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert t["taxonomy_effects"].query("method == 'ace'")["seed"].tolist() == [0, 1]
    spread = t["seed_spread"].set_index("metric")
    assert spread.loc["S", "per_seed"] == "90 / 80" and spread.loc["S", "seed_std"] == pytest.approx(np.std([90, 80], ddof=1))
    assert spread.loc["modal_accuracy", "per_seed"] == "1 / 0"
    assert spread.loc["d_cdf_x1000", "seed_mean"] == pytest.approx(150.0)
    # Table 1 of the seeded method is the mean of the seeds' Table 1 (cell scores are per seed).
    assert t["table1"].set_index("method").loc["ace", "egypt"] == pytest.approx(85.0)
    # A name whose base is itself a method stays as it is.
    assert seeds.seed_groups(["ace", "ace-s1"]) == {}


def test_collapse_seeds_mean_spread_and_labels():
    from acealign.analyses import seeds

    runs = pd.DataFrame({
        "method": ["base", "ace-s0", "ace-s1", "ace-s2"],
        "country": ["egypt"] * 4,
        "worst": [60.0, 70.0, 80.0, 90.0],
        "worst_persona": ["a", "a", "b", "a"],
        "personas": [4, 4, 4, 4],
    })
    out = seeds.collapse_seeds(runs, ["country"], ["worst"]).set_index("method")
    assert list(out.index) == ["base", "ace"]
    assert (out.loc["ace", "worst"], out.loc["ace", "worst_sd"]) == pytest.approx((80.0, 10.0))
    assert np.isnan(out.loc["base", "worst_sd"]) and out.loc["base", "seeds"] == 1
    assert out.loc["ace", "worst_persona"] == "a / b / a" and out.loc["ace", "personas"] == 4
    assert common.method_label("ace-s2") == "ACE-Align (seed 2)"
    assert common.method_label("country-marginal") == "Country marginal (oracle)"
    assert common.method_order(["ace-s1", "ace-s0", "base", "anchor-s0"]) == ["base", "anchor-s0", "ace-s0", "ace-s1"]
