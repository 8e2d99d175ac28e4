"""Typed dependencies the routes receive (settings, registry, model, inference pool, metrics), authentication,
and reading a request body within MAX_BODY_BYTES and BODY_TIMEOUT_S.

`app.main` puts the settings, metrics, registry and pool on `app.state`; nothing here is global.
Dependencies are `async def` so FastAPI runs them inline rather than in its thread pool.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request, Response
from starlette.requests import ClientDisconnect

from factory_anomaly.app.config import Settings
from factory_anomaly.app.errors import (
    BodyTimeout,
    ErrorCode,
    Forbidden,
    MalformedRequest,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from factory_anomaly.app.model import LoadedModel
from factory_anomaly.app.model.registry import ModelRegistry
from factory_anomaly.app.observability.metrics import Metrics
from factory_anomaly.app.serving.service import ScoringService

JSON = "application/json"
OCTET_STREAM = "application/octet-stream"


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.registry
    return registry


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def get_model(registry: RegistryDep) -> LoadedModel:
    """The model serving when the request starts; the request keeps it even if a reload swaps another in."""
    return registry.require()


ModelDep = Annotated[LoadedModel, Depends(get_model)]


async def authorised(request: Request) -> tuple[ScoringService, LoadedModel]:
    """The API key check, then the service and the model serving now, read from `app.state` in one call.

    The hot routes (`/v1/score`, `/v1/score/batch`, `/v1/explain`) call this instead of declaring several
    `Depends`: FastAPI's dependency resolution is a measurable share of a single-reading request
    (docs/benchmarks.md). Same order as the dependencies had: 401 before 503."""
    state = request.app.state
    service: ScoringService = state.service
    await require_api_key(request, service.settings)
    return service, service.model()


def json_response(payload: dict[str, Any]) -> Response:
    """orjson writes each float32-valued number as the shortest text that parses back to it."""
    return Response(orjson.dumps(payload), media_type=JSON)


# --- authentication ---------------------------------------------------------------------------------------


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _matches(candidate: str, secret: str) -> bool:
    return hmac.compare_digest(candidate.encode(), secret.encode())


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    """With API_KEYS set: `Authorization: Bearer <key>` or `X-API-Key: <key>` must carry one of them."""
    if not settings.api_keys:
        return
    candidate = request.headers.get("x-api-key") or _bearer(request)
    if not candidate:
        raise Unauthorized(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            code=ErrorCode.MISSING_API_KEY,
        )
    # Compare with every key (no early exit), each in constant time.
    if not any([_matches(candidate, key.get_secret_value()) for key in settings.api_keys]):
        raise Unauthorized("the API key is not valid", code=ErrorCode.INVALID_API_KEY)


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """`Authorization: Bearer <ADMIN_TOKEN>`: unset token 403, missing 401, wrong 403."""
    if settings.admin_token is None:
        raise Forbidden(
            "the admin endpoints are disabled: ANOMALY_ADMIN_TOKEN is not set", code=ErrorCode.ADMIN_DISABLED
        )
    candidate = _bearer(request)
    if candidate is None:
        raise Unauthorized(
            "send the admin token as 'Authorization: Bearer <token>'", code=ErrorCode.MISSING_ADMIN_TOKEN
        )
    if not _matches(candidate, settings.admin_token.get_secret_value()):
        raise Forbidden("the admin token is not valid", code=ErrorCode.INVALID_ADMIN_TOKEN)


# --- bodies -----------------------------------------------------------------------------------------------


def media_type(request: Request, accepted: tuple[str, ...]) -> str:
    """The request's media type (parameters such as charset dropped) if it is one of `accepted`; else 415."""
    raw = request.headers.get("content-type")
    listed = " or ".join(accepted)
    if raw is None:
        raise UnsupportedMediaType(f"Content-Type is missing; this endpoint accepts {listed}")
    found = raw.partition(";")[0].strip().lower()
    if found not in accepted:
        raise UnsupportedMediaType(
            f"Content-Type {raw[:100]!r} is not supported; this endpoint accepts {listed}"
        )
    return found


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, refusing more than `max_bytes` with 413 `body_too_large`, or one that takes longer
    than `timeout_s` to arrive with 408 `body_timeout`.

    A Content-Length above the limit is refused before reading anything; a body without one (chunked)
    is counted while it arrives and refused as soon as it passes the limit, never buffered whole. The
    deadline is ours because uvicorn has none: it would wait forever for a client that stalls mid-body.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise MalformedRequest(
                f"Content-Length {declared[:40]!r} is not a byte count", code=ErrorCode.INVALID_CONTENT_LENGTH
            )
        if int(declared) > max_bytes:
            raise PayloadTooLarge(f"the body has {declared} bytes; at most {max_bytes} are accepted")
    chunks: list[bytes] = []
    size = 0
    receive = request.receive  # the ASGI messages themselves: Starlette's stream() adds a generator
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] != "http.request":  # http.disconnect
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes, the most accepted")
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        expected = f"of {declared} " if declared is not None else ""
        raise BodyTimeout(
            f"the body did not arrive within {timeout_s:g} s ({size} {expected}bytes received)"
        ) from None
    except ClientDisconnect:  # nobody reads the answer; not a server error worth a traceback
        raise MalformedRequest(
            "the client disconnected during the body", code=ErrorCode.CLIENT_DISCONNECTED
        ) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
