"""Scoring backends: where the option distributions of Eq. 2-3 come from.

Every backend takes :class:`acealign.scoring.ScoringRequest` objects and returns, per request, a
:class:`Scored` (the distribution over the request's scale, plus what the estimator reports about
it). The cell loop (:func:`acealign.scoring.score_cells`), ``acealign score``, ``acealign eval``
and the evaluation part of ``acealign run`` work with any of them; training stays on the
``hf`` engine (it needs gradients).

- ``hf``: :class:`acealign.scoring.OptionScorer`, transformers in-process, exact (the reference).
- ``vllm``: :class:`acealign.backends.vllm.VLLMBackend`, offline ``vllm.LLM`` in-process: prompt
  log-probabilities of prompt + option, and the full next-token distribution after the option for
  the whole-answer term, so it is exact too (up to the engine's numerics).
- ``openai``: :class:`acealign.backends.openai.OpenAIBackend`, any OpenAI-compatible server,
  with one of the estimators in :data:`ESTIMATORS`.

Estimators (the ``estimator`` column of a predictions table says which one produced a row):

- ``exact``: Eq. 2 (+ the whole-answer term) from the model's full next-token distributions;
- ``prompt-logprobs``: Eq. 2 from prompt log-probabilities, the whole-answer term from the
  server's top-k next-token log-probabilities (an approximation: tokens outside the top k are
  taken not to continue the answer; ``boundary_gap`` bounds the error);
- ``first-token``: chat API, the first answer token's top log-probabilities (every option one
  token, all of them among the returned alternatives, else an error naming the question);
- ``sampling``: chat API, N answers at temperature 1 parsed to an option number (an estimate with
  its standard error and the share of answers that name no option).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

BACKENDS = ("hf", "vllm", "openai")
ESTIMATORS = ("exact", "prompt-logprobs", "first-token", "sampling")


class BackendError(ValueError):
    """A backend cannot score (unreachable server, model not served, no log-probabilities...).
    The CLI prints it as one line and exits 2 (as for any ValueError)."""


@dataclass(frozen=True)
class Scored:
    """One request's option distribution over its scale (float64, sums to 1) and what the
    estimator reports about it (``{}`` for exact backends; e.g. ``samples``, ``unparseable``,
    ``se`` for sampling, ``boundary_gap`` for top-k whole-answer terms)."""

    dist: np.ndarray
    info: dict = field(default_factory=dict)


class ScoringBackend(Protocol):
    """What the cell loop needs from a backend.

    ``name``: one of :data:`BACKENDS`. ``mode``: the scoring mode (``whole`` or ``literal``).
    ``estimator``: one of :data:`ESTIMATORS`. ``tokenizer``: builds the prompts (chat template);
    ``None`` when the server applies its own (chat estimators: requests carry ``messages``).
    """

    name: str
    mode: str
    estimator: str
    tokenizer: Any

    def score(self, requests: Sequence) -> list[Scored]:
        """One :class:`Scored` per request, in order."""

    def describe(self) -> dict:
        """What determines the scores beside the prompts: backend, model, estimator, precision,
        adapter... (goes into the scoring fingerprint; never an API key)."""


def normalized(p) -> np.ndarray:
    """A probability vector as float64 summing to 1 (an all-zero or non-finite vector is an error)."""
    p = np.asarray(p, dtype=np.float64)
    total = p.sum()
    if not np.isfinite(total) or total <= 0 or (p < 0).any():
        raise BackendError(f"cannot normalize option probabilities {p.tolist()}")
    return p / total


__all__ = ["BACKENDS", "ESTIMATORS", "BackendError", "Scored", "ScoringBackend", "normalized"]
