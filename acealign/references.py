"""Reference scores that frame a model's results: what finite survey cells allow, and trivial baselines.

- Cell level (alignment score, Eq. 15): the sampling-noise *ceiling* (parametric bootstrap), the
  *country-marginal oracle* (predict, for every persona, the question's distribution over all of
  the country's respondents: persona-blind, but it uses each scored question's own answers, so it
  is an oracle, not a baseline a model could reach without the evaluation data; reports label it
  "Country marginal (oracle)") and the *uniform* reference.
- Pair level (CDF effect distance, Eq. 11-12): the *no-effect* reference (a model whose answers
  ignore the attribute) and the bootstrap *noise floor* of the effect distance.

A country's score at granularity G is the plain mean over all its eligible persona-question
cells of that G. Random streams are seeded per (seed, country[, G]), so a country's figures do
not depend on which other countries are in the table.
"""

from __future__ import annotations

import zlib
from collections import defaultdict

import numpy as np

from .metrics import (
    alignment_score_batch,
    bootstrap_ceiling_batch,
    bootstrap_effect_floor_batch,
    expected_ceiling_batch,
    no_effect_cdf_distance_batch,
    percent,
)
from .pairs import CounterfactualPair, build_pairs
from .personas import DEFAULT_MIN_N, EligibleCell, eligible_cells
from .survey import ATTRIBUTES, Persona, SurveyData

REFERENCE_KEYS = ("country", "granularity", "cells", "ceiling", "marginal", "uniform")
PAIR_REFERENCE_KEYS = ("country", "attribute", "pairs", "no_effect", "noise_floor")


