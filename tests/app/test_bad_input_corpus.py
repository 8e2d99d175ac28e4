"""The bad-input corpus: one table of hostile or odd requests, each with the status and error code it must
get, after which a valid request is still scored exactly as onnxruntime scores it.

Most cases go over HTTP to a real uvicorn; those whose point is the wire (a body that never finishes, a
Content-Length larger than what comes, headers too large, bytes uvicorn's parser refuses) are written
to a raw socket; the few that uvicorn never lets through (a Content-Length that is not a number) go to the
app in process. docs/reliability.md ("Bad-input corpus") lists the table with the policies behind it.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np
import onnxruntime as ort
import pytest

from tests.app.conftest import (
    ADMIN_TOKEN,
    API_KEY,
    LiveServer,
    assert_stopped_cleanly,
    server_env,
    serving,
    settings_for,
    start_server,
)

N = 40  # sensors of the small model
MAX_BODY_BYTES = 4 << 20  # conftest.server_env's limit
BODY_TIMEOUT_S = 1.0  # short, so the slow-body cases take a second each
DEADLINE = (BODY_TIMEOUT_S, BODY_TIMEOUT_S + 3)
KEY = {"X-API-Key": API_KEY}
JSON_BODY = {**KEY, "Content-Type": "application/json"}
OCTET = {**KEY, "Content-Type": "application/octet-stream"}
ADMIN_JSON = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
SCORE, BATCH, EXPLAIN, RELOAD = "/v1/score", "/v1/score/batch", "/v1/explain", "/v1/admin/reload"
ROW = ["1.5"] * N


def values(row: list[str], extra: str = "") -> bytes:
    """`{"values": [...]}` with the numbers written verbatim (tokens json.dumps cannot write)."""
    return ('{"values": [' + ", ".join(row) + "]" + extra + "}").encode()


def row_with(token: str, at: int = 0) -> list[str]:
    row = list(ROW)
    row[at] = token
    return row


def reading(token_value: float, at: int = 0) -> tuple[float, ...]:
    """The float32 reading a row of `row_with` stands for."""
    x = [1.5] * N
    x[at] = token_value
    return tuple(x)


def with_id(raw: bytes) -> bytes:
    """A valid reading whose `id` string holds `raw` bytes as they are."""
    return values(ROW)[:-1] + b', "id": "' + raw + b'"}'


def nested(depth: int) -> bytes:
    return b'{"values": ' + b"[" * depth + b"]" * depth + b"}"


Via = Literal["http", "asgi", "hold", "half-close", "trickle", "socket"]
"""How the request is sent: `http` httpx to the real uvicorn; `asgi` httpx to the app in process; the
others are a raw socket to the real uvicorn: `socket` sends it all, `hold` sends it and keeps the
connection open without sending the rest of the body, `half-close` sends it and shuts the write side,
`trickle` sends the body one byte every 0.25 s."""


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None
    """None: the server closes the connection without an answer."""
    code: str | None
    """The JSON error's code; None for a success, or for uvicorn's own plain-text 400."""
    via: Via = "http"
    content_length: int | None = None
    """Content-Length to declare, when it is not len(body) (raw socket and in-process cases only)."""
    scores_as: tuple[float, ...] | None = None
    """For a 200 from /v1/score: the float32 reading whose onnxruntime score the answer must carry."""
    target: bytes | None = None
    """The raw request target, when it is not `path` (bytes the HTTP parser must see as they are)."""
    extra_head: bytes = b""
    """Raw header lines added to a socket request (sizes and bytes httpx would not send)."""
    seconds: tuple[float, float] = field(default=(0.0, 5.0))
    """How long the answer may take: at least, at most."""


CASES: list[Case] = [
    # --- JSON structure -------------------------------------------------------------------------------------
    Case("nested-100k-deep", "POST", SCORE, JSON_BODY, nested(100_000), 400, "malformed_json"),
    Case("nested-within-orjson-limit", "POST", SCORE, JSON_BODY, nested(500), 422, "wrong_length"),
    Case("nested-element", "POST", SCORE, JSON_BODY, values(row_with("[[[[1]]]]")), 422, "invalid_value"),
    Case("nested-objects-100k", "POST", SCORE, JSON_BODY, b'{"a": ' * 100_000 + b"1" + b"}" * 100_000,
         400, "malformed_json"),
    Case("nested-batch-100k", "POST", BATCH, JSON_BODY,
         b'{"vectors": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "malformed_json"),
    Case("values-1e6-zeros", "POST", SCORE, JSON_BODY, b'{"values": [' + b"0," * 999_999 + b"0]}",
         422, "wrong_length"),
    Case("values-1e6-floats-over-limit", "POST", SCORE, JSON_BODY,
         b'{"values": [' + b"0.25," * 999_999 + b"0]}", 413, "body_too_large"),
    Case("vectors-1e6-rows", "POST", BATCH, JSON_BODY, b'{"vectors": [' + b"[0]," * 999_999 + b"[0]]}",
         413, "batch_too_large"),
    Case("binary-1e6-floats", "POST", BATCH, OCTET, b"\0" * 4_000_000, 413, "batch_too_large"),
    Case("ids-1e6", "POST", BATCH, JSON_BODY,
         b'{"vectors": [[' + b"0," * (N - 1) + b'0]], "ids": [' + b'"a",' * 999_999 + b'"a"]}',
         422, "ids_mismatch"),
    # --- numbers --------------------------------------------------------------------------------------------
    Case("1e309", "POST", SCORE, JSON_BODY, values(row_with("1e309")), 422, "value_out_of_range"),
    Case("-1e309", "POST", SCORE, JSON_BODY, values(row_with("-1e309", 5)), 422, "value_out_of_range"),
    Case("1e39", "POST", SCORE, JSON_BODY, values(row_with("1e39")), 422, "value_out_of_range"),
    Case("NaN", "POST", SCORE, JSON_BODY, values(row_with("NaN")), 422, "non_finite_value"),
    Case("minus-zero-integer", "POST", SCORE, JSON_BODY, values(row_with("-0")), 200, None,
         scores_as=reading(0.0)),
    Case("minus-zero-float", "POST", SCORE, JSON_BODY, values(row_with("-0.0", 3)), 200, None,
         scores_as=reading(0.0, 3)),
    Case("subnormal-float32", "POST", SCORE, JSON_BODY, values(row_with("1e-40")), 200, None,
         scores_as=reading(1e-40)),
    Case("smallest-float32", "POST", SCORE, JSON_BODY, values(row_with("1.4e-45")), 200, None,
         scores_as=reading(1.4e-45)),
    Case("below-float32-subnormals", "POST", SCORE, JSON_BODY, values(row_with("1e-50")), 200, None,
         scores_as=reading(0.0)),
    Case("smallest-float64", "POST", SCORE, JSON_BODY, values(row_with("5e-324")), 200, None,
         scores_as=reading(0.0)),
    Case("binary-subnormal", "POST", BATCH, OCTET, np.full((1, N), 1e-40, "<f4").tobytes(), 200, None,
         scores_as=(1e-40,) * N),
    Case("binary-minus-zero", "POST", BATCH, OCTET, np.full((1, N), -0.0, "<f4").tobytes(), 200, None,
         scores_as=(0.0,) * N),
    Case("numeric-string", "POST", SCORE, JSON_BODY, values(row_with('"1.5"')), 422, "invalid_value"),
    Case("values-a-string", "POST", SCORE, JSON_BODY, b'{"values": "1.5, 2.5"}', 422, "invalid_type"),
    Case("hex-number", "POST", SCORE, JSON_BODY, values(row_with("0x10")), 400, "malformed_json"),
    Case("leading-plus", "POST", SCORE, JSON_BODY, values(row_with("+1")), 400, "malformed_json"),
    # --- fields ---------------------------------------------------------------------------------------------
    Case("duplicate-values", "POST", SCORE, JSON_BODY, values(ROW, ', "values": [' + ", ".join(ROW) + "]"),
         422, "duplicate_field"),
    Case("duplicate-values-bad-then-good", "POST", SCORE, JSON_BODY,
         b'{"values": [1, 2], "values": [' + ", ".join(ROW).encode() + b"]}", 422, "duplicate_field"),
    Case("duplicate-id", "POST", SCORE, JSON_BODY, values(ROW, ', "id": "a", "id": "b"'),
         422, "duplicate_field"),
    Case("duplicate-escaped-key", "POST", SCORE, JSON_BODY, values(ROW, ', "\\u0069d": "a", "id": "b"'),
         422, "duplicate_field"),
    Case("duplicate-values-good-then-bad", "POST", SCORE, JSON_BODY,
         b'{"values": [' + ", ".join(ROW).encode() + b'], "values": [1, 2]}', 422, "wrong_length"),
    Case("duplicate-vectors", "POST", BATCH, JSON_BODY,
         json.dumps({"vectors": [[0.5] * N]}).encode()[:-1] + b', "vectors": [[' + b"1," * (N - 1) + b"1]]}",
         422, "duplicate_field"),
    Case("duplicate-ids", "POST", BATCH, JSON_BODY,
         b'{"ids": ["x"], "vectors": [[' + b"0.5," * (N - 1) + b'0.5]], "ids": ["y"]}',
         422, "duplicate_field"),
    Case("duplicate-top-k", "POST", EXPLAIN, JSON_BODY, values(ROW, ', "top_k": 3, "top_k": 5'),
         422, "duplicate_field"),
    Case("duplicate-version", "POST", RELOAD, ADMIN_JSON, b'{"version": "a", "version": "b"}',
         422, "duplicate_field"),
    Case("reload-whitespace-body", "POST", RELOAD, ADMIN_JSON, b"\r\n", 400, "malformed_json"),
    Case("id-named-like-a-field", "POST", SCORE, JSON_BODY, values(ROW, ', "id": "values"'), 200, None,
         scores_as=reading(1.5)),
    Case("id-with-colons", "POST", SCORE, JSON_BODY, values(ROW, ', "id": "line:3:press"'), 200, None,
         scores_as=reading(1.5)),
    Case("unknown-field", "POST", SCORE, JSON_BODY, values(ROW, ', "time": 1'), 422, "unknown_field"),
    Case("field-case", "POST", SCORE, JSON_BODY, b'{"Values": [' + ", ".join(ROW).encode() + b"]}",
         422, "unknown_field"),
    Case("top-k-on-score", "POST", SCORE, JSON_BODY, values(ROW, ', "top_k": 3'), 422, "unknown_field"),
    # --- bytes ----------------------------------------------------------------------------------------------
    Case("invalid-utf8-in-id", "POST", SCORE, JSON_BODY, with_id(b"\xff"), 400, "malformed_json"),
    Case("overlong-utf8", "POST", SCORE, JSON_BODY, with_id(b"\xc0\xaf"), 400, "malformed_json"),
    Case("utf8-id", "POST", SCORE, JSON_BODY, with_id("Prüfstand-ü".encode()), 200, None,
         scores_as=reading(1.5)),
    Case("lone-surrogate-escape", "POST", SCORE, JSON_BODY, with_id(b"\\ud800"), 400, "malformed_json"),
    Case("utf16-body", "POST", SCORE, JSON_BODY, values(ROW).decode().encode("utf-16"),
         400, "malformed_json"),
    Case("nul-bytes", "POST", SCORE, JSON_BODY, b"\0" * 64, 400, "malformed_json"),
    Case("invalid-utf8-over-the-wire", "POST", SCORE, JSON_BODY, with_id(b"\xff"), 400, "malformed_json",
         via="socket"),
    Case("invalid-utf8-in-target", "GET", "/healthz", {}, b"", 400, None, via="socket", target=b"/\xff"),
    Case("invalid-utf8-in-header", "POST", SCORE, JSON_BODY, values(ROW), 200, None, via="socket",
         extra_head=b"X-Request-ID: \xff\xfe\r\n", scores_as=reading(1.5)),
    Case("invalid-utf8-api-key", "POST", SCORE, {"Content-Type": "application/json"}, values(ROW), 401,
         "invalid_api_key", via="socket", extra_head=b"X-API-Key: \xff\xfe\r\n"),
    # --- truncated and slow bodies --------------------------------------------------------------------------
    Case("truncated-json", "POST", SCORE, JSON_BODY, values(ROW)[:50], 400, "malformed_json"),
    Case("content-length-larger-held-open", "POST", SCORE, JSON_BODY, values(ROW)[:50], 408, "body_timeout",
         via="hold", content_length=len(values(ROW)), seconds=DEADLINE),
    Case("content-length-larger-then-closed", "POST", SCORE, JSON_BODY, values(ROW)[:50], None, None,
         via="half-close", content_length=len(values(ROW))),
    Case("chunked-never-finished", "POST", BATCH, {**JSON_BODY, "Transfer-Encoding": "chunked"},
         b"10\r\n" + b'{"vectors": [[1.' + b"\r\n", 408, "body_timeout", via="hold", seconds=DEADLINE),
    Case("trickled-past-the-deadline", "POST", SCORE, JSON_BODY, values(ROW), 408, "body_timeout",
         via="trickle", seconds=DEADLINE),
    Case("reload-body-held-open", "POST", RELOAD, ADMIN_JSON, b'{"vers', 408, "body_timeout", via="hold",
         content_length=20, seconds=DEADLINE),
    Case("content-length-over-limit-unsent", "POST", BATCH, OCTET, b"", 413, "body_too_large", via="hold",
         content_length=10 * MAX_BODY_BYTES, seconds=(0.0, 2.0)),
    Case("content-length-not-a-number", "POST", SCORE, JSON_BODY, values(ROW), 400, None, via="socket",
         extra_head=b"Content-Length: 1e3\r\n"),
    Case("content-length-not-a-number-in-process", "POST", SCORE, {**JSON_BODY, "Content-Length": "1e3"},
         values(ROW), 400, "invalid_content_length", via="asgi"),
    # httptools (llhttp) refuses both framings at once, as RFC 9112 allows (no request smuggling)
    Case("content-length-and-chunked", "POST", SCORE, {**JSON_BODY, "Transfer-Encoding": "chunked"},
         b"0\r\n\r\n", 400, None, via="socket", extra_head=b"Content-Length: 5\r\n"),
    # --- methods --------------------------------------------------------------------------------------------
    Case("get-score", "GET", SCORE, KEY, b"", 405, "method_not_allowed"),
    Case("put-batch", "PUT", BATCH, OCTET, b"\0" * 4 * N, 405, "method_not_allowed"),
    Case("delete-model", "DELETE", "/v1/model", KEY, b"", 405, "method_not_allowed"),
    Case("post-healthz", "POST", "/healthz", JSON_BODY, b"{}", 405, "method_not_allowed"),
    Case("head-healthz", "HEAD", "/healthz", {}, b"", 405, None),
    Case("get-reload", "GET", RELOAD, ADMIN_JSON, b"", 405, "method_not_allowed"),
    # httptools knows the registered methods only: BREW is not HTTP, a plain 400 before the app sees it
    Case("made-up-method", "BREW", SCORE, JSON_BODY, values(ROW), 400, None, via="socket"),
    Case("no-such-path", "POST", "/v1/scores", JSON_BODY, values(ROW), 404, "not_found"),
    # --- headers --------------------------------------------------------------------------------------------
    Case("header-8-kib", "POST", SCORE, {**JSON_BODY, "X-Padding": "a" * 8192}, values(ROW), 200, None,
         scores_as=reading(1.5)),
    Case("header-40-kib", "POST", SCORE, {**JSON_BODY, "X-Padding": "a" * 40960}, values(ROW), 431,
         "headers_too_large"),
    Case("headers-500", "POST", SCORE, JSON_BODY, values(ROW), 200, None, via="socket",
         extra_head=b"".join(b"X-H%d: v\r\n" % i for i in range(500)), scores_as=reading(1.5)),
    Case("header-512-kib", "GET", "/healthz", {}, b"", 431, "headers_too_large", via="socket",
         extra_head=b"X-Padding: " + b"a" * (512 << 10) + b"\r\n"),
    Case("target-512-kib", "GET", "/healthz", {}, b"", 400, None, via="socket",
         target=b"/healthz?" + b"a" * (512 << 10)),
    Case("request-id-too-long", "POST", SCORE, {**JSON_BODY, "X-Request-ID": "r" * 129}, values(ROW),
         200, None, scores_as=reading(1.5)),
]  # fmt: skip


# --- the server, the reference and the valid request --------------------------------------------------------


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = server_env(store, ANOMALY_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S), ANOMALY_LOG_LEVEL="INFO")
    live = start_server(tmp_path_factory.mktemp("corpus") / "server.log", env)
    yield live
    assert_stopped_cleanly(live)


def corpus_settings(store: Path) -> Any:
    return settings_for(
        store,
        api_keys=(API_KEY,),
        admin_token=ADMIN_TOKEN,
        max_body_bytes=MAX_BODY_BYTES,
        body_timeout_s=BODY_TIMEOUT_S,
    )


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str]
    body: bytes
    seconds: float

    def error_code(self) -> str | None:
        if not self.body or not self.headers.get("content-type", "").startswith("application/json"):
            return None
        doc = json.loads(self.body)
        return doc["error"]["code"] if "error" in doc else None


def score_of(reference: ort.InferenceSession, x: tuple[float, ...] | np.ndarray) -> np.float32:
    row = np.asarray(x, dtype=np.float32).reshape(1, N)
    return np.float32(reference.run(["score"], {"readings": row})[0][0])


def valid_request(readings: np.ndarray) -> tuple[bytes, np.ndarray]:
    x = readings[:1]
    return json.dumps({"values": x[0].tolist(), "id": "after"}).encode(), x


def check_scored(body: bytes, expected: np.float32, ident: str | None = "after") -> None:
    """A /v1/score answer (or a batch's first result) with the reference score, exactly."""
    doc = json.loads(body)
    result = doc["results"][0] if "results" in doc else doc
    if ident is not None:
        assert result["id"] == ident
    assert np.float32(result["score"]) == expected, (doc, expected)


# --- raw sockets --------------------------------------------------------------------------------------------


def raw_request(case: Case, host: str) -> tuple[bytes, bytes]:
    """(head, body) of `case` as bytes on the wire."""
    target = case.target if case.target is not None else case.path.encode()
    lines = [case.method.encode() + b" " + target + b" HTTP/1.1", b"Host: " + host.encode()]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in case.headers.items()]
    chunked = case.headers.get("Transfer-Encoding") == "chunked"
    if not chunked and b"content-length" not in case.extra_head.lower():
        length = case.content_length if case.content_length is not None else len(case.body)
        lines.append(b"Content-Length: %d" % length)
    return b"\r\n".join(lines) + b"\r\n" + case.extra_head + b"\r\n", case.body


