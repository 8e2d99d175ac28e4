"""The Open Inference Protocol (V2) with Triton's binary tensor extension: driven by the real client,
`tritonclient.http`, against a real uvicorn (binary and JSON both ways, health, metadata, compression, bad
input), and every refusal of the request parser in process, each answered in V2's error shape."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from factory_anomaly.app.wire import v2 as wire_v2
from factory_anomaly.artifact import Manifest
from tests.app.conftest import (
    API_KEY,
    AUTH,
    MODEL_NAME,
    LiveServer,
    anomalous,
    running,
    serving,
    settings_for,
)

N = 40  # sensors of the small model


def key() -> dict[str, str]:
    """The API key header, a fresh dict per call: tritonclient adds its headers to the dict it is given."""
    return {"X-API-Key": API_KEY}


INFER = f"/v2/models/{MODEL_NAME}/infer"


@pytest.fixture(scope="module")
def triton_client(live: LiveServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(live.url.removeprefix("http://"))
    yield client
    client.close()


def random_rows(rows: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, N)).astype(np.float32)


def readings_input(x: np.ndarray, binary: bool, datatype: str = "FP32") -> triton.InferInput:
    tensor = triton.InferInput("readings", list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def batch_scores(client: httpx.Client, x: np.ndarray) -> np.ndarray:
    answer = client.post("/v1/score/batch", json={"vectors": x.tolist()}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    return np.asarray([result["score"] for result in answer.json()["results"]], dtype=np.float32)


# --- through tritonclient, on a real uvicorn ---------------------------------------------------------------


def test_health_and_metadata(triton_client: triton.InferenceServerClient, manifest: Manifest) -> None:
    assert triton_client.is_server_live() and triton_client.is_server_ready()  # open, as the probes are
    server = triton_client.get_server_metadata()
    assert server["name"] == "factory-anomaly" and "binary_tensor_data" in server["extensions"]
    assert triton_client.is_model_ready(MODEL_NAME, headers=key())
    assert triton_client.is_model_ready(MODEL_NAME, manifest.version, headers=key())
    assert not triton_client.is_model_ready(MODEL_NAME, "19700101T000000Z-0", headers=key())
    assert not triton_client.is_model_ready("other-model", headers=key())
    metadata = triton_client.get_model_metadata(MODEL_NAME, headers=key())
    assert metadata == triton_client.get_model_metadata(MODEL_NAME, manifest.version, headers=key())
    assert metadata["versions"] == [manifest.version] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "readings", "datatype": "FP32", "shape": [-1, N]}]
    assert metadata["outputs"] == [
        {"name": "score", "datatype": "FP32", "shape": [-1]},
        {"name": "is_anomaly", "datatype": "BOOL", "shape": [-1]},
        {"name": "sensor_error", "datatype": "FP32", "shape": [-1, N]},
    ]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_equals_the_v1_batch(
    triton_client: triton.InferenceServerClient,
    client: httpx.Client,
    reference: ort.InferenceSession,
    manifest: Manifest,
    readings: np.ndarray,
    binary: bool,
) -> None:
    x = np.concatenate([readings[:5], np.tile(anomalous(manifest), (3, 1))])
    outputs = [
        triton.InferRequestedOutput(name, binary_data=binary)
        for name in ("score", "is_anomaly", "sensor_error")
    ]
    result = triton_client.infer(
        MODEL_NAME, [readings_input(x, binary)], outputs=outputs, request_id="batch-7", headers=key()
    )
    scores = result.as_numpy("score")
    assert scores.dtype == np.float32 and np.array_equal(scores, batch_scores(client, x))
    expected_scores, expected_error = reference.run(["score", "sensor_error"], {"readings": x})
    assert np.array_equal(scores, expected_scores)
    assert np.array_equal(result.as_numpy("sensor_error"), expected_error)
    flags = result.as_numpy("is_anomaly")
    assert (
        flags.dtype == np.bool_
        and flags.tolist() == (scores.astype(np.float64) > manifest.threshold.value).tolist()
    )
    assert flags[-3:].all() and not flags[:5].all()
    answer = result.get_response()
    assert answer["id"] == "batch-7" and answer["model_name"] == MODEL_NAME
    assert answer["model_version"] == manifest.version
    assert answer["parameters"]["threshold"] == manifest.threshold.value


def test_default_outputs_are_binary_score_and_flag(
    triton_client: triton.InferenceServerClient, client: httpx.Client
) -> None:
    """No outputs named: tritonclient asks for every output in binary; the service answers score and
    is_anomaly (sensor_error only when named), and its id is the request id."""
    x = random_rows(3)
    result = triton_client.infer(
        MODEL_NAME, [readings_input(x, binary=True)], headers=key() | {"X-Request-ID": "rq-1"}
    )
    answer = result.get_response()
    assert [output["name"] for output in answer["outputs"]] == ["score", "is_anomaly"]
    assert all("binary_data_size" in output["parameters"] for output in answer["outputs"])
    assert answer["id"] == "rq-1"
    assert np.array_equal(result.as_numpy("score"), batch_scores(client, x))
    assert result.as_numpy("sensor_error") is None


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(
    triton_client: triton.InferenceServerClient, client: httpx.Client, algorithm: str
) -> None:
    x = random_rows(4, seed=3)
    result = triton_client.infer(
        MODEL_NAME, [readings_input(x, binary=True)], headers=key(), request_compression_algorithm=algorithm
    )
    assert np.array_equal(result.as_numpy("score"), batch_scores(client, x))


def test_an_asset_gets_its_alarms_in_the_parameters(
    triton_client: triton.InferenceServerClient, manifest: Manifest
) -> None:
    x = np.tile(anomalous(manifest), (4, 1))
    result = triton_client.infer(
        MODEL_NAME, [readings_input(x, binary=True)], headers=key() | {"X-Asset": "v2-press-1"}
    )
    parameters = result.get_response()["parameters"]
    assert parameters["asset"] == "v2-press-1"
    alarms = json.loads(parameters["alarms"])
    assert len(alarms) == 4 and all("alarm" in entry for entry in alarms)
    assert alarms[-1]["alarm"]["readings"] >= 1


@pytest.mark.parametrize(
    ("make", "status", "code"),
    [
        (lambda: readings_input(random_rows(2)[:, :-1], True), 422, "invalid_shape"),
        (lambda: readings_input(random_rows(2).astype(np.float64), True, "FP64"), 422, "invalid_datatype"),
        (lambda: readings_input(np.full((2, N), np.nan, np.float32), True), 422, "non_finite_value"),
        (lambda: readings_input(np.full((2, N), np.inf, np.float32), False), 422, "non_finite_value"),
    ],
    ids=["shape", "datatype", "nan-binary", "inf-json"],
)
def test_bad_input_through_the_client(
    triton_client: triton.InferenceServerClient, make: Any, status: int, code: str
) -> None:
    with pytest.raises(InferenceServerException) as refused:
        triton_client.infer(MODEL_NAME, [make()], headers=key())
    assert refused.value.status() == str(status)
    assert refused.value.message().startswith(f"{code}: ")


def test_unknown_model_and_missing_key(triton_client: triton.InferenceServerClient) -> None:
    tensor = readings_input(random_rows(1), True)
    with pytest.raises(InferenceServerException) as unknown:
        triton_client.infer("other-model", [tensor], headers=key())
    assert unknown.value.status() == "404" and unknown.value.message().startswith("unknown_model: ")
    with pytest.raises(InferenceServerException) as keyless:
        triton_client.infer(MODEL_NAME, [tensor])
    assert keyless.value.status() == "401" and keyless.value.message().startswith("missing_api_key: ")


def test_metrics_label_the_v2_routes(
    triton_client: triton.InferenceServerClient, client: httpx.Client
) -> None:
    triton_client.infer(MODEL_NAME, [readings_input(random_rows(2), True)], headers=key())
    text = client.get("/metrics").text
    infer_route = 'route="/v2/models/{model_name}/infer"'
    assert any(
        line.startswith("anomaly_http_request_duration_seconds_count{")
        and infer_route in line
        and 'status_class="2xx"' in line
        and not line.endswith(" 0.0")
        for line in text.splitlines()
    )
    assert any(
        line.startswith("anomaly_batch_size_rows_count{") and infer_route in line
        for line in text.splitlines()
    )


# --- the request parser's refusals, in process --------------------------------------------------------------


def request_json(x: np.ndarray | None = None, **fields: Any) -> dict[str, Any]:
    x = random_rows(2) if x is None else x
    body: dict[str, Any] = {
        "inputs": [
            {"name": "readings", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ]
    }
    return body | fields


def binary_body(
    x: np.ndarray, header: dict[str, Any] | None = None, binary_output: bool = False
) -> tuple[bytes, dict[str, str]]:
    """The binary extension's body: `header` (default: the readings' input) then the float32 bytes."""
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    header = header or {
        "parameters": {"binary_data_output": binary_output},
        "inputs": [
            {
                "name": "readings",
                "datatype": "FP32",
                "shape": list(x.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
    }
    text = json.dumps(header).encode()
    return text + raw, {"Inference-Header-Content-Length": str(len(text))}


def raw_data(text: str, shape: list[int]) -> bytes:
    """An infer body with `data` written verbatim (to send tokens json.dumps cannot)."""
    tensor = f'{{"name": "readings", "datatype": "FP32", "shape": {shape}, "data": {text}}}'
    return f'{{"inputs": [{tensor}]}}'.encode()


ROW = ", ".join(["0.5"] * N)
CASES: list[tuple[str, bytes, dict[str, str], int, str, str]] = [
    # (id, body, headers, status, code, a part of the message)
    ("shape-vs-sensors", raw_data("[" + ROW + ", NaN]", [1, N + 1]), {}, 422, "invalid_shape", "[1, 41]"),
    (
        "nan-flat",
        raw_data("[" + ", ".join(["0.5"] * (N + 3)) + ", NaN" + ", 0.5" * (N - 4) + "]", [2, N]),
        {},
        422,
        "non_finite_value",
        f"readings.data[{N + 3}] (row 1, sensor 3)",
    ),
    (
        "nan-nested",
        raw_data(f"[[{ROW}], [{', '.join(['0.5'] * 7)}, Infinity{', 0.5' * (N - 8)}]]", [2, N]),
        {},
        422,
        "non_finite_value",
        "readings.data[1][7]",
    ),
    (
        "string-value",
        raw_data(f'[[{ROW}], ["1"{", 0.5" * (N - 1)}]]', [2, N]),
        {},
        422,
        "invalid_value",
        "readings.data[1][0]",
    ),
    (
        "deep-nesting",
        raw_data(f"[[[0.5]{', 0.5' * (N - 1)}]]", [1, N]),
        {},
        422,
        "invalid_value",
        "readings.data[0][0]",
    ),
    ("short-row", raw_data(f"[[{ROW}], [0.5]]", [2, N]), {}, 422, "wrong_length", "readings.data[1]"),
    (
        "too-big",
        raw_data("[" + ", ".join(["1e39"] * N) + "]", [1, N]),
        {},
        422,
        "value_out_of_range",
        "readings.data[0]",
    ),
    ("rows-vs-shape", raw_data(f"[[{ROW}]]", [2, N]), {}, 422, "invalid_shape", "has 1 rows"),
    ("flat-count", raw_data(f"[{ROW}]", [2, N]), {}, 422, "invalid_shape", f"has {N} values"),
    ("duplicate-top", b'{"inputs": [], "inputs": []}', {}, 422, "duplicate_field", "'inputs'"),
    (
        "duplicate-nested",
        raw_data(f"[{ROW}]", [1, N]).replace(b'"name": "readings"', b'"name": "readings", "name": "x"'),
        {},
        422,
        "duplicate_field",
        "'name'",
    ),
    (
        "duplicate-with-nan",
        raw_data(f"[{ROW[:-3]}NaN]", [1, N]).replace(
            b'"datatype": "FP32"', b'"datatype": "FP32", "datatype": "FP32"'
        ),
        {},
        422,
        "duplicate_field",
        "'datatype'",
    ),
    ("not-json", b"{inputs", {}, 400, "malformed_json", "not valid JSON"),
    ("not-object", b"[1, 2]", {}, 422, "invalid_type", "a list"),
    ("no-inputs", b'{"id": "a"}', {}, 422, "missing_field", "'inputs'"),
    ("two-inputs", b'{"inputs": [{}, {}]}', {}, 422, "unknown_tensor", "2 inputs"),
    (
        "input-name",
        raw_data(f"[{ROW}]", [1, N]).replace(b'"readings"', b'"input0"'),
        {},
        422,
        "unknown_tensor",
        "'input0'",
    ),
    ("shape-negative", raw_data(f"[{ROW}]", [-1, N]), {}, 422, "invalid_shape", "[-1, 40]"),
    ("shape-1d", raw_data(f"[{ROW}]", [N]), {}, 422, "invalid_shape", "[40]"),
    ("empty", raw_data("[]", [0, N]), {}, 422, "empty_batch", "empty"),
    ("too-many-rows", raw_data("[]", [5000, N]), {}, 413, "batch_too_large", "5000 rows"),
    (
        "unknown-field",
        raw_data(f"[{ROW}]", [1, N]).replace(b'{"inputs"', b'{"model": 1, "inputs"'),
        {},
        422,
        "unknown_field",
        "'model'",
    ),
    (
        "id-number",
        raw_data(f"[{ROW}]", [1, N]).replace(b'{"inputs"', b'{"id": 7, "inputs"'),
        {},
        422,
        "invalid_type",
        "id must be a string",
    ),
    (
        "unknown-parameter",
        raw_data(f"[{ROW}]", [1, N]).replace(b'{"inputs"', b'{"parameters": {"priority": 1}, "inputs"'),
        {},
        422,
        "invalid_parameter",
        "'priority'",
    ),
    (
        "parameter-type",
        raw_data(f"[{ROW}]", [1, N]).replace(
            b'{"inputs"', b'{"parameters": {"binary_data_output": 1}, "inputs"'
        ),
        {},
        422,
        "invalid_parameter",
        "must be a boolean",
    ),
    (
        "output-unknown",
        raw_data(f"[{ROW}]", [1, N]).replace(b'{"inputs"', b'{"outputs": [{"name": "latent"}], "inputs"'),
        {},
        422,
        "unknown_tensor",
        "'latent'",
    ),
    (
        "output-twice",
        raw_data(f"[{ROW}]", [1, N]).replace(
            b'{"inputs"', b'{"outputs": [{"name": "score"}, {"name": "score"}], "inputs"'
        ),
        {},
        422,
        "duplicate_field",
        "twice",
    ),
    (
        "output-classification",
        raw_data(f"[{ROW}]", [1, N]).replace(
            b'{"inputs"', b'{"outputs": [{"name": "score", "parameters": {"classification": 2}}], "inputs"'
        ),
        {},
        422,
        "invalid_parameter",
        "'classification'",
    ),
    (
        "no-data",
        b'{"inputs": [{"name": "readings", "datatype": "FP32", "shape": [1, 40]}]}',
        {},
        422,
        "missing_field",
        "neither data",
    ),
    (
        "output-name-list",
        raw_data(f"[{ROW}]", [1, N]).replace(b'{"inputs"', b'{"outputs": [{"name": ["score"]}], "inputs"'),
        {},
        422,
        "unknown_tensor",
        "a list",
    ),
    (
        "parameters-not-object",
        raw_data(f"[{ROW}]", [1, N]).replace(b'{"inputs"', b'{"parameters": [1], "inputs"'),
        {},
        422,
        "invalid_parameter",
        "must be an object",
    ),
    (
        "binary-size-boolean",
        b'{"inputs": [{"name": "readings", "datatype": "FP32", "shape": [1, 40], '
        b'"parameters": {"binary_data_size": true}}]}',
        {},
        422,
        "invalid_parameter",
        "non-negative integer",
    ),
    (
        "binary-size-negative",
        b'{"inputs": [{"name": "readings", "datatype": "FP32", "shape": [1, 40], '
        b'"parameters": {"binary_data_size": -4}}]}',
        {},
        422,
        "invalid_parameter",
        "non-negative integer",
    ),
    (
        "shape-booleans",
        raw_data(f"[{ROW}]", [1, N]).replace(b"[1, 40]", b"[true, 40]"),
        {},
        422,
        "invalid_shape",
        "[True, 40]",
    ),  # fmt: skip
    (
        "content-type-pandas",
        raw_data(f"[{ROW}]", [1, N]).replace(
            b'"datatype": "FP32"', b'"datatype": "FP32", "parameters": {"content_type": "pd"}'
        ),
        {},
        422,
        "invalid_parameter",
        "'pd'",
    ),
    (
        "header-length-huge",
        b"{}",
        {"Inference-Header-Content-Length": "9" * 5000},
        400,
        "invalid_header_length",
        "is not a byte count",
    ),  # fmt: skip
    (
        "header-length-text",
        b"{}",
        {"Inference-Header-Content-Length": "ten"},
        400,
        "invalid_header_length",
        "'ten'",
    ),
    (
        "header-length-beyond",
        b"{}",
        {"Inference-Header-Content-Length": "3"},
        400,
        "invalid_header_length",
        "within the 2-byte body",
    ),
    ("content-type", b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type", "text/plain"),
    ("encoding", b"{}", {"Content-Encoding": "br"}, 415, "unsupported_encoding", "'br'"),
    (
        "corrupt-gzip",
        b"\x1f\x8b not gzip",
        {"Content-Encoding": "gzip"},
        400,
        "corrupt_encoding",
        "does not decompress",
    ),
    (
        "truncated-gzip",
        gzip.compress(raw_data(f"[{ROW}]", [1, N]))[:-8],
        {"Content-Encoding": "gzip"},
        400,
        "corrupt_encoding",
        "truncated",
    ),
]


def _binary_cases() -> list[tuple[str, bytes, dict[str, str], int, str, str]]:
    x = random_rows(2)
    raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
    nan = x.copy()
    nan[1, 4] = np.nan
    header = {
        "inputs": [
            {
                "name": "readings",
                "datatype": "FP32",
                "shape": [2, N],
                "parameters": {"binary_data_size": len(raw) - 4},
            }
        ]
    }
    data_and_binary = {
        "inputs": [
            {
                "name": "readings",
                "datatype": "FP32",
                "shape": [2, N],
                "data": [0.5] * 2 * N,
                "parameters": {"binary_data_size": len(raw)},
            }
        ]
    }
    plain = {"inputs": [{"name": "readings", "datatype": "FP32", "shape": [2, N], "data": [0.5] * 2 * N}]}
    short_body, short_headers = binary_body(x[:, :], header)
    both_body, both_headers = binary_body(x, data_and_binary)
    extra_body, extra_headers = binary_body(x, plain)
    nan_body, nan_headers = binary_body(nan)
    return [
        ("binary-size", short_body, short_headers, 422, "invalid_binary_length", "binary_data_size says"),
        ("binary-and-data", both_body, both_headers, 422, "invalid_parameter", "both data"),
        (
            "bytes-without-size",
            extra_body,
            extra_headers,
            422,
            "invalid_binary_length",
            "no binary_data_size",
        ),
        ("binary-nan", nan_body, nan_headers, 422, "non_finite_value", "row 1, sensor 4"),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "headers", "status", "code", "says"),
                         [case[1:] for case in CASES + _binary_cases()],
                         ids=[case[0] for case in CASES + _binary_cases()])  # fmt: skip
async def test_refusals_are_named_in_the_v2_shape(
    store: Path, body: bytes, headers: dict[str, str], status: int, code: str, says: str
) -> None:
    async with serving(settings_for(store)) as client:
        answer = await client.post(INFER, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["x-request-id"]
    error = answer.json()
    assert list(error) == ["error"] and error["error"].startswith(f"{code}: "), error
    assert says in error["error"]


@pytest.mark.anyio
async def test_a_decompression_bomb_is_refused(store: Path) -> None:
    """A small gzip body that inflates beyond MAX_BODY_BYTES is refused while inflating, not held."""
    bomb = gzip.compress(b" " * (2 << 20))
    assert len(bomb) < 10_000
    async with serving(settings_for(store, max_body_bytes=1 << 20)) as client:
        answer = await client.post(INFER, content=bomb, headers={"Content-Encoding": "gzip"})
    assert answer.status_code == 413 and answer.json()["error"].startswith("body_too_large: ")


@pytest.mark.anyio
async def test_v2_paths_answer_v2_errors_and_v1_keeps_its_shape(store: Path) -> None:
    async with serving(settings_for(store)) as client:
        missing = await client.get("/v2/repository/index")
        wrong_method = await client.get(INFER)
        version = await client.post(f"/v2/models/{MODEL_NAME}/versions/nope/infer", json=request_json())
        v1 = await client.get("/v1/nope")
    assert missing.status_code == 404 and missing.json() == {
        "error": "not_found: no such endpoint; see /docs"
    }
    assert wrong_method.status_code == 405 and wrong_method.json()["error"].startswith("method_not_allowed: ")
    assert version.status_code == 404 and "'nope'" in version.json()["error"]
    assert v1.json()["error"]["code"] == "not_found"


@pytest.mark.anyio
async def test_json_forms_agree(store: Path) -> None:
    """Flat and nested data, JSON and binary outputs, an integer too long for simdjson (the full reading)
    and the fast reading all give the same scores."""
    x = np.round(random_rows(3, seed=5), 2)
    nested = request_json(x)
    nested["inputs"][0]["data"] = x.tolist()
    big_int = raw_data("[" + ", ".join(["100000000000000000000"] + ["0.5"] * (N - 1)) + "]", [1, N])
    async with serving(settings_for(store)) as client:
        flat = (await client.post(INFER, json=request_json(x))).json()
        rows = (await client.post(INFER, json=nested)).json()
        binary, headers = binary_body(x, binary_output=True)
        raw = await client.post(INFER, content=binary, headers=headers)
        json_out = await client.post(INFER, content=binary_body(x)[0], headers=binary_body(x)[1])
        huge = await client.post(INFER, content=big_int)
    assert flat["outputs"] == rows["outputs"] == json_out.json()["outputs"]  # binary in, JSON out
    scores = flat["outputs"][0]["data"]
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/octet-stream"
    header_bytes = int(raw.headers["inference-header-content-length"])
    answer = json.loads(raw.content[:header_bytes])
    assert [output["name"] for output in answer["outputs"]] == ["score", "is_anomaly"]
    score_bytes = answer["outputs"][0]["parameters"]["binary_data_size"]
    binary_scores = np.frombuffer(raw.content[header_bytes : header_bytes + score_bytes], dtype="<f4")
    assert binary_scores.tolist() == scores
    assert huge.status_code == 200 and huge.json()["outputs"][0]["shape"] == [1]


@pytest.mark.anyio
async def test_mlserver_s_numpy_content_type_is_a_plain_tensor(store: Path) -> None:
    """MLServer's NumPy codec marks each input `"content_type": "np"`: accepted, read as any input."""
    x = np.round(random_rows(2, seed=9), 2)
    marked = request_json(x)
    marked["inputs"][0]["parameters"] = {"content_type": "np"}
    async with serving(settings_for(store)) as client:
        plain = (await client.post(INFER, json=request_json(x))).json()
        answer = await client.post(INFER, json=marked)
    assert answer.status_code == 200 and answer.json()["outputs"] == plain["outputs"]


