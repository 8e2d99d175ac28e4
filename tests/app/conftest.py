"""The service under test, for real: a uvicorn subprocess on a free port, or the app in process with its
real lifespan behind httpx.ASGITransport. Both serve the session's trained `small-ae` artifact."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from fastapi import FastAPI

from factory_anomaly.app.config import Settings
from factory_anomaly.app.main import create_app
from factory_anomaly.artifact import Manifest, read_manifest, write_manifest

ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "small-ae"
API_KEY = "test-key-4f1c"
ADMIN_TOKEN = "admin-token-9d2e"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the artifact and a reference onnxruntime session ------------------------------------------------------


def reference_session(path: Path) -> ort.InferenceSession:
    """onnxruntime on an artifact's graph directly, with the service's session options."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def reference(trained_small: Path) -> ort.InferenceSession:
    """onnxruntime on the artifact's scorer graph directly, with the service's session options."""
    return reference_session(trained_small / "model.onnx")


@pytest.fixture(scope="session")
def explainer_reference(trained_small: Path) -> ort.InferenceSession:
    """onnxruntime on the artifact's explainer graph directly, with the service's session options."""
    return reference_session(trained_small / "explainer.onnx")


@pytest.fixture(scope="session")
def readings(small_plant: Any) -> np.ndarray:
    """float32 [64, 40]: normal readings of the plant the model was trained on, in its sensor order."""
    return small_plant.simulate(64, seed=7, anomaly_rate=0.0).values.astype(np.float32)


def anomalous(manifest: Manifest) -> np.ndarray:
    """One reading far outside the training range on a few sensors: its score is far above threshold."""
    low, high = np.asarray(manifest.sensor_low), np.asarray(manifest.sensor_high)
    x = ((low + high) / 2).astype(np.float32)
    x[[3, 17, 29]] = (high + 50 * (high - low) + 100)[[3, 17, 29]]
    return x


# --- model stores -------------------------------------------------------------------------------------------


def copy_store(store: Path, dest: Path) -> Path:
    """A private copy of the store (tests that publish or corrupt versions must not touch the shared one)."""
    shutil.copytree(store, dest)
    return dest


def publish_copy(model_dir: Path, source_version: str, new_version: str) -> Path:
    """Publish `source_version` again as `new_version`: copy the directory and rewrite the manifest's
    version (the directory name must equal it; the checksums do not cover manifest.json)."""
    target = model_dir / new_version
    shutil.copytree(model_dir / source_version, target)
    write_manifest(replace(read_manifest(target), version=new_version), target)
    return target


def publish_without_explainer(model_dir: Path, source_version: str, new_version: str) -> Path:
    """`publish_copy` of `source_version` as a version without an explainer graph (as trained with
    --no-explainer, or before the explainer existed): explainer.onnx and its manifest entries removed."""
    target = publish_copy(model_dir, source_version, new_version)
    manifest = read_manifest(target)
    file = manifest.graphs["explainer"].file
    (target / file).unlink()
    graphs = {role: graph for role, graph in manifest.graphs.items() if role != "explainer"}
    files = {rel: digest for rel, digest in manifest.files.items() if rel != file}
    write_manifest(replace(manifest, graphs=graphs, files=files), target)
    return target


def settings_for(store: Path, **overrides: Any) -> Settings:
    """Settings serving `store`; each app gets a journal of its own unless the test names one."""
    overrides.setdefault("alarm_db", Path(tempfile.mkdtemp(prefix="journal-")) / "alarms.sqlite3")
    return Settings(model_store=store, model_name=MODEL_NAME, **overrides)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app in process with its real lifespan: model loaded (or its failure recorded), pool started."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """`running(settings)` behind httpx.ASGITransport."""
    async with running(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


# --- a real uvicorn ----------------------------------------------------------------------------------------


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, **kwargs)

    def log_lines(self) -> list[dict[str, Any]]:
        """The server's output so far, one decoded JSON object per line (every line must be JSON)."""
        text = self.log_path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def wait_for_log(self, predicate: Any, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while True:
            found = [entry for entry in self.log_lines() if predicate(entry)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uvicorn_command(port: int) -> list[str]:
    """The service as the image runs it: one uvicorn process on 127.0.0.1:`port`."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "factory_anomaly.app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def start_server(log_path: Path, env: dict[str, str], wait_ready: bool = True) -> LiveServer:
    """`python -m uvicorn factory_anomaly.app.main:app` with ANOMALY_* `env`, output to `log_path`; returns
    once it answers
    /healthz (and /readyz with `wait_ready`)."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ANOMALY_")} | env
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            uvicorn_command(port),
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    path = "/readyz" if wait_ready else "/healthz"
    with server.client() as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if client.get(path).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                stop_server(server)
                raise RuntimeError(f"uvicorn not ready after {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()}")
            time.sleep(0.05)


def stop_server(server: LiveServer) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; returns the exit status."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


CLEAN_EXIT = (0, -signal.SIGTERM)
"""uvicorn (since 0.29) shuts down gracefully on SIGTERM and then re-raises the signal, so a clean stop
exits with -SIGTERM (143 in a shell), which process managers read as "stopped by the signal it was sent"."""


def assert_stopped_cleanly(server: LiveServer, errors_expected: bool = False) -> None:
    status = stop_server(server)
    lines = server.log_lines()
    messages = [entry["message"] for entry in lines]
    assert status in CLEAN_EXIT, messages[-10:]
    assert "Application shutdown complete." in messages
    assert messages[-1].startswith("Finished server process")
    assert not [entry for entry in lines if "exc" in entry]  # no traceback
    if not errors_expected:
        assert not [entry for entry in lines if entry["level"] in ("ERROR", "CRITICAL")]


def server_env(store: Path, **extra: str) -> dict[str, str]:
    return {
        "ANOMALY_MODEL_STORE": str(store),
        "ANOMALY_MODEL_NAME": MODEL_NAME,
        "ANOMALY_API_KEYS": f"other-key,{API_KEY}",
        "ANOMALY_ADMIN_TOKEN": ADMIN_TOKEN,
        "ANOMALY_MAX_BODY_BYTES": str(4 << 20),
        "ANOMALY_ALARM_DB": str(Path(tempfile.mkdtemp(prefix="journal-")) / "alarms.sqlite3"),
        "ANOMALY_ACCESS_LOG_SAMPLE": "1",  # tests follow requests through their access lines
    } | extra


@pytest.fixture(scope="session")
def live(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One uvicorn for the session, serving the shared store (never reloaded: reload tests use copies)."""
    server = start_server(tmp_path_factory.mktemp("live") / "server.log", server_env(store))
    yield server
    stop_server(server)


@pytest.fixture
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with live.client(headers=AUTH) as c:
        yield c
