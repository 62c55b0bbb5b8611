"""scripts/standard_tables.py prints the README's tables from a run's own files."""
import importlib.util
import json
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "standard_tables.py"


def _load():
    spec = importlib.util.spec_from_file_location("standard_tables", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tables_come_from_the_run_files(tmp_path, capsys):
    tables = tmp_path / "report" / "tables"
    tables.mkdir(parents=True)
    pd.DataFrame({"method": ["anchor"] * 2 + ["ace"] * 2, "step": [0, 8] * 2,
                  "S": [61.44, 70.26, 61.44, 69.94], "d_cdf_x1000": [57.31, 57.05, 57.31, 56.96]}
                 ).to_csv(tables / "learning_curves.csv", index=False)
    pd.DataFrame({"method": ["anchor", "ace"], "level": ["in_sample"] * 2, "n_pairs": [512] * 2,
                  "n_questions": [70] * 2, "d_cdf_x1000": [54.62, 54.5], "ci_low_x1000": [48.9, 48.8],
                  "ci_high_x1000": [61.6, 61.7], "no_effect_x1000": [53.5] * 2,
                  "noise_floor_x1000": [37.5] * 2}).to_csv(tables / "fidelity_ladder.csv", index=False)
    pd.DataFrame({"level": ["in_sample"], "primary": ["ace"], "baseline": ["anchor"], "diff_x1000": [-0.115],
                  "ci_low_x1000": [-0.5], "ci_high_x1000": [0.28], "p_value": [0.563]}
                 ).to_csv(tables / "fidelity_ladder_tests.csv", index=False)
    pd.DataFrame({"method": ["anchor", "ace"], "S": [79.284, 79.38]}).to_csv(tables / "summary.csv", index=False)
    log = tmp_path / "train" / "ace" / "log.jsonl"
    log.parent.mkdir(parents=True)
    steps = [{"event": "curve", "step": 0}] + [
        {"step": i, "loss": 1.0, "anchor": 2.0 - 0.1 * i, "causal": 0.05 + 0.001 * i} for i in range(1, 9)]
    log.write_text("\n".join(map(json.dumps, steps)))

    assert _load().main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| S: anchor-only | 61.4 | 70.3 |" in out and "| d_CDF: ACE-Align | 57.3 | 57.0 |" in out
    # means over steps 1-4 and 5-8: causal 0.0525 -> 0.0565, anchor 1.75 -> 1.35
    assert "| ACE-Align | causal | 0.0525 | 0.0565 (steps 5–8) |" in out
    assert "| ACE-Align | anchor | 1.7500 | 1.3500 (steps 5–8) |" in out
    assert "| anchor | 54.6 [48.9, 61.6] | 79.28 |" in out and "| *no-effect reference* | 53.5 |" in out
    assert "| in_sample | ace − anchor | -0.12 | [-0.50, 0.28] | 0.56 |" in out


def test_a_missing_run_is_one_line_and_exit_1(tmp_path, capsys):
    assert _load().main([str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err
