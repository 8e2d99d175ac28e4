"""The FastAPI application: `create_app(settings)` builds it, `app` is what `uvicorn app.main:app` serves.

Nothing heavy happens at import: the lifespan loads the model (in a worker thread) and owns the registry
and the inference pool. A missing or bad artifact does not stop the process: it starts, `/healthz` is
200, and `/readyz` and the scoring endpoints answer 503 saying why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.config import Settings, get_settings
from app.errors import ReloadFailed
from app.logs import configure_logging
from app.middleware import RequestContextMiddleware
from app.registry import ModelRegistry
from app.routes import admin, explain, health, model, scoring
from app.routes.errors import install_error_handlers
from app.scoring import InferencePool

log = logging.getLogger("app.main")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = ModelRegistry(settings)
        pool = InferencePool(settings.scoring_threads)
        app.state.registry, app.state.pool = registry, pool
        log.info("starting", extra={"settings": settings.model_dump(mode="json")})
        try:
            await registry.load()
        except ReloadFailed as exc:  # already logged; /readyz reports it
            log.warning("serving without a model until a reload succeeds", extra={"code": exc.code})
        try:
            yield
        finally:
            await asyncio.to_thread(pool.close)  # in-flight inferences finish first
            log.info("stopped")

    app = FastAPI(
        title="Factory anomaly detection",
        summary="Scores factory sensor readings with an ONNX autoencoder; a reading is anomalous when its "
        "score exceeds the model's calibrated threshold.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)
    for router in (scoring.router, explain.router, model.router, health.router, admin.router):
        app.include_router(router)

    # --- metrics: the Prometheus middleware and GET /metrics go here (next issue). Keep it a pure ASGI
    # middleware added after RequestContextMiddleware so it sees the final status of every request.

    return app


app = create_app()
