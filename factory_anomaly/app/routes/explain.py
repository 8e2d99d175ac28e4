"""POST /v1/explain: one reading's score and the sensors the attention explainer blames for it.

Same authentication, body rules and errors as POST /v1/score (plus `top_k`), answered by one run of the
explainer graph on the inference pool (see `serving.explaining` for what the numbers mean).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from factory_anomaly.app.routes.deps import JSON, authorised, json_response, media_type, read_body
from factory_anomaly.app.wire.respond import explain_answer
from factory_anomaly.app.wire.schemas import ExplainRequest, ExplainResponse, error_responses, openapi_body

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


@router.post(
    "/explain",
    response_model=ExplainResponse,
    responses=_ERRORS,
    openapi_extra=openapi_body(ExplainRequest),
    summary="Explain one reading: its score and the top_k sensors by the explainer's attention",
)
async def explain_one(request: Request) -> Response:
    service, model = await authorised(request)
    model.require_explainer()  # before reading the body: no body can make this version explain
    media_type(request, (JSON,))
    body = await read_body(request, service.settings.max_body_bytes, service.settings.body_timeout_s)
    readings, explanation = await service.explain(model, body)
    return json_response(explain_answer(model, readings, explanation))
