"""Faults while serving (docs/reliability.md "Faults"): a broken version offered by a reload, the model
store vanishing under a running service, and SIGTERM under load. Each with real parts: the app with its
real lifespan on a private copy of the store, or a real uvicorn.

Already covered elsewhere and not repeated here: a flipped byte in model.onnx on reload and scoring that
never fails while versions swap (routes/test_admin.py), `CURRENT` naming a missing version at startup and
the recovery by a reload (routes/test_health.py), one slow request finishing after SIGTERM (test_main.py),
a training run killed or failing while it writes a version (training/test_publish.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

from factory_anomaly.artifact import read_manifest, sha256_file, write_manifest
from tests.app.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    AUTH,
    MODEL_NAME,
    assert_stopped_cleanly,
    copy_store,
    publish_copy,
    server_env,
    serving,
    settings_for,
    start_server,
    stop_server,
)

BROKEN = "20991231T000001Z-0000dead"


@pytest.fixture
def model_dir(store: Path, tmp_path: Path) -> Path:
    return copy_store(store, tmp_path / "store") / MODEL_NAME


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def reloads(client: httpx.AsyncClient) -> dict[str, float]:
    """anomaly_model_reloads_total by outcome, read from GET /metrics."""
    scraped = samples((await client.get("/metrics")).text)
    return {
        outcome: scraped[
            ("anomaly_model_reloads_total", frozenset({("model", MODEL_NAME), ("outcome", outcome)}))
        ]
        for outcome in ("success", "failure")
    }


async def assert_still_serving(
    client: httpx.AsyncClient, version: str, readings: np.ndarray, reference: ort.InferenceSession
) -> None:
    """Scoring, batch scoring, explaining and /v1/model answer from `version`, scores bit for bit the
    reference session's; /readyz stays 200."""
    expected = reference.run(["score"], {"readings": readings[:4]})[0]
    single = await client.post("/v1/score", json={"values": readings[0].tolist()})
    assert single.status_code == 200, single.text
    assert single.json()["model_version"] == version
    assert np.float32(single.json()["score"]) == expected[0]
    batch = await client.post("/v1/score/batch", json={"vectors": readings[:4].tolist()})
    assert batch.status_code == 200, batch.text
    assert [np.float32(r["score"]) for r in batch.json()["results"]] == expected.tolist()
    explained = await client.post("/v1/explain", json={"values": readings[0].tolist()})
    assert explained.status_code == 200, explained.text
    assert (await client.get("/v1/model")).json()["version"] == version
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_version"] == version


# --- a broken version offered by a reload ----------------------------------------------------------------


def truncate_graph(version: Path) -> None:
    graph = version / "model.onnx"
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])


def corrupt_graph_and_rehash(version: Path) -> None:
    """Garbage where the graph was, and a manifest whose checksum vouches for the garbage: the checksum
    passes, so onnxruntime itself must refuse it."""
    graph = version / "model.onnx"
    graph.write_bytes(b"\x08\x07" + os.urandom(4096))
    manifest = read_manifest(version)
    files = dict(manifest.files) | {"model.onnx": sha256_file(graph)}
    write_manifest(replace(manifest, files=files), version)


def edit_manifest_checksum(version: Path) -> None:
    manifest = read_manifest(version)
    write_manifest(replace(manifest, files=dict(manifest.files) | {"model.onnx": "0" * 64}), version)


def truncate_manifest(version: Path) -> None:
    manifest = version / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:100])


