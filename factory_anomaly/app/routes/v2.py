"""The Open Inference Protocol (V2, KServe's and Triton's HTTP API) beside /v1: server and model metadata,
health, and infer with Triton's binary tensor extension (`wire.v2` reads and writes the bytes).

The model is the one serving, under ANOMALY_MODEL_NAME; a version in the path must be the one serving.
Infer takes the readings of one asset (the `X-Asset` header, as on /v1) and goes through the same service
as /v1/score/batch: the same validation, limits, metrics, anomaly log and alarms. Errors come in V2's
shape (`routes.errors`). Health and server metadata are open, as /healthz and /readyz are; the model
routes take the API key, as /v1's do.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from factory_anomaly.app.errors import ErrorCode, NotFound, UnsupportedMediaType
from factory_anomaly.app.model import LoadedModel
from factory_anomaly.app.observability.logs import request_id_var
from factory_anomaly.app.routes.deps import (
    JSON,
    OCTET_STREAM,
    authorised,
    read_body,
    require_api_key,
)
from factory_anomaly.app.routes.health import ready_model
from factory_anomaly.app.routes.scoring import asset_headers
from factory_anomaly.app.serving.service import V2_INFER_ROUTE, ScoringService
from factory_anomaly.app.wire.parse import Readings
from factory_anomaly.app.wire.v2 import (
    EXTENSIONS,
    HEADER_LENGTH_HEADER,
    InferRequest,
    check_encoding,
    decode_content,
    infer_answer,
    model_metadata,
    parse_infer,
)
from factory_anomaly.app.wire.v2_schemas import (
    V2InferRequest,
    V2InferResponse,
    V2Live,
    V2ModelMetadata,
    V2ModelReady,
    V2Ready,
    V2ServerMetadata,
    v2_error_responses,
)

SERVER_NAME = "factory-anomaly"
MODEL = "/models/{model_name}"
VERSION = "/models/{model_name}/versions/{model_version}"

router = APIRouter(prefix="/v2", tags=["open inference protocol (v2)"])

_MODEL_ERRORS = {
    401: "missing or unknown API key",
    404: "`unknown_model`: not the model served, or a version other than the one serving",
    503: "no model is loaded",
}
_INFER_ERRORS = v2_error_responses(
    _MODEL_ERRORS
    | {
        400: "malformed JSON, a bad Inference-Header-Content-Length, or a body that does not decompress",
        408: "the body did not arrive within BODY_TIMEOUT_S",
        413: "body larger than MAX_BODY_BYTES (compressed or not), or more rows than MAX_BATCH",
        415: "a Content-Type other than JSON or octet-stream, a Content-Encoding other than gzip or deflate",
        422: "the readings cannot be scored (the message names the element), an unknown tensor or parameter, "
        "a wrong datatype or shape, or a bad X-Asset",
    }
)
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {JSON: {"schema": V2InferRequest.model_json_schema()}},
        "description": "JSON; or, with Triton's binary tensor extension, the JSON's first "
        "Inference-Header-Content-Length bytes followed by the readings as little-endian float32.",
    }
}
_INFER_ANSWERS = {
    200: {
        "description": "JSON; with binary outputs, the JSON's Inference-Header-Content-Length bytes followed "
        "by each binary output in the order listed.",
        "content": {OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
    }
}


@cache
def _server_version() -> str:
    """The installed package's version, read once (the package metadata does not change while serving)."""
    try:
        return version("factory-anomaly")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0"


@router.get("", response_model=V2ServerMetadata, summary="Server metadata")
async def server_metadata() -> V2ServerMetadata:
    return V2ServerMetadata(name=SERVER_NAME, version=_server_version(), extensions=list(EXTENSIONS))


@router.get("/health/live", response_model=V2Live, summary="Liveness (as /healthz)")
async def live() -> V2Live:
    return V2Live(live=True)


@router.get(
    "/health/ready",
    response_model=V2Ready,
    responses=v2_error_responses({503: "no model, or the alarm journal cannot be written (as /readyz)"}),
    summary="Readiness (as /readyz)",
)
async def ready(request: Request) -> V2Ready:
    await ready_model(request)
    return V2Ready(ready=True)


