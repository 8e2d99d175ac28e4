"""The Open Inference Protocol (V2) on the wire, framework-free like `wire.parse` and `wire.respond`: an
infer request's bytes -> the readings and what to answer with, and the answer's bytes.

Plants that run Triton, KServe or Seldon already have clients that speak V2 (`tritonclient`, KServe's
REST client, MLServer's codecs); this lets them score against the service. Parameters the service does
not act on are refused rather than ignored (tritonclient's `priority`, `timeout`, `sequence_id`), except
MLServer's `content_type` "np", which says what a plain tensor is.

Request: JSON `{"id", "parameters", "inputs": [readings], "outputs": [...]}`, where `readings` is
`{"name": "readings", "datatype": "FP32", "shape": [N, n_sensors], "data": [...]}` with `data` flat or
nested, row-major. Triton's binary tensor extension: the JSON is the body's first
`Inference-Header-Content-Length` bytes, the input carries `"parameters": {"binary_data_size": bytes}`
instead of `data`, and its N x n little-endian float32 follow the JSON.

Outputs: `score` FP32 [N], `is_anomaly` BOOL [N] and, only when asked for, `sensor_error` FP32
[N, n_sensors]. A request that names none gets `score` and `is_anomaly`. An output is binary when its
`binary_data` parameter says so, else when the request's `binary_data_output` does (`tritonclient` sets
that when it names no output). Binary outputs follow the answer's JSON in the order listed, FP32 as
little-endian float32 and BOOL as one byte each.

The rules of /v1 hold: every value a finite number within float32, each element named when it is not,
unknown fields and parameters refused (never silently ignored), a field given twice refused. Errors are
`app.errors` errors; `routes.errors` renders them in V2's `{"error": "..."}` shape.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import simdjson

from factory_anomaly.app.errors import (
    ErrorCode,
    InvalidInput,
    MalformedRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from factory_anomaly.app.model import LoadedModel
from factory_anomaly.app.serving.service import Scored
from factory_anomaly.app.wire.parse import (
    FLOAT32_LIMIT,
    NonFinite,
    Readings,
    check_rows,
    kind_of,
    parse_batch_binary,
    parse_int,
    refuse_unless_valid,
    shown,
    to_array,
    value_problem,
)
from factory_anomaly.app.wire.respond import alarm_fields

INPUT_NAME = "readings"
INPUT_DATATYPE = "FP32"
OUTPUT_DATATYPES = {"score": "FP32", "is_anomaly": "BOOL", "sensor_error": "FP32"}
DEFAULT_OUTPUTS = ("score", "is_anomaly")
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH_HEADER = "inference-header-content-length"
ENCODINGS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
"""Content-Encoding -> zlib's window bits: gzip's framing, and HTTP's "deflate", which is the zlib format
(`tritonclient` compresses with `zlib.compress`)."""

_LONGEST_LENGTH_DIGITS = 19  # int() refuses strings over 4 300 digits; no body is longer than 10**19 bytes
_REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
_INPUT_FIELDS = ("name", "shape", "datatype", "parameters", "data")
_OUTPUT_FIELDS = ("name", "parameters")
_REQUEST_PARAMETERS: dict[str, type] = {"binary_data_output": bool}
_INPUT_PARAMETERS: dict[str, type] = {"binary_data_size": int, "content_type": str}
_CONTENT_TYPES = ("np",)  # MLServer's NumPy codec marks a tensor "np": a plain array, as read here
_OUTPUT_PARAMETERS: dict[str, type] = {"binary_data": bool}


@dataclass(frozen=True)
class InferRequest:
    """A V2 infer request: its readings, its `id` (None: not given) and the outputs to answer with, each
    (name, binary), in the order they are answered."""

    readings: Readings
    id: str | None
    outputs: tuple[tuple[str, bool], ...]


class _Unsure(Exception):
    """The fast reading of a document could not decide: the full one judges it."""


# --- the body ---------------------------------------------------------------------------------------------


def check_encoding(encoding: str | None) -> str | None:
    """The request's Content-Encoding, lower-cased (None or "identity": not compressed); 415 for others."""
    if encoding is None:
        return None
    name = encoding.strip().lower()
    if name in ("", "identity"):
        return None
    if name not in ENCODINGS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding[:40]!r} is not supported; send gzip, deflate or no encoding",
            code=ErrorCode.UNSUPPORTED_ENCODING,
        )
    return name


