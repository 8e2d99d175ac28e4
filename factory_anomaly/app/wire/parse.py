"""Request bodies -> float32 readings [N, n_sensors], validated; framework-free.

The routes hand over raw body bytes: pydantic's `list[float]` costs milliseconds per 1000-value vector,
and it would coerce what must be refused. Rules (each failure is an `app.errors` error naming the element):

  JSON   parsed with orjson (much faster than the stdlib: docs/serving.md, "Figures"). Elements must be JSON
         numbers: null, booleans, strings and nested lists are `invalid_value`. NaN / Infinity / -Infinity
         are `non_finite_value` and numbers beyond float32 (|x| > 3.4028235e38, e.g. 1e39, 1e309) are
         `value_out_of_range`; both are 422, not 400, because the JSON is readable and the *value* is bad.
         Unknown fields are refused (`unknown_field`), so a misspelt `"value"` is never silently ignored;
         each endpoint has its own field list (only /v1/explain knows `top_k`). A field given twice is
         `duplicate_field`: JSON parsers keep one of the two silently, so the reading would be misread.
  binary N x n little-endian float32, row-major, viewed in place (no copy on a little-endian host).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson
import simdjson

from factory_anomaly.app.errors import ErrorCode, InvalidInput, MalformedRequest, PayloadTooLarge
from factory_anomaly.app.wire.assets import parse_ts, parse_ts_list

FLOAT32_LIMIT = 3.4028235e38
"""Largest magnitude accepted: float32's maximum as it is usually written (numbers up to it round to a
finite float32)."""

SINGLE_FIELDS = ("values", "id", "asset", "ts")
EXPLAIN_FIELDS = ("values", "top_k", "id")
BATCH_FIELDS = ("vectors", "ids", "asset", "ts")
_BATCH_FIELD_SET = frozenset(BATCH_FIELDS)
_SINGLE_FIELD_SET = frozenset(SINGLE_FIELDS)
_thread = threading.local()  # `_single_json_fast`'s simdjson parser, one per thread
REUSED_PARSER_BYTES_PER_SENSOR = 40  # a reading's JSON rarely takes more than ~25 bytes a value
REUSED_PARSER_SLACK_BYTES = 4096  # id, asset, ts and whitespace
DEFAULT_TOP_K = 10
"""Sensors an explanation lists when the request does not say (all of them on a model with fewer)."""
_NUMBER_TYPES = frozenset({float, int})  # exact types: bool is a subclass of int and must not pass
_SHOW_CHARS = 40
_LONGEST_INT_DIGITS = 400  # longer integer literals are parsed as +-inf (out of range, named as such)


@dataclass(frozen=True)
class Readings:
    """Validated readings: `x` float32 [N, n_sensors] C-contiguous, `ids` one per row (None = not given),
    `ts` one per row in Unix seconds (None = not given), `asset` the body's `"asset"` as given (checked
    against the X-Asset header by `wire.assets.request_asset`)."""

    x: np.ndarray
    ids: list[str | None]
    ts: list[float | None] | None = None
    asset: Any = None


class NonFinite:
    """What the stdlib parser makes of a NaN / Infinity / -Infinity token, so it can be named, not used."""

    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token


def parse_single_json(body: bytes, sensor_names: Sequence[str]) -> Readings:
    """`{"values": [n numbers], "id": "optional string"}` -> one row.

    A body that passes every rule takes `_single_json_fast` (simdjson, as JSON batches do); any other, and
    any the fast path is unsure of, takes the path below, which names what is wrong."""
    fast = _single_json_fast(body, len(sensor_names))
    return fast if fast is not None else _single_json_full(body, sensor_names)


def _single_json_full(body: bytes, sensor_names: Sequence[str]) -> Readings:
    """Every rule, one by one: the reading, or the error naming the first thing wrong."""
    doc, syntax_error = decode_json(body)
    obj = _object(doc, SINGLE_FIELDS, required="values")
    readings = _single(obj, len(sensor_names))
    refuse_unless_valid(syntax_error)
    refuse_duplicate_fields(body, obj)
    return readings


def parse_explain_json(body: bytes, sensor_names: Sequence[str]) -> tuple[Readings, int]:
    """`{"values": [n numbers], "top_k": k, "id": "optional string"}` -> one row and k.

    `top_k` must be a JSON integer from 1 to n (`invalid_top_k` otherwise: 2.5, 3.0, "3", true, 0, n + 1);
    absent or null means min(DEFAULT_TOP_K, n).
    """
    doc, syntax_error = decode_json(body)
    obj = _object(doc, EXPLAIN_FIELDS, required="values")
    n = len(sensor_names)
    top_k = obj.get("top_k")
    if top_k is None:
        top_k = min(DEFAULT_TOP_K, n)
    elif type(top_k) is not int or not 1 <= top_k <= n:  # exact type: bool is a subclass of int
        raise InvalidInput(
            f"top_k must be an integer from 1 to {n} (the number of sensors), got {kind_of(top_k)}",
            code=ErrorCode.INVALID_TOP_K,
        )
    readings = _single(obj, n)
    refuse_unless_valid(syntax_error)
    refuse_duplicate_fields(body, obj)
    return readings, top_k


def parse_batch_json(body: bytes, sensor_names: Sequence[str], max_batch: int) -> Readings:
    """`{"vectors": [[n numbers], ...], "ids": ["optional", ...]}` -> N rows in request order.

    A body that passes every rule takes `_batch_json_fast` (simdjson; docs/benchmarks.md); any
    other body, and any the fast path is unsure of, takes the path below, which names what is wrong."""
    fast = _batch_json_fast(body, len(sensor_names), max_batch)
    return fast if fast is not None else _batch_json_full(body, sensor_names, max_batch)


def _batch_json_full(body: bytes, sensor_names: Sequence[str], max_batch: int) -> Readings:
    """Every rule, one by one: the readings, or the error naming the first thing wrong."""
    doc, syntax_error = decode_json(body)
    obj = _object(doc, BATCH_FIELDS, required="vectors")
    vectors = obj["vectors"]
    if type(vectors) is not list:
        raise InvalidInput(
            f"vectors must be a list of vectors, got {kind_of(vectors)}", code=ErrorCode.INVALID_TYPE
        )
    check_rows(len(vectors), max_batch)
    ids = _ids(obj.get("ids"), len(vectors))
    x = to_array(vectors, len(sensor_names), lambda i: f"vectors[{i}]")
    ts = parse_ts_list(obj.get("ts"), len(vectors))
    refuse_unless_valid(syntax_error)
    refuse_duplicate_fields(body, obj)
    return Readings(x, ids, ts, obj.get("asset"))


def _batch_json_fast(body: bytes, n: int, max_batch: int) -> Readings | None:
    """The readings of a valid JSON batch, or None for the full path to judge. Its one refusal is a batch
    of more than `max_batch` rows (`batch_too_large`, as the full path answers it), counted by simdjson
    before any list is built.

    Why: the full path builds one Python float per value and checks their types one by one.
    simdjson validates the whole document (UTF-8 included) and hands the numbers over as one
    float64 buffer, refusing anything that is not a number: booleans, strings, null, objects, NaN tokens,
    integers beyond 64 bits and 1e309 all end the fast path (docs/benchmarks.md, "JSON batches through
    simdjson"), as does any
    body with an escape, a byte-order mark or a nested list (counted, below). It accepts
    only what the full path accepts, with the same float32 values: the float64 parse is exact in both, and
    the same rounding follows. A new parser per call: they are cheap (lazily allocated) and a parser must
    not be reused while one of its documents is alive, which per-call parsers rule out across threads.
    """
    # simdjson skips a UTF-8 byte-order mark, which the full path (like orjson) refuses; and with an escape,
    # the bracket count below would not hold. Both are cheap scans, done before any parsing.
    if body.startswith(b"\xef\xbb\xbf") or b"\\" in body:
        return None
    try:
        doc = simdjson.Parser().parse(body)
        if not isinstance(doc, simdjson.Object):
            return None
        keys = list(doc.keys())  # a duplicated field is listed twice
        if len(keys) != len(set(keys)) or not set(keys) <= _BATCH_FIELD_SET or "vectors" not in keys:
            return None
        vectors = doc["vectors"]
        if not isinstance(vectors, simdjson.Array) or not vectors:
            return None
        if len(vectors) > max_batch:  # refused here, as the full path would, without building its lists
            check_rows(len(vectors), max_batch)
        rows = len(vectors)
        if not all(isinstance(row, simdjson.Array) and len(row) == n for row in vectors):
            return None
        x = np.frombuffer(vectors.as_buffer(of_type="d"), dtype=np.float64)
        given = doc["ids"] if "ids" in keys else None
        ids: Any = given.as_list() if isinstance(given, simdjson.Array) else given
        given_ts = doc["ts"] if "ts" in keys else None
        stamps: Any = given_ts.as_list() if isinstance(given_ts, simdjson.Array) else given_ts
        asset: Any = doc["asset"] if "asset" in keys else None
    except (ValueError, TypeError, KeyError, RuntimeError, IndexError):  # simdjson's refusals
        return None
    if x.size != rows * n or not (x.max() <= FLOAT32_LIMIT and x.min() >= -FLOAT32_LIMIT):
        return None
    if ids is not None and (
        type(ids) is not list or len(ids) != rows or any(type(ident) is not str for ident in ids)
    ):
        return None
    if asset is not None and type(asset) is not str:
        return None
    if stamps is not None and (
        type(stamps) is not list or any(type(stamp) not in (str, int, float) for stamp in stamps)
    ):
        return None
    # as_buffer flattens nested lists ([1, [2], 3] reads as 1, 2, 3), so count the brackets: without
    # escapes, every "[" is the batch's, a row's, the ids' or the ts' list's, or one inside a string (an
    # id, a ts, the asset), and a nested list adds one. Every string field (BATCH_FIELDS) is counted here.
    strings = [*(ids or ()), *(s for s in stamps or () if type(s) is str), *([asset] if asset else [])]
    lists = 1 + rows + (ids is not None) + (stamps is not None)
    if body.count(b"[") != lists + sum(text.count("[") for text in strings):
        return None
    try:
        ts = parse_ts_list(stamps, rows)
    except InvalidInput:  # the full path names it
        return None
    return Readings(x.reshape(rows, n).astype(np.float32), [None] * rows if ids is None else ids, ts, asset)


def _single_json_fast(body: bytes, n: int) -> Readings | None:
    """The reading of a valid one-reading body, or None for the full path to judge (it never refuses).

    Why: the full path builds a Python float per value, checks their types and scans them for colons (a
    third of a single reading's serving time, docs/benchmarks.md); simdjson hands the numbers over as one
    float64 buffer. The same guards as `_batch_json_fast`: no escapes or byte-order mark, every field
    known and given once, `values` a flat array of n numbers within float32 (the brackets are counted,
    since as_buffer would flatten a nested list), `id` and `asset` strings, `ts` a string or a number
    that `parse_ts` accepts. One parser per thread, reused: a parser must not parse again while one of its
    documents is alive, and nothing here outlives the call (values are copied out, strings are str). A
    parser keeps the capacity of the largest document it parsed, so a body larger than a reading needs
    (up to MAX_BODY_BYTES) gets a parser of its own, freed with it."""
    if body.startswith(b"\xef\xbb\xbf") or b"\\" in body:
        return None
    parser: Any = getattr(_thread, "parser", None)
    if len(body) > REUSED_PARSER_BYTES_PER_SENSOR * n + REUSED_PARSER_SLACK_BYTES:
        parser = simdjson.Parser()  # a parser keeps the size of its largest document: not for this one
    elif parser is None:
        parser = _thread.parser = simdjson.Parser()
    try:
        doc = parser.parse(body)
        if not isinstance(doc, simdjson.Object):
            return None
        keys = list(doc.keys())
        if len(keys) != len(set(keys)) or not set(keys) <= _SINGLE_FIELD_SET or "values" not in keys:
            return None
        values = doc["values"]
        if not isinstance(values, simdjson.Array) or len(values) != n:
            return None
        x = np.frombuffer(values.as_buffer(of_type="d"), dtype=np.float64)
        ident: Any = doc["id"] if "id" in keys else None
        asset: Any = doc["asset"] if "asset" in keys else None
        stamp: Any = doc["ts"] if "ts" in keys else None
    except (ValueError, TypeError, KeyError, RuntimeError, IndexError):  # simdjson's refusals
        return None
    if x.size != n or not (x.max() <= FLOAT32_LIMIT and x.min() >= -FLOAT32_LIMIT):
        return None
    if (ident is not None and type(ident) is not str) or (asset is not None and type(asset) is not str):
        return None
    if stamp is not None and type(stamp) not in (str, int, float):
        return None
    strings = [s for s in (ident, asset, stamp) if type(s) is str]
    if body.count(b"[") != 1 + sum(text.count("[") for text in strings):
        return None
    try:
        ts: list[float | None] | None = None if stamp is None else [parse_ts(stamp, "ts")]
    except InvalidInput:  # the full path names it
        return None
    return Readings(x.astype(np.float32).reshape(1, n), [ident], ts, asset)


def parse_batch_binary(body: bytes | memoryview, sensor_names: Sequence[str], max_batch: int) -> Readings:
    """N x n little-endian float32, row-major -> N rows (ids all None)."""
    n = len(sensor_names)
    row_bytes = 4 * n
    if not body:
        raise InvalidInput(
            f"the body is empty; expected N rows of {n} little-endian float32 ({row_bytes} bytes each)",
            code=ErrorCode.EMPTY_BODY,
        )
    rows, rest = divmod(len(body), row_bytes)
    if rest:
        raise InvalidInput(
            f"the body has {len(body)} bytes, which is not a multiple of {row_bytes} "
            f"({n} sensors x 4 bytes of float32)",
            code=ErrorCode.INVALID_BINARY_LENGTH,
        )
    check_rows(rows, max_batch)
    # astype is a no-op on little-endian hosts (a read-only view of the body); a big-endian host swaps once.
    x = np.frombuffer(body, dtype="<f4").reshape(rows, n).astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        i, j = (int(k) for k in np.argwhere(~finite)[0])
        raise InvalidInput(
            f"row {i}, sensor {j} ({sensor_names[j]!r}) is {x[i, j]}; readings must be finite",
            code=ErrorCode.NON_FINITE_VALUE,
        )
    return Readings(x, [None] * rows)


def refuse_duplicate_fields(body: bytes, doc: dict[str, Any]) -> None:
    """422 `duplicate_field` when the JSON object `body` (decoded: `doc`) gives a field twice.

    orjson, like the stdlib, keeps the last of the two silently. Called once the body has passed
    validation: its only object is then the top level (readings are numbers, ids strings), so each colon
    in the text follows one of its keys or lies inside an id. Without backslashes (no escapes) the colons
    inside ids are those of the decoded ids, so the keys are counted from colons alone (memchr scans, a
    small share of parsing: docs/serving.md, "Figures"). With escapes, the string tokens are read exactly.
    """
    fields = len(doc)
    if b"\\" not in body:
        limit = fields + sum(_colons(value) for value in doc.values())
        colons, at = 0, body.find(b":")
        while at != -1 and colons <= limit:
            colons += 1
            at = body.find(b":", at + 1)
        if colons <= limit:
            return
    keys = Counter(json.loads(m["string"]) for m in _STRING_TOKEN.finditer(body) if m["colon"])
    key, times = keys.most_common(1)[0]
    if times > 1:
        raise InvalidInput(
            f"the field {shown(key)} is given {times} times; give each field once",
            code=ErrorCode.DUPLICATE_FIELD,
        )


def _colons(value: Any) -> int:
    """Colons inside a validated field's strings: `id`, `asset`, each of `ids` or `ts` (readings are
    numbers)."""
    if type(value) is str:
        return value.count(":")
    if type(value) is list and value and type(value[0]) is not list:
        return sum(item.count(":") for item in value if type(item) is str)
    return 0


_STRING_TOKEN = re.compile(rb'(?P<string>"(?:[^"\\]|\\.)*")\s*(?P<colon>:)?')
"""A JSON string token, and the colon after it when it is an object key (valid JSON only)."""


# --- helpers ----------------------------------------------------------------------------------------------


def decode_json(body: bytes) -> tuple[Any, str | None]:
    """The decoded document, and orjson's complaint when only the lenient stdlib parser could read it.

    orjson refuses NaN / Infinity tokens and literals beyond float64 (1e309). Those are bad *values* in
    readable JSON (422, naming the element), so on failure the body is parsed again with the stdlib; if
    that reading shows no bad value, orjson's complaint stands (400, `_refuse_unless_valid`).
    """
    try:
        return orjson.loads(body), None
    except orjson.JSONDecodeError as exc:
        syntax_error = str(exc)
    try:
        doc = json.loads(bytes(body).decode("utf-8"), parse_constant=NonFinite, parse_int=parse_int)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MalformedRequest(f"the body is not valid JSON: {syntax_error}") from None
    return doc, syntax_error


def parse_int(text: str) -> int | float:
    """An integer literal; one too long for `int()` (4300 digits) is far beyond float32 anyway."""
    if len(text) > _LONGEST_INT_DIGITS:
        return -math.inf if text.startswith("-") else math.inf
    return int(text)


def refuse_unless_valid(syntax_error: str | None) -> None:
    if syntax_error is not None:
        raise MalformedRequest(f"the body is not valid JSON: {syntax_error}")


def _object(doc: Any, fields: tuple[str, ...], required: str) -> dict[str, Any]:
    accepted = ", ".join(fields)
    if type(doc) is not dict:
        raise InvalidInput(
            f"the body must be a JSON object with the fields {accepted}, got {kind_of(doc)}",
            code=ErrorCode.INVALID_TYPE,
        )
    for key in doc:
        if key not in fields:
            raise InvalidInput(
                f"unknown field {shown(key)} (accepted: {accepted})", code=ErrorCode.UNKNOWN_FIELD
            )
    if required not in doc:
        raise InvalidInput(f"the field {required!r} is missing", code=ErrorCode.MISSING_FIELD)
    return doc


def _single(obj: dict[str, Any], n: int) -> Readings:
    """The `values` and optional `id`, `ts` and `asset` of a one-reading body."""
    ident = obj.get("id")
    if ident is not None and type(ident) is not str:
        raise InvalidInput(f"id must be a string, got {kind_of(ident)}", code=ErrorCode.INVALID_TYPE)
    x = to_array([obj["values"]], n, lambda _: "values")
    stamp = obj.get("ts")
    return Readings(x, [ident], None if stamp is None else [parse_ts(stamp, "ts")], obj.get("asset"))


def check_rows(rows: int, max_batch: int) -> None:
    if rows == 0:
        raise InvalidInput("the batch is empty; send at least one vector", code=ErrorCode.EMPTY_BATCH)
    if rows > max_batch:
        raise PayloadTooLarge(
            f"the batch has {rows} rows; at most {max_batch} per request", code=ErrorCode.BATCH_TOO_LARGE
        )


def _ids(ids: Any, rows: int) -> list[str | None]:
    if ids is None:
        return [None] * rows
    if type(ids) is not list:
        raise InvalidInput(f"ids must be a list of strings, got {kind_of(ids)}", code=ErrorCode.INVALID_TYPE)
    if len(ids) != rows:
        raise InvalidInput(
            f"ids has {len(ids)} entries but vectors has {rows}; give one id per vector",
            code=ErrorCode.IDS_MISMATCH,
        )
    for i, ident in enumerate(ids):
        if type(ident) is not str:
            raise InvalidInput(
                f"ids[{i}] must be a string, got {kind_of(ident)}", code=ErrorCode.INVALID_TYPE
            )
    return ids


def to_array(rows: list[Any], n: int, label: Callable[[int], str]) -> np.ndarray:
    """float32 [len(rows), n]; the fast path checks in bulk, the slow one names the first bad element."""
    for i, row in enumerate(rows):
        if type(row) is not list:
            raise InvalidInput(
                f"{label(i)} must be a list of {n} numbers, got {kind_of(row)}", code=ErrorCode.INVALID_TYPE
            )
        if len(row) != n:
            raise InvalidInput(
                f"{label(i)} has {len(row)} values, expected {n} (one per sensor)",
                code=ErrorCode.WRONG_LENGTH,
            )
    if set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:
        try:
            x = np.array(rows, dtype=np.float64)
        except OverflowError:  # an integer beyond float64: the slow path names it
            pass
        else:
            if x.max() <= FLOAT32_LIMIT and x.min() >= -FLOAT32_LIMIT:
                return x.astype(np.float32)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            problem = value_problem(value)
            if problem is not None:
                code, text = problem
                raise InvalidInput(f"{label(i)}[{j}] {text}", code=code)
    raise AssertionError("the bulk check refused values that each pass")  # unreachable


def value_problem(value: Any) -> tuple[str, str] | None:
    """(code, text) for a value that is not a JSON number within float32, else None."""
    if isinstance(value, NonFinite):
        return ErrorCode.NON_FINITE_VALUE, f"is {value.token}; readings must be finite numbers"
    if type(value) not in _NUMBER_TYPES:
        return ErrorCode.INVALID_VALUE, f"must be a number, got {kind_of(value)}"
    if isinstance(value, float) and math.isnan(value):
        return ErrorCode.NON_FINITE_VALUE, "is NaN; readings must be finite numbers"
    if abs(value) > FLOAT32_LIMIT:
        if isinstance(value, float) and math.isinf(value):
            text = "a number too large even for float64"
        else:
            text = shown(value)
        return ErrorCode.VALUE_OUT_OF_RANGE, f"is {text}, beyond float32's range (|x| <= {FLOAT32_LIMIT!r})"
    return None


def kind_of(value: Any) -> str:
    """How a decoded JSON value is described in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, str):
        return f"a string ({shown(value)})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, NonFinite):
        return value.token
    return f"a number ({shown(value)})"


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."
