"""POST /v1/admin/reload in process (real lifespan, a private copy of the store): swaps, failures that
leave the old model serving, authentication, and scoring that never fails while versions change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from factory_anomaly.artifact import write_current
from tests.app.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    MODEL_NAME,
    copy_store,
    publish_copy,
    serving,
    settings_for,
)

pytestmark = pytest.mark.anyio

NEW = "20991231T000000Z-0000beef"
BAD = "20991231T000001Z-0000dead"


@pytest.fixture
def model_dir(store: Path, tmp_path: Path) -> Path:
    return copy_store(store, tmp_path / "store") / MODEL_NAME


@pytest.fixture
async def admin(model_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings_for(model_dir.parent, admin_token=ADMIN_TOKEN)) as client:
        yield client


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


async def served_version(client: httpx.AsyncClient) -> str:
    response = await client.get("/v1/model")
    assert response.status_code == 200, response.text
    version: str = response.json()["version"]
    return version


async def reload(client: httpx.AsyncClient, version: str | None = None, **kwargs: Any) -> httpx.Response:
    if version is not None:
        kwargs["json"] = {"version": version}
    return await client.post("/v1/admin/reload", headers=kwargs.pop("headers", ADMIN), **kwargs)


async def test_reload_to_a_published_version(
    admin: httpx.AsyncClient, model_dir: Path, trained_small: Path, readings: np.ndarray
) -> None:
    publish_copy(model_dir, trained_small.name, NEW)
    response = await reload(admin, NEW)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == MODEL_NAME
    assert body["version"] == NEW
    assert body["previous_version"] == trained_small.name
    assert body["provider"] in ort.get_available_providers()
    assert await served_version(admin) == NEW
    scored = await admin.post("/v1/score", json={"values": readings[0].tolist()})
    assert scored.json()["model_version"] == NEW
    assert (await admin.get("/readyz")).json()["model_version"] == NEW


async def test_reload_without_a_body_reads_current_again(
    admin: httpx.AsyncClient, model_dir: Path, trained_small: Path
) -> None:
    publish_copy(model_dir, trained_small.name, NEW)
    unchanged = await reload(admin)
    assert unchanged.status_code == 200, unchanged.text
    assert unchanged.json()["version"] == trained_small.name
    write_current(model_dir, NEW)
    response = await reload(admin, content=b"")
    assert response.status_code == 200, response.text
    assert response.json() | {"load_seconds": 0} == {
        "name": MODEL_NAME,
        "version": NEW,
        "previous_version": trained_small.name,
        "provider": response.json()["provider"],
        "load_seconds": 0,
    }


async def test_corrupted_version_is_refused_and_the_old_model_keeps_serving(
    admin: httpx.AsyncClient, model_dir: Path, trained_small: Path, readings: np.ndarray
) -> None:
    flip_a_byte(publish_copy(model_dir, trained_small.name, BAD) / "model.onnx")
    response = await reload(admin, BAD)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "checksum_mismatch"
    assert "model.onnx" in error["message"]
    assert trained_small.name in error["message"]  # says what is still serving
    assert await served_version(admin) == trained_small.name
    scored = await admin.post("/v1/score", json={"values": readings[0].tolist()})
    assert scored.status_code == 200
    assert scored.json()["model_version"] == trained_small.name
    ready = await admin.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["last_load_error"]["code"] == "checksum_mismatch"
    assert ready.json()["last_load_error"]["requested_version"] == BAD
    # a later successful reload clears it
    assert (await reload(admin, trained_small.name)).status_code == 200
    assert (await admin.get("/readyz")).json()["last_load_error"] is None


@pytest.mark.parametrize(
    ("version", "status", "code"),
    [
        pytest.param("20000101T000000Z-00000000", 409, "version_missing", id="missing"),
        pytest.param("../small-ae", 422, "invalid_version", id="parent"),
        pytest.param(".build-x", 422, "invalid_version", id="hidden"),
        pytest.param("a/b", 422, "invalid_version", id="separator"),
        pytest.param("", 422, "invalid_version", id="empty"),
        pytest.param("x" * 200, 422, "invalid_version", id="too-long"),
    ],
)
async def test_reload_naming_a_bad_version(
    admin: httpx.AsyncClient, trained_small: Path, version: str, status: int, code: str
) -> None:
    response = await reload(admin, version)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert await served_version(admin) == trained_small.name


async def test_reload_with_current_naming_a_missing_version(
    admin: httpx.AsyncClient, model_dir: Path
) -> None:
    (model_dir / "CURRENT").write_text("20000101T000000Z-00000000\n")
    response = await reload(admin)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "version_missing"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        pytest.param({"content": b"{", "headers": {**ADMIN, "Content-Type": "application/json"}}, 400,
                     "malformed_json", id="malformed"),
        pytest.param({"json": {"versoin": "x"}}, 422, "unknown_field", id="unknown-field"),
        pytest.param({"json": {"version": 3}}, 422, "invalid_type", id="version-not-string"),
        pytest.param({"json": ["x"]}, 422, "invalid_type", id="not-an-object"),
        pytest.param({"content": b'{"version": "x"}', "headers": {**ADMIN, "Content-Type": "text/plain"}},
                     415, "unsupported_media_type", id="text-plain"),
        pytest.param({"content": b"x" * 5000, "headers": {**ADMIN, "Content-Type": "application/json"}}, 413,
                     "body_too_large", id="too-large"),
    ],
)  # fmt: skip
async def test_reload_body_errors(
    admin: httpx.AsyncClient, kwargs: dict[str, Any], status: int, code: str
) -> None:
    response = await reload(admin, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        pytest.param({}, 401, "missing_admin_token", id="missing"),
        pytest.param({"Authorization": "Bearer wrong"}, 403, "invalid_admin_token", id="wrong"),
        pytest.param({"Authorization": ADMIN_TOKEN}, 401, "missing_admin_token", id="no-scheme"),
        pytest.param({"X-API-Key": ADMIN_TOKEN}, 401, "missing_admin_token", id="api-key-header"),
    ],
)
async def test_admin_authentication(
    admin: httpx.AsyncClient, headers: dict[str, str], status: int, code: str
) -> None:
    response = await reload(admin, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


async def test_admin_is_disabled_without_a_token(model_dir: Path) -> None:
    async with serving(settings_for(model_dir.parent)) as client:
        for headers in ({}, ADMIN):
            response = await reload(client, headers=headers)
            assert response.status_code == 403
            assert response.json()["error"]["code"] == "admin_disabled"


async def test_scoring_never_fails_while_versions_are_swapped(
    admin: httpx.AsyncClient,
    model_dir: Path,
    trained_small: Path,
    readings: np.ndarray,
    reference: ort.InferenceSession,
) -> None:
    publish_copy(model_dir, trained_small.name, NEW)
    flip_a_byte(publish_copy(model_dir, trained_small.name, BAD) / "model.onnx")
    expected = reference.run(["score"], {"readings": readings[:1]})[0][0]
    versions_seen: set[str] = set()
    stop = asyncio.Event()

    async def score_until_stopped() -> int:
        done = 0
        while not stop.is_set():
            response = await admin.post("/v1/score", json={"values": readings[0].tolist()})
            assert response.status_code == 200, response.text
            body = response.json()
            assert np.float32(body["score"]) == expected
            versions_seen.add(body["model_version"])
            done += 1
            # In process, a small request is scored inline and never suspends (no socket to wait on):
            # yield, as a client over a network would, so the reloads get their turn.
            await asyncio.sleep(0)
        return done

    async def reload_repeatedly() -> None:
        try:
            for version in (NEW, BAD, trained_small.name, NEW, BAD, trained_small.name, NEW):
                response = await reload(admin, version)
                assert response.status_code == (409 if version == BAD else 200), response.text
                await asyncio.sleep(0.01)
        finally:
            stop.set()

    counts = await asyncio.gather(*(score_until_stopped() for _ in range(4)), reload_repeatedly())
    assert sum(c for c in counts if c is not None) > 0
    assert versions_seen <= {NEW, trained_small.name}
    assert await served_version(admin) == NEW


async def test_a_request_finishes_on_the_model_it_started_with(
    admin: httpx.AsyncClient, model_dir: Path, trained_small: Path, readings: np.ndarray
) -> None:
    publish_copy(model_dir, trained_small.name, NEW)
    body = f'{{"values": {readings[0].tolist()}}}'.encode()
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield body[:10]
        await release.wait()
        yield body[10:]

    request = asyncio.create_task(
        admin.post("/v1/score", content=slow_body(), headers={"Content-Type": "application/json"})
    )
    await asyncio.sleep(0.05)  # the request has started and holds the old model
    assert (await reload(admin, NEW)).status_code == 200
    release.set()
    response = await request
    assert response.status_code == 200, response.text
    assert response.json()["model_version"] == trained_small.name
    assert await served_version(admin) == NEW
