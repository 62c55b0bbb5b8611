"""Process memory of long runs: keep glibc's heap from filling with fragments while training,
without slowing scoring.

glibc serves an allocation above its mmap threshold with a mapping of its own, returned to the
system when freed; smaller ones come from the heap, whose freed holes stay resident. By default
the threshold starts at 128 KiB and rises to the size of any mapped block freed (up to 32 MiB), so
after a few training steps the tens-of-MiB activation tensors of a step all land in the heap and
the run's resident memory grows with fragments (README, "Memory"):

- training (one method of the standard profile, 12 steps): peak 3.78 GiB in 156 s with glibc's
  default, 3.31 GiB in 163 s under :data:`PHASES` ``["training"]``, 2.41 GiB at a 64 KiB
  threshold (1.8x slower);
- scoring is the other way round: with a 2 MiB threshold it is 1.7x slower (its KV caches are
  mapped and zero-filled anew for every batch), and as fast as glibc's default at 32 MiB with a
  64 MiB trim threshold (what glibc's own dynamic rule reaches).

So a process that opts in (:func:`manage_allocator`; every ``acealign`` command and
:func:`acealign.pipeline.run_pipeline` do) trains under :data:`PHASES` ``["training"]`` and scores
under ``["scoring"]`` (:func:`allocator_phase`). A threshold of the user's in the environment
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``) turns this off.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import os
import warnings
from contextlib import contextmanager

MiB = 1024 * 1024
# phase -> (mmap threshold, trim threshold) in bytes; trim = 2 x mmap, glibc's own dynamic rule
PHASES = {"training": (2 * MiB, 4 * MiB), "scoring": (32 * MiB, 64 * MiB)}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
_state = {"enabled": False, "phase": None}


@functools.cache  # one dlopen per process, not one per phase switch
def _libc():
    """glibc (with ``mallopt``), or None: other C libraries have other allocators."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # macOS, musl: nothing to tune
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version")):
        return None  # e.g. a compatibility layer that names itself libc.so.6
    return libc


# Users' own glibc allocator settings, which a managed process must not override.
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _user_setting() -> str | None:
    for name in _USER_SETTINGS:
        if os.environ.get(name):
            return f"{name}={os.environ[name]}"
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.mmap_threshold" in tunables or "glibc.malloc.trim_threshold" in tunables:
        return f"GLIBC_TUNABLES={tunables}"
    return None


def manage_allocator(enable: bool = True) -> bool:
    """Let :func:`allocator_phase` set glibc's thresholds in this process (from now on, also
    after ``enable=False``: glibc's dynamic default cannot be restored; scoring's settings are
    then kept). True when active: glibc, and no mmap or trim threshold of the user's in the
    environment (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``)."""
    active = bool(enable) and _user_setting() is None and _libc() is not None
    if not active and _state["enabled"]:
        _apply("scoring")
    _state["enabled"] = active
    return active


def allocator_settings() -> dict | str:
    """What this process uses, for a run's manifest."""
    if _state["enabled"]:
        return {phase: {"mmap_threshold": m, "trim_threshold": t} for phase, (m, t) in PHASES.items()}
    return _user_setting() or "allocator default"


def _apply(phase: str) -> None:
    """Set ``PHASES[phase]``; if glibc refuses (a 32-bit build caps the mmap threshold at
    16 MiB), warn once and stop managing: the work goes on with the allocator as it is."""
    mmap, trim = PHASES[phase]
    libc = _libc()
    if libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, mmap) and libc.mallopt(_M_TRIM_THRESHOLD, trim):
        _state["phase"] = phase
        return
    warnings.warn(f"acealign.memory: the C library refused the {phase} allocator thresholds "
                  f"({mmap}/{trim} bytes); continuing with its own", RuntimeWarning, stacklevel=3)
    _state.update(enabled=False, phase=None)


@contextmanager
def allocator_phase(phase: str):
    """Run the block under ``PHASES[phase]`` when :func:`manage_allocator` is on (else as is);
    the previous phase's settings come back after it (scoring's when there was none)."""
    if phase not in PHASES:
        raise ValueError(f"unknown allocator phase {phase!r} (expected one of {', '.join(PHASES)})")
    if not _state["enabled"]:
        yield
        return
    previous = _state["phase"]
    _apply(phase)
    try:
        yield
    finally:
        if _state["enabled"]:
            _apply(previous or "scoring")


def release_memory() -> None:
    """Free what a finished step left behind and hand freed heap pages back to the system, so
    that a run's peak memory is one step's, not the sum of all steps' fragments."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
