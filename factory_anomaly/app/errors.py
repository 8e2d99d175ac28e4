"""Domain errors: each carries its HTTP status and a stable `code` that clients and dashboards key on.

`ErrorCode` is the one list of codes the service answers with, each with its status and when it is raised;
the metrics' `code` label values, the framework-error mapping (`routes.errors`) and the table in
docs/serving.md are derived from it or checked against it (tests/app/test_errors.py). Load failures
(`ReloadFailed` 409, `/readyz` and `model_unavailable` 503) carry an `ArtifactCode` of the artifact contract
or one of the load codes below.

Standard library only, so the inference core (`wire.parse`, `model`, `serving`) raises these without
importing a web framework. `routes.errors` renders every one of them, and FastAPI's and Starlette's own
errors, as `{"error": {"code": ..., "message": ..., "request_id": ...}}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class ErrorCode(StrEnum):
    """A code of the service's error answers; the value is the wire string."""

    status: int
    when: str

    def __new__(cls, value: str, status: int, when: str) -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status, member.when = status, when
        return member

    MALFORMED_JSON = "malformed_json", 400, "the body is not JSON (or not UTF-8)"
    INVALID_CONTENT_LENGTH = "invalid_content_length", 400, "Content-Length is not a non-negative integer"
    CLIENT_DISCONNECTED = (
        "client_disconnected",
        400,
        "the client went away mid-body (nobody reads the answer)",
    )
    BAD_REQUEST = "bad_request", 400, "the framework refused the request (HTTP 400)"
    MISSING_API_KEY = "missing_api_key", 401, "API keys are configured and the request carries none"
    INVALID_API_KEY = "invalid_api_key", 401, "the API key it carries is not one of them"
    MISSING_ADMIN_TOKEN = "missing_admin_token", 401, "an admin endpoint without `Authorization: Bearer`"
    UNAUTHORIZED = "unauthorized", 401, "the framework refused the request (HTTP 401)"
    INVALID_ADMIN_TOKEN = "invalid_admin_token", 403, "an admin endpoint with a token that is not ADMIN_TOKEN"
    ADMIN_DISABLED = "admin_disabled", 403, "an admin endpoint while ADMIN_TOKEN is unset"
    FORBIDDEN = "forbidden", 403, "the framework refused the request (HTTP 403)"
    NOT_FOUND = "not_found", 404, "no such route"
    EXPLAINER_UNAVAILABLE = (
        "explainer_unavailable",
        404,
        "POST /v1/explain while the version has no explainer",
    )
    METHOD_NOT_ALLOWED = "method_not_allowed", 405, "the route exists, the method does not"
    NOT_ACCEPTABLE = "not_acceptable", 406, "the framework refused the request (HTTP 406)"
    BODY_TIMEOUT = "body_timeout", 408, "the body did not arrive whole within BODY_TIMEOUT_S"
    LOAD_FAILED = "load_failed", 409, "a reload failed (the answer carries the load failure's own code)"
    BODY_TOO_LARGE = "body_too_large", 413, "the body is larger than MAX_BODY_BYTES"
    BATCH_TOO_LARGE = "batch_too_large", 413, "more rows than MAX_BATCH"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type", 415, "Content-Type missing or not accepted"
    HEADERS_TOO_LARGE = "headers_too_large", 431, "the header block is larger than MAX_HEADER_BYTES"
    INVALID_TYPE = "invalid_type", 422, "a field or the body has the wrong JSON type"
    MISSING_FIELD = "missing_field", 422, "a required field is absent"
    UNKNOWN_FIELD = "unknown_field", 422, "a field the endpoint does not know (never silently ignored)"
    DUPLICATE_FIELD = "duplicate_field", 422, "a field given twice in the JSON object"
    INVALID_VALUE = "invalid_value", 422, "a reading element is not a JSON number"
    NON_FINITE_VALUE = "non_finite_value", 422, "NaN / Infinity / -Infinity (JSON tokens or float32 bits)"
    VALUE_OUT_OF_RANGE = "value_out_of_range", 422, "a number beyond float32 (|x| > 3.4028235e38)"
    WRONG_LENGTH = "wrong_length", 422, "a vector does not have one value per sensor"
    EMPTY_BATCH = "empty_batch", 422, "no rows"
    IDS_MISMATCH = "ids_mismatch", 422, "`ids` does not have one entry per vector"
    INVALID_TOP_K = "invalid_top_k", 422, "`top_k` of /v1/explain is not an integer from 1 to n_sensors"
    INVALID_BINARY_LENGTH = "invalid_binary_length", 422, "an octet-stream body not a whole number of rows"
    EMPTY_BODY = "empty_body", 422, "an octet-stream body with no bytes"
    INVALID_VERSION = "invalid_version", 422, "a version name that cannot be a version directory"
    INVALID_ASSET = "invalid_asset", 422, "an asset name not 1-128 characters of [A-Za-z0-9._:/-]"
    ASSET_MISMATCH = "asset_mismatch", 422, "the body's `asset` differs from the X-Asset header"
    INVALID_TS = "invalid_ts", 422, "a timestamp that is not RFC 3339 with a zone or Unix seconds"
    INVALID_SHELVE = "invalid_shelve", 422, "a shelve without a positive `duration_s` (at most a year)"
    ALARM_NOT_FOUND = "alarm_not_found", 404, "no alarm episode with that id"
    ASSET_NOT_FOUND = "asset_not_found", 404, "no asset of that name has been seen (or it was evicted)"
    NO_SHADOW = "no_shadow", 409, "promoting the shadow version while none is loaded"
    SHADOW_MISMATCH = (
        "shadow_mismatch",
        409,
        "a shadow version whose sensors (names, order) are not the serving version's",
    )
    # The Open Inference Protocol (V2, `/v2`): what its requests can get wrong that /v1's cannot.
    UNKNOWN_MODEL = "unknown_model", 404, "a V2 model name that is not served, or a version not serving"
    UNSUPPORTED_ENCODING = "unsupported_encoding", 415, "a Content-Encoding other than gzip or deflate"
    CORRUPT_ENCODING = "corrupt_encoding", 400, "a gzip or deflate body that does not decompress whole"
    INVALID_HEADER_LENGTH = (
        "invalid_header_length",
        400,
        "Inference-Header-Content-Length is not a byte count within the body",
    )
    UNKNOWN_TENSOR = "unknown_tensor", 422, "a V2 input or output the model does not have, or one missing"
    INVALID_DATATYPE = "invalid_datatype", 422, "a V2 input whose datatype is not the model's (FP32)"
    INVALID_SHAPE = "invalid_shape", 422, "a V2 input whose shape is not [N, n_sensors] or not its data's"
    INVALID_PARAMETER = "invalid_parameter", 422, "a V2 parameter the service does not know, or mistyped"
    VALIDATION_ERROR = "validation_error", 422, "FastAPI's own request validation"
    INTERNAL_ERROR = "internal_error", 500, "a bug; logged with its traceback, the body says nothing more"
    MODEL_UNAVAILABLE = "model_unavailable", 503, "no model is loaded (the message says why)"
    OVERLOADED = "overloaded", 503, "the micro-batching queue is full (Retry-After: 1)"
    JOURNAL_UNAVAILABLE = "journal_unavailable", 503, "/readyz while the alarm journal cannot be written"
    HTTP_ERROR = "http_error", 400, "any other HTTP error of the framework (its own status)"
    # Load failures after verification (`model.loader.ModelLoadError`): 409 from a reload, 503 from /readyz.
    PROVIDER_UNAVAILABLE = "provider_unavailable", 409, "the asked-for execution provider is not available"
    MODEL_INVALID = "model_invalid", 409, "onnxruntime cannot load the graph"
    GRAPH_MISMATCH = "graph_mismatch", 409, "the graph is not what the manifest or the service contract says"
    WARMUP_FAILED = "warmup_failed", 409, "the warm-up run failed or gave outputs of the wrong shape"


