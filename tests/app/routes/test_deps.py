"""Body limits at the ASGI level: a declared oversize body is refused unread, a streamed one as soon as
it passes the limit, never buffered whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.app.conftest import running, settings_for

pytestmark = pytest.mark.anyio

LIMIT = 8192
CHUNK = 1024


async def call(app: Any, headers: list[tuple[bytes, bytes]], chunks: int) -> tuple[int, dict[str, Any], int]:
    """POST /v1/score/batch straight into the ASGI app; returns status, body and chunks the app read."""
    sent: list[dict[str, Any]] = []
    read = 0

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"\0" * CHUNK, "more_body": read < chunks}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/score/batch",
        "raw_path": b"/v1/score/batch",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/octet-stream"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("service", 80),
    }
    await app(scope, receive, send)
    status = sent[0]["status"]
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    return status, body, read


async def test_declared_oversize_body_is_refused_unread(store: Path) -> None:
    async with running(settings_for(store, max_body_bytes=LIMIT)) as app:
        status, body, read = await call(app, [(b"content-length", str(LIMIT + 1).encode())], chunks=100)
    assert status == 413 and body["error"]["code"] == "body_too_large"
    assert read == 0


async def test_streamed_body_is_refused_once_past_the_limit(store: Path) -> None:
    async with running(settings_for(store, max_body_bytes=LIMIT)) as app:
        status, body, read = await call(app, [], chunks=1000)
    assert status == 413 and body["error"]["code"] == "body_too_large"
    assert read == LIMIT // CHUNK + 1  # stopped at the first chunk beyond the limit


async def test_streamed_body_within_the_limit_is_scored(store: Path) -> None:
    async with running(settings_for(store, max_body_bytes=LIMIT)) as app:
        status, body, read = await call(app, [], chunks=4)  # 4096 bytes = 25.6 rows of 40 float32
    assert status == 422 and body["error"]["code"] == "invalid_binary_length"
    async with running(settings_for(store, max_body_bytes=LIMIT)) as app:
        status, body, _ = await call(app, [], chunks=5)  # 5120 bytes = 32 rows
    assert status == 200 and len(body["results"]) == 32


async def test_malformed_content_length_is_400(store: Path) -> None:
    async with running(settings_for(store)) as app:
        status, body, read = await call(app, [(b"content-length", b"12x")], chunks=1)
    assert status == 400 and body["error"]["code"] == "invalid_content_length"


async def test_client_disconnect_mid_body_is_not_a_server_error(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent: list[dict[str, Any]] = []
    messages = iter(
        [{"type": "http.request", "body": b"\0" * CHUNK, "more_body": True}, {"type": "http.disconnect"}]
    )

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/score/batch", "raw_path": b"/v1/score/batch", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/octet-stream")], "client": ("127.0.0.1", 1),
        "server": ("service", 80),
    }  # fmt: skip
    async with running(settings_for(store)) as app:
        await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"]["code"] == "client_disconnected"
    assert not [r for r in caplog.records if r.exc_info]
