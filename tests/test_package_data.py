"""The default survey tables ship inside the package, and where the default data comes from:
``--data DIR``, else ``$ACEALIGN_DATA``, else the package copy (acealign/data/surveys)."""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

import pytest
from conftest import shared_data_dir

import acealign
import acealign.survey.data as survey_data
from acealign.survey import (
    DataError,
    default_data_dir,
    load_survey,
    package_data_dir,
    resolve_data_dir,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGE = Path(acealign.__file__).resolve().parent
SHIPPED = ("questions.jsonl", "cells.csv", "README.md")
NINE = ["australia", "chile", "egypt", "ethiopia", "germany", "india", "japan", "philippines", "united_states"]


def test_package_copy_is_inside_the_package():
    d = package_data_dir()
    assert d is not None and d.resolve() == PACKAGE / "data" / "surveys"
    for name in SHIPPED:
        assert (d / name).is_file(), name


def test_default_is_the_package_copy_without_env(monkeypatch):
    monkeypatch.delenv("ACEALIGN_DATA", raising=False)
    loc = resolve_data_dir()
    assert loc.origin == "package" and loc.path == package_data_dir()
    assert loc.describe() == "package copy (acealign/data/surveys)"
    assert loc.describe("9 countries") == "package copy (acealign/data/surveys, 9 countries)"
    assert default_data_dir() == package_data_dir()
    # An empty $ACEALIGN_DATA counts as unset.
    monkeypatch.setenv("ACEALIGN_DATA", "")
    assert resolve_data_dir().origin == "package"


def test_shipped_tables_load(monkeypatch):
    monkeypatch.delenv("ACEALIGN_DATA", raising=False)
    data = load_survey()
    assert data.source == str(package_data_dir())
    assert data.countries == NINE
    assert len(data.questions) == 220 and data.n_cells() == 7281


def test_env_wins_over_package_copy(tiny_data_dir, monkeypatch):
    monkeypatch.setenv("ACEALIGN_DATA", str(tiny_data_dir))
    loc = resolve_data_dir()
    assert loc.origin == "env" and loc.path == tiny_data_dir
    assert loc.describe() == f"$ACEALIGN_DATA ({tiny_data_dir})"
    assert default_data_dir() == tiny_data_dir
    assert load_survey().countries == ["atlantis", "borduria"]


def test_explicit_dir_wins_over_env_and_package(tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ACEALIGN_DATA", str(tmp_path / "elsewhere"))
    loc = resolve_data_dir(tiny_data_dir)
    assert loc.origin == "option" and loc.path == tiny_data_dir
    assert loc.describe() == f"--data ({tiny_data_dir})"
    assert load_survey(tiny_data_dir).countries == ["atlantis", "borduria"]
    monkeypatch.delenv("ACEALIGN_DATA")
    assert resolve_data_dir(str(tiny_data_dir)).origin == "option"


def test_missing_package_copy_says_what_to_do(monkeypatch):
    monkeypatch.delenv("ACEALIGN_DATA", raising=False)
    monkeypatch.setattr(survey_data, "package_data_dir", lambda: None)
    with pytest.raises(DataError) as e:
        resolve_data_dir()
    msg = str(e.value)
    assert "acealign/data/surveys" in msg and "--data DIR" in msg and "ACEALIGN_DATA" in msg


def test_shipped_tables_match_the_shared_tables():
    ref = shared_data_dir()
    if not (ref / "cells.csv").exists():
        pytest.skip("shared survey data not present")
    d = package_data_dir()
    for name in ("questions.jsonl", "cells.csv"):
        assert (d / name).read_bytes() == (ref / name).read_bytes(), name


def test_readme_states_provenance_and_terms():
    text = (package_data_dir() / "README.md").read_text(encoding="utf-8")
    for needle in ("Wells-Luo/ACE-Align", "World Values Survey", "ISSP", "non-commercial research use",
                   "Known quirks", "India work_orientations v56"):
        assert needle in text, needle


def test_pyproject_ships_the_tables():
    """Every shipped file matches a package-data pattern, so wheels and sdists carry it."""
    pyproject = PACKAGE.parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("not a source checkout")
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["acealign"]
    for name in SHIPPED:
        rel = f"data/surveys/{name}"
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel
