"""The FastAPI application: `create_app(settings)` builds it, `app` is what `uvicorn
factory_anomaly.app.main:app` serves.

Nothing heavy happens at import: the lifespan loads the model (in a worker thread) and owns the registry,
the inference pool and the micro-batcher (when enabled); the app's Prometheus metrics (`app.metrics`)
live on a registry of its own. A missing or bad artifact does not stop the process: it starts, `/healthz`
is 200, and `/readyz` and the scoring endpoints answer 503 saying why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from factory_anomaly.app.config import Settings, get_settings
from factory_anomaly.app.errors import ReloadFailed, ServiceError
from factory_anomaly.app.model.memory import limit_malloc_arenas, release_freed_memory
from factory_anomaly.app.model.registry import ModelRegistry
from factory_anomaly.app.observability.logs import configure_logging
from factory_anomaly.app.observability.metrics import Metrics
from factory_anomaly.app.observability.middleware import ServiceMiddleware
from factory_anomaly.app.routes import admin, alarms, explain, health, model, scoring, shadow, v2
from factory_anomaly.app.routes import metrics as metrics_route
from factory_anomaly.app.routes.errors import install_error_handlers
from factory_anomaly.app.routes.hot import hot_routes
from factory_anomaly.app.serving.assets import AssetBook
from factory_anomaly.app.serving.journal import AlarmJournal, JournalError
from factory_anomaly.app.serving.pool import InferencePool
from factory_anomaly.app.serving.service import ScoringService, micro_batcher
from factory_anomaly.app.serving.shadow import ShadowScorer

log = logging.getLogger("app.main")

LEASE_SYNCS = 10  # a process that has not synced for this many intervals is taken for gone
MIN_LEASE_S = 5.0


def create_app(
    settings: Settings | None = None, metrics_registry: CollectorRegistry | None = None
) -> FastAPI:
    """The app for `settings` (default: the environment's). Its metrics live on `metrics_registry`, a fresh
    `CollectorRegistry` unless one is given: never prometheus_client's global one, so apps built side by
    side (tests) do not share counters or collide on names."""
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    metrics = Metrics(metrics_registry or CollectorRegistry(), settings.model_name, settings.max_assets)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limit_malloc_arenas(settings.malloc_arenas)  # before the first of our threads starts
        registry = ModelRegistry(settings, observer=metrics)
        pool = InferencePool(settings.scoring_threads)
        app.state.registry, app.state.pool = registry, pool
        app.state.batcher = batcher = micro_batcher(settings, pool, metrics)
        app.state.assets = assets = open_asset_book(settings)
        metrics.open_alarms.book = assets
        assets.on_close = metrics.episode_closed
        app.state.shadow = shadow_scorer = ShadowScorer(settings, metrics, registry)
        app.state.service = ScoringService(settings, registry, pool, metrics, batcher, assets, shadow_scorer)
        log.info("starting", extra={"settings": settings.model_dump(mode="json")})
        try:
            await registry.load()
        except ReloadFailed as exc:  # already logged; /readyz reports it
            log.warning("serving without a model until a reload succeeds", extra={"code": exc.code})
        if settings.shadow_version:  # unset or empty: none
            try:
                await shadow_scorer.load(settings.shadow_version)
            except ServiceError as exc:  # a bad name, or a failed load (logged): serving goes on without one
                log.warning(
                    "no shadow scoring until one is loaded", extra={"code": exc.code, "reason": exc.message}
                )
        syncing = None
        if assets.journal is not None:  # alone on the journal too: the rounds write the held state
            syncing = asyncio.create_task(sync_journal(assets, settings.journal_sync_s))
        trimming = None
        if settings.memory_trim_s > 0:
            trimming = asyncio.create_task(trim_memory(metrics, settings.memory_trim_s))
        try:
            yield
        finally:
            for task in (syncing, trimming):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if batcher is not None:
                await batcher.close()
            await asyncio.to_thread(shadow_scorer.close)
            await asyncio.to_thread(pool.close)  # in-flight inferences finish first
            assets.close()
            log.info("stopped")

    app = FastAPI(
        title="Factory anomaly detection",
        summary="Scores factory sensor readings with an ONNX autoencoder; a reading is anomalous when its "
        "score exceeds the model's calibrated threshold.",
        version="1",
        lifespan=lifespan,
        # the service's telemetry is its Prometheus metrics and JSON logs; FastAPI's native OpenTelemetry
        # would otherwise ask the global OTel providers on every request whether it is configured
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings, app.state.metrics = settings, metrics
    install_error_handlers(app)
    modules = (scoring, explain, alarms, model, health, admin, shadow, v2, metrics_route)
    routers = [module.router for module in modules]
    for router in routers:
        app.include_router(router)
    hot = hot_routes((route for router in routers for route in router.routes), settings.model_name)
    app.add_middleware(
        ServiceMiddleware, metrics=metrics, hot=hot, access_log_sample=settings.access_log_sample
    )
    metrics.init_routes(route for router in routers for route in router.routes)
    return app


def open_asset_book(settings: Settings) -> AssetBook:
    """The asset book, with its journal restored when ALARM_DB names one. A journal that cannot be opened
    does not stop the process: alarms are kept in memory and /readyz answers 503 saying why."""
    if settings.alarm_db is None:
        return AssetBook(settings.asset_ttl_s, settings.max_tracked_assets)
    try:
        journal = AlarmJournal(settings.alarm_db)
    except JournalError as exc:
        log.error("alarm journal unavailable", extra={"error": str(exc)})
        book = AssetBook(settings.asset_ttl_s, settings.max_tracked_assets)
        book.journal_error = str(exc)
        return book
    lease_s = max(MIN_LEASE_S, LEASE_SYNCS * settings.journal_sync_s)
    book = AssetBook(settings.asset_ttl_s, settings.max_tracked_assets, journal=journal, lease_s=lease_s,
                     retention_s=settings.alarm_retention_days * 86_400.0)  # fmt: skip
    restored = book.restore()
    log.info("alarm journal restored", extra={"path": str(settings.alarm_db), "open_episodes": restored})
    return book


async def sync_journal(book: AssetBook, interval_s: float) -> None:
    """Every `interval_s`, one round with the other processes sharing the journal (`AssetBook.sync`), in a
    worker thread: it may wait for another process's write."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(book.sync)
        except Exception:  # a bug: logged, and the next round tries again
            log.exception("alarm journal sync failed")


async def trim_memory(metrics: Metrics, interval_s: float) -> None:
    """Every `interval_s` in which requests were served, hand the pages they freed back to the OS
    (`release_freed_memory`, in a worker thread). glibc keeps a freed block's pages while anything lives
    above it on the heap, so batch traffic leaves the heap at its busiest size for good; a trim gives the
    free part back at the cost of faulting it in again on the next burst (docs/benchmarks.md, "Issue 17")."""
    served = metrics.requests_served()
    while True:
        await asyncio.sleep(interval_s)
        now = metrics.requests_served()
        if now != served:
            served = now
            await asyncio.to_thread(release_freed_memory)


app = create_app()
