"""Giving freed heap memory back to the operating system after a model load, and keeping less of it.

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
import os
from functools import cache

_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


@cache
def _glibc(function: str) -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    try:
        found = getattr(ctypes.CDLL(name), function) if name else None
    except (OSError, AttributeError):
        return None
    return found


def limit_malloc_arenas(arenas: int) -> bool:
    """At most `arenas` glibc malloc arenas from now on (threads started earlier keep theirs, so call it
    before the service starts its threads). 0, a MALLOC_ARENA_MAX in the environment (the operator's
    choice), or no glibc: nothing is changed. True when the limit was set."""
    mallopt = _glibc("mallopt")
    if arenas <= 0 or "MALLOC_ARENA_MAX" in os.environ or mallopt is None:
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


def release_freed_memory() -> bool:
    """Hand the allocator's free pages back to the OS (under a millisecond here; ctypes releases the GIL
    for the call). True when glibc's `malloc_trim` was there to call."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True
