"""Shadow scoring: a candidate version scores the readings the serving version scored, off the hot path,
so that ops see how often it would decide differently before they promote it.

The serving path hands each request's readings and decisions over (`offer`: a lock and a queue append,
nothing more, not even a wake-up). One thread of the scorer's own, at the lowest CPU priority, wakes
every SHADOW_INTERVAL_S, scores what gathered in one run of the shadow version and counts the agreement.
Few large runs, not one per request: the shadow's Python work holds the GIL the serving threads need,
and its graph costs less per reading in a batch (docs/benchmarks.md, "Issue 18"). The queue is bounded
in readings (SHADOW_QUEUE_ROWS): what does not fit is dropped and counted, never waited for. A shadow run
that fails counts its readings as dropped (`failed`) and is logged. No answer ever depends on the shadow.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from factory_anomaly.app.config import Settings
from factory_anomaly.app.errors import ErrorCode, ReloadFailed
from factory_anomaly.app.model import Assessment, LoadedModel
from factory_anomaly.app.model.registry import ModelRegistry, check_version_name, load_version
from factory_anomaly.app.observability.metrics import AGREEMENTS, SHADOW_DROPS, Metrics
from factory_anomaly.artifact import ArtifactError, iso_utc

log = logging.getLogger("app.shadow")

LOWEST_PRIORITY = 19  # nice: the shadow thread runs on CPU time the serving threads leave
SHADOW_BATCH_ROWS = 256  # readings per shadow run at most (the queued requests' readings, concatenated)
SHADOW_INTERVAL_S = 0.05  # the thread wakes this often, not per request: fewer, larger runs


@dataclass
class ShadowCounts:
    """What the shadow saw since it was loaded (the admin API's answer; Prometheus has the same as
    counters, which survive a reload of the shadow)."""

    agreement: dict[str, int] = field(default_factory=lambda: dict.fromkeys(AGREEMENTS, 0))
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SHADOW_DROPS, 0))

    @property
    def readings(self) -> int:
        return sum(self.agreement.values())

    def flag_rates(self) -> dict[str, float | None]:
        """Each version's share of the shadowed readings it flagged: the same readings, so comparable."""
        n = self.readings
        serving = self.agreement["both"] + self.agreement["serving_only"]
        shadow = self.agreement["both"] + self.agreement["shadow_only"]
        return {"serving": serving / n if n else None, "shadow": shadow / n if n else None}


@dataclass(frozen=True)
class _Work:
    generation: int  # the shadow load it was offered to: work for an unloaded shadow is skipped
    x: np.ndarray
    serving_scores: np.ndarray
    serving_flags: np.ndarray