def _served(request: Request, model_name: str, model_version: str | None) -> LoadedModel:
    """The model serving, when the path names it (404 `unknown_model` otherwise)."""
    service: ScoringService = request.app.state.service
    served = service.settings.model_name
    if model_name != served:
        raise NotFound(
            f"no model {model_name[:100]!r}; this service serves {served!r}", code=ErrorCode.UNKNOWN_MODEL
        )
    model = service.model()
    if model_version is not None and model_version != model.version:
        raise NotFound(
            f"version {model_version[:100]!r} of {served!r} is not serving; {model.version!r} is",
            code=ErrorCode.UNKNOWN_MODEL,
        )
    return model


_KEYED = [Depends(require_api_key)]


_META: dict[str, Any] = {
    "response_model": V2ModelMetadata,
    "responses": v2_error_responses(_MODEL_ERRORS),
    "dependencies": _KEYED,
}
_READY: dict[str, Any] = {
    "response_model": V2ModelReady,
    "responses": v2_error_responses(_MODEL_ERRORS),
    "dependencies": _KEYED,
}
_INFER: dict[str, Any] = {
    "response_model": V2InferResponse,
    "responses": _INFER_ERRORS | _INFER_ANSWERS,
    "openapi_extra": _INFER_BODY,
}


@router.get(MODEL, summary="Model metadata", **_META)
async def metadata(request: Request, model_name: str) -> V2ModelMetadata:
    return _metadata(request, model_name, None)


@router.get(VERSION, summary="Model metadata of a version", **_META)
async def version_metadata(request: Request, model_name: str, model_version: str) -> V2ModelMetadata:
    return _metadata(request, model_name, model_version)


@router.get(MODEL + "/ready", summary="Model readiness", **_READY)
async def model_ready(request: Request, model_name: str) -> V2ModelReady:
    _served(request, model_name, None)
    return V2ModelReady(name=model_name, ready=True)


@router.get(VERSION + "/ready", summary="Model readiness of a version", **_READY)
async def version_ready(request: Request, model_name: str, model_version: str) -> V2ModelReady:
    _served(request, model_name, model_version)
    return V2ModelReady(name=model_name, ready=True)


@router.post(MODEL + "/infer", summary="Score readings (V2 infer)", **_INFER)
async def infer(request: Request, model_name: str) -> Response:
    return await _infer(request, model_name, None)


@router.post(VERSION + "/infer", summary="Score readings with a version (V2 infer)", **_INFER)
async def version_infer(request: Request, model_name: str, model_version: str) -> Response:
    return await _infer(request, model_name, model_version)


async def infer_served(request: Request) -> Response:
    """V2's infer of the served model, as `routes.hot` dispatches it: its path names the served model."""
    service: ScoringService = request.app.state.service
    return await _infer(request, service.settings.model_name, None)


def _metadata(request: Request, model_name: str, model_version: str | None) -> V2ModelMetadata:
    model = _served(request, model_name, model_version)
    return V2ModelMetadata.model_validate(model_metadata(model_name, model))


async def _infer(request: Request, model_name: str, model_version: str | None) -> Response:
    service, _ = await authorised(request)  # 401 before 404 or 503
    model = _served(request, model_name, model_version)
    _media_type(request)
    encoding = check_encoding(request.headers.get("content-encoding"))
    settings = service.settings
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    header_length = request.headers.get(HEADER_LENGTH_HEADER)
    parsed: list[InferRequest] = []

    def parse() -> Readings:  # on the inference pool unless the body is small (as /v1's parsing)
        plain = decode_content(body, encoding, settings.max_body_bytes)
        parsed.append(parse_infer(plain, header_length, model.sensor_names, settings.max_batch))
        return parsed[0].readings

    # a compressed body is never small: a few KiB of gzip can inflate to MAX_BODY_BYTES
    size = len(body) if encoding is None else settings.max_body_bytes
    scored = await service.score_parsed(model, parse, size, asset_headers(request), V2_INFER_ROUTE)
    payload, json_length = infer_answer(model_name, model, parsed[0], scored, request_id_var.get())
    if json_length is None:
        return Response(payload, media_type=JSON)
    headers = {"Inference-Header-Content-Length": str(json_length)}
    return Response(payload, media_type=OCTET_STREAM, headers=headers)


def _media_type(request: Request) -> None:
    """JSON, octet-stream (the binary extension), or none: tritonclient sends no Content-Type."""
    raw = request.headers.get("content-type")
    if raw is not None and raw.partition(";")[0].strip().lower() not in (JSON, OCTET_STREAM):
        raise UnsupportedMediaType(
            f"Content-Type {raw[:100]!r} is not supported; V2 infer accepts {JSON}, {OCTET_STREAM} or none"
        )