def decode_content(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body decompressed (`encoding` from `check_encoding`), never to more than `max_bytes`: a small
    compressed body must not make the server hold gigabytes (413 `body_too_large`, as an uncompressed
    body of that size would be)."""
    if encoding is None:
        return body
    inflater = zlib.decompressobj(ENCODINGS[encoding])
    try:
        plain = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise MalformedRequest(
            f"the {encoding} body does not decompress: {exc}", code=ErrorCode.CORRUPT_ENCODING
        ) from None
    if len(plain) > max_bytes:
        raise PayloadTooLarge(f"the body decompresses to more than {max_bytes} bytes, the most accepted")
    if not inflater.eof or inflater.unused_data:
        raise MalformedRequest(
            f"the {encoding} body is truncated or has bytes after its end", code=ErrorCode.CORRUPT_ENCODING
        )
    return plain


def split_binary(body: bytes, header_length: str | None) -> tuple[bytes, bytes | memoryview]:
    """(the JSON, the binary tensor data after it) by `Inference-Header-Content-Length`; without the
    header the whole body is JSON."""
    if header_length is None:
        return body, b""
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > _LONGEST_LENGTH_DIGITS or int(text) > len(body):
        raise MalformedRequest(
            f"Inference-Header-Content-Length {header_length[:40]!r} is not a byte count within the "
            f"{len(body)}-byte body",
            code=ErrorCode.INVALID_HEADER_LENGTH,
        )
    length = int(text)
    return body[:length], memoryview(body)[length:]  # the tensor bytes read in place, not copied


# --- the request ------------------------------------------------------------------------------------------


def parse_infer(
    body: bytes, header_length: str | None, sensor_names: Sequence[str], max_batch: int
) -> InferRequest:
    """A V2 infer request's (decompressed) body -> its readings and the outputs asked for."""
    header, binary = split_binary(body, header_length)
    try:
        return _request(_fast_document(header), binary, sensor_names, max_batch)
    except _Unsure:
        pass
    doc, syntax_error = _full_document(header)
    infer = _request(doc, binary, sensor_names, max_batch)
    refuse_unless_valid(syntax_error)
    return infer


def _fast_document(header: bytes) -> Any:
    """The JSON through simdjson, as plain Python except `data`, which stays a lazy simdjson array so its
    numbers can be taken as one buffer (`_fast_data`). The structure is V2's: objects hold scalars,
    the `parameters` object and the `inputs` and `outputs` lists of objects; `data` is the one large
    array. simdjson lists a field given twice twice, so duplicates are seen here."""
    if header.startswith(b"\xef\xbb\xbf"):  # simdjson skips a byte-order mark that the full path refuses
        raise _Unsure
    try:
        doc = simdjson.Parser().parse(header)
        return _plain(doc, "the request")
    except (ValueError, TypeError, KeyError, RuntimeError, IndexError):  # simdjson's refusals
        raise _Unsure from None


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, simdjson.Object):
        keys = list(value.keys())
        if len(keys) != len(set(keys)):
            repeated = next(key for key in keys if keys.count(key) > 1)
            raise _duplicate(repeated, where)
        return {key: value[key] if key == "data" else _plain(value[key], key) for key in keys}
    if isinstance(value, simdjson.Array):
        return [_plain(item, where) for item in value]
    return value