class ShadowScorer:
    def __init__(self, settings: Settings, metrics: Metrics, registry: ModelRegistry) -> None:
        # the shadow's session runs on its own thread only: onnxruntime's intra-op pool threads would run
        # at normal priority
        self._settings = settings
        self._load_settings = settings.model_copy(update={"intra_op_threads": 1})
        self._metrics = metrics
        self._registry = registry
        self._model: LoadedModel | None = None
        self._loaded_at: str | None = None
        self._generation = 0
        self._counts = ShadowCounts()
        self._queue: deque[_Work] = deque()
        self._queued_rows = 0
        self._busy = False
        self._closed = False
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._load_lock = asyncio.Lock()

    @property
    def model(self) -> LoadedModel | None:
        return self._model

    async def load(self, version: str) -> LoadedModel:
        """Verify, load and warm up `version` as the shadow (in a worker thread), replacing any shadow;
        a failure is `ReloadFailed` with the artifact's code, and the shadow stays as it was."""
        check_version_name(version)
        async with self._load_lock:
            try:
                model = await asyncio.to_thread(load_version, self._load_settings, version)
            except ArtifactError as exc:
                log.error(
                    "shadow load failed", extra={"code": exc.code, "reason": exc.message, "version": version}
                )
                raise ReloadFailed(f"{exc.message} (the shadow is unchanged)", code=exc.code) from exc
            serving = self._registry.model
            if serving is not None and model.sensor_names != serving.sensor_names:
                # its runs would fail, or compare different sensors: refused, not counted as failures
                raise ReloadFailed(
                    f"version {version} reads {len(model.sensor_names)} sensors that are not the serving "
                    f"version's {len(serving.sensor_names)} in the same order (the shadow is unchanged)",
                    code=ErrorCode.SHADOW_MISMATCH,
                )
            with self._ready:
                self._model, self._generation = model, self._generation + 1
                self._loaded_at = iso_utc(datetime.now(UTC))
                self._counts = ShadowCounts()
                self._start()
                self._ready.notify_all()
        self._metrics.shadow_loaded(model.version)
        log.info("shadow loaded", extra={"model_version": model.version, "load_seconds": model.load_seconds})
        return model

    def unload(self) -> str | None:
        """Let go of the shadow version (its queued work is skipped); the version it was, if any."""
        with self._ready:
            model, self._model = self._model, None
            self._generation += 1
            self._queue.clear()
            self._queued_rows = 0
            self._ready.notify_all()
        self._metrics.shadow_loaded(None)
        if model is not None:
            log.info("shadow unloaded", extra={"model_version": model.version})
        return None if model is None else model.version

    def offer(self, x: np.ndarray, assessment: Assessment) -> None:
        """The serving version's readings and decisions of one request, for the shadow to score later;
        dropped (and counted) when the queue is full. Cheap: called on the serving path."""
        if self._model is None:
            return
        rows = len(x)
        with self._ready:
            if self._model is None:
                return
            if self._queued_rows + rows > self._settings.shadow_queue_rows:
                self._counts.dropped["queue_full"] += rows
                dropped = True
            else:
                work = _Work(self._generation, x, assessment.scores, assessment.is_anomaly)
                self._queue.append(work)  # no wake-up: the thread takes what gathered every interval
                self._queued_rows += rows
                dropped = False
        if dropped:
            self._metrics.shadow_dropped_readings("queue_full", rows)

    def status(self) -> dict[str, Any]:
        """The shadow version, since when, and what it saw since then."""
        with self._ready:
            model, counts, pending = self._model, self._counts, self._queued_rows
            return {
                "version": None if model is None else model.version,
                "loaded_at": self._loaded_at if model is not None else None,
                "threshold": None if model is None else model.threshold,
                "target_fpr": None if model is None else model.manifest.threshold.target_fpr,
                "readings": counts.readings,
                "agreement": dict(counts.agreement),
                "dropped": dict(counts.dropped),
                "flag_rate": counts.flag_rates(),
                "pending": pending,
            }

    def wait_idle(self, timeout_s: float) -> bool:
        """True once every reading offered so far has been scored (or skipped); False after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._ready:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._ready.wait(left)
            return True

    def close(self) -> None:
        """Stop the thread (queued work is dropped: the process is stopping)."""
        with self._ready:
            self._closed = True
            self._queue.clear()
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join()

    # --- the thread ---------------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        lower_priority()
        while True:
            with self._ready:
                self._busy = False
                self._ready.notify_all()
                if self._model is None and not self._closed:
                    self._ready.wait()  # no shadow: nothing to do until one is loaded
                elif self._queued_rows < SHADOW_BATCH_ROWS and not self._closed:
                    self._ready.wait(SHADOW_INTERVAL_S)  # readings gather into one run meanwhile
                if self._closed:
                    return
                batch = self._take(SHADOW_BATCH_ROWS)
                model = self._model if batch is not None else None
                self._busy = model is not None
            if model is not None and batch is not None:
                try:
                    self._score(model, batch)
                except Exception:  # a bug here must not end the thread: every later reading would queue
                    log.exception("shadow bookkeeping failed", extra={"model_version": model.version})

    def _take(self, max_rows: int) -> _Work | None:
        """The queued work of the current shadow as one batch of up to `max_rows` readings (at least one
        request's), work for an unloaded shadow dropped; None when only such work was queued. Called with
        the lock held. One run over many readings: the shadow's Python work per reading (which holds the
        GIL the serving threads need) and its graph's cost per reading both shrink with the batch."""
        taken: list[_Work] = []
        rows = 0
        while self._queue and (not taken or rows + len(self._queue[0].x) <= max_rows):
            work = self._queue.popleft()
            self._queued_rows -= len(work.x)
            if work.generation == self._generation:
                taken.append(work)
                rows += len(work.x)
        if not taken:
            return None
        if len(taken) == 1:
            return taken[0]
        return _Work(
            self._generation,
            np.concatenate([work.x for work in taken]),
            np.concatenate([work.serving_scores for work in taken]),
            np.concatenate([work.serving_flags for work in taken]),
        )

    def _score(self, model: LoadedModel, work: _Work) -> None:
        try:
            shadow = model.assess(work.x, 0)
        except Exception:  # a bug or a broken graph: counted and logged, the answers never see it
            log.exception("shadow scoring failed", extra={"model_version": model.version})
            with self._ready:
                if work.generation != self._generation:  # unloaded or replaced meanwhile: not its failure
                    return
                self._counts.dropped["failed"] += len(work.x)
            self._metrics.shadow_dropped_readings("failed", len(work.x))
            return
        serving, flagged = work.serving_flags, shadow.is_anomaly
        agreement = {
            "both": int(np.count_nonzero(serving & flagged)),
            "serving_only": int(np.count_nonzero(serving & ~flagged)),
            "shadow_only": int(np.count_nonzero(~serving & flagged)),
            "neither": int(np.count_nonzero(~serving & ~flagged)),
        }
        base = work.serving_scores.astype(np.float64)
        comparable = np.isfinite(base) & (base > 0) & np.isfinite(shadow.scores)
        ratios = shadow.scores[comparable].astype(np.float64) / base[comparable]
        with self._ready:
            if work.generation != self._generation:
                return
            for name, count in agreement.items():
                self._counts.agreement[name] += count
        self._metrics.observe_shadow(agreement, ratios)


def lower_priority() -> None:
    """The calling thread's CPU priority to the lowest: Linux's SCHED_IDLE, under which it runs only when
    no other thread wants the CPU and yields it at once when one wakes, and nice 19 for a system without
    it. On Linux a thread has its own policy and nice value (its tid stands for a pid)."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, LOWEST_PRIORITY)
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # elsewhere, or not permitted: it still runs, as low as it could get
        log.warning("the shadow thread could not be given the lowest CPU priority")
