"""The catch-all: an unexpected exception is a 500 that logs its traceback and tells the client nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from factory_anomaly.app.observability.middleware import request_id_from
from tests.app.conftest import running, settings_for

pytestmark = pytest.mark.anyio


async def test_unexpected_exception_is_a_bare_500_with_a_logged_traceback(
    store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(settings_for(store)) as app:

        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("secret internal detail /etc/passwd")

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            with caplog.at_level(logging.ERROR, logger="app.request"):
                response = await client.get("/boom", headers={"X-Request-ID": "boom-1"})
            after = await client.get("/healthz")
    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "boom-1"
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "internal error; quote the request id to the operator",
            "request_id": "boom-1",
        }
    }
    assert "secret" not in response.text
    [record] = [r for r in caplog.records if r.name == "app.request" and r.levelno == logging.ERROR]
    assert record.exc_info is not None and "secret internal detail" in str(record.exc_info[1])
    assert after.status_code == 200


async def test_framework_errors_share_the_error_shape(store: Path) -> None:
    async with running(settings_for(store)) as app:

        @app.get("/typed")
        async def typed(n: int) -> dict[str, int]:
            return {"n": n}

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            not_found = await client.get("/v1/nothing-here")
            not_allowed = await client.get("/v1/score")
            invalid = await client.get("/typed", params={"n": "x"})
    assert not_found.status_code == 404 and not_found.json()["error"]["code"] == "not_found"
    assert not_allowed.status_code == 405 and not_allowed.json()["error"]["code"] == "method_not_allowed"
    assert not_allowed.headers["Allow"] == "POST"
    assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "validation_error"
    assert "query.n" in invalid.json()["error"]["message"]
    for response in (not_found, not_allowed, invalid):
        assert response.json()["error"]["request_id"] == response.headers["X-Request-ID"]


def test_request_id_from_headers() -> None:
    assert request_id_from([(b"x-request-id", b"abc-1.2_3")]) == "abc-1.2_3"
    assert len(request_id_from([(b"x-request-id", "é".encode())])) == 32
    assert len(request_id_from([])) == 32


@pytest.mark.parametrize(("sample", "ok_lines"), [(0.25, 2), (0.4, 3), (0.0, 0), (1.0, 8), (1e-320, 1)])
async def test_successes_write_a_sampled_access_line_and_every_error_writes_one(
    store: Path, caplog: pytest.LogCaptureFixture, sample: float, ok_lines: int
) -> None:
    async with running(settings_for(store, access_log_sample=sample)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            with caplog.at_level(logging.INFO, logger="app.request"):
                for i in range(8):
                    assert (
                        await client.get("/healthz", headers={"X-Request-ID": f"ok-{i}"})
                    ).status_code == 200
                    if i % 4 == 0:
                        assert (
                            await client.get("/nowhere", headers={"X-Request-ID": f"no-{i}"})
                        ).status_code == 404
    lines = [r for r in caplog.records if r.name == "app.request" and r.getMessage() == "request"]
    by_status = {200: [], 404: []}
    for record in lines:
        by_status[record.__dict__["status"]].append(record.__dict__["path"])
    assert len(by_status[200]) == ok_lines  # the share `sample` of 8 successes, the first included
    assert by_status[404] == ["/nowhere", "/nowhere"]  # errors always
