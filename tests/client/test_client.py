"""factory_anomaly_client against the real service: the session's uvicorn (`live`), a second uvicorn for
reloads, and the app in process behind httpx.ASGITransport (async reloads, a service without a model).

Retries need answers the real service does not give on demand (503 twice, then 200; a slow answer; a
proxy's error page). For those, `StubService` below is a minimal ASGI app served by a *real* uvicorn on a
real socket in a background thread: the client's whole stack (connections, timeouts, headers, backoff)
runs for real, and the stub records every attempt it receives. No mock stands in for the scoring service.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import orjson
import pytest
import uvicorn
from factory_anomaly_client.client import (
    MAX_RETRY_DELAY_S,
    AnomalyClient,
    AsyncAnomalyClient,
    AuthenticationError,
    BadRequestError,
    ConnectionFailedError,
    ModelUnavailableError,
    ServiceError,
    retry_delay_s,
)

from factory_anomaly.artifact import Manifest
from tests.app.conftest import (
    ADMIN_TOKEN,
    API_KEY,
    MODEL_NAME,
    ROOT,
    LiveServer,
    anomalous,
    copy_store,
    free_port,
    publish_copy,
    running,
    server_env,
    settings_for,
    start_server,
    stop_server,
)

N = 40  # sensors of the small model
MAX_BATCH = 1024  # the live server's limit
MAX_BODY_BYTES = 4 << 20  # the live server's limit (conftest.server_env)
NEW = "20991231T000000Z-0000beef"
MISSING = "20000101T000000Z-00000000"
HEX_ID = re.compile(r"[0-9a-f]{32}")


def reference_scores(reference: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    scores: np.ndarray = reference.run(["score"], {"readings": np.ascontiguousarray(x, np.float32)})[0]
    return scores


@pytest.fixture
def anomaly(live: LiveServer) -> Iterator[AnomalyClient]:
    with AnomalyClient(live.url, api_key=API_KEY) as client:
        yield client


# --- the stub: a real uvicorn serving scripted answers ----------------------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


def error_body(code: str, message: str = "scripted") -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, "request_id": None}})


SCORE_BODY = orjson.dumps(
    {"id": None, "score": 0.25, "threshold": 1.0, "is_anomaly": False, "model_version": "stub"}
)
BATCH_BODY = orjson.dumps(
    {"model_version": "stub", "threshold": 1.0, "results": [{"id": None, "score": 2.5, "is_anomaly": True}]}
)
UNAVAILABLE = Answer(503, error_body("model_unavailable", "no model is loaded"))


class StubService:
    """Answers the n-th request with the n-th scripted answer (the last one repeats) and records it."""

    def __init__(self) -> None:
        self.script: list[Answer] = [Answer(200, SCORE_BODY)]
        self.received: list[Received] = []

    def answer(self, *script: Answer) -> None:
        self.script, self.received = list(script), []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.received.append(Received(scope["method"], scope["path"], headers, body))
        answer = self.script[min(len(self.received), len(self.script)) - 1]
        await asyncio.sleep(answer.delay_s)
        raw_headers = [(b"content-type", b"application/json")]
        raw_headers += [(k.encode(), v.encode()) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": answer.body})

    def request_ids(self) -> list[str]:
        return [r.headers["x-request-id"] for r in self.received]


@dataclass
class Stub:
    url: str
    app: StubService


@pytest.fixture(scope="module")
def stub_server() -> Iterator[Stub]:
    app = StubService()
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="stub-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the stub uvicorn did not start"
        time.sleep(0.01)
    yield Stub(f"http://127.0.0.1:{port}", app)
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def stub(stub_server: Stub) -> Stub:
    stub_server.app.answer(Answer(200, SCORE_BODY))
    return stub_server


def fast_client(url: str, **kwargs: Any) -> AnomalyClient:
    return AnomalyClient(url, **({"backoff_s": 0.001} | kwargs))


# --- scoring against the real service ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "as_input",
    [
        pytest.param(lambda row: row, id="float32-array"),
        pytest.param(lambda row: row.astype(np.float64), id="float64-array"),
        pytest.param(lambda row: row.tolist(), id="list"),
        pytest.param(lambda row: tuple(np.float32(v) for v in row), id="tuple-of-numpy-scalars"),
    ],
)
def test_score_equals_onnxruntime_exactly(
    anomaly: AnomalyClient,
    reference: ort.InferenceSession,
    manifest: Manifest,
    readings: np.ndarray,
    as_input: Any,
) -> None:
    expected = reference_scores(reference, readings[:8])
    for i in range(8):
        result = anomaly.score(as_input(readings[i]), id=f"r{i}")
        assert result.score == float(expected[i])  # the float32 score, exactly
        assert result.id == f"r{i}"
        assert result.threshold == manifest.threshold.value
        assert result.is_anomaly == (float(expected[i]) > manifest.threshold.value)
        assert result.model_version == manifest.version


def test_anomalous_reading(anomaly: AnomalyClient, manifest: Manifest) -> None:
    result = anomaly.score(anomalous(manifest))
    assert result.id is None
    assert result.is_anomaly
    assert result.score is not None and result.score > result.threshold


def test_binary_batch_equals_onnxruntime_exactly(
    anomaly: AnomalyClient, reference: ort.InferenceSession, manifest: Manifest, readings: np.ndarray
) -> None:
    expected = reference_scores(reference, readings)
    batch = anomaly.score_batch(readings)
    assert batch.model_version == manifest.version
    assert batch.threshold == manifest.threshold.value
    assert [item.score for item in batch.results] == expected.tolist()
    assert [item.is_anomaly for item in batch.results] == (expected > batch.threshold).tolist()
    assert [item.id for item in batch.results] == [None] * len(readings)
    # a list of rows, and float64 rows, are cast to the same float32 body
    assert anomaly.score_batch(readings.tolist()) == batch
    assert anomaly.score_batch(readings.astype(np.float64)) == batch


def test_json_batch_with_ids_equals_onnxruntime_exactly(
    anomaly: AnomalyClient, reference: ort.InferenceSession, readings: np.ndarray
) -> None:
    x = readings[:16]
    ids = [f"line-3/{i}" for i in range(len(x))]
    batch = anomaly.score_batch(x, ids=ids)
    assert [item.id for item in batch.results] == ids
    assert [item.score for item in batch.results] == reference_scores(reference, x).tolist()
    as_json = anomaly.score_batch(list(x), binary=False)  # a list of 1-D arrays
    assert [item.score for item in as_json.results] == [item.score for item in batch.results]


def test_wire_formats(stub: Stub, readings: np.ndarray) -> None:
    """Binary by default (little-endian float32, row-major); JSON when ids are given or binary=False."""
    stub.app.answer(Answer(200, BATCH_BODY))
    with fast_client(stub.url, api_key="k") as client:
        client.score_batch(readings[:3])
        client.score_batch(readings[:3], ids=["a", "b", "c"])
        client.score_batch(readings[:3], binary=False)
        stub.app.script = [Answer(200, SCORE_BODY)]
        client.score(readings[0], id="r0")
    binary, with_ids, as_json, single = stub.app.received
    assert binary.headers["content-type"] == "application/octet-stream"
    assert binary.body == readings[:3].astype("<f4").tobytes()
    assert with_ids.headers["content-type"] == as_json.headers["content-type"] == "application/json"
    with_ids_doc, as_json_doc, single_doc = (orjson.loads(r.body) for r in (with_ids, as_json, single))
    assert with_ids_doc["ids"] == ["a", "b", "c"] and "ids" not in as_json_doc
    for doc in (with_ids_doc, as_json_doc):  # float32 written as its shortest decimal: parses back exactly
        assert np.array_equal(np.array(doc["vectors"], np.float32), readings[:3])
    assert np.array_equal(np.array(single_doc["values"], np.float32), readings[0])
    assert single_doc["id"] == "r0"
    assert single.path == "/v1/score" and binary.path == "/v1/score/batch"
    for received in stub.app.received:
        assert received.headers["authorization"] == "Bearer k"
        assert HEX_ID.fullmatch(received.headers["x-request-id"])
    assert len(set(stub.app.request_ids())) == 4  # one id per call


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        pytest.param(lambda c: c.score_batch(np.ones(N)), "2-D", id="1-D-array"),
        pytest.param(lambda c: c.score_batch(np.ones((2, 2, N))), "2-D", id="3-D-array"),
        pytest.param(lambda c: c.score_batch([[1.0] * N, [1.0] * 3]), "different lengths", id="ragged"),
        pytest.param(lambda c: c.score_batch([1.0] * N, binary=False), "vectors[0]", id="json-flat-list"),
        pytest.param(lambda c: c.score_batch(np.ones(N), ids=["a"]), "2-D", id="json-1-D-array"),
        pytest.param(lambda c: c.score_batch([["1.5"] * N]), "numbers", id="binary-strings"),
        pytest.param(lambda c: c.score_batch([[None] * N]), "numbers", id="binary-nulls"),
        pytest.param(lambda c: c.score(np.ones((1, N))), "1-D", id="score-2-D"),
    ],
)
def test_input_of_the_wrong_shape_is_refused_before_sending(stub: Stub, call: Any, fragment: str) -> None:
    with fast_client(stub.url) as client, pytest.raises(ValueError, match=re.escape(fragment)):
        call(client)
    assert stub.app.received == []


def test_bad_values_are_named_by_the_service(anomaly: AnomalyClient, readings: np.ndarray) -> None:
    """NaN is sent as the NaN token (orjson would write null), so the service names the real problem."""
    row = readings[0].copy()
    row[5] = np.nan
    for values in (row, row.tolist()):
        with pytest.raises(BadRequestError) as caught:
            anomaly.score(values)
        assert (caught.value.code, caught.value.status) == ("non_finite_value", 422)
        assert "values[5]" in caught.value.message
    with pytest.raises(BadRequestError, match=r"values\[2\]") as out_of_range:
        anomaly.score([1.0, 1.0, 1e39] + [1.0] * (N - 3))
    assert out_of_range.value.code == "value_out_of_range"
    with pytest.raises(BadRequestError, match=r"row 1, sensor 3") as binary:
        x = readings[:2].copy()
        x[1, 3] = -np.inf
        anomaly.score_batch(x)
    assert binary.value.code == "non_finite_value"
    with pytest.raises(BadRequestError, match=r"vectors\[1\]\[7\]") as json_batch:
        rows = readings[:2].tolist()
        rows[1][7] = True
        anomaly.score_batch(rows, binary=False)
    assert json_batch.value.code == "invalid_value"


# --- typed errors from the real service -------------------------------------------------------------------


def test_wrong_length_is_a_bad_request_with_code_message_and_request_id(
    anomaly: AnomalyClient, live: LiveServer, readings: np.ndarray
) -> None:
    with pytest.raises(BadRequestError) as caught:
        anomaly.score(readings[0][:-1])
    error = caught.value
    assert error.status == 422
    assert error.code == "wrong_length"
    assert error.message == f"values has {N - 1} values, expected {N} (one per sensor)"
    assert error.attempts == 1
    assert error.request_id is not None and HEX_ID.fullmatch(error.request_id)
    assert error.request_id in str(error)
    # the id the client sent is the one the service logged the request under
    logged = live.wait_for_log(
        lambda e: e.get("request_id") == error.request_id and e["message"] == "request"
    )
    assert [(entry["path"], entry["status"]) for entry in logged] == [("/v1/score", 422)]


def test_api_key_errors(live: LiveServer, readings: np.ndarray) -> None:
    for api_key, code in (("not-a-key", "invalid_api_key"), (None, "missing_api_key")):
        with AnomalyClient(live.url, api_key=api_key) as client, pytest.raises(AuthenticationError) as caught:
            client.score(readings[0])
        assert (caught.value.status, caught.value.code, caught.value.attempts) == (401, code, 1)
    with AnomalyClient(live.url, api_key="other-key") as client:  # the second configured key
        assert client.score(readings[0]).score is not None


def test_too_large(anomaly: AnomalyClient) -> None:
    with pytest.raises(BadRequestError) as rows:
        anomaly.score_batch(np.ones((MAX_BATCH + 1, N), np.float32))
    assert (rows.value.status, rows.value.code) == (413, "batch_too_large")
    with pytest.raises(BadRequestError) as body:
        anomaly.score_batch(np.ones((MAX_BODY_BYTES // (4 * N) + 1, N), np.float32))
    assert (body.value.status, body.value.code) == (413, "body_too_large")


def test_model_and_ready(anomaly: AnomalyClient, manifest: Manifest) -> None:
    info = anomaly.model()
    assert (info["name"], info["version"], info["n_sensors"]) == (MODEL_NAME, manifest.version, N)
    assert info["sensor_names"] == list(manifest.sensor_names)
    assert anomaly.ready() is True


def test_reload_auth_errors_leave_the_live_server_alone(anomaly: AnomalyClient, manifest: Manifest) -> None:
    with pytest.raises(AuthenticationError) as caught:
        anomaly.reload(admin_token="wrong")
    assert (caught.value.status, caught.value.code) == (403, "invalid_admin_token")
    assert anomaly.model()["version"] == manifest.version


def test_reload_on_a_second_uvicorn(
    store: Path, tmp_path: Path, trained_small: Path, readings: np.ndarray
) -> None:
    model_dir = copy_store(store, tmp_path / "store") / MODEL_NAME
    publish_copy(model_dir, trained_small.name, NEW)
    server = start_server(tmp_path / "server.log", server_env(model_dir.parent))
    try:
        with AnomalyClient(server.url, api_key=API_KEY) as client:
            swapped = client.reload(NEW, admin_token=ADMIN_TOKEN)
            assert (swapped["version"], swapped["previous_version"]) == (NEW, trained_small.name)
            assert client.score(readings[0]).model_version == NEW
            with pytest.raises(ServiceError) as caught:
                client.reload(MISSING, admin_token=ADMIN_TOKEN)
            assert type(caught.value) is ServiceError
            assert (caught.value.status, caught.value.code, caught.value.attempts) == (
                409,
                "version_missing",
                1,
            )
            assert client.reload(admin_token=ADMIN_TOKEN)["version"] == trained_small.name  # CURRENT
    finally:
        stop_server(server)


# --- retries (the stub uvicorn) ---------------------------------------------------------------------------


def test_503_is_retried_with_the_same_request_id(stub: Stub, readings: np.ndarray) -> None:
    stub.app.answer(UNAVAILABLE, UNAVAILABLE, Answer(200, SCORE_BODY))
    with fast_client(stub.url) as client:
        result = client.score(readings[0], id="r0")
    assert (result.score, result.model_version) == (0.25, "stub")
    ids = stub.app.request_ids()
    assert len(ids) == 3
    assert len(set(ids)) == 1 and HEX_ID.fullmatch(ids[0])
    assert len({r.body for r in stub.app.received}) == 1


def test_503_on_every_attempt_raises_model_unavailable(stub: Stub, readings: np.ndarray) -> None:
    stub.app.answer(UNAVAILABLE)
    with fast_client(stub.url, retries=2) as client, pytest.raises(ModelUnavailableError) as caught:
        client.score_batch(readings[:2])
    error = caught.value
    assert (error.status, error.code, error.message, error.attempts) == (
        503,
        "model_unavailable",
        "no model is loaded",
        3,
    )
    assert stub.app.request_ids() == [error.request_id] * 3


@pytest.mark.parametrize(
    ("status", "code", "error_class"),
    [
        (400, "malformed_json", BadRequestError),
        (401, "invalid_api_key", AuthenticationError),
        (403, "invalid_admin_token", AuthenticationError),
        (404, "not_found", ServiceError),
        (409, "version_missing", ServiceError),
        (413, "body_too_large", BadRequestError),
        (415, "unsupported_media_type", BadRequestError),
        (422, "wrong_length", BadRequestError),
        (500, "internal_error", ServiceError),
    ],
)
def test_other_errors_are_not_retried(
    stub: Stub, readings: np.ndarray, status: int, code: str, error_class: type[ServiceError]
) -> None:
    stub.app.answer(Answer(status, error_body(code)), Answer(200, SCORE_BODY))
    with fast_client(stub.url) as client, pytest.raises(ServiceError) as caught:
        client.score(readings[0])
    assert type(caught.value) is error_class
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (status, code, 1)
    assert len(stub.app.received) == 1


def test_retry_after_is_honoured(stub: Stub, readings: np.ndarray) -> None:
    stub.app.answer(
        Answer(503, error_body("model_unavailable"), {"Retry-After": "1"}), Answer(200, SCORE_BODY)
    )
    started = time.monotonic()
    with fast_client(stub.url) as client:
        client.score(readings[0])
    assert time.monotonic() - started >= 0.95
    assert len(stub.app.received) == 2


def test_a_timeout_is_retried(stub: Stub, readings: np.ndarray) -> None:
    stub.app.answer(Answer(200, SCORE_BODY, delay_s=2.0), Answer(200, SCORE_BODY))
    with fast_client(stub.url, timeout_s=0.2) as client:
        assert client.score(readings[0]).score == 0.25
    assert len(stub.app.received) == 2
    assert len(set(stub.app.request_ids())) == 1


def test_timeouts_on_every_attempt(stub: Stub, readings: np.ndarray) -> None:
    stub.app.answer(Answer(200, SCORE_BODY, delay_s=2.0))
    with (
        fast_client(stub.url, timeout_s=0.1, retries=1) as client,
        pytest.raises(ConnectionFailedError) as caught,
    ):
        client.score(readings[0])
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (None, "timeout", 2)
    assert stub.app.request_ids() == [caught.value.request_id] * 2


def test_an_error_body_not_in_the_service_shape(stub: Stub, readings: np.ndarray) -> None:
    """A proxy's page: the status still picks the class; the text becomes the message."""
    stub.app.answer(Answer(502, b"<html>Bad Gateway</html>"), Answer(413, b""))
    with fast_client(stub.url) as client:
        with pytest.raises(ServiceError) as gateway:
            client.score(readings[0])
        with pytest.raises(BadRequestError) as empty:
            client.score(readings[0])
    assert (gateway.value.status, gateway.value.code, gateway.value.message) == (
        502,
        "http_502",
        "<html>Bad Gateway</html>",
    )
    assert (empty.value.code, empty.value.message) == ("http_413", "Request Entity Too Large")
    assert [gateway.value.request_id, empty.value.request_id] == stub.app.request_ids()


