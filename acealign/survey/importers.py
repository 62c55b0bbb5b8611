"""Convert any supported survey format into the tidy tables (``questions.jsonl`` + ``cells.csv``)."""

from __future__ import annotations

from pathlib import Path

from .data import SurveyData
from .release import read_release
from .tidy import read_tidy, write_tidy
from .types import DataError
from .wvs import read_wvs

IMPORT_KINDS = ("tidy", "release", "wvs")


def read_any(kind: str, path, catalog=None, countries=None, release_files=None) -> SurveyData:
    """Read survey data of ``kind`` (tidy | release | wvs; wvs needs ``catalog``).

    ``release_files``: for ``release``, the file stems to keep (e.g. ``["family", "wvs_all"]``).
    """
    if kind == "tidy":
        data = read_tidy(path)
        if countries is not None:
            missing = sorted(set(countries) - set(data.countries))
            if missing:
                raise DataError(f"no cells for countries {', '.join(missing)}", path)
            data = data.subset(countries=countries)
        return data
    if release_files is not None and kind != "release":
        raise ValueError("selecting release files only applies to the release layout")
    if kind == "release":
        return read_release(path, countries=countries, files=release_files)
    if kind == "wvs":
        if catalog is None:
            raise ValueError("importing WVS respondent data needs a question catalog (--catalog FILE)")
        return read_wvs(path, catalog, countries=countries)
    raise ValueError(f"unknown import kind {kind!r} (expected one of {', '.join(IMPORT_KINDS)})")


def import_survey(kind: str, path, out, catalog=None, countries=None, release_files=None) -> SurveyData:
    """Read ``path`` fully (all validation happens first), then write tidy tables into ``out``.

    Nothing is written when reading fails; each table is written atomically.
    """
    data = read_any(kind, path, catalog=catalog, countries=countries, release_files=release_files)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("output exists and is not a directory", out)
    write_tidy(data, out)
    return data
