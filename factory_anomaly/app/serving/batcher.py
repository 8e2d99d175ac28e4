"""Dynamic micro-batching: concurrent single-reading requests share one onnxruntime run.

Why: a call to onnxruntime has a fixed cost beside the per-reading work (measured in docs/benchmarks.md,
"Dynamic micro-batching"), and so does the hop to a worker thread. Under
concurrent load, single readings waiting at the same moment can share both.

How: a request puts its parsed reading on a bounded queue and awaits its own future. `workers` consumer
tasks each take the oldest waiting reading, then every reading already waiting (up to `max_batch`) and,
when `max_delay_s` > 0, keep collecting until `max_delay_s` after that oldest reading arrived. A batch is
split by model (a reload may swap the model between two arrivals, and each request finishes on the model
it started with), stacked, assessed in one run and each future gets its own row. A lone reading runs on
the event loop, as an unbatched small request would (the thread hop would cost more than the run), unless
INLINE_MAX_BODY_BYTES is 0; a batch of several runs on the inference pool. With a delay there is one
worker: asyncio.Queue wakes the longest-waiting getter, so a second, idle worker would take the readings
the first is collecting for and split every batch in two. A full queue refuses the request at once (503
`overloaded` with Retry-After) rather than letting waits grow without bound.

Framework-free: `Overloaded` is an `app.errors` error, which the error handlers render.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from factory_anomaly.app.errors import Overloaded
from factory_anomaly.app.model import Assessment, LoadedModel
from factory_anomaly.app.serving.pool import InferencePool


@dataclass
class _Waiting:
    model: LoadedModel
    x: np.ndarray  # float32 [1, n]
    future: asyncio.Future[Assessment]
    enqueued: float = field(default_factory=time.perf_counter)


BatchObserver = Callable[[LoadedModel, np.ndarray, Assessment, list[float]], None]
"""Called once per run with the stacked readings [B, n], their assessment and each reading's queue wait in
seconds (the metrics)."""


class MicroBatcher:
    """Coalesces single readings into batched `LoadedModel.assess` runs; see the module docstring."""

    def __init__(
        self,
        pool: InferencePool,
        *,
        max_batch: int,
        max_delay_s: float,
        queue_size: int,
        workers: int,
        top_k: int,
        observe: BatchObserver | None = None,
        inline_single: bool = True,
    ) -> None:
        if max_batch < 2 or max_delay_s < 0 or queue_size < 1 or workers < 1:
            raise ValueError(
                f"micro-batching needs max_batch >= 2, max_delay_s >= 0, queue_size >= 1, workers >= 1; got "
                f"{max_batch}, {max_delay_s}, {queue_size}, {workers}"
            )
        self.max_batch, self.max_delay_s, self.top_k = max_batch, max_delay_s, top_k
        self.inline_single = inline_single
        self._pool, self._observe = pool, observe
        self._queue: asyncio.Queue[_Waiting] = asyncio.Queue(maxsize=queue_size)
        self._workers = [asyncio.create_task(self._work(), name=f"microbatch-{i}") for i in range(workers)]

    @property
    def waiting(self) -> int:
        """Readings queued and not yet taken into a batch."""
        return self._queue.qsize()

    async def assess(self, model: LoadedModel, x: np.ndarray) -> Assessment:
        """The assessment of one reading `x` float32 [1, n] (its `top_sensors` keyed by row 0), computed in
        a batch with whatever other readings are waiting; `Overloaded` if the queue is full."""
        if x.shape[0] != 1:
            raise ValueError(f"micro-batching takes one reading at a time, got {x.shape[0]}")
        future: asyncio.Future[Assessment] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Waiting(model, x, future))
        except asyncio.QueueFull:
            raise Overloaded(f"{self._queue.maxsize} readings are already waiting to be scored") from None
        return await future

    async def close(self) -> None:
        """Stop the workers; readings still queued are failed (shutdown only comes after the server has
        stopped taking requests and finished the ones in flight, so none should be left)."""
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while not self._queue.empty():
            waiting = self._queue.get_nowait()
            if not waiting.future.done():
                waiting.future.set_exception(RuntimeError("the service is shutting down"))

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            try:
                deadline = batch[0].enqueued + self.max_delay_s
                while len(batch) < self.max_batch:
                    if not self._queue.empty():
                        batch.append(self._queue.get_nowait())
                        continue
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                    except TimeoutError:
                        break
                await self._run(batch)
            except asyncio.CancelledError:  # close(): the readings this worker holds get an answer too
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(RuntimeError("the service is shutting down"))
                raise

    async def _run(self, batch: list[_Waiting]) -> None:
        """Assess `batch` (split by model) and settle every future; never raises, so a worker survives."""
        started = time.perf_counter()
        by_model: dict[int, list[_Waiting]] = {}
        for waiting in batch:
            by_model.setdefault(id(waiting.model), []).append(waiting)
        for group in by_model.values():
            group = [w for w in group if not w.future.done()]  # a cancelled request needs no answer
            if not group:
                continue
            model = group[0].model
            x = group[0].x if len(group) == 1 else np.concatenate([w.x for w in group])
            waits = [started - w.enqueued for w in group]
            try:
                assessment = await self._pool.run(
                    partial(self._assess, model, x, waits), inline=len(group) == 1 and self.inline_single
                )
            except Exception as exc:  # the requests answer with it (a 500); the worker goes on
                for waiting in group:
                    if not waiting.future.done():
                        waiting.future.set_exception(exc)
                continue
            for row, waiting in enumerate(group):
                if not waiting.future.done():
                    waiting.future.set_result(_row(assessment, row))

    def _assess(self, model: LoadedModel, x: np.ndarray, waits: list[float]) -> Assessment:
        """The run and its metrics, on the thread that runs it."""
        assessment = model.assess(x, self.top_k)
        if self._observe is not None:
            self._observe(model, x, assessment, waits)
        return assessment


def _row(assessment: Assessment, row: int) -> Assessment:
    """Row `row` of a batch's assessment, as the assessment of a batch of one."""
    top = assessment.top_sensors.get(row)
    return Assessment(
        scores=assessment.scores[row : row + 1],
        is_anomaly=assessment.is_anomaly[row : row + 1],
        top_sensors={} if top is None else {0: top},
        run_seconds=assessment.run_seconds,
        sensor_error=None if assessment.sensor_error is None else assessment.sensor_error[row : row + 1],
    )