def test_a_success_answer_that_is_not_the_service_shape(stub: Stub, readings: np.ndarray) -> None:
    stub.app.answer(Answer(200, b"<html>login</html>"), Answer(200, b'{"score": 1}'))
    with fast_client(stub.url) as client:
        for _ in range(2):
            with pytest.raises(ServiceError) as caught:
                client.score(readings[0])
            assert (caught.value.status, caught.value.code) == (200, "invalid_response")


def test_ready_is_false_on_503_without_retrying(stub: Stub) -> None:
    stub.app.answer(Answer(503, error_body("current_missing")))
    with fast_client(stub.url) as client:
        assert client.ready() is False
    assert [r.path for r in stub.app.received] == ["/readyz"]


def test_reload_is_not_retried_after_the_request_left(stub: Stub) -> None:
    """A timed-out reload may be loading on the server: no second load is started."""
    stub.app.answer(Answer(200, b"{}", delay_s=2.0))
    with fast_client(stub.url) as client, pytest.raises(ConnectionFailedError) as caught:
        client.reload("v1", admin_token="t", timeout_s=0.1)
    assert caught.value.attempts == 1
    (received,) = stub.app.received
    assert received.headers["authorization"] == "Bearer t"
    assert orjson.loads(received.body) == {"version": "v1"}


