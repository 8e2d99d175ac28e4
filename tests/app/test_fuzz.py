"""Fuzzing every endpoint from the app's own OpenAPI document (schemathesis): no answer is a 5xx, and every
answer is one the document declares (status code, content type, body schema).

The app runs in process with its real lifespan (schemathesis drives the ASGI lifespan itself and ends it
after the test) and scores with onnxruntime on the session's trained `small-ae` artifact. Valid API key and
admin token go with every request, so the fuzzer reaches the handlers; `test_fuzzing_needs_the_keys`
covers the requests without them.

Examples per operation: FUZZ_EXAMPLES (default 100, about 10 s here; `make fuzz` runs 2000).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from factory_anomaly.app.config import Settings
from factory_anomaly.app.main import create_app
from tests.app.conftest import ADMIN_TOKEN, API_KEY, serving, settings_for

N = 40  # sensors of the small model
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
AUTH = {"X-API-Key": API_KEY, "Authorization": f"Bearer {ADMIN_TOKEN}"}
"""Both credentials on every request: the API key routes read X-API-Key first, the admin route the bearer."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
"""Not `positive_data_acceptance`: the document cannot say how many values a reading has (that is the
serving model's n_sensors, which a reload may change), so a schema-valid `values` is usually refused 422
`wrong_length`, rightly."""


def _float32_rows(values: st.SearchStrategy[float]) -> st.SearchStrategy[bytes]:
    """Whole N x n little-endian float32 rows."""
    rows = st.lists(st.lists(values, min_size=N, max_size=N), min_size=1, max_size=8)
    return rows.map(lambda r: np.asarray(r, dtype="<f4").tobytes())


OCTET_STREAM_BODIES = st.one_of(
    st.binary(max_size=4 * N * 3 + 7),  # any length: mostly invalid_binary_length, sometimes whole rows
    _float32_rows(st.floats(-1e3, 1e3, width=32)),  # scored
    _float32_rows(st.floats(width=32)),  # any float32 bits: NaN / inf refused, huge values overflow the model
)
schemathesis.openapi.media_type("application/octet-stream", OCTET_STREAM_BODIES)


def _fit_to_sensors(body: Any) -> Any:
    """The generated body with `values`, each row of `vectors` and V2's `data` (its shape set to match) cut
    or padded to N entries (and an integer `top_k` brought into 1..N), so the body gets past
    `wrong_length` and its numbers reach the model."""
    if not isinstance(body, dict):
        return body

    def fit(row: Any) -> Any:
        return (row * N)[:N] if isinstance(row, list) and row else row

    fitted = dict(body)
    if "values" in fitted:
        fitted["values"] = fit(fitted["values"])
    if type(fitted.get("top_k")) is int:
        fitted["top_k"] = 1 + (fitted["top_k"] - 1) % N
    if isinstance(fitted.get("vectors"), list):
        fitted["vectors"] = [fit(row) for row in fitted["vectors"]]
        if isinstance(fitted.get("ids"), list) and fitted["ids"]:
            fitted["ids"] = fit(fitted["ids"])[: len(fitted["vectors"])]
    inputs = fitted.get("inputs")  # V2 infer: the readings' data and shape brought to N sensors
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        tensor = dict(inputs[0])
        data = tensor.get("data")
        if isinstance(data, list) and data and all(isinstance(row, list) for row in data):
            tensor["data"] = [fit(row) for row in data]
            tensor["shape"] = [len(data), N]
        elif isinstance(data, list) and data:
            tensor["data"] = fit(data)
            tensor["shape"] = [1, N]
        fitted["inputs"] = [tensor, *inputs[1:]]
    return fitted


def before_generate_body(context: Any, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Half the bodies as generated, half fitted to the model's sensor count."""
    return st.one_of(strategy, strategy.map(_fit_to_sensors))


def _fuzzed_settings(store: Path, **overrides: Any) -> Settings:
    return settings_for(
        store, api_keys=("other-key", API_KEY), admin_token=ADMIN_TOKEN, max_body_bytes=1 << 20, **overrides
    )


# The document is the app's own (`app.openapi()`), built at import because schemathesis parametrizes at
# collection; the app it fuzzes is built by the fixture on the session's artifact and must serve the same
# document. (`schemathesis.pytest.from_fixture` would defer both, but it breaks on pytest >= 9.2.)
schema = schemathesis.openapi.from_dict(create_app(_fuzzed_settings(Path("unused"))).openapi())
schema.config.generation.update(max_examples=FUZZ_EXAMPLES)
schema.hook(before_generate_body)


@pytest.fixture(scope="module")
def fuzzed_app(store: Path) -> FastAPI:
    app = create_app(_fuzzed_settings(store, log_level="WARNING"))  # not a line per fuzzed request
    assert app.openapi() == schema.raw_schema
    return app


@schema.parametrize()
# derandomize: `make test` fuzzes the same examples on every run (a CI failure reproduces); `make fuzz`
# (FUZZ_EXAMPLES set) explores fresh ones each time
@settings(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    print_blob=True,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
)
def test_fuzzing_finds_no_server_error_and_no_undocumented_answer(
    case: schemathesis.Case, fuzzed_app: FastAPI
) -> None:
    case.call_and_validate(app=fuzzed_app, headers=AUTH, checks=CHECKS)


@pytest.mark.anyio
async def test_fuzzing_needs_the_keys(store: Path) -> None:
    """What the fuzzer never sends: no credentials, or wrong ones; each answer a documented one."""
    settings_ = settings_for(store, api_keys=(API_KEY,), admin_token=ADMIN_TOKEN)
    async with serving(settings_) as client:
        for method, path in [("POST", "/v1/score"), ("GET", "/v1/model"), ("POST", "/v1/admin/reload")]:
            wrong = 403 if "admin" in path else 401
            for headers, status in [({}, 401), ({"Authorization": "Bearer nope"}, wrong)]:
                response = await client.request(method, path, headers=headers)
                assert response.status_code == status, (path, headers, response.text)
                assert str(status) in schema.raw_schema["paths"][path][method.lower()]["responses"]
                schema[path][method].validate_response(response)  # the body, against the documented one
