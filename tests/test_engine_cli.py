import json

import numpy as np
import pandas as pd
import pytest

from acealign.cli import main
from acealign.personas import eligible_cells
from acealign.prompts import build_prompt, option_verbalizations
from acealign.scoring import OptionScorer, ScoringRequest, score_cells
from acealign.survey import package_data_dir
from acealign.testing import save_tiny_model

DATA = package_data_dir()
pytestmark = pytest.mark.skipif(not (DATA / "cells.csv").exists(), reason="shared survey data not present")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    save_tiny_model(d, seed=2)
    return d


@pytest.fixture(scope="module")
def data():
    from acealign.survey import load_survey

    return load_survey(DATA)


def test_prompt_json(tiny_dir, capsys):
    rc = main(["prompt", "--data", str(DATA), "--model", str(tiny_dir), "--country", "egypt",
               "--question", "Q43", "--persona", "gender=Female,residence=Rural", "--score", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"].startswith("<s>user\nYou are a female currently living in a rural area in Egypt.\n")
    assert out["prompt"].endswith("<s>assistant\n")
    assert out["options"] == ["1", "2", "3"]
    assert len(out["distribution"]) == 3 and sum(out["distribution"]) == pytest.approx(1.0)


def test_prompt_plain_readable(tiny_dir, capsys):
    rc = main(["prompt", "--data", str(DATA), "--model", str(tiny_dir), "--country", "egypt",
               "--question", "Q43", "--template", "bio", "--plain"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Description: I am living in Egypt.\n" in out and "Answer:\n" in out


def test_prompt_ambiguous_question_asks_for_topic(tiny_dir, capsys):
    # v5 exists in several ISSP modules; mexico is not in the data, so nothing narrows it down
    rc = main(["prompt", "--data", str(DATA), "--model", str(tiny_dir), "--country", "mexico",
               "--question", "v5"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "ambiguous" in err and "--topic" in err and len(err.strip().splitlines()) == 1


def test_score_writes_table_and_resumes(tiny_dir, tmp_path, capsys, data):
    qfile = tmp_path / "q.txt"
    qkeys = data.question_keys("egypt")[:2]
    qfile.write_text("# two questions\n" + "\n".join(qkeys) + "\n")
    out = tmp_path / "preds.parquet"
    argv = ["score", "--data", str(DATA), "--model", str(tiny_dir), "--countries", "egypt",
            "--questions-file", str(qfile), "--granularity", "1,4", "--out", str(out),
            "--no-progress", "--json"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    df = pd.read_parquet(out)
    assert first["scored"] == len(df) == first["cells"] > 0
    assert set(df["question_key"]) == set(qkeys) and set(df["granularity"]) <= {1, 4}
    assert (df["n"] >= 10).all() and (df["method"] == "base").all()
    for counts, pred in zip(df["survey_counts"], df["pred"], strict=True):
        assert len(counts) == len(pred) and sum(pred) == pytest.approx(1.0)
    assert not out.with_name(out.name + ".partial").exists()
    # second run: nothing left to score
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["scored"] == 0 and again["skipped"] == first["cells"]
    # another template under the same method name is refused
    assert main([*argv, "--template", "bio"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_score_cells_resumes_from_partial(tiny_dir, tmp_path, data):
    from acealign.models import load_model

    model, tok = load_model(str(tiny_dir))
    cells = eligible_cells(data, (1,), 10, ["egypt"], data.question_keys("egypt")[:2]).cells
    partial = tmp_path / "part.parquet"
    first = score_cells(model, tok, data, cells[:5], partial_path=partial, progress=False)

    class Counting(OptionScorer):
        seen = 0

        def distributions(self, requests):
            Counting.seen += len(requests)
            return super().distributions(requests)

    scorer = Counting(model, tok)
    full = score_cells(model, tok, data, cells, partial_path=partial, progress=False, scorer=scorer)
    assert Counting.seen == len(cells) - 5  # the first five came from the partial file
    for a, b in zip(first, full[:5], strict=True):
        np.testing.assert_array_equal(a, b)
    q = data.questions[cells[-1].question_key]
    req = ScoringRequest(build_prompt(cells[-1].persona, q, tokenizer=tok), tuple(option_verbalizations(q)))
    direct = OptionScorer(model, tok).distributions([req])[0]
    np.testing.assert_allclose(full[-1], direct, atol=1e-5)
    with pytest.raises(ValueError, match="other settings"):
        score_cells(model, tok, data, cells, template="bio", partial_path=partial, progress=False)
