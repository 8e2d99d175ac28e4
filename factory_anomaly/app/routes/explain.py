"""POST /v1/explain: one reading's score and the sensors the attention explainer blames for it.

Same authentication, body rules and errors as POST /v1/score (plus `top_k`), answered by one run of the
explainer graph on the inference pool (see `app.explaining` for what the numbers mean).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import orjson
from fastapi import APIRouter, Request, Response

from factory_anomaly.app.explaining import Explanation, explain_reading
from factory_anomaly.app.readings import Readings, parse_explain_json
from factory_anomaly.app.routes.deps import (
    JSON,
    authorised,
    media_type,
    read_body,
)
from factory_anomaly.app.schemas import ExplainRequest, ExplainResponse, error_responses, openapi_body
from factory_anomaly.app.scoring import LoadedModel, finite_or_none, log_anomalies

router = APIRouter(prefix="/v1", tags=["explaining"])  # the route checks the API key: `authorised`

_ERRORS = error_responses(
    {
        400: "malformed JSON",
        401: "missing or unknown API key",
        404: "the serving model version has no explainer graph (`explainer_unavailable`)",
        408: "the body did not arrive within BODY_TIMEOUT_S",
        413: "body larger than MAX_BODY_BYTES",
        415: "Content-Type missing or not JSON",
        422: "the reading cannot be explained, or top_k is not 1..n_sensors (the message names the field)",
        503: "no model is loaded",
    }
)


def _parse_and_explain(
    model: LoadedModel, log_top_k: int, parse: Callable[[], tuple[Readings, int]]
) -> tuple[Readings, Explanation]:
    """The request's CPU work, run on the inference pool."""
    readings, top_k = parse()
    return readings, explain_reading(model, readings.x, top_k, log_top_k)


@router.post(
    "/explain",
    response_model=ExplainResponse,
    responses=_ERRORS,
    openapi_extra=openapi_body(ExplainRequest),
    summary="Explain one reading: its score and the top_k sensors by the explainer's attention",
)
async def explain_one(request: Request) -> Response:
    serving = await authorised(request)
    model, pool, settings, metrics = serving.model, serving.pool, serving.settings, serving.metrics
    model.require_explainer()  # before reading the body: no body can make this version explain
    media_type(request, (JSON,))
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_s)
    parse = partial(parse_explain_json, body, model.sensor_names)
    readings, explanation = await pool.run(
        partial(_parse_and_explain, model, settings.log_top_sensors, parse)
    )
    metrics.observe_explain(explanation.assessment.run_seconds)
    log_anomalies(model, readings.ids, explanation.assessment)
    payload = {
        "id": readings.ids[0],
        "score": finite_or_none(explanation.score),
        "threshold": model.threshold,
        "is_anomaly": explanation.is_anomaly,
        "model_version": model.version,
        "sensors": [
            {
                "index": sensor.index,
                "name": sensor.name,
                "attention": finite_or_none(sensor.attention),
                "error_share": sensor.error_share,
            }
            for sensor in explanation.sensors
        ],
    }
    # orjson writes each float32-valued number as the shortest text that parses back to it.
    return Response(orjson.dumps(payload), media_type=JSON)
