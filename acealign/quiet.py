"""Keep a run's output to acealign's own lines: the libraries' deprecation warnings, advisory log
lines and per-tensor progress bars are hidden (``acealign -v`` shows them). Used by the CLI and by
the processes acealign spawns (:mod:`acealign.isolate`)."""

from __future__ import annotations

import os
import sys

# Libraries whose warnings and progress bars a normal run hides (shown with -v).
QUIET_LIBRARIES = r"(transformers|peft|accelerate|torch|huggingface_hub|tokenizers|vllm)(\.|$)"


def quiet_libraries() -> None:
    """Hide the libraries' deprecation warnings, advisory log lines and per-tensor progress bars,
    so a run prints one progress display and its stage lines. acealign's own warnings stay."""
    import warnings

    # read by transformers / huggingface_hub when they are imported (commands import them lazily)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ["ACEALIGN_QUIET"] = "1"  # processes acealign spawns (acealign.isolate) stay quiet too
    warnings.filterwarnings("ignore", module=QUIET_LIBRARIES)
    if "transformers" in sys.modules:  # already imported (library use, tests)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