def truncate_explainer(version: Path) -> None:
    graph = version / "explainer.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("damage", "code", "names"),
    [
        pytest.param(truncate_graph, "checksum_mismatch", "model.onnx", id="truncated-model"),
        pytest.param(corrupt_graph_and_rehash, "model_invalid", "model.onnx", id="corrupt-model-rehashed"),
        pytest.param(
            edit_manifest_checksum, "checksum_mismatch", "model.onnx", id="manifest-checksum-edited"
        ),
        pytest.param(truncate_manifest, "manifest_invalid", "manifest.json", id="truncated-manifest"),
        pytest.param(truncate_explainer, "checksum_mismatch", "explainer.onnx", id="truncated-explainer"),
    ],
)
async def test_a_broken_version_is_refused_and_the_old_model_keeps_serving(
    model_dir: Path,
    trained_small: Path,
    readings: np.ndarray,
    reference: ort.InferenceSession,
    damage: Callable[[Path], None],
    code: str,
    names: str,
) -> None:
    """The reload answers 409 with the reason's code and says what still serves; the failed-reload
    counter goes up by one; scoring, explaining and readiness carry on from the old version."""
    damage(publish_copy(model_dir, trained_small.name, BROKEN))
    async with serving(settings_for(model_dir.parent, admin_token=ADMIN_TOKEN)) as client:
        before = await reloads(client)
        response = await client.post("/v1/admin/reload", json={"version": BROKEN}, headers=ADMIN)
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["code"] == code
        assert names in error["message"] and f"still serving {trained_small.name}" in error["message"]
        assert await reloads(client) == before | {"failure": before["failure"] + 1}
        await assert_still_serving(client, trained_small.name, readings, reference)
        assert (await client.get("/readyz")).json()["last_load_error"]["code"] == code
        # a reload without a body re-reads CURRENT, which still names the good version
        assert (await client.post("/v1/admin/reload", headers=ADMIN)).status_code == 200
        assert await reloads(client) == {"success": before["success"] + 1, "failure": before["failure"] + 1}


# --- the model store vanishing under a running service ---------------------------------------------------


def delete(store: Path) -> Callable[[], None]:
    backup = store.parent / "backup"
    shutil.copytree(store, backup)
    shutil.rmtree(store)

    def restore() -> None:
        backup.rename(store)

    return restore


def rename(store: Path) -> Callable[[], None]:
    moved = store.parent / "moved"
    store.rename(moved)

    def restore() -> None:
        moved.rename(store)

    return restore


def make_unreadable(store: Path) -> Callable[[], None]:
    model_dir = store / MODEL_NAME
    modes = {path: path.stat().st_mode for path in (model_dir, *model_dir.rglob("*"))}
    for path in sorted(modes, reverse=True):  # children first, while their parent is still searchable
        path.chmod(0)

    def restore() -> None:
        for path, mode in sorted(modes.items()):
            path.chmod(mode)

    return restore


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("vanish", "code"),
    [
        pytest.param(delete, "current_missing", id="deleted"),
        pytest.param(rename, "current_missing", id="renamed"),
        pytest.param(
            make_unreadable,
            "current_invalid",
            id="unreadable",
            marks=pytest.mark.skipif(
                os.geteuid() == 0, reason="running as root: chmod 000 does not stop root from reading"
            ),
        ),
    ],
)
async def test_the_loaded_model_keeps_serving_when_the_store_vanishes(
    model_dir: Path,
    trained_small: Path,
    readings: np.ndarray,
    reference: ort.InferenceSession,
    vanish: Callable[[Path], Callable[[], None]],
    code: str,
) -> None:
    """The graphs were read into memory and verified at load; nothing reads the store again until a
    reload, which fails with the reason and leaves the model serving, and succeeds once the store is back."""
    store = model_dir.parent
    async with serving(settings_for(store, admin_token=ADMIN_TOKEN)) as client:
        await assert_still_serving(client, trained_small.name, readings, reference)
        restore = vanish(store)
        try:
            await assert_still_serving(client, trained_small.name, readings, reference)
            failed = await client.post("/v1/admin/reload", headers=ADMIN)
            assert failed.status_code == 409 and failed.json()["error"]["code"] == code
            await assert_still_serving(client, trained_small.name, readings, reference)
        finally:
            restore()
        assert (await client.post("/v1/admin/reload", headers=ADMIN)).status_code == 200
        assert (await client.get("/readyz")).json()["last_load_error"] is None


# --- SIGTERM under load ------------------------------------------------------------------------------------

HELD = 6
"""Requests held in flight across the SIGTERM (their bodies half sent), two per scoring route."""
LOADERS = 3
"""Threads sending small requests, each on a new connection, before, during and after the SIGTERM."""
EXIT_BOUND_S = 5.0
"""How long the process may take to exit once the last in-flight request has its body."""