def read_answer(sock: socket.socket, started: float, timeout_s: float = 10.0) -> Answer:
    """One HTTP/1.1 response from `sock` (Content-Length, or up to the server's close); status None when
    the server closes without answering."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock)
        if not chunk:
            return Answer(None, {}, data, time.monotonic() - started)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)
    }
    length = headers.get("content-length")
    while length is None or len(body) < int(length):
        chunk = _recv(sock)
        if not chunk:
            break
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body, time.monotonic() - started)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 16)
    except ConnectionResetError:  # the server closed with our bytes unread: the kernel resets
        return b""


def _send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server answered and closed
        sock.sendall(data)


def socket_case(case: Case, server: LiveServer, next_request: bytes) -> tuple[Answer, Answer | None]:
    """Send `case` to a raw socket as `case.via` says; then, if the server kept the connection open, the
    valid `next_request` on the same connection. Returns both answers (the second None when closed)."""
    host, port = server.url.removeprefix("http://").split(":")
    head, body = raw_request(case, host)
    with socket.create_connection((host, int(port))) as sock:
        started = time.monotonic()
        if case.via == "trickle":  # until the server answers
            _send(sock, head)
            for byte in body:
                _send(sock, bytes([byte]))
                if select.select([sock], [], [], 0.25)[0]:
                    break
        else:
            _send(sock, head + body)
        if case.via == "half-close":
            sock.shutdown(socket.SHUT_WR)
        answer = read_answer(sock, started)
        if answer.status is None or answer.headers.get("connection", "").lower() == "close":
            assert _recv(sock) == b""  # and the server did close it
            return answer, None
        if case.via != "socket":  # the body was left unfinished: the connection cannot carry another
            return answer, None
        sock.sendall(next_request)
        return answer, read_answer(sock, time.monotonic())


def raw_valid_request(body: bytes) -> bytes:
    head = (
        f"POST {SCORE} HTTP/1.1\r\nHost: test\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# --- the test -----------------------------------------------------------------------------------------------


def test_the_corpus_names_every_case_once() -> None:
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input(
    case: Case,
    server: LiveServer,
    store: Path,
    reference: ort.InferenceSession,
    readings: np.ndarray,
) -> None:
    next_body, next_x = valid_request(readings)
    expected_next = score_of(reference, next_x)
    same_connection: Answer | None = None
    if case.via == "asgi":
        answer, same_connection = anyio.run(_asgi_case, case, store, next_body)
    elif case.via == "http":
        with server.client() as client:
            started = time.monotonic()
            response = client.request(case.method, case.path, content=case.body, headers=case.headers)
            answer = Answer(
                response.status_code, dict(response.headers), response.content, time.monotonic() - started
            )
            next_response = client.post(SCORE, content=next_body, headers=JSON_BODY)
            same_connection = Answer(
                next_response.status_code, dict(next_response.headers), next_response.content, 0
            )
    else:
        answer, same_connection = socket_case(case, server, raw_valid_request(next_body))

    assert answer.status == case.status, (answer.status, answer.body[:300])
    assert answer.error_code() == case.code, answer.body[:300]
    low, high = case.seconds
    assert low <= answer.seconds < high, answer.seconds
    if case.code is not None:  # every error of the app is the JSON shape with the request id
        error = json.loads(answer.body)["error"]
        assert set(error) == {"code", "message", "request_id"}
        assert error["request_id"] == answer.headers["x-request-id"]
    if case.status == 408:
        assert answer.headers["connection"] == "close"
    if case.scores_as is not None:
        check_scored(answer.body, score_of(reference, case.scores_as), ident=None)

    # The next valid request is answered correctly: on the same connection when the server kept it, and
    # always on a fresh one.
    if same_connection is not None:
        assert same_connection.status == 200, same_connection.body[:300]
        check_scored(same_connection.body, expected_next)
    with server.client() as client:
        response = client.post(SCORE, content=next_body, headers=JSON_BODY)
    assert response.status_code == 200, response.text
    check_scored(response.content, expected_next)


async def _asgi_case(case: Case, store: Path, next_body: bytes) -> tuple[Answer, Answer]:
    async with serving(corpus_settings(store)) as client:
        started = time.monotonic()
        response = await client.request(case.method, case.path, content=case.body, headers=case.headers)
        answer = Answer(
            response.status_code, dict(response.headers), response.content, time.monotonic() - started
        )
        follow = await client.post(SCORE, content=next_body, headers=JSON_BODY)
        return answer, Answer(follow.status_code, dict(follow.headers), follow.content, 0)


def test_policies_hold_in_process_too(store: Path, reference: ort.InferenceSession) -> None:
    """The body-level policies do not depend on the server: the same answers from the app in process."""
    in_process = [case for case in CASES if case.via == "http"]

    async def run() -> list[tuple[Case, int, str | None]]:
        results = []
        async with serving(corpus_settings(store)) as client:
            for case in in_process:
                response = await client.request(
                    case.method, case.path, content=case.body, headers=case.headers
                )
                answer = Answer(response.status_code, dict(response.headers), response.content, 0)
                results.append((case, response.status_code, answer.error_code()))
        return results

    for case, status, code in anyio.run(run):
        assert (status, code) == (case.status, case.code), case.name