def test_nothing_listening_is_connection_failed_after_the_retries(readings: np.ndarray) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with (
        fast_client(url, retries=2, backoff_s=0.01) as client,
        pytest.raises(ConnectionFailedError) as caught,
    ):
        client.score(readings[0])
    assert time.monotonic() - started < 2.0
    error = caught.value
    assert (error.status, error.code, error.attempts) == (None, "connection_failed", 3)
    assert error.request_id is not None and HEX_ID.fullmatch(error.request_id)
    assert url in error.message
    with fast_client(url, retries=0) as client, pytest.raises(ConnectionFailedError):
        client.ready()


def test_retry_delay_schedule() -> None:
    assert [retry_delay_s(a, 0.05) for a in range(4)] == [0.05, 0.1, 0.2, 0.4]
    assert retry_delay_s(0, 0.05, "2") == 2.0
    assert retry_delay_s(3, 0.05, "0") == 0.0
    assert retry_delay_s(1, 0.05, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.1  # a date: the schedule stands
    assert retry_delay_s(1, 0.05, "-3") == 0.1
    assert retry_delay_s(0, 0.05, "3600") == MAX_RETRY_DELAY_S
    assert retry_delay_s(20, 0.05) == MAX_RETRY_DELAY_S


def test_constructor_refuses_nonsense() -> None:
    for kwargs in ({"timeout_s": 0}, {"retries": -1}, {"backoff_s": -0.1}):
        with pytest.raises(ValueError):
            AnomalyClient(**kwargs)


def test_importing_the_client_loads_no_server_or_training_stack() -> None:
    heavy = ("torch", "onnx", "onnxruntime", "factory_anomaly", "fastapi", "starlette", "pydantic", "uvicorn")
    code = (
        "import sys, factory_anomaly_client\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the async client -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_scores_equal_onnxruntime_exactly(
    live: LiveServer, reference: ort.InferenceSession, manifest: Manifest, readings: np.ndarray
) -> None:
    expected = reference_scores(reference, readings)
    async with AsyncAnomalyClient(live.url, api_key=API_KEY) as client:
        single = await asyncio.gather(*(client.score(readings[i], id=f"r{i}") for i in range(8)))
        binary = await client.score_batch(readings)
        ids = [f"r{i}" for i in range(len(readings))]
        with_ids = await client.score_batch(readings, ids=ids)
        assert await client.ready() is True
        assert (await client.model())["version"] == manifest.version
    assert [r.score for r in single] == expected[:8].tolist()
    assert [r.id for r in single] == ids[:8]
    assert [item.score for item in binary.results] == expected.tolist()
    assert [item.score for item in with_ids.results] == expected.tolist()
    assert [item.id for item in with_ids.results] == ids


@pytest.mark.anyio
async def test_async_typed_errors(live: LiveServer, readings: np.ndarray) -> None:
    async with AsyncAnomalyClient(live.url, api_key=API_KEY) as client:
        with pytest.raises(BadRequestError) as wrong_length:
            await client.score(readings[0][:-1])
        with pytest.raises(BadRequestError) as too_large:
            await client.score_batch(np.ones((MAX_BATCH + 1, N)))
    async with AsyncAnomalyClient(live.url, api_key="not-a-key") as client:
        with pytest.raises(AuthenticationError) as bad_key:
            await client.score(readings[0])
    assert (wrong_length.value.status, wrong_length.value.code) == (422, "wrong_length")
    assert f"expected {N}" in wrong_length.value.message
    assert wrong_length.value.request_id is not None and HEX_ID.fullmatch(wrong_length.value.request_id)
    assert (too_large.value.status, too_large.value.code) == (413, "batch_too_large")
    assert (bad_key.value.status, bad_key.value.code) == (401, "invalid_api_key")


@pytest.mark.anyio
async def test_async_retries(stub: Stub, readings: np.ndarray) -> None:
    stub.app.answer(UNAVAILABLE, UNAVAILABLE, Answer(200, SCORE_BODY))
    async with AsyncAnomalyClient(stub.url, backoff_s=0.001) as client:
        assert (await client.score(readings[0])).score == 0.25
        ids = stub.app.request_ids()
        assert len(ids) == 3 and len(set(ids)) == 1
        stub.app.answer(Answer(422, error_body("wrong_length")), Answer(200, SCORE_BODY))
        with pytest.raises(BadRequestError) as caught:
            await client.score(readings[0])
        assert caught.value.attempts == 1 and len(stub.app.received) == 1
        stub.app.answer(Answer(503, error_body("model_unavailable")))
        assert await client.ready() is False
        assert len(stub.app.received) == 1


@pytest.mark.anyio
async def test_async_connection_failed(readings: np.ndarray) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncAnomalyClient(url, retries=2, backoff_s=0.01) as client:
        with pytest.raises(ConnectionFailedError) as caught:
            await client.score_batch(readings[:2])
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (None, "connection_failed", 3)


@pytest.mark.anyio
async def test_async_reload_in_process(
    store: Path, tmp_path: Path, trained_small: Path, readings: np.ndarray
) -> None:
    """The real app with its lifespan, reached through the client's `transport` argument."""
    model_dir = copy_store(store, tmp_path / "store") / MODEL_NAME
    publish_copy(model_dir, trained_small.name, NEW)
    async with running(settings_for(model_dir.parent, admin_token=ADMIN_TOKEN)) as app:
        transport = httpx.ASGITransport(app=app)
        async with AsyncAnomalyClient("http://service", transport=transport) as client:
            swapped = await client.reload(NEW, admin_token=ADMIN_TOKEN)
            assert (swapped["version"], swapped["previous_version"]) == (NEW, trained_small.name)
            assert (await client.score(readings[0])).model_version == NEW
            with pytest.raises(ServiceError) as caught:
                await client.reload(MISSING, admin_token=ADMIN_TOKEN)
            assert (caught.value.status, caught.value.code) == (409, "version_missing")


@pytest.mark.anyio
async def test_async_service_without_a_model(store: Path, tmp_path: Path, readings: np.ndarray) -> None:
    """The real 503: `ready()` is False at once; scoring is retried, then ModelUnavailableError."""
    model_dir = copy_store(store, tmp_path / "store") / MODEL_NAME
    (model_dir / "CURRENT").write_text(MISSING + "\n")
    async with running(settings_for(model_dir.parent)) as app:
        transport = httpx.ASGITransport(app=app)
        async with AsyncAnomalyClient("http://service", transport=transport, backoff_s=0.001) as client:
            assert await client.ready() is False
            with pytest.raises(ModelUnavailableError) as caught:
                await client.score(readings[0])
    assert (caught.value.status, caught.value.code, caught.value.attempts) == (503, "model_unavailable", 4)
    assert "version_missing" in caught.value.message


def test_readings_of_an_asset_carry_its_alarm(anomaly: AnomalyClient, manifest: Manifest) -> None:
    """Against the real service: the asset travels as X-Asset, the answers carry the alarm, and a reading
    retried with the same id (what the client does after a lost answer) is not counted twice."""
    import datetime as dt
    import uuid

    asset = f"client/press-{uuid.uuid4().hex[:8]}"
    x = np.repeat(anomalous(manifest)[None, :], 3, axis=0)
    start = dt.datetime(2026, 11, 26, 6, 12, tzinfo=dt.UTC)
    batch = anomaly.score_batch(x, asset=asset, ts=[start + dt.timedelta(seconds=i) for i in range(3)])
    assert [item.alarm["state"] for item in batch.results] == ["pending", "pending", "open"]  # type: ignore[index]
    assert all(len(item.id or "") == 32 for item in batch.results)  # ids given, so retries are safe
    one = anomaly.score(x[0], id="r-1", asset=asset, ts=start + dt.timedelta(seconds=5))
    again = anomaly.score(x[0], id="r-1", asset=asset, ts=start + dt.timedelta(seconds=5))
    assert one.alarm == again.alarm and not one.late
    late = anomaly.score(x[0], asset=asset, ts=start)
    assert late.late and late.alarm is not None
    plain = anomaly.score(x[0])
    assert plain.alarm is None and not plain.late


def test_an_assets_readings_on_the_wire(stub: Stub, readings: np.ndarray) -> None:
    stub.app.answer(Answer(200, BATCH_BODY))
    with fast_client(stub.url) as client:
        client.score_batch(readings[:3], asset="press-7")
        client.score_batch(readings[:3], asset="press-7", ts=[1.0, 2.0, 3.0])
        stub.app.script = [Answer(200, SCORE_BODY)]
        client.score(readings[0], asset="press-7")
        with pytest.raises(ValueError, match="time zone"):
            import datetime as dt

            client.score(readings[0], asset="press-7", ts=dt.datetime(2026, 11, 26))
    binary, timed, single = stub.app.received
    assert all(r.headers["x-asset"] == "press-7" for r in (binary, timed, single))
    assert binary.headers["content-type"] == "application/octet-stream"  # no ids: retried only unsent
    assert orjson.loads(timed.body)["ts"] == [1.0, 2.0, 3.0] and len(orjson.loads(timed.body)["ids"]) == 3
    assert len(orjson.loads(single.body)["id"]) == 32  # an id of its own, so a retry is not counted twice


def test_a_binary_batch_of_an_asset_is_not_resent_after_a_timeout(stub: Stub, readings: np.ndarray) -> None:
    """Its rows carry no ids: the service could not tell a resent batch from new readings."""
    stub.app.answer(Answer(200, BATCH_BODY, delay_s=2.0), Answer(200, BATCH_BODY))
    with fast_client(stub.url, timeout_s=0.2) as client, pytest.raises(ConnectionFailedError):
        client.score_batch(readings[:3], asset="press-7")
    assert len(stub.app.received) == 1
