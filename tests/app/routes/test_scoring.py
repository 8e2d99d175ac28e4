"""POST /v1/score and /v1/score/batch on a real uvicorn: exact scores, and every way to send bad input
answered with its own status and code, after which the service still scores correctly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from factory_anomaly.app.main import create_app
from factory_anomaly.artifact import Manifest
from tests.app.conftest import ADMIN, API_KEY, AUTH, LiveServer, anomalous, serving, settings_for

N = 40  # sensors of the small model
MAX_BATCH = 1024  # the live server's (default) limit
MAX_BODY_BYTES = 4 << 20  # the live server's limit (conftest.server_env)


def reference_scores(reference: ort.InferenceSession, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, sensor_error = reference.run(["score", "sensor_error"], {"readings": x})
    return scores, sensor_error


def as_float32(value: float) -> np.float32:
    """The JSON number as the float32 it stands for; it must be exactly representable (round trip)."""
    assert float(np.float32(value)) == value, f"{value!r} is not a float32 value"
    return np.float32(value)


def values_json(row: list[str]) -> bytes:
    """A single-score body with the values written verbatim (to send tokens json.dumps cannot)."""
    return ('{"values": [' + ", ".join(row) + "]}").encode()


def row_with(token: str, at: int = 1) -> bytes:
    row = ["1.5"] * N
    row[at] = token
    return values_json(row)


def batch_with(token: str, row: int = 2, col: int = 3) -> bytes:
    rows = [["0.5"] * N for _ in range(4)]
    rows[row][col] = token
    return ('{"vectors": [' + ", ".join("[" + ", ".join(r) + "]" for r in rows) + "]}").encode()


def binary(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x, dtype="<f4").tobytes()


def _nan_rows() -> bytes:
    x = np.ones((3, N), np.float32)
    x[2, 5] = np.nan
    return binary(x)


def _inf_rows() -> bytes:
    x = np.ones((2, N), np.float32)
    x[1, 0] = -np.inf
    return binary(x)


JSON = "application/json"
OCTET = "application/octet-stream"
ONE, BATCH = "/v1/score", "/v1/score/batch"
VALID_ROW = ["1.5"] * N

# (id, path, content type or None, body, status, code, fragment the message must contain)
BAD_REQUESTS: list[tuple[str, str, str | None, bytes, int, str, str]] = [
    ("null", ONE, JSON, row_with("null"), 422, "invalid_value", "values[1]"),
    ("true", ONE, JSON, row_with("true"), 422, "invalid_value", "values[1]"),
    ("false", ONE, JSON, row_with("false", at=0), 422, "invalid_value", "values[0]"),
    ("numeric-string", ONE, JSON, row_with('"1.5"'), 422, "invalid_value", "values[1]"),
    ("nested-list", ONE, JSON, row_with("[1.5]"), 422, "invalid_value", "values[1]"),
    ("object-element", ONE, JSON, row_with('{"a": 1}'), 422, "invalid_value", "values[1]"),
    ("NaN", ONE, JSON, row_with("NaN", at=7), 422, "non_finite_value", "values[7]"),
    ("Infinity", ONE, JSON, row_with("Infinity"), 422, "non_finite_value", "values[1]"),
    ("-Infinity", ONE, JSON, row_with("-Infinity"), 422, "non_finite_value", "values[1]"),
    ("1e39", ONE, JSON, row_with("1e39", at=39), 422, "value_out_of_range", "values[39]"),
    ("-1e39", ONE, JSON, row_with("-1e39"), 422, "value_out_of_range", "values[1]"),
    ("1e309", ONE, JSON, row_with("1e309"), 422, "value_out_of_range", "values[1]"),
    ("huge-integer", ONE, JSON, row_with("9" * 400), 422, "value_out_of_range", "values[1]"),
    ("malformed", ONE, JSON, b'{"values": [1.5, 2.5', 400, "malformed_json", "not valid JSON"),
    ("trailing-garbage", ONE, JSON, values_json(VALID_ROW) + b"x", 400, "malformed_json", "not valid JSON"),
    ("not-utf8", ONE, JSON, b'{"values": ["\xff"]}', 400, "malformed_json", "not valid JSON"),
    ("empty-json-body", ONE, JSON, b"", 400, "malformed_json", "not valid JSON"),
    (
        "too-short",
        ONE,
        JSON,
        values_json(["1.0"] * (N - 1)),
        422,
        "wrong_length",
        "has 39 values, expected 40",
    ),
    (
        "too-long",
        ONE,
        JSON,
        values_json(["1.0"] * (N + 1)),
        422,
        "wrong_length",
        "has 41 values, expected 40",
    ),
    ("empty-values", ONE, JSON, b'{"values": []}', 422, "wrong_length", "has 0 values, expected 40"),
    ("body-not-object", ONE, JSON, b"[1.5, 2.5]", 422, "invalid_type", "JSON object"),
    ("values-not-list", ONE, JSON, b'{"values": 1.5}', 422, "invalid_type", "values must be a list"),
    ("missing-values", ONE, JSON, b'{"id": "a"}', 422, "missing_field", "'values'"),
    ("misspelt-field", ONE, JSON, b'{"value": [1.5]}', 422, "unknown_field", "'value'"),
    ("extra-field", ONE, JSON, values_json(VALID_ROW)[:-1] + b', "time": 1}', 422, "unknown_field", "'time'"),
    (
        "id-not-string",
        ONE,
        JSON,
        values_json(VALID_ROW)[:-1] + b', "id": 7}',
        422,
        "invalid_type",
        "id must be",
    ),
    ("batch-NaN", BATCH, JSON, batch_with("NaN"), 422, "non_finite_value", "vectors[2][3]"),
    ("batch-true", BATCH, JSON, batch_with("true"), 422, "invalid_value", "vectors[2][3]"),
    ("batch-1e39", BATCH, JSON, batch_with("1e39", 0, 0), 422, "value_out_of_range", "vectors[0][0]"),
    ("batch-empty", BATCH, JSON, b'{"vectors": []}', 422, "empty_batch", "empty"),
    ("batch-ragged", BATCH, JSON, b'{"vectors": [[1.5]]}', 422, "wrong_length", "vectors[0] has 1 values"),
    ("batch-row-not-list", BATCH, JSON, b'{"vectors": [1.5]}', 422, "invalid_type", "vectors[0]"),
    ("batch-not-list", BATCH, JSON, b'{"vectors": {"a": 1}}', 422, "invalid_type", "vectors must be"),
    (
        "batch-too-many-rows",
        BATCH,
        JSON,
        json.dumps({"vectors": [[0.5] * N] * (MAX_BATCH + 1)}).encode(),
        413,
        "batch_too_large",
        "1025 rows",
    ),
    (
        "ids-length",
        BATCH,
        JSON,
        json.dumps({"vectors": [[0.5] * N] * 2, "ids": ["a"]}).encode(),
        422,
        "ids_mismatch",
        "ids has 1",
    ),
    (
        "ids-not-strings",
        BATCH,
        JSON,
        json.dumps({"vectors": [[0.5] * N] * 2, "ids": ["a", 2]}).encode(),
        422,
        "invalid_type",
        "ids[1]",
    ),
    (
        "ids-not-list",
        BATCH,
        JSON,
        json.dumps({"vectors": [[0.5] * N], "ids": "a"}).encode(),
        422,
        "invalid_type",
        "ids must be",
    ),
    (
        "batch-singular-id-field",
        BATCH,
        JSON,
        json.dumps({"vectors": [[0.5] * N], "id": "a"}).encode(),
        422,
        "unknown_field",
        "'id'",
    ),
    (
        "binary-partial-row",
        BATCH,
        OCTET,
        b"\0" * (4 * N + 4),
        422,
        "invalid_binary_length",
        "multiple of 160",
    ),
    ("binary-odd-bytes", BATCH, OCTET, b"\0" * 7, 422, "invalid_binary_length", "multiple of 160"),
    ("binary-empty", BATCH, OCTET, b"", 422, "empty_body", "empty"),
    ("binary-NaN", BATCH, OCTET, _nan_rows(), 422, "non_finite_value", "row 2, sensor 5"),
    ("binary-Inf", BATCH, OCTET, _inf_rows(), 422, "non_finite_value", "row 1, sensor 0"),
    (
        "binary-too-many-rows",
        BATCH,
        OCTET,
        binary(np.ones((MAX_BATCH + 1, N))),
        413,
        "batch_too_large",
        "1025 rows",
    ),
    ("text-plain", ONE, "text/plain", values_json(VALID_ROW), 415, "unsupported_media_type", "text/plain"),
    ("form", BATCH, "application/x-www-form-urlencoded", b"a=1", 415, "unsupported_media_type", "accepts"),
    ("binary-on-single", ONE, OCTET, binary(np.ones((1, N))), 415, "unsupported_media_type", "accepts"),
    ("no-content-type", ONE, None, values_json(VALID_ROW), 415, "unsupported_media_type", "missing"),
    (
        "body-over-limit",
        BATCH,
        OCTET,
        b"\0" * (MAX_BODY_BYTES + 4 * N),
        413,
        "body_too_large",
        f"at most {MAX_BODY_BYTES}",
    ),
]


@pytest.fixture(scope="module")
def check_still_scoring(live: LiveServer, reference: ort.InferenceSession, readings: np.ndarray) -> Any:
    """After a bad request, a valid one is answered with the exact score."""

    def check(client: httpx.Client) -> None:
        x = readings[:1]
        response = client.post("/v1/score", json={"values": x[0].tolist(), "id": "after"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["id"] == "after"
        assert as_float32(body["score"]) == reference_scores(reference, x)[0][0]

    return check


@pytest.mark.parametrize(
    ("path", "content_type", "body", "status", "code", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_REQUESTS],
)
def test_bad_request_gets_its_status_and_code(
    client: httpx.Client,
    check_still_scoring: Any,
    path: str,
    content_type: str | None,
    body: bytes,
    status: int,
    code: str,
    fragment: str,
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert fragment in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    check_still_scoring(client)


def test_single_scores_equal_onnxruntime_exactly(
    client: httpx.Client, reference: ort.InferenceSession, readings: np.ndarray, manifest: Manifest
) -> None:
    for i in range(8):
        x = readings[i : i + 1]
        response = client.post("/v1/score", json={"values": x[0].tolist(), "id": f"r{i}"})
        assert response.status_code == 200, response.text
        body = response.json()
        expected = reference_scores(reference, x)[0][0]
        assert as_float32(body["score"]) == expected
        assert body["is_anomaly"] == (float(expected) > manifest.threshold.value)
        assert body == {
            "id": f"r{i}",
            "score": float(expected),
            "threshold": manifest.threshold.value,
            "is_anomaly": body["is_anomaly"],
            "model_version": manifest.version,
        }


def test_json_batch_scores_equal_onnxruntime_exactly(
    client: httpx.Client, reference: ort.InferenceSession, readings: np.ndarray, manifest: Manifest
) -> None:
    x = np.concatenate([readings, anomalous(manifest)[None]])
    ids = [f"reading-{i}" for i in range(len(x))]
    response = client.post("/v1/score/batch", json={"vectors": x.tolist(), "ids": ids})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = reference_scores(reference, x)[0]
    assert body["model_version"] == manifest.version
    assert body["threshold"] == manifest.threshold.value
    assert [r["id"] for r in body["results"]] == ids
    assert np.array_equal(np.array([as_float32(r["score"]) for r in body["results"]]), expected)
    flags = [r["is_anomaly"] for r in body["results"]]
    assert flags == (expected.astype(np.float64) > manifest.threshold.value).tolist()
    assert flags[-1] is True and not all(flags)


def test_binary_batch_scores_equal_onnxruntime_exactly(
    client: httpx.Client, reference: ort.InferenceSession, readings: np.ndarray
) -> None:
    response = client.post(
        "/v1/score/batch", content=binary(readings), headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["id"] for r in results] == [None] * len(readings)
    expected = reference_scores(reference, readings)[0]
    assert np.array_equal(np.array([as_float32(r["score"]) for r in results]), expected)


def test_json_and_binary_batches_agree(client: httpx.Client, readings: np.ndarray) -> None:
    as_json = client.post("/v1/score/batch", json={"vectors": readings.tolist()}).json()
    as_binary = client.post(
        "/v1/score/batch", content=binary(readings), headers={"Content-Type": "application/octet-stream"}
    ).json()
    assert as_json == as_binary


def test_largest_batch_is_accepted(
    client: httpx.Client, reference: ort.InferenceSession, readings: np.ndarray
) -> None:
    x = np.resize(readings, (MAX_BATCH, N))
    response = client.post(
        "/v1/score/batch", content=binary(x), headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 200, response.text
    scores = np.array([as_float32(r["score"]) for r in response.json()["results"]])
    assert np.array_equal(scores, reference_scores(reference, x)[0])


def test_single_without_id_and_with_null_id(client: httpx.Client, readings: np.ndarray) -> None:
    values = readings[0].tolist()
    assert client.post("/v1/score", json={"values": values}).json()["id"] is None
    assert client.post("/v1/score", json={"values": values, "id": None}).json()["id"] is None


def test_content_type_parameters_and_case_are_accepted(client: httpx.Client, readings: np.ndarray) -> None:
    body = json.dumps({"values": readings[0].tolist()}).encode()
    response = client.post(
        "/v1/score", content=body, headers={"Content-Type": "Application/JSON; charset=utf-8"}
    )
    assert response.status_code == 200, response.text


def test_integers_and_float32_limits_are_accepted(client: httpx.Client) -> None:
    row = [1] * N
    row[0], row[1] = 3.4028235e38, -3.4028235e38
    response = client.post("/v1/score", json={"values": row})
    assert response.status_code == 200, response.text


def test_readings_that_overflow_inside_the_model_are_anomalous(client: httpx.Client) -> None:
    """±3.4e38 are valid float32 readings, but the graph's arithmetic overflows: the score is not finite,
    JSON cannot carry it (null), and the reading counts as anomalous."""
    row = [3.4e38 if i % 2 else -3.4e38 for i in range(N)]
    response = client.post("/v1/score", json={"values": row, "id": "overflow"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["score"] is None
    assert body["is_anomaly"] is True


# --- API keys -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        pytest.param({}, 401, "missing_api_key", id="missing"),
        pytest.param({"Authorization": "Bearer nope"}, 401, "invalid_api_key", id="wrong-bearer"),
        pytest.param({"X-API-Key": "nope"}, 401, "invalid_api_key", id="wrong-header"),
        pytest.param({"Authorization": f"Basic {API_KEY}"}, 401, "missing_api_key", id="not-bearer"),
        pytest.param({"Authorization": f"Bearer {API_KEY}"}, 200, None, id="bearer"),
        pytest.param({"X-API-Key": API_KEY}, 200, None, id="x-api-key"),
        pytest.param({"X-API-Key": "other-key"}, 200, None, id="second-key"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/score", "/v1/model"])
def test_api_keys(
    live: LiveServer, readings: np.ndarray, path: str, headers: dict[str, str], status: int, code: str | None
) -> None:
    with live.client(headers=headers) as c:
        if path == "/v1/model":
            response = c.get(path)
        else:
            response = c.post(path, json={"values": readings[0].tolist()})
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_auth_is_checked_before_the_body(live: LiveServer) -> None:
    with live.client() as c:
        response = c.post("/v1/score", content=b"not json", headers={"Content-Type": "text/plain"})
    assert response.status_code == 401


def test_health_endpoints_need_no_key(live: LiveServer) -> None:
    with live.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").status_code == 200


def test_chunked_body_over_the_limit_is_refused(client: httpx.Client) -> None:
    """No Content-Length (chunked transfer): the server counts while reading and answers 413."""

    def chunks() -> Any:
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b"\0" * 65536

    response = client.post(
        "/v1/score/batch", content=chunks(), headers={"Content-Type": "application/octet-stream"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


ODD_BODIES = [
    b"",
    b"{}",
    b"null",
    b"1",
    b'"text"',
    b"\xef\xbb\xbf{}",
    b'{"values": {}}',
    b'{"values": [1e-400]}',
    b'{"vectors": [[]]}',
    b'{"vectors": [null]}',
    b'{"vectors": [[1]], "ids": [null]}',
    b'{"values": [1], "values": [2]}',
    b'{"\\u0000": 1}',
    b'{"' + "é".encode() * 50 + b'": 1}',
    b"[" * 3000,
    b'{"version": "' + b"a" * 300 + b'"}',
    bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
    b"\x00" * 161,
]


@pytest.mark.parametrize("body", ODD_BODIES, ids=range(len(ODD_BODIES)))
def test_odd_bodies_never_cause_a_server_error(live: LiveServer, body: bytes) -> None:
    with live.client(headers=AUTH) as client:
        for path in ("/v1/score", "/v1/score/batch", "/v1/admin/reload"):
            for content_type in ("application/json", "application/octet-stream"):
                headers = {"Content-Type": content_type}
                if path.startswith("/v1/admin"):
                    headers |= ADMIN
                response = client.post(path, content=body, headers=headers)
                assert response.status_code < 500, (path, content_type, response.text)
                assert isinstance(response.json(), dict)
        assert client.get("/readyz").json()["last_load_error"] is None  # no odd body reached a failed load


@pytest.mark.anyio
@pytest.mark.parametrize("inline_max_body_bytes", [0, 1 << 30])
async def test_worker_threads_and_inline_scoring_answer_alike(
    store: Path, reference: ort.InferenceSession, readings: np.ndarray, inline_max_body_bytes: int
) -> None:
    """Small bodies are scored on the event loop (cheaper than the thread hop), large ones on the
    workers; both paths give onnxruntime's scores exactly, for single readings and batches."""
    settings = settings_for(store, inline_max_body_bytes=inline_max_body_bytes)
    async with serving(settings) as client:
        single = await client.post("/v1/score", json={"values": readings[0].tolist()})
        batch = await client.post(
            "/v1/score/batch",
            content=readings[:16].astype("<f4").tobytes(),
            headers={"content-type": "application/octet-stream"},
        )
    assert single.status_code == 200 and batch.status_code == 200
    expected = reference.run(["score"], {"readings": readings[:16]})[0]
    assert np.float32(single.json()["score"]) == expected[0]
    assert [np.float32(r["score"]) for r in batch.json()["results"]] == list(expected)


