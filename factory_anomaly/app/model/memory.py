"""Giving freed heap memory back to the operating system after a model load.

Why: a reload builds the new version's onnxruntime sessions while the old ones still serve, then drops
the old ones. glibc's allocator keeps the freed pages, so without help the process's RSS grows by tens of
MiB over the first reloads; `malloc_trim(0)` returns them (measured in docs/reliability.md, "Soak"). No
`gc.collect()` first: the old sessions are freed by reference counting when the registry drops them, and a
full collection holds the GIL long enough to stall every request (same section). Not glibc (musl, macOS):
nothing to do, and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _malloc_trim() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    return trim


def release_freed_memory() -> bool:
    """Hand the allocator's free pages back to the OS (under a millisecond here; ctypes releases the GIL
    for the call). True when glibc's `malloc_trim` was there to call."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