def _full_document(header: bytes) -> tuple[Any, str | None]:
    """The JSON through the standard library, naming what the fast reading could not decide: a field
    given twice, NaN / Infinity tokens (as `NonFinite`, named with their element), a value beyond
    float64. orjson's complaint is kept for `refuse_unless_valid` (as `wire.parse.decode_json` does)."""
    syntax_error = _orjson_complaint(header)
    try:
        doc = json.loads(
            bytes(header).decode("utf-8"),
            object_pairs_hook=_unique_fields,
            parse_constant=NonFinite,
            parse_int=parse_int,
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedRequest(f"the body is not valid JSON: {syntax_error or exc}") from None
    return doc, syntax_error


def _orjson_complaint(header: bytes) -> str | None:
    """What orjson says of the JSON (None: it reads it), its document let go at once: the full reading
    must not hold two copies of a large body's numbers."""
    try:
        orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        return str(exc)
    return None


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        repeated = next(key for key, _ in pairs if sum(other == key for other, _ in pairs) > 1)
        raise _duplicate(repeated, "an object")
    return fields


def _duplicate(key: str, where: str) -> InvalidInput:
    return InvalidInput(
        f"the field {shown(key)} is given twice in {where}; give each field once",
        code=ErrorCode.DUPLICATE_FIELD,
    )


def _request(
    doc: Any, binary: bytes | memoryview, sensor_names: Sequence[str], max_batch: int
) -> InferRequest:
    obj = _fields(doc, _REQUEST_FIELDS, "the request")
    ident = obj.get("id")
    if ident is not None and type(ident) is not str:
        raise InvalidInput(f"id must be a string, got {kind_of(ident)}", code=ErrorCode.INVALID_TYPE)
    parameters = _parameters(obj.get("parameters"), _REQUEST_PARAMETERS, "parameters")
    if "inputs" not in obj:
        raise InvalidInput("the field 'inputs' is missing", code=ErrorCode.MISSING_FIELD)
    inputs = obj["inputs"]
    if type(inputs) is not list or len(inputs) != 1:
        got = f"{len(inputs)} inputs" if type(inputs) is list else kind_of(inputs)
        raise InvalidInput(
            f"inputs must be a list of one input, {INPUT_NAME!r}, got {got}", code=ErrorCode.UNKNOWN_TENSOR
        )
    readings = _readings(inputs[0], binary, sensor_names, max_batch)
    outputs = _outputs(obj.get("outputs"), parameters.get("binary_data_output", False))
    return InferRequest(readings, ident, outputs)


def _fields(doc: Any, fields: tuple[str, ...], where: str) -> dict[str, Any]:
    if type(doc) is not dict:
        raise InvalidInput(f"{where} must be a JSON object, got {kind_of(doc)}", code=ErrorCode.INVALID_TYPE)
    for key in doc:
        if key not in fields:
            raise InvalidInput(
                f"unknown field {shown(key)} in {where} (accepted: {', '.join(fields)})",
                code=ErrorCode.UNKNOWN_FIELD,
            )
    return doc


def _parameters(given: Any, known: dict[str, type], where: str) -> dict[str, Any]:
    """V2 parameters: an object of scalars. Only the ones the service acts on are accepted: one it would
    ignore (Triton's `sequence_id`, `priority`, `classification`) would silently change nothing."""
    if given is None:
        return {}
    if type(given) is not dict:
        raise InvalidInput(
            f"{where} must be an object, got {kind_of(given)}", code=ErrorCode.INVALID_PARAMETER
        )
    for key, value in given.items():
        if key not in known:
            accepted = ", ".join(known)
            raise InvalidInput(
                f"{where} has {shown(key)}, which this service does not use (accepted: {accepted})",
                code=ErrorCode.INVALID_PARAMETER,
            )
        if type(value) is not known[key] or (type(value) is int and value < 0):
            expected = "a boolean" if known[key] is bool else "a non-negative integer"
            raise InvalidInput(
                f"{where}.{key} must be {expected}, got {kind_of(value)}", code=ErrorCode.INVALID_PARAMETER
            )
    return given


def _readings(
    given: Any, binary: bytes | memoryview, sensor_names: Sequence[str], max_batch: int
) -> Readings:
    tensor = _fields(given, _INPUT_FIELDS, f"the input {INPUT_NAME!r}")
    name = tensor.get("name")
    if name != INPUT_NAME:
        raise InvalidInput(
            f"the input is named {kind_of(name)}; the model's one input is {INPUT_NAME!r}",
            code=ErrorCode.UNKNOWN_TENSOR,
        )
    datatype = tensor.get("datatype")
    if datatype != INPUT_DATATYPE:
        raise InvalidInput(
            f"{INPUT_NAME}.datatype is {kind_of(datatype)}; the model takes {INPUT_DATATYPE}",
            code=ErrorCode.INVALID_DATATYPE,
        )
    n = len(sensor_names)
    rows = _shape(tensor.get("shape"), n)
    check_rows(rows, max_batch)
    parameters = _parameters(tensor.get("parameters"), _INPUT_PARAMETERS, f"{INPUT_NAME}.parameters")
    if parameters.get("content_type", "np") not in _CONTENT_TYPES:
        raise InvalidInput(
            f"{INPUT_NAME}.parameters.content_type is {shown(parameters['content_type'])}; readings are a "
            "plain tensor ('np')",
            code=ErrorCode.INVALID_PARAMETER,
        )
    size = parameters.get("binary_data_size")
    if size is None:
        if binary:
            raise InvalidInput(
                f"{len(binary)} bytes follow the JSON, but {INPUT_NAME} has no binary_data_size",
                code=ErrorCode.INVALID_BINARY_LENGTH,
            )
        if "data" not in tensor:
            raise InvalidInput(
                f"{INPUT_NAME} has neither data nor parameters.binary_data_size", code=ErrorCode.MISSING_FIELD
            )
        return Readings(_data(tensor["data"], rows, n), [None] * rows)
    if "data" in tensor:
        raise InvalidInput(
            f"{INPUT_NAME} has both data and parameters.binary_data_size; send one",
            code=ErrorCode.INVALID_PARAMETER,
        )
    expected = rows * n * 4
    if size != expected or len(binary) != size:
        raise InvalidInput(
            f"{INPUT_NAME} of shape [{rows}, {n}] takes {expected} bytes of float32; binary_data_size says "
            f"{size} and {len(binary)} bytes follow the JSON",
            code=ErrorCode.INVALID_BINARY_LENGTH,
        )
    readings = parse_batch_binary(binary, sensor_names, max_batch)
    return readings


def _shape(shape: Any, n: int) -> int:
    """The rows of a [N, n] shape."""
    if (
        type(shape) is not list
        or len(shape) != 2
        or any(type(dim) is not int or dim < 0 for dim in shape)
        or shape[1] != n
    ):
        raise InvalidInput(
            f"{INPUT_NAME}.shape must be [N, {n}] (N readings of {n} sensors), got {shown(shape)}",
            code=ErrorCode.INVALID_SHAPE,
        )
    return int(shape[0])


def _data(data: Any, rows: int, n: int) -> np.ndarray:
    """float32 [rows, n] from `data`, flat (rows x n numbers) or nested (rows lists of n)."""
    if isinstance(data, simdjson.Array):
        return _fast_data(data, rows, n)
    if isinstance(data, simdjson.Object):
        raise _Unsure  # the full reading names it
    if type(data) is not list:
        raise InvalidInput(
            f"{INPUT_NAME}.data must be a list of numbers, got {kind_of(data)}", code=ErrorCode.INVALID_TYPE
        )
    if data and type(data[0]) is list:  # nested: one list per reading
        if len(data) != rows:
            raise InvalidInput(
                f"{INPUT_NAME}.data has {len(data)} rows; its shape says {rows}", code=ErrorCode.INVALID_SHAPE
            )
        return to_array(data, n, _row_label)
    if len(data) != rows * n:
        raise InvalidInput(
            f"{INPUT_NAME}.data has {len(data)} values; its shape [{rows}, {n}] takes {rows * n}",
            code=ErrorCode.INVALID_SHAPE,
        )
    try:
        return to_array([data[i * n : (i + 1) * n] for i in range(rows)], n, _row_label)
    except InvalidInput:  # name the element by its place in the flat list
        for k, value in enumerate(data):
            problem = value_problem(value)
            if problem is not None:
                code, text = problem
                raise InvalidInput(
                    f"{INPUT_NAME}.data[{k}] (row {k // n}, sensor {k % n}) {text}", code=code
                ) from None
        raise


def _row_label(row: int) -> str:
    return f"{INPUT_NAME}.data[{row}]"


def _fast_data(data: Any, rows: int, n: int) -> np.ndarray:
    """`data` as one float64 buffer, or `_Unsure` for the full reading to name what is wrong. simdjson's
    buffer flattens nested lists, so the brackets of the (minified) array are counted: 1 when flat, 1 + rows
    when nested, any other count a deeper nesting."""
    try:
        x = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64)
        brackets = data.mini.count(b"[")
        flat = len(data) == rows * n and brackets == 1
        if not flat and not (len(data) == rows and brackets == 1 + rows and all(len(r) == n for r in data)):
            raise _Unsure
    except (ValueError, TypeError, RuntimeError, IndexError):
        raise _Unsure from None
    if x.size != rows * n or (x.size and not (x.max() <= FLOAT32_LIMIT and x.min() >= -FLOAT32_LIMIT)):
        raise _Unsure
    return x.reshape(rows, n).astype(np.float32)