@pytest.mark.anyio
async def test_a_compressed_body_is_never_parsed_on_the_event_loop(store: Path) -> None:
    """A few KiB of gzip may inflate to MAX_BODY_BYTES: however small it arrives, it goes to the pool."""
    body = json.dumps(request_json(random_rows(1))).encode()
    calls: list[bool] = []
    async with running(settings_for(store)) as app:
        pool_run = app.state.pool.run

        async def spy(fn: Any, *, inline: bool = False) -> Any:
            calls.append(inline)
            return await pool_run(fn, inline=inline)

        app.state.pool.run = spy
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
            plain = await client.post(INFER, content=body)
            packed = await client.post(
                INFER, content=gzip.compress(body), headers={"Content-Encoding": "gzip"}
            )
    assert plain.status_code == packed.status_code == 200
    assert calls == [True, False]  # the plain small body inline, the compressed one on the pool


def test_decode_content_inflates_deflate_within_the_limit() -> None:
    text = b"x" * 1000
    assert wire_v2.decode_content(zlib.compress(text), "deflate", 1000) == text
    assert wire_v2.decode_content(gzip.compress(text), "gzip", 1000) == text
    assert wire_v2.decode_content(text, None, 10) == text  # not compressed: read_body bounded it already


@pytest.mark.anyio
async def test_infer_of_the_served_model_skips_the_router(store: Path) -> None:
    """POST /v2/models/<served>/infer is dispatched straight to its endpoint (FastAPI's matching of the
    templated path cost as much as the rest of a batch's request); any other model name goes the normal
    way, and both answer as the router would."""
    from factory_anomaly.app.observability.middleware import ServiceMiddleware

    async with running(settings_for(store)) as app:
        layer = app.build_middleware_stack()
        while not isinstance(layer, ServiceMiddleware):
            layer = layer.app
        assert set(layer.hot) >= {("POST", INFER)}
        assert layer.hot[("POST", INFER)].route.path_format == "/v2/models/{model_name}/infer"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as client:
            served = await client.post(INFER, json=request_json())
            other = await client.post("/v2/models/other/infer", json=request_json())
    assert served.status_code == 200 and other.status_code == 404


def test_the_parser_s_field_lists_are_the_documented_schema_s() -> None:
    """wire.v2 reads the fields the OpenAPI document (wire.v2_schemas) describes, no more and no fewer."""
    from typing import get_args

    from factory_anomaly.app.wire import v2_schemas as schemas

    assert tuple(schemas.V2InferRequest.model_fields) == wire_v2._REQUEST_FIELDS
    assert set(wire_v2._INPUT_FIELDS) == set(schemas.V2Input.model_fields)
    assert set(wire_v2._OUTPUT_FIELDS) == set(schemas.V2RequestedOutput.model_fields)
    assert set(wire_v2._REQUEST_PARAMETERS) == set(schemas.V2RequestParameters.model_fields)
    assert set(wire_v2._INPUT_PARAMETERS) == set(schemas.V2InputParameters.model_fields)
    assert set(wire_v2._OUTPUT_PARAMETERS) == set(schemas.V2OutputParameters.model_fields)
    requested = get_args(schemas.V2RequestedOutput.model_fields["name"].annotation)
    assert requested == tuple(wire_v2.OUTPUT_DATATYPES)
