import sys

import pytest

from acealign import memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_limit_heap_fragments_sets_glibc_threshold(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    if memory._libc() is None:
        pytest.skip("not glibc")
    assert memory.limit_heap_fragments() == memory.MMAP_THRESHOLD
    assert memory.limit_heap_fragments(4 << 20) == 4 << 20


def test_user_threshold_wins_and_bad_threshold_is_an_error(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert memory.limit_heap_fragments() is None
    with pytest.raises(ValueError, match="positive"):
        memory.limit_heap_fragments(0)


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
