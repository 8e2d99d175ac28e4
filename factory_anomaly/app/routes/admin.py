"""POST /v1/admin/reload: load a version (or the one CURRENT names), verify, warm up, then swap.

`Authorization: Bearer <ADMIN_TOKEN>`. A failed load answers 409 with the reason's ArtifactError code
(e.g. `checksum_mismatch`, `version_missing`) and the previous model keeps serving.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request

from factory_anomaly.app.errors import ErrorCode, InvalidInput, MalformedRequest
from factory_anomaly.app.routes.deps import (
    JSON,
    RegistryDep,
    SettingsDep,
    media_type,
    read_body,
    require_admin,
)
from factory_anomaly.app.wire.parse import refuse_duplicate_fields
from factory_anomaly.app.wire.schemas import ReloadRequest, ReloadResponse, error_responses, openapi_body

RELOAD_BODY_BYTES = 4096  # {"version": "..."} needs far less

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


async def requested_version(request: Request, timeout_s: float) -> str | None:
    """The optional body `{"version": "..."}`; no body (0 bytes) means "the version CURRENT names". A body
    of whitespace is not JSON (400), never read as "no body"."""
    body = await read_body(request, RELOAD_BODY_BYTES, timeout_s)
    if not body:
        return None
    media_type(request, (JSON,))
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from None
    if type(doc) is not dict:
        raise InvalidInput(
            'the body must be a JSON object such as {"version": "..."}', code=ErrorCode.INVALID_TYPE
        )
    for key in doc:
        if key != "version":
            raise InvalidInput(
                f"unknown field {key[:40]!r} (accepted: version)", code=ErrorCode.UNKNOWN_FIELD
            )
    version = doc.get("version")
    if version is not None and type(version) is not str:
        raise InvalidInput("version must be a string", code=ErrorCode.INVALID_TYPE)
    refuse_duplicate_fields(body, doc)  # {"version": "a", "version": "b"} must not load b
    return version


@router.post(
    "/reload",
    response_model=ReloadResponse,
    responses=error_responses(
        {
            400: "malformed JSON",
            401: "no admin token",
            403: "wrong admin token, or admin endpoints disabled (`admin_disabled`)",
            408: "the body did not arrive within BODY_TIMEOUT_S",
            409: "the load failed (code = the reason); the previous model keeps serving",
            413: f"body larger than {RELOAD_BODY_BYTES} bytes",
            415: "a body whose Content-Type is missing or not JSON",
            422: "invalid body or version name",
        }
    ),
    openapi_extra=openapi_body(ReloadRequest, required=False),
    summary="Load and swap in a model version",
)
async def reload(request: Request, registry: RegistryDep, settings: SettingsDep) -> ReloadResponse:
    version = await requested_version(request, settings.body_timeout_s)
    swap = await registry.load(version)
    return ReloadResponse.of(swap)
