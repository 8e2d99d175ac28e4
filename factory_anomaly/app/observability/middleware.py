"""Pure ASGI middleware (no BaseHTTPMiddleware): request ids, one access log line, the catch-all 500, and
the request metrics (`MetricsMiddleware`).

Request id: the client's `X-Request-ID` when it is a sane token (1-128 of [A-Za-z0-9._-]), otherwise a
fresh uuid4 hex. It is echoed in the response header, put in every error body and on every log line of
the request (`app.logs.request_id_var`).

Header size: uvicorn's C parser (httptools, which it uses when installed, as we install it) accepts a
header block of any size, where its pure-Python h11 stopped near 16 KiB. A block over `MAX_HEADER_BYTES`
(names and values, summed) is answered 431 `headers_too_large` here, with `Connection: close`, before
any route runs. The bytes have been read by then: bounding the memory a client can make the server hold
for headers is a job for the proxy in front (docs/reliability.md).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from time import perf_counter
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from factory_anomaly.app.errors import HeadersTooLarge, ServiceError
from factory_anomaly.app.observability.logs import request_id_var
from factory_anomaly.app.observability.metrics import Metrics
from factory_anomaly.app.routes.errors import error_response

log = logging.getLogger("app.request")

REQUEST_ID_HEADER = "x-request-id"
MAX_HEADER_BYTES = 32 * 1024
"""Largest header block (names + values) a request may carry; browsers and proxies send a few KiB."""
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_HEADER.encode() and _SANE_REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status: dict[str, Any] = {"code": None}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                if not any(name.lower() == REQUEST_ID_HEADER.encode() for name, _ in headers):
                    headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
            if header_bytes > MAX_HEADER_BYTES:
                refused = HeadersTooLarge(
                    f"the request's headers take {header_bytes} bytes; at most {MAX_HEADER_BYTES} are read"
                )
                await error_response(refused, scope)(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Anything the exception handlers did not turn into a response is a bug: log the traceback,
            # tell the client nothing but the request id.
            log.exception("unhandled error", extra={"method": scope["method"], "path": scope["path"]})
            if status["code"] is not None:
                raise  # the response has started; the server can only drop the connection
            error = ServiceError("internal error; quote the request id to the operator")
            response = error_response(error, scope)
            await response(scope, receive, send_with_id)
        finally:
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status["code"],
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )
            request_id_var.reset(token)


class MetricsMiddleware:
    """Pure ASGI: times each HTTP request and counts error answers by code.

    Added after (so outside) `RequestContextMiddleware`, it sees the final status, the catch-all 500
    included. Per request: two clock reads, a gauge up and down, one histogram observation on a cached
    child; the route template is the `route` Starlette's router leaves in the scope.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        status: list[int | None] = [None]

        async def send_recording_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        metrics.in_flight.inc()
        started = perf_counter()
        try:
            await self.app(scope, receive, send_recording_status)
        except BaseException:
            status[0] = None  # the answer did not complete: count it as a server error
            raise
        finally:
            metrics.observe_request(scope, status[0], perf_counter() - started)
            metrics.in_flight.dec()
