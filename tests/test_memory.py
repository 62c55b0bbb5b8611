import sys

import pytest

from acealign import memory


@pytest.fixture
def managed(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    if not sys.platform.startswith("linux") or memory._libc() is None:
        pytest.skip("glibc's mallopt")
    applied = []
    monkeypatch.setattr(memory, "_apply", lambda phase: (applied.append(phase),
                                                         memory._state.update(phase=phase)))
    monkeypatch.setattr(memory, "_state", {"enabled": False, "phase": None})
    assert memory.manage_allocator()
    return applied


def test_phases_nest_and_restore(managed):
    with memory.allocator_phase("training"):
        with memory.allocator_phase("scoring"):  # a learning-curve point inside training
            assert memory._state["phase"] == "scoring"
        assert memory._state["phase"] == "training"
    # training, scoring, back to training, then scoring's settings once nothing is active
    assert managed == ["training", "scoring", "training", "scoring"]
    settings = memory.allocator_settings()
    assert settings["training"] == {"mmap_threshold": 2 << 20, "trim_threshold": 4 << 20}


def test_unmanaged_phase_changes_nothing(monkeypatch):
    monkeypatch.setattr(memory, "_state", {"enabled": False, "phase": None})
    monkeypatch.setattr(memory, "_apply", lambda phase: pytest.fail("mallopt called"))
    with memory.allocator_phase("training"):
        pass
    with pytest.raises(ValueError, match="unknown allocator phase"), memory.allocator_phase("train"):
        pass


def test_user_threshold_wins(monkeypatch):
    monkeypatch.setattr(memory, "_state", {"enabled": False, "phase": None})
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not memory.manage_allocator()
    assert memory.allocator_settings() == "MALLOC_MMAP_THRESHOLD_=65536"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_real_mallopt_accepts_the_phases(monkeypatch):
    if memory._libc() is None:
        pytest.skip("not glibc")
    monkeypatch.setattr(memory, "_state", {"enabled": True, "phase": None})
    memory._apply("training")
    memory._apply("scoring")
    assert memory._state["phase"] == "scoring"


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