def connection_refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_under_load_finishes_in_flight_requests_and_refuses_new_connections(
    store: Path, tmp_path: Path, readings: np.ndarray, reference: ort.InferenceSession
) -> None:
    """A real uvicorn, loaded by threads on fresh connections, with HELD requests in flight (body half
    sent): after SIGTERM the listening socket is closed (a new connection is refused) while the process
    waits for them; each then completes with 200 and the right scores; it exits within EXIT_BOUND_S,
    cleanly (-SIGTERM). Every request the server logged as answered was received by its client, and every
    load request that got no answer was never handled (refused or closed before it was read)."""
    server = start_server(tmp_path / "server.log", server_env(store))
    port = int(server.url.rsplit(":", 1)[1])
    x = readings[:16]
    expected = reference.run(["score"], {"readings": x})[0]
    routes: list[tuple[str, str, bytes]] = [
        ("/v1/score", "application/json", json.dumps({"values": x[0].tolist()}).encode()),
        ("/v1/score/batch", "application/octet-stream", np.ascontiguousarray(x, dtype="<f4").tobytes()),
        ("/v1/explain", "application/json", json.dumps({"values": x[0].tolist()}).encode()),
    ]
    release = threading.Event()
    started = [threading.Event() for _ in range(HELD)]
    held: dict[int, httpx.Response | BaseException] = {}

    def hold(i: int) -> None:
        path, content_type, body = routes[i % len(routes)]

        def slow_body() -> Iterator[bytes]:
            yield body[:20]
            started[i].set()
            release.wait(30)
            yield body[20:]

        headers = AUTH | {"Content-Type": content_type, "X-Request-ID": f"held-{i}"}
        try:
            with server.client() as client:
                held[i] = client.post(path, content=slow_body(), headers=headers)
        except BaseException as exc:  # recorded, asserted below
            held[i] = exc

    stop_load = threading.Event()
    outcomes: dict[str, int | str] = {}

    def load(worker: int) -> None:
        n = 0
        while not stop_load.is_set():
            request_id = f"load-{worker}-{n}"
            n += 1
            headers = AUTH | {"X-Request-ID": request_id, "Connection": "close"}
            try:
                with httpx.Client(base_url=server.url, timeout=10.0) as client:
                    answer = client.post("/v1/score", json={"values": x[n % 16].tolist()}, headers=headers)
                outcomes[request_id] = answer.status_code
            except httpx.TransportError as exc:
                outcomes[request_id] = type(exc).__name__
                time.sleep(0.01)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(HELD)]
    threads += [threading.Thread(target=load, args=(w,)) for w in range(LOADERS)]
    try:
        for thread in threads:
            thread.start()
        assert all(event.wait(10) for event in started)
        time.sleep(0.3)  # the held requests have reached the app, which waits for the rest of their bodies
        answered_before = sum(1 for status in list(outcomes.values()) if status == 200)
        assert answered_before > 0, outcomes
        server.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not connection_refused(port):
            assert time.monotonic() < deadline, "the listening socket stayed open after SIGTERM"
            time.sleep(0.02)
        time.sleep(0.2)  # the load keeps knocking on the closed port meanwhile
        assert server.process.poll() is None, "exited with requests in flight"
        assert not held, "a held request finished before its body was sent"
        with pytest.raises(httpx.ConnectError), httpx.Client(base_url=server.url) as late:
            late.get("/healthz")
        stop_load.set()
        release.set()
        released = time.monotonic()
        for thread in threads:
            thread.join(30)
        server.process.wait(EXIT_BOUND_S + 5)
        exit_s = time.monotonic() - released
    finally:
        stop_load.set()
        release.set()
        stop_server(server)
    assert exit_s < EXIT_BOUND_S, exit_s
    for i in range(HELD):
        response = held[i]
        assert isinstance(response, httpx.Response), response
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        scores = [r["score"] for r in body["results"]] if "results" in body else [body["score"]]
        assert np.array_equal(np.array(scores, dtype=np.float32), expected[: len(scores)])
    assert_stopped_cleanly(server)
    logged = {
        entry["request_id"]: entry["status"] for entry in server.log_lines() if entry["message"] == "request"
    }
    received = {request_id: status for request_id, status in outcomes.items() if isinstance(status, int)}
    assert set(received.values()) == {200}
    assert {rid: status for rid, status in logged.items() if rid.startswith("load-")} == received
    assert {rid: status for rid, status in logged.items() if rid.startswith("held-")} == {
        f"held-{i}": 200 for i in range(HELD)
    }
    unanswered = {status for status in outcomes.values() if not isinstance(status, int)}
    assert unanswered <= {"ConnectError", "RemoteProtocolError", "ReadError"}, unanswered
    assert "ConnectError" in unanswered  # the load did knock on the closed port
