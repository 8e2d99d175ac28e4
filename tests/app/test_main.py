"""The application as a process: the import boundary, OpenAPI docs, graceful shutdown under uvicorn."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.app.conftest import AUTH, ROOT, assert_stopped_cleanly, server_env, start_server, stop_server


def test_importing_main_loads_no_training_stack_and_core_no_web_framework() -> None:
    code = (
        "import sys\n"
        "import factory_anomaly.app.wire.parse, factory_anomaly.app.wire.respond, factory_anomaly.app.model\n"
        "import factory_anomaly.app.model.registry, factory_anomaly.app.serving.service\n"
        "import factory_anomaly.app.errors, factory_anomaly.app.config\n"
        "web = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette'))\n"
        "import factory_anomaly.app.main\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx')\n"
        "               or m.startswith('factory_anomaly.training'))\n"
        "print(web, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []", out.stdout + out.stderr


@pytest.mark.anyio
async def test_openapi_documents_both_request_bodies(store: Path) -> None:
    from tests.app.conftest import serving, settings_for

    async with serving(settings_for(store)) as client:
        assert (await client.get("/docs")).status_code == 200
        spec = (await client.get("/openapi.json")).json()
    batch = spec["paths"]["/v1/score/batch"]["post"]["requestBody"]["content"]
    assert set(batch) == {"application/json", "application/octet-stream"}
    assert batch["application/json"]["schema"]["required"] == ["vectors"]
    single = spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]
    assert set(single) == {"application/json"}
    assert {"/v1/score", "/v1/score/batch", "/v1/model", "/healthz", "/readyz", "/v1/admin/reload"} <= set(
        spec["paths"]
    )


def test_sigterm_lets_the_request_in_flight_finish(
    store: Path, tmp_path: Path, readings: np.ndarray, reference: ort.InferenceSession
) -> None:
    server = start_server(tmp_path / "server.log", server_env(store))
    x = readings[:16]
    body = np.ascontiguousarray(x, dtype="<f4").tobytes()
    first_part_sent, finish = threading.Event(), threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield body[:640]
        first_part_sent.set()
        finish.wait(10)
        yield body[640:]

    result: dict[str, httpx.Response] = {}

    def send() -> None:
        with server.client(headers=AUTH | {"Content-Type": "application/octet-stream"}) as client:
            result["response"] = client.post("/v1/score/batch", content=slow_body())

    sender = threading.Thread(target=send)
    try:
        sender.start()
        assert first_part_sent.wait(10)
        time.sleep(0.2)  # the server has the request and waits for the rest of its body
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert server.process.poll() is None, "exited with a request in flight"
        finish.set()
        sender.join(10)
        started = time.monotonic()
        server.process.wait(10)
        assert time.monotonic() - started < 5
    finally:
        finish.set()
        stop_server(server)
    response = result["response"]
    assert response.status_code == 200, response.text
    scores = np.array([np.float32(r["score"]) for r in response.json()["results"]])
    assert np.array_equal(scores, reference.run(["score"], {"readings": x})[0])
    assert_stopped_cleanly(server)


def test_fastapis_native_opentelemetry_is_off() -> None:
    """The service reports through Prometheus and its JSON logs. FastAPI's own OpenTelemetry (0.165+)
    would otherwise ask the global providers on every request whether one is configured (~3 µs a
    request, docs/benchmarks.md); off, the check is a dictionary lookup."""
    from factory_anomaly.app.main import create_app

    app = create_app()
    assert app._native_telemetry.enabled() is False
    assert {app._telemetry[signal] for signal in ("tracing", "metrics", "logs")} == {False}
