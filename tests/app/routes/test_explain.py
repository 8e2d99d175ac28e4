"""POST /v1/explain on a real uvicorn: exactly what onnxruntime gives on the artifact's explainer.onnx,
`top_k` and the reading validated as /v1/score validates; in process (real lifespan, a private copy of the
store): a version without an explainer answers 404 and says so in /v1/model, and a corrupted explainer
fails the load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from factory_anomaly.app.model import EXPLAINER_OUTPUTS
from factory_anomaly.artifact import Manifest, write_current
from tests.app.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    API_KEY,
    MODEL_NAME,
    LiveServer,
    anomalous,
    copy_store,
    publish_copy,
    publish_without_explainer,
    serving,
    settings_for,
)

N = 40  # sensors of the small model
EXPLAIN = "/v1/explain"
NO_EXPLAINER = "20991231T000003Z-00000e01"
CORRUPT = "20991231T000004Z-00000e02"


def expected_explanation(
    reference: ort.InferenceSession, manifest: Manifest, x: np.ndarray, top_k: int
) -> tuple[np.float32, list[dict[str, Any]]]:
    """The score and the `top_k` sensors as the contract defines them, from onnxruntime directly."""
    attention, score, sensor_error, expected = (
        out[0] for out in reference.run([*EXPLAINER_OUTPUTS, "expected"], {"readings": x[None]})
    )
    low, high = np.asarray(manifest.sensor_low), np.asarray(manifest.sensor_high)
    value = x.astype(np.float64)
    outside = np.maximum(np.maximum(low - value, value - high), 0) / np.maximum(high - low, 1e-6)
    # the operator's order: out of the training range first, furthest first; then by error; ties by index
    order = sorted(range(N), key=lambda j: (-outside[j], -float(sensor_error[j]), j))[:top_k]
    total = float(np.sum(sensor_error, dtype=np.float64))
    sensors = [
        {
            "index": j,
            "name": manifest.sensor_names[j],
            "attention": float(attention[j]),
            "error_share": float(sensor_error[j]) / total,
            "value": float(value[j]),
            "expected": float(expected[j]),
            "out_of_range": float(outside[j]),
            "direction": ("high" if value[j] > high[j] else "low")
            if outside[j] > 0
            else ("high" if value[j] >= expected[j] else "low"),
            "unit": manifest.sensor_units[j] or None if manifest.sensor_units else None,
        }
        for j in order
    ]
    return score, sensors


def values_json(row: list[str], **extra: str) -> bytes:
    """An explain body with the values (and further fields) written verbatim."""
    fields = ['"values": [' + ", ".join(row) + "]"] + [f'"{key}": {raw}' for key, raw in extra.items()]
    return ("{" + ", ".join(fields) + "}").encode()


def post_raw(client: httpx.Client, body: bytes, path: str = EXPLAIN) -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


def assert_error(response: httpx.Response, status: int, code: str, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert fragment in error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]


# --- the real service ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("top_k", [None, 1, 10, N])
def test_explanations_equal_onnxruntime_exactly(
    client: httpx.Client,
    explainer_reference: ort.InferenceSession,
    readings: np.ndarray,
    manifest: Manifest,
    top_k: int | None,
) -> None:
    rows = [readings[0], readings[1], readings[2], anomalous(manifest)]
    for i, x in enumerate(rows):
        body: dict[str, Any] = {"values": x.tolist(), "id": f"r{i}"}
        if top_k is not None:
            body["top_k"] = top_k
        response = client.post(EXPLAIN, json=body)
        assert response.status_code == 200, response.text
        got = response.json()
        score, sensors = expected_explanation(explainer_reference, manifest, x, top_k or 10)
        assert got == {
            "id": f"r{i}",
            "score": float(score),
            "threshold": manifest.threshold.value,
            "is_anomaly": float(score) > manifest.threshold.value,
            "model_version": manifest.version,
            "sensors": sensors,
        }
        # written as the shortest text of the float32 value: parsing it back gives the same float32
        assert [np.float32(s["attention"]) for s in got["sensors"]] == [
            np.float32(s["attention"]) for s in sensors
        ]
        shares = [s["error_share"] for s in got["sensors"]]
        if all(s["out_of_range"] == 0 for s in got["sensors"]):
            assert shares == sorted(shares, reverse=True)  # in range: by error
        assert all(0 <= share <= 1 for share in shares) and sum(shares) <= 1 + 1e-12
        assert got["is_anomaly"] == (i == 3)


def test_the_explainers_score_is_the_scorers(
    client: httpx.Client, readings: np.ndarray, manifest: Manifest
) -> None:
    """/v1/explain reports the explainer graph's own score: /v1/score's up to float rounding (1e-5
    relative), with the same decision."""
    for x in [*readings[:4], anomalous(manifest)]:
        explained = client.post(EXPLAIN, json={"values": x.tolist()}).json()
        scored = client.post("/v1/score", json={"values": x.tolist()}).json()
        assert explained["score"] == pytest.approx(scored["score"], rel=1e-5, abs=0)
        assert explained["is_anomaly"] == scored["is_anomaly"]
        assert explained["threshold"] == scored["threshold"]


def test_every_sensor_shares_the_whole_error(client: httpx.Client, readings: np.ndarray) -> None:
    body = client.post(EXPLAIN, json={"values": readings[5].tolist(), "top_k": N}).json()
    assert sorted(s["index"] for s in body["sensors"]) == list(range(N))
    assert sum(s["attention"] for s in body["sensors"]) == pytest.approx(1.0, abs=1e-5)
    assert sum(s["error_share"] for s in body["sensors"]) == pytest.approx(1.0, abs=1e-9)


def test_null_top_k_and_id_are_the_defaults(client: httpx.Client, readings: np.ndarray) -> None:
    body = client.post(EXPLAIN, json={"values": readings[0].tolist(), "top_k": None, "id": None}).json()
    assert body["id"] is None and len(body["sensors"]) == 10


def test_an_anomalous_reading_is_logged_as_scoring_logs_it(
    client: httpx.Client, live: LiveServer, manifest: Manifest
) -> None:
    response = client.post(EXPLAIN, json={"values": anomalous(manifest).tolist(), "id": "explained-1"})
    assert response.json()["is_anomaly"] is True
    lines = live.wait_for_log(lambda e: e["logger"] == "app.anomaly" and e.get("reading_id") == "explained-1")
    assert len(lines) == 1
    line = lines[0]
    assert line["score"] == response.json()["score"]
    assert line["model_version"] == manifest.version and line["threshold"] == manifest.threshold.value
    assert len(line["top_sensors"]) == 5  # LOG_TOP_SENSORS, largest sensor_error first
    errors = [s["sensor_error"] for s in line["top_sensors"]]
    assert errors == sorted(errors, reverse=True)
    assert line["request_id"] == response.headers["X-Request-ID"]


def test_each_sensor_carries_the_unit_its_training_data_named(
    client: httpx.Client, manifest: Manifest
) -> None:
    """The small model's data named a unit for every sensor but the first: /v1/model lists them ("" for
    the first) and every explained sensor carries its own, null for the first."""
    assert manifest.sensor_units is not None and manifest.sensor_units[0] == ""
    assert all(manifest.sensor_units[1:])
    assert client.get("/v1/model").json()["sensor_units"] == list(manifest.sensor_units)
    response = client.post(EXPLAIN, json={"values": anomalous(manifest).tolist(), "top_k": N})
    units = {s["index"]: s["unit"] for s in response.json()["sensors"]}
    assert units == {j: manifest.sensor_units[j] or None for j in range(N)}
    assert units[0] is None and {"bar", "rpm"} <= set(units.values())


def test_model_info_says_the_version_has_an_explainer(client: httpx.Client) -> None:
    assert client.get("/v1/model").json()["explainer"] is True


VALID_ROW = ["1.5"] * N


@pytest.mark.parametrize(
    "raw",
    ["0", str(N + 1), "-1", "2.5", "3.0", "true", "false", '"3"', "[3]", "{}", "1e400", "NaN", "9" * 500],
)
def test_top_k_must_be_an_integer_from_1_to_n(client: httpx.Client, raw: str) -> None:
    response = post_raw(client, values_json(VALID_ROW, top_k=raw))
    assert_error(response, 422, "invalid_top_k", f"top_k must be an integer from 1 to {N} (the number")


# (id, body, status, code, fragment): the reading's rules are /v1/score's
BAD_BODIES: list[tuple[str, bytes, int, str, str]] = [
    ("too-short", values_json(["1.0"] * (N - 1)), 422, "wrong_length", "has 39 values, expected 40"),
    ("too-long", values_json(["1.0"] * (N + 1)), 422, "wrong_length", "has 41 values, expected 40"),
    ("NaN", values_json(["1.5"] * 7 + ["NaN"] + ["1.5"] * (N - 8)), 422, "non_finite_value", "values[7]"),
    ("Infinity", values_json(["Infinity"] + ["1.5"] * (N - 1)), 422, "non_finite_value", "values[0]"),
    ("1e39", values_json(["1.5"] * (N - 1) + ["1e39"]), 422, "value_out_of_range", "values[39]"),
    ("true", values_json(["true"] + ["1.5"] * (N - 1)), 422, "invalid_value", "values[0]"),
    ("unknown-field", values_json(VALID_ROW, topk="3"), 422, "unknown_field", "'topk'"),
    ("ids-field", values_json(VALID_ROW, ids='["a"]'), 422, "unknown_field", "'ids'"),
    ("missing-values", b'{"top_k": 3}', 422, "missing_field", "'values'"),
    ("values-not-list", b'{"values": 1.5}', 422, "invalid_type", "values must be a list"),
    ("id-not-string", values_json(VALID_ROW, id="7"), 422, "invalid_type", "id must be"),
    ("body-not-object", b"[1.5]", 422, "invalid_type", "JSON object"),
    ("malformed", b'{"values": [1.5,', 400, "malformed_json", "not valid JSON"),
]


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"), [pytest.param(*case[1:], id=case[0]) for case in BAD_BODIES]
)
def test_bad_bodies_get_the_scoring_status_and_code(
    client: httpx.Client, readings: np.ndarray, body: bytes, status: int, code: str, fragment: str
) -> None:
    assert_error(post_raw(client, body), status, code, fragment)
    after = client.post(EXPLAIN, json={"values": readings[0].tolist()})
    assert after.status_code == 200, after.text


def test_top_k_belongs_to_explain_only(client: httpx.Client) -> None:
    response = post_raw(client, values_json(VALID_ROW, top_k="3"), path="/v1/score")
    assert_error(response, 422, "unknown_field", "'top_k'")


def test_explain_accepts_json_only(client: httpx.Client) -> None:
    response = client.post(EXPLAIN, content=values_json(VALID_ROW), headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type", "application/json")


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        pytest.param({}, 401, "missing_api_key", id="missing"),
        pytest.param({"Authorization": "Bearer nope"}, 401, "invalid_api_key", id="wrong-bearer"),
        pytest.param({"X-API-Key": "nope"}, 401, "invalid_api_key", id="wrong-header"),
        pytest.param({"Authorization": f"Bearer {API_KEY}"}, 200, None, id="bearer"),
        pytest.param({"X-API-Key": API_KEY}, 200, None, id="x-api-key"),
    ],
)
def test_api_keys(
    live: LiveServer, readings: np.ndarray, headers: dict[str, str], status: int, code: str | None
) -> None:
    with live.client(headers=headers) as c:
        response = c.post(EXPLAIN, json={"values": readings[0].tolist()})
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_auth_is_checked_before_the_body(live: LiveServer) -> None:
    with live.client() as c:
        response = c.post(EXPLAIN, content=b"not json", headers={"Content-Type": "text/plain"})
    assert response.status_code == 401


def test_openapi_documents_explain(client: httpx.Client) -> None:
    operation = client.get("/openapi.json").json()["paths"][EXPLAIN]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"values", "top_k", "id"}
    assert {"200", "401", "404", "422", "503"} <= set(operation["responses"])


# --- versions without an explainer, or with a broken one (in process, a private store) ---------------------


@pytest.fixture
def model_dir(store: Path, tmp_path: Path) -> Path:
    return copy_store(store, tmp_path / "store") / MODEL_NAME


@pytest.mark.anyio
async def test_a_version_without_an_explainer_answers_404(
    model_dir: Path, trained_small: Path, readings: np.ndarray
) -> None:
    publish_without_explainer(model_dir, trained_small.name, NO_EXPLAINER)
    write_current(model_dir, NO_EXPLAINER)
    settings = settings_for(model_dir.parent, admin_token=ADMIN_TOKEN)
    async with serving(settings) as service:
        info = await service.get("/v1/model")
        assert info.json()["version"] == NO_EXPLAINER and info.json()["explainer"] is False
        body = {"values": readings[0].tolist()}
        response = await service.post(EXPLAIN, json=body)
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["code"] == "explainer_unavailable"
        assert f"model version {NO_EXPLAINER} has no explainer graph" in error["message"]
        assert "retrain with the explainer" in error["message"]
        # even a body that could never be explained: the missing explainer is the answer
        assert (await service.post(EXPLAIN, json={"values": []})).status_code == 404
        assert (await service.post("/v1/score", json=body)).status_code == 200
        # a reload to a version with an explainer brings the endpoint back
        reloaded = await service.post("/v1/admin/reload", json={"version": trained_small.name}, headers=ADMIN)
        assert reloaded.status_code == 200, reloaded.text
        assert (await service.get("/v1/model")).json()["explainer"] is True
        explained = await service.post(EXPLAIN, json=body | {"top_k": 3})
        assert explained.status_code == 200, explained.text
        assert len(explained.json()["sensors"]) == 3


@pytest.mark.anyio
async def test_a_corrupted_explainer_fails_the_load(
    model_dir: Path, trained_small: Path, readings: np.ndarray
) -> None:
    corrupt = publish_copy(model_dir, trained_small.name, CORRUPT) / "explainer.onnx"
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    settings = settings_for(model_dir.parent, admin_token=ADMIN_TOKEN)
    async with serving(settings) as service:
        response = await service.post("/v1/admin/reload", json={"version": CORRUPT}, headers=ADMIN)
        assert_error(response, 409, "checksum_mismatch", "explainer.onnx: checksum mismatch")
        assert (await service.get("/v1/model")).json()["version"] == trained_small.name
        assert (await service.post(EXPLAIN, json={"values": readings[0].tolist()})).status_code == 200
    write_current(model_dir, CORRUPT)
    async with serving(settings) as service:  # a start on it: not ready, and says why
        ready = await service.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "checksum_mismatch"
        assert "explainer.onnx" in ready.json()["error"]["message"]
        unavailable = await service.post(EXPLAIN, json={"values": readings[0].tolist()})
        assert unavailable.status_code == 503
        assert unavailable.json()["error"]["code"] == "model_unavailable"
