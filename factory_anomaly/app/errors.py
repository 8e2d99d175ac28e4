"""Domain errors: each carries its HTTP status and a stable `code` that clients and dashboards key on.

Standard library only, so the inference core (`readings`, `scoring`, `registry`) raises these without
importing a web framework. `app.routes.errors` renders every one of them, and FastAPI's and Starlette's
own errors, as `{"error": {"code": ..., "message": ..., "request_id": ...}}`.

  status  code                    raised when
  400     malformed_json          the body is not JSON (or not UTF-8)
  400     invalid_content_length  Content-Length is not a non-negative integer
  400     client_disconnected     the client went away mid-body (logged; nobody reads the answer)
  401     missing_api_key         API keys are configured and the request carries none
  401     invalid_api_key         ... and the key it carries is not one of them
  401     missing_admin_token     an admin endpoint without `Authorization: Bearer <token>`
  403     invalid_admin_token     ... with a token that is not ADMIN_TOKEN
  403     admin_disabled          an admin endpoint while ADMIN_TOKEN is unset
  404     not_found               no such route
  404     explainer_unavailable   POST /v1/explain while the serving version has no explainer graph
  405     method_not_allowed      the route exists, the method does not
  408     body_timeout            the body did not arrive whole within BODY_TIMEOUT_S (Connection: close)
  409     <ArtifactError code>    a reload failed; the previous model keeps serving (see `ReloadFailed`)
  413     body_too_large          the body is larger than MAX_BODY_BYTES
  413     batch_too_large         more rows than MAX_BATCH
  415     unsupported_media_type  Content-Type missing or not one the endpoint accepts
  431     headers_too_large       the request's header block is larger than MAX_HEADER_BYTES (app.middleware)
  422     invalid_type            a field or the body has the wrong JSON type
  422     missing_field           a required field is absent
  422     unknown_field           a field the endpoint does not know (a misspelt field is never ignored)
  422     duplicate_field         a field given twice in the JSON object (never silently one of the two)
  422     invalid_value           a reading element is not a JSON number (null, boolean, string, list)
  422     non_finite_value        NaN / Infinity / -Infinity (JSON tokens or float32 bits)
  422     value_out_of_range      a number beyond float32 (|x| > 3.4028235e38, e.g. 1e39, 1e309)
  422     wrong_length            a vector does not have one value per sensor
  422     empty_batch             no rows
  422     ids_mismatch            `ids` does not have one entry per vector
  422     invalid_top_k           `top_k` of /v1/explain is not an integer from 1 to n_sensors
  422     invalid_binary_length   an octet-stream body that is not a whole number of float32 rows
  422     empty_body              an octet-stream body with no bytes
  422     invalid_version         a version name that cannot be a version directory
  422     validation_error        FastAPI's own request validation
  500     internal_error          a bug; logged with its traceback, the body says nothing more
  503     model_unavailable       no model is loaded (the message says why)
  503     overloaded              the micro-batching queue is full (Retry-After: 1); see app.batching
"""

from __future__ import annotations

from collections.abc import Mapping


class ServiceError(Exception):
    """An error with an HTTP status and a stable code; `message` is safe to show to the client."""

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})


class MalformedRequest(ServiceError):
    status, code = 400, "malformed_json"


class Unauthorized(ServiceError):
    """401; carries `WWW-Authenticate: Bearer` as RFC 9110 asks of a 401."""

    status, code = 401, "missing_api_key"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    status, code = 403, "invalid_admin_token"


class BodyTimeout(ServiceError):
    """408: the client did not send the whole body within BODY_TIMEOUT_S (a stalled or trickling upload,
    or a Content-Length larger than what it sends). `Connection: close`: the rest of that body, should it
    come, must not be read as the next request."""

    status, code = 408, "body_timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class PayloadTooLarge(ServiceError):
    status, code = 413, "body_too_large"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class InvalidInput(ServiceError):
    """422: the request is well-formed JSON or binary, but its content cannot be scored."""

    status, code = 422, "invalid_type"


class ReloadFailed(ServiceError):
    """409: a requested load failed; `code` is the reason's code (an ArtifactError code such as
    `checksum_mismatch`, or `provider_unavailable`, `graph_mismatch`, `model_invalid`, `warmup_failed`).

    409 because the request was fine but conflicts with what the store holds; the previous model, if
    any, keeps serving."""

    status, code = 409, "load_failed"


class ModelUnavailable(ServiceError):
    status, code = 503, "model_unavailable"


class ExplainerUnavailable(ServiceError):
    """404: the serving model version has no explainer graph. Not 503: the service is up and scoring,
    and retrying will not help until a version with an explainer is loaded."""

    status, code = 404, "explainer_unavailable"


class Overloaded(ServiceError):
    """503: more single readings are waiting for a micro-batch than MICROBATCH_QUEUE_SIZE allows. Refused
    at once with Retry-After, so a client backs off instead of every wait growing without bound."""

    status, code = 503, "overloaded"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class HeadersTooLarge(ServiceError):
    """431: the header block is larger than the service reads (`app.middleware.MAX_HEADER_BYTES`). The
    connection is closed: a client sending such headers is broken or hostile."""

    status, code = 431, "headers_too_large"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})
