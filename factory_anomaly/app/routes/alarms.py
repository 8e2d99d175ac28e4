"""Assets and their alarm episodes: GET /v1/assets, /v1/assets/{asset}, /v1/alarms, /v1/alarms/{id};
POST /v1/alarms/{id}/ack and /v1/assets/{asset}/shelve. Behind the API key, like scoring.

The state lives in the process holding the asset (`serving.assets`): a proxy hashing on X-Asset (and on
the asset in the path) sends every reading of an asset, and the actions on it, to the same one
(deploy/nginx/). Whatever reaches another process (an acknowledgement by episode id, the listings) is
answered from the shared journal, and the holder follows at its next sync (docs/serving.md, "More than one
process").
"""

from __future__ import annotations

import math
import time

from fastapi import APIRouter, Depends, Request, Response

from factory_anomaly.app.errors import ErrorCode, InvalidInput
from factory_anomaly.app.routes.deps import JSON, json_response, media_type, read_body, require_api_key
from factory_anomaly.app.serving.assets import AssetBook
from factory_anomaly.app.wire.actions import parse_ack, parse_shelve
from factory_anomaly.app.wire.assets import parse_asset, parse_ts
from factory_anomaly.app.wire.schemas import (
    AckRequest,
    AssetList,
    AssetState,
    Episode,
    EpisodeList,
    ShelveRequest,
    error_responses,
    openapi_body,
)

ACTION_BODY_BYTES = 8192
STATES = ("open", "closed", "all")

router = APIRouter(prefix="/v1", tags=["alarms"], dependencies=[Depends(require_api_key)])

_READ = {401: "missing or unknown API key", 404: "no such asset or alarm episode",
         422: "a bad asset name, state or since"}  # fmt: skip
_ERRORS = error_responses(_READ)
_ACTION_ERRORS = error_responses(
    _READ
    | {
        400: "malformed JSON",
        408: "the body did not arrive within BODY_TIMEOUT_S",
        413: f"body larger than {ACTION_BODY_BYTES} bytes",
        415: "a body whose Content-Type is not JSON",
        422: "a bad asset name or body field",
    }
)


def _book(request: Request) -> AssetBook:
    book: AssetBook = request.app.state.assets
    return book


@router.get(
    "/assets", response_model=AssetList, responses=_ERRORS, summary="Every asset seen, with its state"
)
async def list_assets(request: Request) -> Response:
    return json_response({"assets": _book(request).listing()})


@router.get("/assets/{asset:path}", response_model=AssetState, responses=_ERRORS, summary="One asset's state")
async def get_asset(asset: str, request: Request) -> Response:
    return json_response(_book(request).asset(parse_asset(asset, "the asset in the path")))


@router.get("/alarms", response_model=EpisodeList, responses=_ERRORS, summary="Alarm episodes, newest first")
async def list_alarms(
    request: Request, state: str = "open", asset: str | None = None, since: str | None = None
) -> Response:
    if state not in STATES:
        raise InvalidInput(f"state must be one of {', '.join(STATES)}, got {state[:40]!r}",
                           code=ErrorCode.INVALID_TYPE)  # fmt: skip
    chosen = None if asset is None else parse_asset(asset, "asset")
    after = None if since is None else parse_ts(_number_or_text(since), "since")
    return json_response({"alarms": _book(request).alarms(state, chosen, after)})


@router.get("/alarms/{alarm_id}", response_model=Episode, responses=_ERRORS, summary="One alarm episode")
async def get_alarm(alarm_id: str, request: Request) -> Response:
    return json_response(_book(request).alarm(alarm_id))


@router.post(
    "/alarms/{alarm_id}/ack",
    response_model=Episode,
    responses=_ACTION_ERRORS,
    openapi_extra=openapi_body(AckRequest, required=False),
    summary="Acknowledge an alarm episode (recorded with who and a note)",
)
async def acknowledge(alarm_id: str, request: Request) -> Response:
    ack = parse_ack(await _action_body(request))
    return json_response(_book(request).acknowledge(alarm_id, ack.note, ack.by, time.time()))


@router.post(
    "/assets/{asset:path}/shelve",
    response_model=AssetState,
    responses=_ACTION_ERRORS,
    openapi_extra=openapi_body(ShelveRequest),
    summary="Shelve an asset for a duration (maintenance): scored, no alarms open",
)
async def shelve(asset: str, request: Request) -> Response:
    name = parse_asset(asset, "the asset in the path")
    action = parse_shelve(await _action_body(request))
    return json_response(_book(request).shelve(name, action.duration_s, action.note, action.by, time.time()))


async def _action_body(request: Request) -> bytes:
    settings = request.app.state.settings
    body = await read_body(request, ACTION_BODY_BYTES, settings.body_timeout_s)
    if body:
        media_type(request, (JSON,))
    return body


def _number_or_text(value: str) -> float | str:
    try:
        number = float(value)
    except ValueError:
        return value
    return number if math.isfinite(number) else value