class ServiceError(Exception):
    """An error with an HTTP status and a stable code; `message` is safe to show to the client."""

    status: int = ErrorCode.INTERNAL_ERROR.status
    code: str = ErrorCode.INTERNAL_ERROR

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.code, ErrorCode):
            raise TypeError(f"{cls.__name__}.code must be an ErrorCode, got {cls.code!r}")
        cls.status = cls.code.status  # a class answers with its code's status

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
            if isinstance(code, ErrorCode):
                self.status = code.status
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})


class MalformedRequest(ServiceError):
    code = ErrorCode.MALFORMED_JSON


class Unauthorized(ServiceError):
    """401; carries `WWW-Authenticate: Bearer` as RFC 9110 asks of a 401."""

    code = ErrorCode.MISSING_API_KEY

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ServiceError):
    code = ErrorCode.INVALID_ADMIN_TOKEN


class BodyTimeout(ServiceError):
    """408: the client did not send the whole body within BODY_TIMEOUT_S (a stalled or trickling upload,
    or a Content-Length larger than what it sends). `Connection: close`: the rest of that body, should it
    come, must not be read as the next request."""

    code = ErrorCode.BODY_TIMEOUT

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})


class PayloadTooLarge(ServiceError):
    code = ErrorCode.BODY_TOO_LARGE


class UnsupportedMediaType(ServiceError):
    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class InvalidInput(ServiceError):
    """422: the request is well-formed JSON or binary, but its content cannot be scored."""

    code = ErrorCode.INVALID_TYPE


class NotFound(ServiceError):
    """404 for a thing the request names that the service does not hold (an alarm, an asset)."""

    code = ErrorCode.ALARM_NOT_FOUND


class ReloadFailed(ServiceError):
    """409: a requested load failed; `code` is the reason's code (an ArtifactError code such as
    `checksum_mismatch`, or `provider_unavailable`, `graph_mismatch`, `model_invalid`, `warmup_failed`).

    409 because the request was fine but conflicts with what the store holds; the previous model, if
    any, keeps serving."""

    code = ErrorCode.LOAD_FAILED


class ModelUnavailable(ServiceError):
    code = ErrorCode.MODEL_UNAVAILABLE


class ExplainerUnavailable(ServiceError):
    """404: the serving model version has no explainer graph. Not 503: the service is up and scoring,
    and retrying will not help until a version with an explainer is loaded."""

    code = ErrorCode.EXPLAINER_UNAVAILABLE


class Overloaded(ServiceError):
    """503: more single readings are waiting for a micro-batch than MICROBATCH_QUEUE_SIZE allows. Refused
    at once with Retry-After, so a client backs off instead of every wait growing without bound."""

    code = ErrorCode.OVERLOADED

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class HeadersTooLarge(ServiceError):
    """431: the header block is larger than the service reads (`app.middleware.MAX_HEADER_BYTES`). The
    connection is closed: a client sending such headers is broken or hostile."""

    code = ErrorCode.HEADERS_TOO_LARGE

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Connection": "close"})