def _outputs(given: Any, binary_default: bool) -> tuple[tuple[str, bool], ...]:
    if given is None or given == []:
        return tuple((name, binary_default) for name in DEFAULT_OUTPUTS)
    if type(given) is not list:
        raise InvalidInput(f"outputs must be a list, got {kind_of(given)}", code=ErrorCode.INVALID_TYPE)
    outputs: list[tuple[str, bool]] = []
    for i, item in enumerate(given):
        output = _fields(item, _OUTPUT_FIELDS, f"outputs[{i}]")
        name = output.get("name")
        if type(name) is not str or name not in OUTPUT_DATATYPES:
            raise InvalidInput(
                f"outputs[{i}] is {kind_of(name)}; the model's outputs are {', '.join(OUTPUT_DATATYPES)}",
                code=ErrorCode.UNKNOWN_TENSOR,
            )
        if any(name == seen for seen, _ in outputs):
            raise InvalidInput(f"the output {name!r} is asked for twice", code=ErrorCode.DUPLICATE_FIELD)
        parameters = _parameters(output.get("parameters"), _OUTPUT_PARAMETERS, f"outputs[{i}].parameters")
        outputs.append((name, parameters.get("binary_data", binary_default)))
    return tuple(outputs)


# --- the answers ------------------------------------------------------------------------------------------


