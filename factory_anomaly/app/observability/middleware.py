"""One pure-ASGI layer around the app (no BaseHTTPMiddleware): request ids, the request metrics, one
access log line, the catch-all 500, and the hot routes dispatched straight to their endpoints.

Request id: the client's `X-Request-ID` when it is a sane token (1-128 of [A-Za-z0-9._-]), otherwise a
fresh uuid4 hex. It is echoed in the response header, put in every error body and on every log line of
the request (`app.logs.request_id_var`).

Header size: uvicorn's C parser (httptools, which it uses when installed, as we install it) accepts a
header block of any size, where its pure-Python h11 stopped near 16 KiB. A block over `MAX_HEADER_BYTES`
(names and values, summed) is answered 431 `headers_too_large` here, with `Connection: close`, before
any route runs. The bytes have been read by then: bounding the memory a client can make the server hold
for headers is a job for the proxy in front (docs/reliability.md).

Access line: one per request, `method`, `path`, `status`, `duration_ms`; for 2xx answers only a share
ACCESS_LOG_SAMPLE of them, evenly spread (`app.config.Settings.access_log_sample`), every other status
always.

Metrics: per request, two clock reads, a gauge up and down, one histogram observation on a cached child;
the route template is the `route` in the scope (Starlette's router leaves it there; the hot dispatch
sets it). The status is the final one, the catch-all 500 included; a request that fails before its answer
starts counts as a 5xx.

Hot routes (`HotRoute`, built by `app.routes.hot`): POST /v1/score, /v1/score/batch and /v1/explain go
from here to their endpoint function, skipping FastAPI's routing and request machinery (dependency
solving, exit stacks, the exception middleware), which cost as much as the work itself on a single
reading (docs/benchmarks.md). The endpoint is the same function the router would call, and a
`ServiceError` it raises is rendered by the same `error_response`, so the answer is byte for byte the one
the router gives; anything else goes the normal way.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from factory_anomaly.app.errors import HeadersTooLarge, ServiceError
from factory_anomaly.app.observability.logs import request_id_var
from factory_anomaly.app.observability.metrics import Metrics
from factory_anomaly.app.routes.errors import error_response

log = logging.getLogger("app.request")

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_BYTES = REQUEST_ID_HEADER.encode()
MAX_HEADER_BYTES = 32 * 1024
"""Largest header block (names + values) a request may carry; browsers and proxies send a few KiB."""
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == REQUEST_ID_BYTES and _SANE_REQUEST_ID.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


@dataclass(frozen=True)
class HotRoute:
    """A route dispatched without the router: its APIRoute (the metrics' template) and endpoint."""

    route: Any  # fastapi.routing.APIRoute: `path_format` is the metrics' route label
    endpoint: Callable[[Request], Awaitable[Response]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self.route
        try:
            response = await self.endpoint(Request(scope, receive))
        except ServiceError as exc:
            response = error_response(exc, scope)
        await response(scope, receive, send)


class ServiceMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        hot: Mapping[tuple[str, str], HotRoute] | None = None,
        access_log_sample: float = 1.0,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.hot = dict(hot or {})  # (method, path) -> HotRoute
        # a share `sample` of the 2xx answers write their access line, evenly spread and the first one
        # included (a credit of `sample` per success, a line whenever it reaches 1); others always do
        self._sample = access_log_sample
        self._credit = 1.0 - access_log_sample

    def _logs_success(self) -> bool:
        if self._sample <= 0.0:
            return False
        self._credit += self._sample
        if self._credit < 1.0 - 1e-9:
            return False
        self._credit -= 1.0
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        request_id = request_id_from(scope["headers"])
        token = request_id_var.set(request_id)
        started = perf_counter()
        status: list[int | None] = [None]
        id_header = (REQUEST_ID_BYTES, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = list(message.get("headers", ()))
                if not any(name.lower() == REQUEST_ID_BYTES for name, _ in headers):
                    headers.append(id_header)
                message = {**message, "headers": headers}
            await send(message)

        metrics.in_flight.inc()
        try:
            header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
            if header_bytes > MAX_HEADER_BYTES:
                refused = HeadersTooLarge(
                    f"the request's headers take {header_bytes} bytes; at most {MAX_HEADER_BYTES} are read"
                )
                await error_response(refused, scope)(scope, receive, send_with_id)
                return
            hot = self.hot.get((scope["method"], scope["path"]))
            await (hot or self.app)(scope, receive, send_with_id)
        except Exception:
            # Anything the exception handlers did not turn into a response is a bug: log the traceback,
            # tell the client nothing but the request id.
            log.exception("unhandled error", extra={"method": scope["method"], "path": scope["path"]})
            if status[0] is not None:
                status[0] = None  # the answer had started; the server can only drop the connection
                raise
            error = ServiceError("internal error; quote the request id to the operator")
            await error_response(error, scope)(scope, receive, send_with_id)
        except BaseException:
            status[0] = None  # the answer did not complete: count it as a server error
            raise
        finally:
            seconds = perf_counter() - started
            metrics.observe_request(scope, status[0], seconds)
            metrics.in_flight.dec()
            code = status[0]
            if code is None or not 200 <= code < 300 or self._logs_success():
                log.info(
                    "request",
                    extra={"method": scope["method"], "path": scope["path"], "status": code,
                           "duration_ms": round(seconds * 1000, 3)},
                )  # fmt: skip
            request_id_var.reset(token)
