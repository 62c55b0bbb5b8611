"""Persona-effect fidelity (beside Table 1): does a method reproduce how toggling one attribute
shifts the answers? Mean CDF distance of the counterfactual pairs on the evaluation questions
(Eq. 11-12; model effect from the predictions of the two G=4 ends, data effect from the survey
counts) and the share of flipped attribute-topic effects, with two references computed from the
survey counts alone: a model that predicts no effect at all (identical distributions for both ends)
and the sampling-noise floor (the distance a model reproducing the true effects exactly would
still show against finite cells, by parametric bootstrap).
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from .. import metrics
from .common import measured_pairs, method_order, unique_pair_counts
from .taxonomy import DEFAULT_TAU, attribute_effects

NO_EFFECT = "no-effect"
NOISE_FLOOR = "noise-floor"
COLUMNS = ["method", "country", "pairs", "cdf_distance", "flipped_share", "effects"]


def effect_fidelity(
    df: pd.DataFrame, tau: float = DEFAULT_TAU, n_boot: int = 200, seed: int = 0, pairs=None
) -> pd.DataFrame:
    """Per method x country (and ``country="Avg"``, the mean over countries):

    ``pairs`` counterfactual pairs whose two G=4 ends are both predicted; ``cdf_distance`` their
    mean d_CDF (Eq. 12, lower is better); ``flipped_share`` the share of attribute-topic effects
    that the method flips (:mod:`acealign.analyses.taxonomy`, tolerance ``tau``); ``effects`` the
    number of attribute-topic effects. Two extra method rows, ``no-effect`` and ``noise-floor``,
    give the references of the distance. ``pairs``: :func:`measured_pairs` of ``df`` if already
    computed.
    """
    pairs = measured_pairs(df) if pairs is None else pairs
    if pairs.empty:
        return pd.DataFrame(columns=COLUMNS)
    effects = attribute_effects(pairs, tau=tau)
    rows = []
    for (method, country), part in pairs.groupby(["method", "country"], sort=True):
        eff = effects[(effects["method"] == method) & (effects["country"] == country)]
        rows.append(
            {
                "method": method,
                "country": country,
                "pairs": len(part),
                "cdf_distance": float(part["d_cdf"].mean()),
                "flipped_share": float((eff["category"] == "flipped").mean()) if len(eff) else np.nan,
                "effects": len(eff),
            }
        )
    refs = pair_references(unique_pair_counts(pairs), n_boot=n_boot, seed=seed)
    for country, part in refs.groupby("country", sort=True):
        for name, col in ((NO_EFFECT, "no_effect"), (NOISE_FLOOR, "noise_floor")):
            rows.append(
                {
                    "method": name,
                    "country": country,
                    "pairs": len(part),
                    "cdf_distance": float(part[col].mean()),
                    "flipped_share": np.nan,
                    "effects": 0,
                }
            )
    table = pd.DataFrame(rows, columns=COLUMNS)
    avg = (
        table.groupby("method", sort=False)
        .agg(pairs=("pairs", "sum"), cdf_distance=("cdf_distance", "mean"),
             flipped_share=("flipped_share", "mean"), effects=("effects", "sum"))
        .reset_index()
        .assign(country="Avg")
    )
    table = pd.concat([table, avg[COLUMNS]], ignore_index=True)
    order = {m: i for i, m in enumerate(method_order(table["method"].unique()))}
    table["_o"] = table["method"].map(order)
    table["_c"] = table["country"] == "Avg"
    return table.sort_values(["_o", "_c", "country"]).drop(columns=["_o", "_c"]).reset_index(drop=True)


def pair_references(pairs: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Per survey pair: ``no_effect`` (d_CDF of a zero model effect) and ``noise_floor`` (bootstrap
    expectation of d_CDF for a model that predicts the true effect), via :mod:`acealign.metrics`.
    The random stream is seeded per country (crc32 of its name) so a country's floor does not
    depend on the other countries in the table."""
    out = pairs[["country", "question_key", "attribute", "context"]].copy()
    no_eff, floor = np.zeros(len(out)), np.zeros(len(out))
    lengths = np.asarray([len(c) for c in pairs["counts1"]], dtype=int)
    countries = pairs["country"].to_numpy()
    for country in np.unique(countries):
        rng = np.random.default_rng([int(seed), zlib.crc32(str(country).encode())])
        for k in np.unique(lengths[countries == country]):
            idx = np.flatnonzero((lengths == k) & (countries == country))
            c1 = np.stack([np.asarray(pairs["counts1"].iat[i], dtype=np.int64) for i in idx])
            c0 = np.stack([np.asarray(pairs["counts0"].iat[i], dtype=np.int64) for i in idx])
            no_eff[idx] = metrics.no_effect_cdf_distance_batch(c1, c0)
            floor[idx] = metrics.bootstrap_effect_floor_batch(c1, c0, n_boot, rng)
    out["no_effect"], out["noise_floor"] = no_eff, floor
    return out
