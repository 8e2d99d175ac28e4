"""GET /healthz and /readyz: alive always; ready only with a verified, warmed-up model, else 503 saying why
(the process starts anyway, and recovers with a reload)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from factory_anomaly.artifact import write_current
from tests.app.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    AUTH,
    MODEL_NAME,
    LiveServer,
    assert_stopped_cleanly,
    copy_store,
    server_env,
    serving,
    settings_for,
    start_server,
    stop_server,
)


def test_live_server_is_alive_and_ready(live: LiveServer, trained_small: Path) -> None:
    with live.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready",
        "model_name": MODEL_NAME,
        "model_version": trained_small.name,
        "provider": ready.json()["provider"],
        "last_load_error": None,
    }


@pytest.mark.parametrize(
    ("case", "code", "fragment"),
    [
        pytest.param("missing-store", "current_missing", "does not exist", id="missing-store"),
        pytest.param("dangling-current", "version_missing", "20000101T000000Z", id="dangling-current"),
    ],
)
def test_process_starts_without_a_model(
    store: Path, tmp_path: Path, readings: np.ndarray, case: str, code: str, fragment: str
) -> None:
    """No usable model does not crash the process: it is alive, not ready, and says why."""
    if case == "missing-store":
        model_store = tmp_path / "no-store"
    else:
        model_store = copy_store(store, tmp_path / "store")
        (model_store / MODEL_NAME / "CURRENT").write_text("20000101T000000Z-00000000\n")
    server = start_server(tmp_path / "server.log", server_env(model_store), wait_ready=False)
    try:
        with server.client(headers=AUTH) as client:
            assert client.get("/healthz").status_code == 200
            ready = client.get("/readyz")
            assert ready.status_code == 503
            error = ready.json()["error"]
            assert error["code"] == code
            assert fragment in error["message"]
            for response in (
                client.post("/v1/score", json={"values": readings[0].tolist()}),
                client.post("/v1/score/batch", json={"vectors": readings[:2].tolist()}),
                client.get("/v1/model"),
            ):
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "model_unavailable"
                assert code in response.json()["error"]["message"]
    finally:
        stop_server(server)
    assert_stopped_cleanly(server, errors_expected=True)  # the failed load is logged as an error


@pytest.mark.anyio
async def test_current_naming_a_missing_version_then_recovery(
    store: Path, tmp_path: Path, trained_small: Path, readings: np.ndarray
) -> None:
    model_dir = copy_store(store, tmp_path / "store") / MODEL_NAME
    (model_dir / "CURRENT").write_text("20000101T000000Z-00000000\n")
    async with serving(settings_for(model_dir.parent, admin_token=ADMIN_TOKEN)) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "version_missing"
        scored = await client.post("/v1/score", json={"values": readings[0].tolist()})
        assert scored.status_code == 503
        assert scored.json()["error"]["code"] == "model_unavailable"

        write_current(model_dir, trained_small.name)
        assert (await client.post("/v1/admin/reload", headers=ADMIN)).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.post("/v1/score", json={"values": readings[0].tolist()})).status_code == 200
