"""POST /v1/score (one reading, JSON) and POST /v1/score/batch (JSON or octet-stream)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from factory_anomaly.app.routes.deps import (
    JSON,
    OCTET_STREAM,
    authorised,
    json_response,
    media_type,
    read_body,
)
from factory_anomaly.app.serving.service import BATCH_ROUTE, SCORE_ROUTE, AssetHeaders
from factory_anomaly.app.wire.assets import ASSET_HEADER, TS_START_HEADER, TS_STEP_HEADER
from factory_anomaly.app.wire.respond import batch_answer, score_answer
from factory_anomaly.app.wire.schemas import (
    BatchScoreRequest,
    BatchScoreResponse,
    ScoreRequest,
    ScoreResponse,
    error_responses,
    openapi_body,
)

PREFIX = "/v1"

router = APIRouter(prefix=PREFIX, tags=["scoring"])  # each route checks the API key: `authorised`

_ERRORS = error_responses(
    {
        400: "malformed JSON",
        401: "missing or unknown API key",
        408: "the body did not arrive within BODY_TIMEOUT_S",
        413: "body larger than MAX_BODY_BYTES, or more rows than MAX_BATCH",
        415: "Content-Type missing or not accepted",
        422: "the readings cannot be scored (the message names the element), or a bad X-Asset, asset or "
        "timestamp",
        503: "no model is loaded, or (/v1/score with micro-batching) too many readings are waiting",
    }
)


@router.post(
    SCORE_ROUTE.removeprefix(PREFIX),
    response_model=ScoreResponse,
    responses=_ERRORS,
    openapi_extra=openapi_body(ScoreRequest),
    summary="Score one reading",
)
async def score_one(request: Request) -> Response:
    service, model = await authorised(request)
    media_type(request, (JSON,))
    body = await read_body(request, service.settings.max_body_bytes, service.settings.body_timeout_s)
    scored = await service.score_one(model, body, asset_headers(request))
    return json_response(score_answer(model, scored))


@router.post(
    BATCH_ROUTE.removeprefix(PREFIX),
    response_model=BatchScoreResponse,
    responses=_ERRORS,
    openapi_extra=openapi_body(BatchScoreRequest, binary=True),
    summary="Score a batch of readings (JSON, or N x n little-endian float32)",
)
async def score_batch(request: Request) -> Response:
    service, model = await authorised(request)
    kind = media_type(request, (JSON, OCTET_STREAM))
    body = await read_body(request, service.settings.max_body_bytes, service.settings.body_timeout_s)
    scored = await service.score_batch(model, body, kind == OCTET_STREAM, asset_headers(request))
    return json_response(batch_answer(model, scored))


def asset_headers(request: Request) -> AssetHeaders:
    headers = request.headers
    return AssetHeaders(headers.get(ASSET_HEADER), headers.get(TS_START_HEADER), headers.get(TS_STEP_HEADER))