def infer_answer(
    model_name: str, model: LoadedModel, infer: InferRequest, scored: Scored, request_id: str | None
) -> tuple[bytes, int | None]:
    """The infer answer's body, and the length of its JSON when binary outputs follow it (the answer's
    `Inference-Header-Content-Length`; None: all JSON).

    `id` is the request's, else the request id of `X-Request-ID`. `parameters` carry the threshold and,
    with an asset, the asset and each reading's alarm as /v1/score/batch gives it, as a JSON string: V2
    parameter values are scalars. JSON has no NaN or Infinity: a score that is not finite is `null` in
    `data` (and its `is_anomaly` true), as on /v1; binary outputs carry the float32 as it is."""
    assessment = scored.assessment
    arrays = {
        "score": assessment.scores,
        "is_anomaly": assessment.is_anomaly,
        "sensor_error": assessment.sensor_error,
    }
    outputs: list[dict[str, Any]] = []
    parts: list[bytes] = []
    for name, binary in infer.outputs:
        array = arrays[name]
        assert array is not None  # the scorer's sensor_error is always kept (model.LoadedModel.assess)
        datatype = OUTPUT_DATATYPES[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = np.ascontiguousarray(array, dtype="<f4" if datatype == "FP32" else np.bool_).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            parts.append(raw)
        else:
            entry["data"] = array.ravel().tolist()  # orjson writes a non-finite float as null
        outputs.append(entry)
    parameters: dict[str, Any] = {"threshold": model.threshold}
    if scored.asset is not None:
        alarms = [alarm_fields(scored, row) for row in range(len(assessment.scores))]
        parameters |= {"asset": scored.asset, "alarms": orjson.dumps(alarms).decode()}
    answer = {
        "model_name": model_name,
        "model_version": model.version,
        "id": infer.id if infer.id is not None else request_id,
        "parameters": parameters,
        "outputs": outputs,
    }
    header = orjson.dumps(answer)
    if not parts:
        return header, None
    return b"".join([header, *parts]), len(header)


def model_metadata(model_name: str, model: LoadedModel) -> dict[str, Any]:
    """GET /v2/models/{name}: the serving version, its input and outputs (-1: any number of readings)."""
    n = len(model.sensor_names)
    shapes = {"score": [-1], "is_anomaly": [-1], "sensor_error": [-1, n]}
    return {
        "name": model_name,
        "versions": [model.version],
        "platform": PLATFORM,
        "inputs": [{"name": INPUT_NAME, "datatype": INPUT_DATATYPE, "shape": [-1, n]}],
        "outputs": [
            {"name": name, "datatype": datatype, "shape": shapes[name]}
            for name, datatype in OUTPUT_DATATYPES.items()
        ],
    }
