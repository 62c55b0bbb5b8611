"""Fingerprints: what determines a saved artefact, so that a stale one is refused, never reused.

A fingerprint is a JSON-able dict of the inputs an artefact was made from. The artefacts that are
reused and what their fingerprints hold:

- a split (``split.json``, key ``fingerprint``): data digest, countries, fractions, seed,
  held-out combinations, split algorithm version (:mod:`acealign.splits`);
- a training run of ``acealign run`` (``train/<run>/fingerprint.json``): resolved training config
  (without file paths), split digest, data digest (:func:`training_fingerprint`);
- an evaluation (``eval/<method>/eval.json``, key ``fingerprint``) and the scoring checkpoint
  (``partial.parquet``): model, adapter content digest, template, chat, scoring mode, dtype,
  split digest, data digest (:mod:`acealign.evaluate`).

:func:`require_same` compares a saved fingerprint with the current one and raises
:class:`StaleError` naming each differing field and how to start fresh.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from .fileio import read_json_object
from .survey import DataError

FINGERPRINT_NAME = "fingerprint.json"
# Adapter weight files of the peft format (safetensors, or the older pickle).
ADAPTER_WEIGHT_SUFFIXES = (".safetensors", ".bin")


class StaleError(DataError):
    """A saved artefact was made from other inputs than the current ones."""


def digest(obj) -> str:
    """Short sha256 of ``obj`` as canonical JSON (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def data_digest(data, countries=None) -> str:
    """Digest of a :class:`~acealign.survey.SurveyData` restricted to ``countries`` (default: all):
    the questions those countries answer (key, text, options) and every G=4 cell's counts
    (non-substantive answers included). The data's location and its other countries do not enter it."""
    cs = set(data.countries if countries is None else countries)
    dropped = getattr(data, "nonsubstantive", {})
    keys = sorted(k for k in set(data.cells) | set(dropped) if k[0] in cs)
    h = hashlib.sha256(("countries:" + ",".join(sorted(cs)) + "\n").encode())
    for qk in sorted({q for _, q in keys}):
        q = data.questions[qk]
        opts = [[o.code, o.label, getattr(o, "substantive", True)] for o in q.options]
        h.update(json.dumps([qk, q.text, opts], ensure_ascii=False).encode() + b"\n")
    for tag, table in (("", data.cells), ("off", dropped)):
        for c, qk in keys:
            for pkey, counts in sorted((p.key, v) for p, v in table.get((c, qk), {}).items()):
                h.update(f"{tag}|{qk}|{pkey}|{','.join(str(int(x)) for x in counts)}\n".encode())
    return h.hexdigest()[:16]


def split_digest(split) -> str:
    """Digest of a split's content (question and country lists, held-out combinations, kind, seed,
    fingerprint); its ``source`` (the data folder's path) is left out."""
    d = split.to_dict()
    d.pop("source", None)
    return digest(d)


def adapter_files(adapter) -> list[Path]:
    """``adapter_config.json`` and the weight file(s) of a peft adapter directory, checked."""
    d = Path(adapter)
    cfg = d / "adapter_config.json"
    if not cfg.is_file():
        raise DataError("not a peft adapter directory (no adapter_config.json)", d)
    weights = sorted(p for p in d.iterdir() if p.is_file() and p.suffix in ADAPTER_WEIGHT_SUFFIXES)
    if not weights:
        raise DataError("adapter has no weight file (adapter_model.safetensors)", d)
    return [cfg, *weights]


def adapter_digest(adapter) -> str | None:
    """Digest of an adapter's *content* (its config and weight files; None for no adapter), so a
    retrained adapter at the same path is told apart."""
    if adapter is None:
        return None
    h = hashlib.sha256()
    for f in adapter_files(adapter):
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:16]


def training_fingerprint(cfg: dict, split, data) -> dict:
    """What determines a training run: its resolved config (file paths left out: the run folder
    may move), the split's content and the data of the split's countries."""
    from .splits import split_countries

    cfg = copy.deepcopy(cfg)
    cfg.get("data", {}).pop("split", None)
    cfg.get("data", {}).pop("dir", None)
    if not cfg.get("optim", {}).get("causal_lr", 1):  # unset: runs made before the key still match
        cfg["optim"].pop("causal_lr", None)
    return {"config": cfg, "split": split_digest(split), "data": data_digest(data, split_countries(split))}


# -- comparing -------------------------------------------------------------------------------------
def differences(a: dict | None, b: dict | None, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two fingerprints (nested dicts are
    compared field by field; a field missing on one side differs)."""
    a, b = a or {}, b or {}
    out = []
    for k in sorted(set(a) | set(b), key=str):
        name = f"{prefix}{k}"
        va, vb = a.get(k, _MISSING), b.get(k, _MISSING)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differences(va, vb, name + ".")
        elif _normal(va) != _normal(vb):
            out.append(name)
    return out


def describe_differences(saved: dict | None, now: dict | None, limit: int = 4) -> str:
    """``"countries: ['egypt'] there, ['india'] now; data: ..."`` for the first ``limit`` fields."""
    names = differences(saved, now)
    parts = [f"{n}: {_short(_get(saved, n))} there, {_short(_get(now, n))} now" for n in names[:limit]]
    if len(names) > limit:
        parts.append(f"and {len(names) - limit} more")
    return "; ".join(parts)


def require_same(saved: dict | None, now: dict, *, what: str, path, fresh: str) -> None:
    """Raise :class:`StaleError` unless ``saved`` equals ``now``. ``what``: the artefact in words;
    ``fresh``: how to start fresh (e.g. "delete the folder")."""
    if not saved:
        raise StaleError(f"{what} has no fingerprint (made by an older acealign): cannot tell what it "
                         f"was made from; {fresh}", path)
    if differences(saved, now):
        raise StaleError(f"{what} was made with other settings ({describe_differences(saved, now)}); "
                         f"{fresh}", path)


def read_fingerprint(path) -> dict | None:
    """The fingerprint saved in ``path`` (a JSON object), or None if there is none."""
    return read_json_object(path, "a fingerprint (a JSON object)")


class _Missing:
    def __repr__(self) -> str:
        return "(missing)"


_MISSING = _Missing()


def _normal(v):
    """JSON round trip, so tuples and lists (and int/float keys) compare as they are saved."""
    if v is _MISSING:
        return v
    return json.loads(json.dumps(v, sort_keys=True, default=str))


def _get(d: dict | None, dotted: str):
    cur = d or {}
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _short(v, width: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= width else s[: width - 3] + "..."
