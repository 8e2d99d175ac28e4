"""Structured logs: every line the server writes is one JSON object; an anomalous reading gets one line
naming the request, the reading, its score, the threshold and the top sensors."""

from __future__ import annotations

import io
import json
import logging
import uuid

import httpx
import numpy as np
import onnxruntime as ort

from factory_anomaly.app.observability.logs import JsonFormatter, configure_logging, request_id_var
from factory_anomaly.artifact import Manifest
from tests.app.conftest import LiveServer, anomalous


def test_an_anomalous_reading_logs_one_line_with_its_top_sensors(
    live: LiveServer,
    client: httpx.Client,
    manifest: Manifest,
    reference: ort.InferenceSession,
    readings: np.ndarray,
) -> None:
    request_id = f"test-{uuid.uuid4().hex}"
    x = np.stack([readings[0], anomalous(manifest)])
    response = client.post(
        "/v1/score/batch",
        json={"vectors": x.tolist(), "ids": ["normal-1", "press-7"]},
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Request-ID"] == request_id
    results = response.json()["results"]
    assert [r["is_anomaly"] for r in results] == [False, True]

    lines = live.wait_for_log(lambda e: e.get("request_id") == request_id and e["logger"] == "app.anomaly")
    assert len(lines) == 1
    line = lines[0]
    assert line["level"] == "WARNING" and line["message"] == "anomalous reading"
    assert line["reading_id"] == "press-7"
    assert line["score"] == results[1]["score"]
    assert line["threshold"] == manifest.threshold.value
    assert line["model_version"] == manifest.version
    _, sensor_error = reference.run(["score", "sensor_error"], {"readings": x})
    top = np.argsort(-sensor_error[1], kind="stable")[:5]
    assert [s["sensor"] for s in line["top_sensors"]] == [manifest.sensor_names[j] for j in top]
    assert [s["sensor_error"] for s in line["top_sensors"]] == [float(sensor_error[1, j]) for j in top]
    assert {s["sensor"] for s in line["top_sensors"][:3]} == {manifest.sensor_names[j] for j in (3, 17, 29)}
    access = live.wait_for_log(lambda e: e.get("request_id") == request_id and e["logger"] == "app.request")
    assert access[0]["status"] == 200 and access[0]["path"] == "/v1/score/batch"


def test_every_server_line_is_a_json_object(live: LiveServer) -> None:
    lines = live.log_lines()  # raises on any line that is not JSON
    assert lines
    for entry in lines:
        assert {"ts", "level", "logger", "message", "request_id"} <= set(entry)
        assert entry["ts"].endswith("Z")


def test_request_ids_are_echoed_and_match_error_bodies(live: LiveServer, client: httpx.Client) -> None:
    sane = "Abc.123_x-Y"
    response = client.post("/v1/score", json={"values": [1.0]}, headers={"X-Request-ID": sane})
    assert response.status_code == 422
    assert response.headers["X-Request-ID"] == sane
    assert response.json()["error"]["request_id"] == sane
    logged = live.wait_for_log(lambda e: e.get("request_id") == sane and e["logger"] == "app.request")
    assert logged and logged[0]["status"] == 422

    for insane in ("has space", "x" * 129, "semi;colon", ""):
        response = client.post("/v1/score", json={"values": [1.0]}, headers={"X-Request-ID": insane})
        generated = response.headers["X-Request-ID"]
        assert generated != insane and len(generated) == 32 and int(generated, 16) >= 0
        assert response.json()["error"]["request_id"] == generated

    first, second = client.get("/healthz"), client.get("/healthz")
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]
    assert len(client.get("/nowhere").json()["error"]["request_id"]) == 32


def test_formatter_writes_extra_fields_request_id_and_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        logger = logging.getLogger("test.logs")
        token = request_id_var.set("req-1")
        try:
            logger.info("scored %d", 3, extra={"reading_id": "r", "top": [{"sensor": "a", "v": 1.5}]})
            try:
                raise ValueError("boom")
            except ValueError:
                logger.exception("failed")
        finally:
            request_id_var.reset(token)
        logger.debug("hidden")
    finally:
        configure_logging("INFO")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "scored 3" and first["request_id"] == "req-1"
    assert first["reading_id"] == "r" and first["top"] == [{"sensor": "a", "v": 1.5}]
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


def test_configuring_twice_keeps_one_service_handler_and_foreign_handlers() -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        configure_logging("INFO")
        configure_logging("WARNING")
        ours = [h for h in root.handlers if type(h).__name__ == "_ServiceHandler"]
        assert len(ours) == 1 and foreign in root.handlers
        assert root.level == logging.WARNING
    finally:
        root.removeHandler(foreign)
        configure_logging("INFO")


def test_formatter_handles_unserialisable_extras() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.thing = object()
    assert json.loads(JsonFormatter().format(record))["thing"].startswith("<object")


def test_formatter_writes_the_time_of_each_record_and_valid_json_for_any_number() -> None:
    formatter = JsonFormatter()
    times = [1795673520.999, 1795673521.0, 1795673521.5, 1795673520.25]  # the second changes, and back
    stamps = []
    for created in times:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        record.ratio, record.by_code = float("nan"), {404: 2}
        entry = json.loads(formatter.format(record))  # strict JSON: NaN is written as null
        assert entry["ratio"] is None and entry["by_code"] == {"404": 2}
        stamps.append(entry["ts"])
    assert stamps == ["2026-11-26T06:12:00.999Z", "2026-11-26T06:12:01.000Z", "2026-11-26T06:12:01.500Z",
                      "2026-11-26T06:12:00.250Z"]  # fmt: skip
