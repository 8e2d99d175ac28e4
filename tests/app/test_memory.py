"""app.memory: freed heap pages really go back to the OS (glibc), as reloads rely on."""

from __future__ import annotations

import ctypes.util

import numpy as np
import pytest

from factory_anomaly.app.model.memory import release_freed_memory


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="no C library to trim")
def test_freed_small_allocations_are_returned() -> None:
    release_freed_memory()
    before = _rss_mib()
    # ~200 MiB in 4 KiB blocks: below glibc's mmap threshold, so they come from the heap, which keeps
    # their pages after free() until trimmed (freeing in reverse leaves no live block on top of the heap)
    blocks = [np.ones(512) for _ in range(50_000)]
    held = _rss_mib()
    assert held - before > 150
    del blocks
    assert release_freed_memory()
    assert _rss_mib() - before < 50, (before, held, _rss_mib())