OPEN_ROUTES = {"/healthz", "/readyz", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready"}
"""The only routes anyone may call (V2's server metadata and health, as /healthz and /readyz); admin routes
answer to the admin token (routes/test_admin.py)."""


def test_every_other_route_needs_an_api_key(live: LiveServer) -> None:
    """Walks the app's documented routes, so a route added later (or one whose check moved out of a
    dependency, as the scoring routes' did) cannot skip the key: without one, 401 `missing_api_key`,
    before the body or the model is looked at."""
    checked = []
    for path, operations in create_app(settings_for(Path("unused"))).openapi()["paths"].items():
        if path in OPEN_ROUTES or path.startswith("/v1/admin/"):
            continue
        for method in operations:
            with live.client() as c:
                response = c.request(
                    method, path, content=b"{}", headers={"Content-Type": "application/json"}
                )
            assert response.status_code == 401, (method, path, response.text)
            error = response.json()["error"]
            if path.startswith("/v2/"):  # the Open Inference Protocol's error shape
                assert error.startswith("missing_api_key: ")
            else:
                assert error["code"] == "missing_api_key"
            checked.append(f"{method.upper()} {path}")
    assert sorted(checked) == sorted(
        [
            "GET /v1/alarms",
            "GET /v1/alarms/{alarm_id}",
            "GET /v1/assets",
            "GET /v1/assets/{asset}",
            "GET /v1/model",
            "POST /v1/alarms/{alarm_id}/ack",
            "POST /v1/assets/{asset}/shelve",
            "POST /v1/explain",
            "POST /v1/score",
            "POST /v1/score/batch",
            "GET /v2/models/{model_name}",
            "GET /v2/models/{model_name}/ready",
            "GET /v2/models/{model_name}/versions/{model_version}",
            "GET /v2/models/{model_name}/versions/{model_version}/ready",
            "POST /v2/models/{model_name}/infer",
            "POST /v2/models/{model_name}/versions/{model_version}/infer",
        ]
    )
