"""The operators' action bodies (acknowledge an alarm, shelve an asset); framework-free.

Parsed by hand like the readings (`wire.parse`): exact JSON types (a duration of "60" or true is refused,
not coerced), unknown and repeated fields refused, each problem a 422 naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from factory_anomaly.app.errors import ErrorCode, InvalidInput, MalformedRequest
from factory_anomaly.app.wire.parse import refuse_duplicate_fields

MAX_NOTE = 1000
MAX_BY = 128


@dataclass(frozen=True)
class Ack:
    note: str
    by: str


@dataclass(frozen=True)
class Shelve:
    duration_s: float
    note: str
    by: str


def parse_ack(body: bytes) -> Ack:
    """`{"note": "...", "by": "..."}`, both optional; an empty body is an acknowledgement without a note."""
    doc = _object(body, ("note", "by"))
    return Ack(_text(doc, "note", "", MAX_NOTE), _text(doc, "by", "operator", MAX_BY, empty=False))


def parse_shelve(body: bytes) -> Shelve:
    """`{"duration_s": seconds, "note": "...", "by": "..."}`; duration_s is required."""
    doc = _object(body, ("duration_s", "note", "by"))
    if "duration_s" not in doc:
        raise InvalidInput("the field 'duration_s' is missing", code=ErrorCode.MISSING_FIELD)
    duration = doc["duration_s"]
    if type(duration) not in (int, float):
        raise InvalidInput(f"duration_s must be a number of seconds, got {duration!r:.40}",
                           code=ErrorCode.INVALID_SHELVE)  # fmt: skip
    return Shelve(
        float(duration), _text(doc, "note", "", MAX_NOTE), _text(doc, "by", "operator", MAX_BY, empty=False)
    )


def _object(body: bytes, fields: tuple[str, ...]) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from None
    accepted = ", ".join(fields)
    if type(doc) is not dict:
        raise InvalidInput(f"the body must be a JSON object with the fields {accepted}",
                           code=ErrorCode.INVALID_TYPE)  # fmt: skip
    for key in doc:
        if key not in fields:
            raise InvalidInput(
                f"unknown field {key[:40]!r} (accepted: {accepted})", code=ErrorCode.UNKNOWN_FIELD
            )
    refuse_duplicate_fields(body, doc)
    return doc


def _text(doc: dict[str, Any], field: str, default: str, limit: int, empty: bool = True) -> str:
    value = doc.get(field, default)
    if type(value) is not str or len(value) > limit or (not empty and not value):
        raise InvalidInput(
            f"{field} must be a string of {'0' if empty else '1'}-{limit} characters, got {value!r:.40}",
            code=ErrorCode.INVALID_TYPE,
        )
    return value
