import sys

import pytest

from acealign import memory


@pytest.fixture(autouse=True)
def no_user_settings(monkeypatch):
    """No allocator setting of the user's (conftest resets acealign.memory's state per test)."""
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)


def test_phases_nest_and_restore_also_after_an_error(allocator_spy):
    spy = allocator_spy
    with memory.allocator_phase("training"):
        with memory.allocator_phase("scoring"):  # a learning-curve point inside training
            assert memory._state["phase"] == "scoring"
        assert memory._state["phase"] == "training"
    with pytest.raises(KeyError), memory.allocator_phase("training"):
        raise KeyError("boom")
    # after each outermost block: scoring's settings
    assert spy == ["training", "scoring", "training", "scoring", "training", "scoring"]


def test_unmanaged_phase_changes_nothing(monkeypatch):
    monkeypatch.setattr(memory, "_apply", lambda phase: pytest.fail("mallopt called"))
    with memory.allocator_phase("training"):
        pass
    with pytest.raises(ValueError, match="unknown allocator phase"), memory.allocator_phase("train"):
        pass


@pytest.mark.parametrize("env", [("MALLOC_MMAP_THRESHOLD_", "65536"), ("MALLOC_TRIM_THRESHOLD_", "0"),
                                 ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")])
def test_user_settings_win(monkeypatch, env):
    monkeypatch.setenv(*env)
    assert not memory.manage_allocator()
    assert memory.allocator_settings() == f"{env[0]}={env[1]}"


def test_a_refused_setting_warns_and_stops_managing(monkeypatch):
    class Refusing:
        def mallopt(self, param, value):
            return 0

    monkeypatch.setattr(memory, "_libc", lambda: Refusing())
    assert memory.manage_allocator()
    with pytest.warns(RuntimeWarning, match="refused the training"), memory.allocator_phase("training"):
        pass
    assert memory._state == {"enabled": False, "phase": None}
    assert memory.allocator_settings() == "allocator default"


_MAPPED_PROBE = """
import ctypes
from acealign import memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = memory._libc()
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
assert memory.manage_allocator()
for phase in ("training", "scoring"):
    with memory.allocator_phase(phase):
        before = libc.mallinfo2().hblkhd
        block = libc.malloc(3 << 20)
        print(phase, libc.mallinfo2().hblkhd - before)
        libc.free(block)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_real_thresholds_decide_what_is_mapped():
    """A 3 MiB block gets its own mapping under training's 2 MiB threshold, not under scoring's
    32 MiB: the mallopt parameter numbers are the right ones. In a fresh process: in this one, a
    free heap chunk left by earlier tests could serve the block whatever the threshold."""
    import os
    import subprocess

    libc = memory._libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc >= 2.33")
    env = {k: v for k, v in os.environ.items()
           if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", _MAPPED_PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout
    grew = {phase: int(n) for phase, n in (line.split() for line in out.splitlines())}
    assert grew["training"] >= 3 << 20 and grew["scoring"] == 0


def test_release_memory_collects_cycles():
    import gc
    import weakref

    class Node:
        pass

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the collector frees it
    ref = weakref.ref(a)
    gc.disable()
    try:
        del a, b
        assert ref() is not None
        memory.release_memory()
        assert ref() is None
    finally:
        gc.enable()