def _rng(seed: int, *parts) -> np.random.Generator:
    """A Generator seeded from ``seed`` and stable labels (crc32 of strings, not Python's hash)."""
    words = [int(seed)] + [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return np.random.default_rng(words)


def _by_length(arrays) -> dict[int, np.ndarray]:
    groups: dict[int, list[int]] = defaultdict(list)
    for i, a in enumerate(arrays):
        groups[len(a)].append(i)
    return {n: np.asarray(ix) for n, ix in sorted(groups.items())}


def cell_references(
    data: SurveyData,
    cells: list[EligibleCell],
    n_boot: int | None = 200,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Per-cell reference alignment scores (fractions in [0, 1]), each an array aligned with ``cells``.

    ``ceiling``: mean bootstrap score of the cell against itself (metrics.bootstrap_ceiling_batch;
    ``n_boot=None``: its exact limit, metrics.expected_ceiling_batch);
    ``marginal``: alignment_score(country distribution of the question, cell), where the country
    distribution is ``data.counts(Persona(country), question_key)`` (all its respondents; an
    oracle: it is built from the very question being scored);
    ``uniform``: alignment_score(uniform over the options, cell). Cells are batched by option count.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    out = {k: np.empty(len(cells)) for k in ("ceiling", "marginal", "uniform")}
    marginals: dict[tuple[str, str], np.ndarray] = {}
    for idx in _by_length([c.counts for c in cells]).values():
        counts = np.stack([cells[i].counts for i in idx])
        rows = []
        for i in idx:
            key = (cells[i].persona.country, cells[i].question_key)
            if key not in marginals:
                marginals[key] = data.counts(Persona(key[0]), key[1])
            rows.append(marginals[key])
        out["ceiling"][idx] = (
            expected_ceiling_batch(counts)
            if n_boot is None
            else bootstrap_ceiling_batch(counts, n_boot, rng)
        )
        out["marginal"][idx] = alignment_score_batch(np.stack(rows), counts)
        out["uniform"][idx] = alignment_score_batch(np.ones_like(counts, dtype=float), counts)
    return out


def reference_table(
    data: SurveyData,
    granularities=(1, 2, 3, 4),
    min_n: int = DEFAULT_MIN_N,
    n_boot: int | None = 200,
    seed: int = 0,
    countries=None,
    question_keys=None,
) -> list[dict]:
    """Noise ceiling, country-marginal (oracle) and uniform reference scores per country and G.

    Returns one dict per (country, G) with at least one eligible cell (``acealign.personas.
    eligible_cells`` with ``min_n``), keys exactly ``country, granularity, cells, ceiling,
    marginal, uniform``: ``cells`` the number of eligible persona-question cells (int), the three
    scores ×100 (floats), each the plain mean over those cells. ``n_boot=None`` replaces the
    bootstrap ceiling by its exact expectation (no Monte Carlo noise, no seed needed).
    """
    granularities = tuple(granularities)
    selection = eligible_cells(
        data, granularities, min_n, countries=countries, question_keys=question_keys
    )
    groups: dict[tuple[str, int], list[EligibleCell]] = defaultdict(list)
    for cell in selection.cells:
        groups[(cell.persona.country, cell.persona.granularity)].append(cell)
    rows = []
    for country in countries or data.countries:
        for g in granularities:
            cells = groups.get((country, g))
            if not cells:
                continue
            refs = cell_references(data, cells, n_boot, _rng(seed, country, g))
            rows.append(
                {
                    "country": country,
                    "granularity": int(g),
                    "cells": len(cells),
                    **{
                        k: float(percent(refs[k].mean()))
                        for k in ("ceiling", "marginal", "uniform")
                    },
                }
            )
    return rows


def pair_reference_values(
    pairs: list[CounterfactualPair], n_boot: int = 200, rng: np.random.Generator | None = None
) -> dict[str, np.ndarray]:
    """Per-pair ``no_effect`` (Eq. 11 of a zero effect vs the data effect) and bootstrap
    ``noise_floor`` of the effect distance (metrics.bootstrap_effect_floor_batch), aligned with
    ``pairs``; raw d_CDF values (not ×100). Pairs are batched by option count."""
    rng = np.random.default_rng(0) if rng is None else rng
    out = {k: np.empty(len(pairs)) for k in ("no_effect", "noise_floor")}
    for idx in _by_length([p.counts1 for p in pairs]).values():
        c1 = np.stack([pairs[i].counts1 for i in idx])
        c0 = np.stack([pairs[i].counts0 for i in idx])
        out["no_effect"][idx] = no_effect_cdf_distance_batch(c1, c0)
        out["noise_floor"][idx] = bootstrap_effect_floor_batch(c1, c0, n_boot, rng)
    return out


def pair_references(
    data: SurveyData,
    question_keys=None,
    countries=None,
    context_granularity: int = 4,
    min_n: int = DEFAULT_MIN_N,
    attributes=ATTRIBUTES,
    exclude_personas=None,
    n_boot: int = 200,
    seed: int = 0,
) -> list[dict]:
    """Pair-level references (Eq. 12 means over ``acealign.pairs.build_pairs``) per country.

    One row per country and treatment attribute, then one with ``attribute="all"``; keys exactly
    ``country, attribute, pairs, no_effect, noise_floor``. ``no_effect``: mean d_CDF of a model
    that ignores the attribute; ``noise_floor``: mean bootstrap d_CDF of a model that reproduces
    the true effect (the best achievable given finite cells). Raw distances, lower is better.
    """
    rows = []
    for country in countries or data.countries:
        pairs = build_pairs(
            data,
            context_granularity,
            min_n,
            countries=[country],
            question_keys=question_keys,
            attributes=attributes,
            exclude_personas=exclude_personas,
        )
        if not pairs:
            continue
        vals = pair_reference_values(pairs, n_boot, _rng(seed, country))
        attrs = np.asarray([p.attribute for p in pairs])
        for attr in [*attributes, "all"]:
            mask = np.ones(len(pairs), bool) if attr == "all" else attrs == attr
            if not mask.any():
                continue
            rows.append(
                {
                    "country": country,
                    "attribute": attr,
                    "pairs": int(mask.sum()),
                    "no_effect": float(vals["no_effect"][mask].mean()),
                    "noise_floor": float(vals["noise_floor"][mask].mean()),
                }
            )
    return rows
