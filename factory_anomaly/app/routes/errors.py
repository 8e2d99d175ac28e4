"""The one place errors become HTTP responses: `{"error": {"code", "message", "request_id"}}`, and on
the Open Inference Protocol's routes (`/v2`) its own shape, `{"error": "<code>: <message>"}`.

Renders the service's own errors (`app.errors.ServiceError`) and FastAPI's and Starlette's (404, 405,
request validation) in the same shape, with `X-Request-ID` set. Unexpected exceptions are caught by
`app.observability.middleware.ServiceMiddleware`, which logs them and renders a bare 500 here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from factory_anomaly.app.errors import ErrorCode, ServiceError
from factory_anomaly.app.observability.logs import request_id_var
from factory_anomaly.app.observability.metrics import ERROR_CODE_SCOPE_KEY

V2_PREFIX = "/v2"

_HTTP_CODES = {
    code.status: code
    for code in (
        ErrorCode.BAD_REQUEST,
        ErrorCode.UNAUTHORIZED,
        ErrorCode.FORBIDDEN,
        ErrorCode.NOT_FOUND,
        ErrorCode.METHOD_NOT_ALLOWED,
        ErrorCode.NOT_ACCEPTABLE,
        ErrorCode.BODY_TOO_LARGE,
        ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    )
}
"""The code of a framework HTTP error by its status; any other status is `http_error`."""


def error_response(error: ServiceError, scope: Scope | None = None) -> JSONResponse:
    """The error's JSON answer; with the request's ASGI `scope`, its code is left there for the metrics
    middleware (`anomaly_requests_rejected_total{code}`)."""
    if scope is not None:
        scope[ERROR_CODE_SCOPE_KEY] = error.code
    request_id = request_id_var.get()
    headers = dict(error.headers)
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    body: dict[str, Any]
    if scope is not None and is_v2(scope.get("path", "")):
        # the Open Inference Protocol's shape, which V2 clients read (tritonclient raises its "error"):
        # the code leads the message, the request id is in the header
        body = {"error": f"{error.code}: {error.message}"}
    else:
        body = {"error": {"code": error.code, "message": error.message, "request_id": request_id}}
    return JSONResponse(body, status_code=error.status, headers=headers)


def is_v2(path: str) -> bool:
    """Whether `path` is one of the Open Inference Protocol's (`/v2`, `/v2/...`)."""
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc, request.scope)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = "no such endpoint; see /docs"
    else:
        message = str(exc.detail)
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.HTTP_ERROR)
    error = ServiceError(message, code=code, status=exc.status_code, headers=exc.headers)
    return error_response(error, request.scope)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg', 'invalid')}"
        for error in exc.errors()
    ]
    message = "; ".join(problems[:5]) or "invalid request"
    return error_response(ServiceError(message, code=ErrorCode.VALIDATION_ERROR, status=422), request.scope)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
