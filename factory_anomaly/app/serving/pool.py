"""The inference pool: dedicated threads for a request's CPU work (body parsing and onnxruntime; its `run`
releases the GIL), so the event loop never waits on it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class InferencePool:
    """Dedicated threads for request CPU work (body parsing and onnxruntime), so the event loop never
    waits on it and a burst of scoring never starves the loop's default pool (used for reloads)."""

    def __init__(self, threads: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ort")

    async def run(self, fn: Callable[[], T], *, inline: bool = False) -> T:
        """`fn()` on a pool thread (or here, when `inline`: small work costs less than the hop); its
        exception, if any, is raised here."""
        if inline:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def close(self) -> None:
        """Wait for running inferences, then stop the threads."""
        self._executor.shutdown(wait=True)
