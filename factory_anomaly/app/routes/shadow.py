"""Shadow scoring's admin calls (`app.serving.shadow`): load a candidate version beside the serving one,
see how often it decides differently on the same readings, unload it, or promote it.

`Authorization: Bearer <ADMIN_TOKEN>`, as /v1/admin/reload. Promoting is a reload of the shadow's version
(verified and warmed up again, then swapped in) followed by an unload of the shadow.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from factory_anomaly.app.errors import ErrorCode, InvalidInput, ServiceError
from factory_anomaly.app.routes.admin import requested_version
from factory_anomaly.app.routes.deps import RegistryDep, SettingsDep, require_admin
from factory_anomaly.app.serving.shadow import ShadowScorer
from factory_anomaly.app.wire.schemas import (
    ReloadResponse,
    ShadowRequest,
    ShadowStatus,
    error_responses,
    openapi_body,
)

router = APIRouter(prefix="/v1/admin/shadow", tags=["admin"], dependencies=[Depends(require_admin)])

_ADMIN = {401: "no admin token", 403: "wrong admin token, or admin endpoints disabled (`admin_disabled`)"}


def _shadow(request: Request) -> ShadowScorer:
    shadow: ShadowScorer = request.app.state.shadow
    return shadow


def _status(shadow: ShadowScorer) -> ShadowStatus:
    return ShadowStatus.model_validate(shadow.status())


@router.get("", response_model=ShadowStatus, responses=error_responses(_ADMIN), summary="The shadow version")
async def shadow_status(request: Request) -> ShadowStatus:
    return _status(_shadow(request))


@router.post(
    "",
    response_model=ShadowStatus,
    responses=error_responses(
        _ADMIN
        | {
            400: "malformed JSON",
            408: "the body did not arrive within BODY_TIMEOUT_S",
            409: "the load failed (code = the reason); the shadow is unchanged",
            413: "body too large",
            415: "Content-Type missing or not JSON",
            422: "no version, or an invalid version name",
        }
    ),
    openapi_extra=openapi_body(ShadowRequest),
    summary="Load a version as the shadow",
)
async def load_shadow(request: Request, settings: SettingsDep) -> ShadowStatus:
    version = await requested_version(request, settings.body_timeout_s)
    if version is None:
        raise InvalidInput('send {"version": "..."}: the version to shadow', code=ErrorCode.MISSING_FIELD)
    shadow = _shadow(request)
    await shadow.load(version)
    return _status(shadow)


@router.delete(
    "", response_model=ShadowStatus, responses=error_responses(_ADMIN), summary="Unload the shadow"
)
async def unload_shadow(request: Request) -> ShadowStatus:
    shadow = _shadow(request)
    shadow.unload()
    return _status(shadow)


@router.post(
    "/promote",
    response_model=ReloadResponse,
    responses=error_responses(
        _ADMIN | {409: "no shadow is loaded (`no_shadow`), or its version failed to load (code = the reason)"}
    ),
    summary="Serve the shadow's version (a verified reload), then unload the shadow",
)
async def promote_shadow(request: Request, registry: RegistryDep) -> ReloadResponse:
    shadow = _shadow(request)
    candidate = shadow.model
    if candidate is None:
        raise ServiceError("no shadow version is loaded; load one first", code=ErrorCode.NO_SHADOW)
    swap = await registry.load(candidate.version)
    if shadow.model is candidate:  # not replaced meanwhile
        shadow.unload()
    return ReloadResponse.of(swap)
