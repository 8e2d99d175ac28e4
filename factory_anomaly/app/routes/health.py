"""GET /healthz (the process is alive) and GET /readyz (a verified, warmed-up model is serving).

Both are open (no API key): orchestrators probe them.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from factory_anomaly.app.errors import ErrorCode, ServiceError
from factory_anomaly.app.model import LoadedModel
from factory_anomaly.app.model.registry import ModelRegistry
from factory_anomaly.app.routes.deps import RegistryDep
from factory_anomaly.app.wire.schemas import Health, LoadErrorInfo, Ready, error_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Ready,
    responses=error_responses(
        {503: "no model (`code` is the load error's), or the alarm journal cannot be written"}
    ),
    summary="Readiness: 200 only while a verified, warmed-up model is serving",
)
async def readyz(registry: RegistryDep, request: Request) -> Ready:
    model = await ready_model(request)
    failure = registry.last_error
    return Ready(
        model_name=model.manifest.name,
        model_version=model.version,
        provider=model.provider,
        last_load_error=None
        if failure is None
        else LoadErrorInfo(
            code=failure.code, message=failure.message, requested_version=failure.requested, at=failure.at
        ),
    )


async def ready_model(request: Request) -> LoadedModel:
    """The model serving, or the 503 saying why the service is not ready: the alarm journal cannot be
    written, or no model is loaded (with the load error's code). /readyz and V2's ready ask this."""
    journal_problem = await asyncio.to_thread(request.app.state.assets.check_journal)
    if journal_problem is not None:
        raise ServiceError(
            f"the alarm journal cannot be written: {journal_problem}", code=ErrorCode.JOURNAL_UNAVAILABLE
        )
    registry: ModelRegistry = request.app.state.registry
    failure = registry.last_error
    if registry.model is None and failure is not None:
        raise ServiceError(f"no model is loaded: {failure.message}", code=failure.code, status=503)
    return registry.require()  # 503 model_unavailable while no load has finished
