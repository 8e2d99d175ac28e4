"""The Python client factory code uses to call the scoring service: `AnomalyClient` (sync) and
`AsyncAnomalyClient` (asyncio), with the same methods.

    with AnomalyClient("http://scoring:8000", api_key="...") as client:
        result = client.score(reading)                  # one reading: n_sensors numbers, model order
        batch = client.score_batch(readings)            # 2-D [N, n_sensors]; float32 binary on the wire
        if result.is_anomaly: ...

Imports httpx, numpy and orjson only (this distribution's dependencies): no torch, onnx, onnxruntime,
FastAPI or pydantic, so a factory PC installs little and a client process stays small. One keep-alive
connection pool per client: create one client and reuse it.

Wire formats. `score` sends JSON. `score_batch` sends N x n little-endian float32, row-major
(`application/octet-stream`) by default: no text encoding or parsing on either side. That format carries no
ids, so a batch *with ids* goes as JSON (`{"vectors", "ids"}`), as does `binary=False`. Binary input must be
numeric (ints, floats); values beyond float32's range become +-inf in the cast and the server refuses them as
`non_finite_value`. The JSON path sends what it is given and the server names a bad element (`values[3]`).

Errors. Every failed call raises a `ServiceError`, parsed from the service's
`{"error": {"code", "message", "request_id"}}` body: `BadRequestError` (400, 413, 415, 422: do not retry
the same request), `AuthenticationError` (401, 403), `ModelUnavailableError` (503, after the retries),
`ConnectionFailedError` (no HTTP answer, after the retries; `status` None), and `ServiceError` itself for any
other status (404, 409 from a failed reload, 500). Each carries the request id: quote it to the operator,
it is on the service's log lines for that request.

Retries. Scoring, `model()` and `ready()` have no side effects, so a 503 and a transport failure (connect
error, timeout, a dropped connection) are retried up to `retries` more times, waiting
`backoff_s * 2**attempt` seconds, or what a `Retry-After: <seconds>` header asks, never more than
`MAX_RETRY_DELAY_S`. A 4xx is never retried. `reload` retries only a failed connect (the request never
left). All attempts of one call carry the same `X-Request-ID` (a uuid4 hex).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import numpy as np
import orjson

__all__ = [
    "AnomalyClient",
    "AsyncAnomalyClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchItem",
    "BatchResult",
    "ConnectionFailedError",
    "ModelUnavailableError",
    "ScoreResult",
    "ServiceError",
]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
MAX_RETRY_DELAY_S = 5.0
"""No single wait between attempts is longer, whatever `Retry-After` or the backoff schedule says."""
RELOAD_TIMEOUT_S = 60.0
"""Default read timeout of `reload`: a load verifies every checksum and warms the model up first."""

JSON_TYPE = "application/json"
OCTET_STREAM = "application/octet-stream"
USER_AGENT = "factory-anomaly-client/1"
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_NUMERIC_KINDS = frozenset("fiu")  # numpy dtype kinds a binary body may be cast from

# Transport failures worth another attempt for a call without side effects; anything else (an invalid
# URL, a protocol error on our side) would fail the same way again.
_RETRIED_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
# The request never reached the server: safe to retry even for a call with side effects.
_NOT_SENT_ERRORS: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


# --- results ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScoreResult:
    """One scored reading. `score` is the float32 score as a float (exact), None when it was not finite;
    `is_anomaly` is `score > threshold` (or the score is not finite)."""

    id: str | None
    score: float | None
    threshold: float
    is_anomaly: bool
    model_version: str
    alarm: dict[str, Any] | None = None  # with an asset: its alarm after this reading (the service's JSON)
    late: bool = False  # with an asset: the reading was older than the asset's latest and moved nothing


@dataclass(frozen=True, slots=True)
class BatchItem:
    id: str | None
    score: float | None
    is_anomaly: bool
    alarm: dict[str, Any] | None = None
    late: bool = False


@dataclass(frozen=True, slots=True)
class BatchResult:
    """A scored batch: `results` one per row, in request order."""

    model_version: str
    threshold: float
    results: list[BatchItem]


# --- errors -----------------------------------------------------------------------------------------------


class ServiceError(Exception):
    """A call that failed. `status` is the HTTP status (None when no answer came), `code` the service's
    stable reason (`wrong_length`, `invalid_api_key`, ...; `http_<status>` when the body was not the
    service's error shape), `request_id` the `X-Request-ID` of the call, `attempts` how many were made."""

    def __init__(
        self, message: str, *, status: int | None, code: str, request_id: str | None, attempts: int = 1
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id
        self.attempts = attempts

    def __str__(self) -> str:
        status = "no answer" if self.status is None else str(self.status)
        return f"{status} {self.code}: {self.message} (request id {self.request_id})"


class BadRequestError(ServiceError):
    """400, 413, 415, 422: the request itself is wrong; sending it again gives the same answer."""


class AuthenticationError(ServiceError):
    """401, 403: a missing or wrong API key or admin token, or the admin endpoints are disabled."""


class ModelUnavailableError(ServiceError):
    """503: no model is loaded (still starting, or the artifact is bad: `message` says why)."""


class ConnectionFailedError(ServiceError):
    """No HTTP answer after every attempt: nothing listening, connection dropped, or a timeout (`code`
    `timeout`). The last transport exception is the `__cause__`."""


_ERROR_CLASSES: dict[int, type[ServiceError]] = {
    400: BadRequestError,
    413: BadRequestError,
    415: BadRequestError,
    422: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    503: ModelUnavailableError,
}
_SHOWN_BODY_CHARS = 200


def error_from_response(response: httpx.Response, request_id: str, attempts: int = 1) -> ServiceError:
    """The typed error for a non-success answer; falls back to the raw text for a body that is not
    `{"error": {"code", "message", ...}}` (a proxy's error page, say)."""
    status = response.status_code
    request_id = response.headers.get("x-request-id") or request_id
    detail: Any = None
    try:
        doc = orjson.loads(response.content)
        detail = doc.get("error") if isinstance(doc, dict) else None
    except orjson.JSONDecodeError:
        pass
    if isinstance(detail, dict) and isinstance(detail.get("code"), str):
        code: str = detail["code"]
        message = str(detail.get("message", ""))
        request_id = detail.get("request_id") or request_id
    else:
        code = f"http_{status}"
        message = response.text.strip()[:_SHOWN_BODY_CHARS] or response.reason_phrase
    error_class = _ERROR_CLASSES.get(status, ServiceError)
    return error_class(message, status=status, code=code, request_id=request_id, attempts=attempts)


def _connection_failed(
    exc: Exception, request: httpx.Request, request_id: str, attempts: int
) -> ServiceError:
    code = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_failed"
    message = (
        f"{request.method} {request.url} got no answer after {attempts} attempt(s): "
        f"{type(exc).__name__}: {exc or 'no detail'}"
    )
    return ConnectionFailedError(message, status=None, code=code, request_id=request_id, attempts=attempts)


def retry_delay_s(attempt: int, backoff_s: float, retry_after: str | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first): `Retry-After` in seconds when the
    answer carried a valid one, else `backoff_s * 2**attempt`; at most `MAX_RETRY_DELAY_S`."""
    delay = backoff_s * 2**attempt
    if retry_after is not None:
        try:
            asked = float(retry_after)
        except ValueError:  # an HTTP date: not worth a date parser, the backoff schedule stands
            pass
        else:
            if math.isfinite(asked) and asked >= 0:
                delay = asked
    return min(delay, MAX_RETRY_DELAY_S)


# --- requests: built and parsed the same way by both clients ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    content: bytes | None = None
    content_type: str | None = None
    answers: frozenset[int] = frozenset({200})  # statuses handed to the parser, not raised
    retry_unavailable: bool = True  # retry a 503
    retried_errors: tuple[type[Exception], ...] = _RETRIED_ERRORS
    authorization: str | None = None  # overrides the API key (admin calls)
    timeout_s: float | None = None  # overrides the client's
    asset: str | None = None  # X-Asset


def _plain(value: Any) -> Any:
    """`default` for the stdlib encoder: numpy arrays and scalars as Python values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot send a {type(value).__name__} as JSON")


def _dumps(doc: dict[str, Any]) -> bytes:
    """orjson; but orjson writes NaN and +-Infinity as `null` (and refuses integers beyond 64 bits), which
    the server would report as "got null". Those rare bodies go through the stdlib encoder instead, which
    writes the NaN / Infinity tokens the server refuses by name (`non_finite_value`, `value_out_of_range`).
    Callers leave absent ids out, so a `null` in the output means such a value."""
    try:
        body = orjson.dumps(doc, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(doc, default=_plain, separators=(",", ":")).encode()
    if b"null" in body:
        return json.dumps(doc, default=_plain, separators=(",", ":")).encode()
    return body


def _vector(values: Sequence[float] | np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise ValueError(f"values must be 1-D (one reading), got shape {values.shape}")
        return np.ascontiguousarray(values)
    if isinstance(values, list | tuple):
        return values
    return list(values)


def _score_call(
    values: Sequence[float] | np.ndarray, id: str | None, asset: str | None = None, ts: Any = None
) -> _Call:
    """With an asset, a reading moves the asset's alarm: it is given an id when it has none, so a retry
    after a lost answer is recognised by the service and not counted twice."""
    doc: dict[str, Any] = {"values": _vector(values)}
    if asset is not None and id is None:
        id = uuid.uuid4().hex
    if id is not None:
        doc["id"] = id
    if ts is not None:
        doc["ts"] = _timestamp(ts)
    return _Call("POST", "/v1/score", _dumps(doc), JSON_TYPE, asset=asset)


def _timestamp(ts: Any) -> Any:
    """A reading's time for the wire: a datetime with a zone as RFC 3339, numbers as Unix seconds."""
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise ValueError("ts needs a time zone (a naive datetime is ambiguous)")
        return ts.isoformat()
    return ts


def _binary_rows(vectors: Any) -> bytes:
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise ValueError(f"vectors must be 2-D [rows, n_sensors], got shape {x.shape}")
    if x.dtype.kind not in _NUMERIC_KINDS:
        raise ValueError(
            f"a binary batch needs numbers, got dtype {x.dtype}; "
            "send binary=False to have the service name the bad element"
        )
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


def _json_rows(vectors: Any) -> Any:
    if isinstance(vectors, np.ndarray):
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be 2-D [rows, n_sensors], got shape {vectors.shape}")
        return np.ascontiguousarray(vectors)
    rows = vectors if isinstance(vectors, list | tuple) else list(vectors)
    for i, row in enumerate(rows):
        if isinstance(row, np.ndarray):
            if row.ndim != 1:
                raise ValueError(f"vectors must be 2-D: vectors[{i}] has shape {row.shape}")
        elif isinstance(row, str | bytes) or not isinstance(row, Sequence):
            raise ValueError(f"vectors must be 2-D: vectors[{i}] is a {type(row).__name__}, not a row")
    return rows


def _batch_call(
    vectors: Any, ids: Sequence[str] | None, binary: bool, asset: str | None = None, ts: Any = None
) -> _Call:
    """With an asset and no ids, a binary batch is retried only when it was never sent (its readings
    carry no ids the service could recognise); ts, one per row, needs JSON."""
    if binary and ids is None and ts is None:
        try:
            content = _binary_rows(vectors)
        except ValueError as exc:
            if "inhomogeneous" in str(exc):  # numpy's complaint about ragged rows
                raise ValueError("vectors must be 2-D: the rows have different lengths") from None
            raise
        retried = _RETRIED_ERRORS if asset is None else _NOT_SENT_ERRORS
        return _Call("POST", "/v1/score/batch", content, OCTET_STREAM, retried_errors=retried, asset=asset)
    doc: dict[str, Any] = {"vectors": _json_rows(vectors)}
    if ids is None and asset is not None:
        ids = [uuid.uuid4().hex for _ in range(len(doc["vectors"]))]
    if ids is not None:
        doc["ids"] = list(ids)
    if ts is not None:
        doc["ts"] = [_timestamp(t) for t in ts]
    return _Call("POST", "/v1/score/batch", _dumps(doc), JSON_TYPE, asset=asset)


def _reload_call(version: str | None, admin_token: str, timeout_s: float) -> _Call:
    content = None if version is None else orjson.dumps({"version": version})
    return _Call(
        "POST",
        "/v1/admin/reload",
        content,
        None if content is None else JSON_TYPE,
        retried_errors=_NOT_SENT_ERRORS,  # a load is work on the server: never started twice by us
        authorization=f"Bearer {admin_token}",
        timeout_s=timeout_s,
    )


_MODEL_CALL = _Call("GET", "/v1/model")
_READY_CALL = _Call("GET", "/readyz", answers=frozenset({200, 503}), retry_unavailable=False)


def _parse_score(doc: Any) -> ScoreResult:
    return ScoreResult(doc["id"], doc["score"], doc["threshold"], doc["is_anomaly"], doc["model_version"],
                       doc.get("alarm"), bool(doc.get("late", False)))  # fmt: skip


def _parse_batch(doc: Any) -> BatchResult:
    results = [
        BatchItem(r["id"], r["score"], r["is_anomaly"], r.get("alarm"), bool(r.get("late", False)))
        for r in doc["results"]
    ]
    return BatchResult(doc["model_version"], doc["threshold"], results)


def _document(response: httpx.Response, request_id: str) -> Any:
    """The JSON of a success answer; a body that is not JSON is a `ServiceError` `invalid_response`."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise ServiceError(
            f"the answer is not JSON ({exc}): {response.text[:_SHOWN_BODY_CHARS]!r}",
            status=response.status_code,
            code="invalid_response",
            request_id=request_id,
        ) from None


def _shape_error(response: httpx.Response, request_id: str, exc: Exception) -> ServiceError:
    return ServiceError(
        f"the answer lacks an expected field ({type(exc).__name__}: {exc})",
        status=response.status_code,
        code="invalid_response",
        request_id=request_id,
    )


class _Base:
    """Settings and request building shared by both clients."""

    def __init__(
        self, base_url: str, api_key: str | None, timeout_s: float, retries: int, backoff_s: float
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {backoff_s}")
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._headers = {"User-Agent": USER_AGENT, "Accept": JSON_TYPE}
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key}"

    @staticmethod
    def _request_headers(call: _Call, request_id: str) -> dict[str, str]:
        headers = {"X-Request-ID": request_id}
        if call.content_type is not None:
            headers["Content-Type"] = call.content_type
        if call.asset is not None:
            headers["X-Asset"] = call.asset
        if call.authorization is not None:
            headers["Authorization"] = call.authorization
        return headers

    def _timeout(self, call: _Call) -> float:
        return self.timeout_s if call.timeout_s is None else call.timeout_s

    def _outcome(
        self, call: _Call, request: httpx.Request, request_id: str, attempt: int, result: Any
    ) -> httpx.Response | float:
        """What one attempt's `result` (a response, or the exception `send` raised) means: the response to
        parse, or the seconds to wait before the next attempt; raises when the call has failed."""
        last = attempt == self.retries
        if isinstance(result, httpx.Response):
            if result.status_code in call.answers:
                return result
            if result.status_code == 503 and call.retry_unavailable and not last:
                return retry_delay_s(attempt, self.backoff_s, result.headers.get("retry-after"))
            raise error_from_response(result, request_id, attempt + 1)
        if isinstance(result, call.retried_errors) and not last:
            return retry_delay_s(attempt, self.backoff_s)
        raise _connection_failed(result, request, request_id, attempt + 1) from result


# --- the clients ------------------------------------------------------------------------------------------


class AnomalyClient(_Base):
    """Synchronous client: create one, reuse it for every call (it keeps connections alive), close it."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s, retries, backoff_s)
        self._http = httpx.Client(
            base_url=base_url, headers=self._headers, timeout=timeout_s, transport=transport
        )

    def __enter__(self) -> AnomalyClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> tuple[httpx.Response, str]:
        request_id = uuid.uuid4().hex
        request = self._http.build_request(
            call.method,
            call.path,
            content=call.content,
            headers=self._request_headers(call, request_id),
            timeout=self._timeout(call),
        )
        attempt = 0
        while True:
            result: httpx.Response | Exception
            try:
                result = self._http.send(request)
            except httpx.TransportError as exc:
                result = exc
            outcome = self._outcome(call, request, request_id, attempt, result)
            if isinstance(outcome, httpx.Response):
                return outcome, request_id
            time.sleep(outcome)
            attempt += 1

    def score(
        self,
        values: Sequence[float] | np.ndarray,
        id: str | None = None,
        *,
        asset: str | None = None,
        ts: Any = None,
    ) -> ScoreResult:
        """Score one reading: `n_sensors` numbers in the model's sensor order (see `model()`). With
        `asset` (sent as X-Asset) the reading moves that machine's alarm and the result carries it; `ts`:
        when it was taken (a datetime with a zone, or Unix seconds)."""
        response, request_id = self._send(_score_call(values, id, asset, ts))
        try:
            return _parse_score(_document(response, request_id))
        except (KeyError, TypeError) as exc:
            raise _shape_error(response, request_id, exc) from None

    def score_batch(
        self,
        vectors: Any,
        ids: Sequence[str] | None = None,
        *,
        binary: bool = True,
        asset: str | None = None,
        ts: Sequence[Any] | None = None,
    ) -> BatchResult:
        """Score `vectors`, 2-D [rows, n_sensors] (an array or a list of rows). Binary float32 on the wire
        unless `ids` or `ts` are given or `binary=False` (then JSON). ValueError when `vectors` is not 2-D.
        With `asset`, the rows are one machine's readings in time order (see `score`)."""
        response, request_id = self._send(_batch_call(vectors, ids, binary, asset, ts))
        try:
            return _parse_batch(_document(response, request_id))
        except (KeyError, TypeError) as exc:
            raise _shape_error(response, request_id, exc) from None

    def model(self) -> dict[str, Any]:
        """`GET /v1/model`: name, version, n_sensors, sensor_names, threshold, provider, metrics, ..."""
        response, request_id = self._send(_MODEL_CALL)
        doc: dict[str, Any] = _document(response, request_id)
        return doc

    def ready(self) -> bool:
        """True while a model is serving (`/readyz` 200), False on 503 (answered at once, not retried);
        ConnectionFailedError when nothing answers."""
        response, _ = self._send(_READY_CALL)
        return response.status_code == 200

    def reload(
        self, version: str | None = None, *, admin_token: str, timeout_s: float = RELOAD_TIMEOUT_S
    ) -> dict[str, Any]:
        """`POST /v1/admin/reload`: load `version` (None: the one CURRENT names) and swap it in. Returns
        {name, version, previous_version, provider, load_seconds}; a failed load is a ServiceError with
        status 409 and the reason's code, and the previous model keeps serving."""
        response, request_id = self._send(_reload_call(version, admin_token, timeout_s))
        doc: dict[str, Any] = _document(response, request_id)
        return doc


class AsyncAnomalyClient(_Base):
    """The same API as `AnomalyClient`, for asyncio code; `await client.aclose()` when done."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 3,
        backoff_s: float = 0.05,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, timeout_s, retries, backoff_s)
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=self._headers, timeout=timeout_s, transport=transport
        )

    async def __aenter__(self) -> AsyncAnomalyClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> tuple[httpx.Response, str]:
        request_id = uuid.uuid4().hex
        request = self._http.build_request(
            call.method,
            call.path,
            content=call.content,
            headers=self._request_headers(call, request_id),
            timeout=self._timeout(call),
        )
        attempt = 0
        while True:
            result: httpx.Response | Exception
            try:
                result = await self._http.send(request)
            except httpx.TransportError as exc:
                result = exc
            outcome = self._outcome(call, request, request_id, attempt, result)
            if isinstance(outcome, httpx.Response):
                return outcome, request_id
            await asyncio.sleep(outcome)
            attempt += 1

    async def score(
        self,
        values: Sequence[float] | np.ndarray,
        id: str | None = None,
        *,
        asset: str | None = None,
        ts: Any = None,
    ) -> ScoreResult:
        """See `AnomalyClient.score`."""
        response, request_id = await self._send(_score_call(values, id, asset, ts))
        try:
            return _parse_score(_document(response, request_id))
        except (KeyError, TypeError) as exc:
            raise _shape_error(response, request_id, exc) from None

    async def score_batch(
        self,
        vectors: Any,
        ids: Sequence[str] | None = None,
        *,
        binary: bool = True,
        asset: str | None = None,
        ts: Sequence[Any] | None = None,
    ) -> BatchResult:
        """See `AnomalyClient.score_batch`."""
        response, request_id = await self._send(_batch_call(vectors, ids, binary, asset, ts))
        try:
            return _parse_batch(_document(response, request_id))
        except (KeyError, TypeError) as exc:
            raise _shape_error(response, request_id, exc) from None

    async def model(self) -> dict[str, Any]:
        """See `AnomalyClient.model`."""
        response, request_id = await self._send(_MODEL_CALL)
        doc: dict[str, Any] = _document(response, request_id)
        return doc

    async def ready(self) -> bool:
        """See `AnomalyClient.ready`."""
        response, _ = await self._send(_READY_CALL)
        return response.status_code == 200

    async def reload(
        self, version: str | None = None, *, admin_token: str, timeout_s: float = RELOAD_TIMEOUT_S
    ) -> dict[str, Any]:
        """See `AnomalyClient.reload`."""
        response, request_id = await self._send(_reload_call(version, admin_token, timeout_s))
        doc: dict[str, Any] = _document(response, request_id)
        return doc
