"""POST /v1/score (one reading, JSON) and POST /v1/score/batch (JSON or octet-stream)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from factory_anomaly.app.metrics import SCORING_ROUTES, Metrics
from factory_anomaly.app.readings import Readings, parse_batch_binary, parse_batch_json, parse_single_json
from factory_anomaly.app.routes.deps import (
    JSON,
    OCTET_STREAM,
    authorised,
    media_type,
    read_body,
)
from factory_anomaly.app.schemas import (
    BatchScoreRequest,
    BatchScoreResponse,
    ScoreRequest,
    ScoreResponse,
    error_responses,
    openapi_body,
)
from factory_anomaly.app.scoring import Assessment, LoadedModel, finite_or_none, log_anomalies

PREFIX = "/v1"
SCORE_ROUTE, BATCH_ROUTE = SCORING_ROUTES  # "/v1/score", "/v1/score/batch": also the metrics' route labels

router = APIRouter(prefix=PREFIX, tags=["scoring"])  # each route checks the API key: `authorised`

_ERRORS = error_responses(
    {
        400: "malformed JSON",
        401: "missing or unknown API key",
        408: "the body did not arrive within BODY_TIMEOUT_S",
        413: "body larger than MAX_BODY_BYTES, or more rows than MAX_BATCH",
        415: "Content-Type missing or not accepted",
        422: "the readings cannot be scored (the message names the element)",
        503: "no model is loaded, or (/v1/score with micro-batching) too many readings are waiting",
    }
)


def _json(payload: dict[str, Any]) -> Response:
    """orjson writes each float32-valued score as the shortest text that parses back to it."""
    return Response(orjson.dumps(payload), media_type=JSON)


def _parse_and_assess(
    model: LoadedModel, top_k: int, parse: Callable[[], Readings], metrics: Metrics, route: str
) -> tuple[Readings, Assessment]:
    """The request's CPU work, run on the inference pool (parsing a large JSON batch takes milliseconds;
    the metrics' per-reading drift and score ratios are numpy passes over the batch)."""
    readings = parse()
    assessment = model.assess(readings.x, top_k)
    metrics.observe_scoring(route, model, readings.x, assessment)
    return readings, assessment


@router.post(
    SCORE_ROUTE.removeprefix(PREFIX),
    response_model=ScoreResponse,
    responses=_ERRORS,
    openapi_extra=openapi_body(ScoreRequest),
    summary="Score one reading",
)
async def score_one(request: Request) -> Response:
    serving = await authorised(request)
    model, pool, settings, metrics = serving.model, serving.pool, serving.settings, serving.metrics
    media_type(request, (JSON,))
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    parse = partial(parse_single_json, body, model.sensor_names)
    batcher = serving.batcher
    if batcher is not None:  # parsed here, scored with whatever other readings are waiting
        readings = await pool.run(parse, inline=len(body) <= settings.inline_max_body_bytes)
        assessment = await batcher.assess(model, readings.x)
    else:
        readings, assessment = await pool.run(
            partial(_parse_and_assess, model, settings.log_top_sensors, parse, metrics, SCORE_ROUTE),
            inline=len(body) <= settings.inline_max_body_bytes,
        )
    log_anomalies(model, readings.ids, assessment)
    return _json(
        {
            "id": readings.ids[0],
            "score": finite_or_none(float(assessment.scores[0])),
            "threshold": model.threshold,
            "is_anomaly": bool(assessment.is_anomaly[0]),
            "model_version": model.version,
        }
    )


@router.post(
    BATCH_ROUTE.removeprefix(PREFIX),
    response_model=BatchScoreResponse,
    responses=_ERRORS,
    openapi_extra=openapi_body(BatchScoreRequest, binary=True),
    summary="Score a batch of readings (JSON, or N x n little-endian float32)",
)
async def score_batch(request: Request) -> Response:
    serving = await authorised(request)
    model, pool, settings, metrics = serving.model, serving.pool, serving.settings, serving.metrics
    kind = media_type(request, (JSON, OCTET_STREAM))
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    parser = parse_batch_binary if kind == OCTET_STREAM else parse_batch_json
    parse = partial(parser, body, model.sensor_names, settings.max_batch)
    readings, assessment = await pool.run(
        partial(_parse_and_assess, model, settings.log_top_sensors, parse, metrics, BATCH_ROUTE),
        inline=len(body) <= settings.inline_max_body_bytes,
    )
    log_anomalies(model, readings.ids, assessment)
    results = [
        {"id": ident, "score": finite_or_none(score), "is_anomaly": flag}
        for ident, score, flag in zip(
            readings.ids, assessment.scores.tolist(), assessment.is_anomaly.tolist(), strict=True
        )
    ]
    return _json({"model_version": model.version, "threshold": model.threshold, "results": results})
