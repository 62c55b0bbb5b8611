"""A normal run hides the libraries' warnings and progress bars; acealign's own warnings stay."""

from __future__ import annotations

import warnings

from acealign.cli import build_parser, quiet_libraries


def _emitted(module: str, category=FutureWarning) -> bool:
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        quiet_libraries()
        warnings.warn_explicit("deprecated thing", category, "x.py", 1, module=module)
    return bool(got)


def test_library_warnings_hidden_ours_kept(monkeypatch):
    for var in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(var, raising=False)
    assert not _emitted("transformers.modeling_utils")
    assert not _emitted("torch.nn.modules.module")
    assert not _emitted("peft.tuners.lora", UserWarning)
    assert _emitted("acealign.scoring", UserWarning)  # e.g. the literal-Eq.-2 prefix warning
    assert _emitted("transformersfoo")  # a module that only starts with the same letters
    import os

    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


def test_verbose_flag_parses():
    args = build_parser().parse_args(["-v", "data", "info"])
    assert args.verbose
    assert not build_parser().parse_args(["data", "info"]).verbose
