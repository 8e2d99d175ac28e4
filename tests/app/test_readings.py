"""Body parsing without HTTP: the fast bulk path and the element-naming slow path agree, limits are exact,
and the binary path views the body without copying. (Every case over HTTP: routes/test_scoring.py.)"""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
import simdjson

from factory_anomaly.app.errors import InvalidInput, MalformedRequest, PayloadTooLarge
from factory_anomaly.app.wire.parse import (
    FLOAT32_LIMIT,
    Readings,
    _batch_json_fast,
    _batch_json_full,
    _single_json_fast,
    _single_json_full,
    parse_batch_binary,
    parse_batch_json,
    parse_explain_json,
    parse_single_json,
)

NAMES = ("temp", "pressure", "vibration")


def single(values: list[object], **extra: object) -> bytes:
    return json.dumps({"values": values, **extra}).encode()


def test_numbers_become_float32_rows() -> None:
    parsed = parse_single_json(single([1, -2.5, 3e38], id="a"), NAMES)
    assert parsed.x.dtype == np.float32 and parsed.x.shape == (1, 3) and parsed.x.flags.c_contiguous
    assert parsed.x.tolist() == [[1.0, -2.5, float(np.float32(3e38))]]
    assert parsed.ids == ["a"]


def test_float32_limit_is_inclusive() -> None:
    assert parse_single_json(single([FLOAT32_LIMIT, -FLOAT32_LIMIT, 0]), NAMES).x.tolist()[0][:2] == [
        float(np.finfo(np.float32).max),
        -float(np.finfo(np.float32).max),
    ]
    with pytest.raises(InvalidInput) as caught:
        parse_single_json(b'{"values": [0, 3.40282351e38, 0]}', NAMES)
    assert caught.value.code == "value_out_of_range" and "values[1]" in caught.value.message


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("true", "invalid_value"),
        ("null", "invalid_value"),
        ('"1"', "invalid_value"),
        ("NaN", "non_finite_value"),
        ("-Infinity", "non_finite_value"),
        ("1e39", "value_out_of_range"),
        ("-1e309", "value_out_of_range"),
        ("1" + "0" * 5000, "value_out_of_range"),  # longer than int() accepts
    ],
)
def test_batch_names_row_and_column(token: str, code: str) -> None:
    body = f'{{"vectors": [[1, 2, 3], [4, 5, {token}]]}}'.encode()
    with pytest.raises(InvalidInput) as caught:
        parse_batch_json(body, NAMES, max_batch=10)
    assert caught.value.code == code
    assert caught.value.message.startswith("vectors[1][2] ")


def test_first_bad_element_is_named() -> None:
    with pytest.raises(InvalidInput, match=r"^values\[0\] "):
        parse_single_json(b'{"values": [NaN, null, true]}', NAMES)


@pytest.mark.parametrize(
    "body",
    [
        b'{"values": [1, 2, 3], "id": "\\ud800"}',  # a lone surrogate: orjson refuses, the stdlib would not
        b"[" * 5000 + b"]" * 5000,  # nesting beyond orjson's limit (and the stdlib's recursion)
        '{"values": [1, 2, 3]}'.encode("utf-16"),
        b'{"values": [1, 2, 3]} {}',
    ],
    ids=["lone-surrogate", "deep-nesting", "utf-16", "two-documents"],
)
def test_what_only_a_lenient_parser_reads_is_still_malformed(body: bytes) -> None:
    with pytest.raises(MalformedRequest):
        parse_single_json(body, NAMES)


def test_binary_is_a_view_of_the_body() -> None:
    body = np.arange(12, dtype="<f4").tobytes()
    parsed = parse_batch_binary(body, NAMES, max_batch=4)
    assert parsed.x.shape == (4, 3) and parsed.x.dtype == np.float32
    assert not parsed.x.flags.owndata  # no copy on a little-endian host
    assert parsed.x.tolist()[3] == [9.0, 10.0, 11.0]
    assert parsed.ids == [None] * 4
    with pytest.raises(PayloadTooLarge):
        parse_batch_binary(body, NAMES, max_batch=3)


def test_binary_names_the_sensor() -> None:
    x = np.zeros((2, 3), "<f4")
    x[1, 1] = np.nan
    with pytest.raises(InvalidInput, match=r"row 1, sensor 1 \('pressure'\)"):
        parse_batch_binary(x.tobytes(), NAMES, max_batch=4)


def test_batch_checks_the_row_count_before_the_values() -> None:
    body = json.dumps({"vectors": [["x"]] * 5}).encode()
    with pytest.raises(PayloadTooLarge):
        parse_batch_json(body, NAMES, max_batch=4)


def test_explain_top_k_defaults_to_ten_or_every_sensor() -> None:
    readings, top_k = parse_explain_json(single([1, 2, 3], id="a"), NAMES)
    assert top_k == 3 and readings.ids == ["a"] and readings.x.tolist() == [[1.0, 2.0, 3.0]]
    assert parse_explain_json(single([1, 2, 3], top_k=None), NAMES)[1] == 3
    assert parse_explain_json(single([1.0] * 12, top_k=None), [f"s{i}" for i in range(12)])[1] == 10
    assert parse_explain_json(single([1, 2, 3], top_k=2), NAMES)[1] == 2


@pytest.mark.parametrize("top_k", [0, 4, -1, 2.5, 2.0, True, "2", [2]])
def test_explain_top_k_must_be_an_integer_from_1_to_n(top_k: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_explain_json(single([1, 2, 3], top_k=top_k), NAMES)
    assert caught.value.code == "invalid_top_k"
    assert caught.value.message.startswith("top_k must be an integer from 1 to 3")


def test_top_k_is_a_field_of_explain_only() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_single_json(single([1, 2, 3], top_k=2), NAMES)
    assert caught.value.code == "unknown_field"


@pytest.mark.parametrize(
    "body",
    [
        b'{"values": [1, 2, 3], "values": [4, 5, 6]}',
        b'{"values": [1, 2, 3], "id": "a", "id": "b"}',
        b'{"values": [1, 2, 3], "id": "a:b", "id": "c:d"}',  # colons inside ids are not keys
        b'{"values": [1, 2, 3], "\\u0076alues": [4, 5, 6]}',  # the same key, escaped
        b'{"values": [1, 2, 3], "id": "\\\\", "values" : [1, 2, 3]}',  # a backslash elsewhere
        b'{"id": "x", "values": [1, 2, 3],\n"id"\t:\n"x"}',  # whitespace around the colon
    ],
)
def test_a_field_given_twice_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_single_json(body, NAMES)
    assert caught.value.code == "duplicate_field"
    assert "given 2 times" in caught.value.message


@pytest.mark.parametrize(
    ("body", "ident"),
    [
        (b'{"values": [1, 2, 3], "id": "values"}', "values"),
        (b'{"values": [1, 2, 3], "id": "a:b:c"}', "a:b:c"),
        (b'{"id": "\\"values\\": [1]", "values": [1, 2, 3]}', '"values": [1]'),
        (b'{"values": [1, 2, 3], "id": "\\u003a"}', ":"),  # an escaped colon: the exact path
    ],
)
def test_what_only_looks_like_a_repeated_field_is_accepted(body: bytes, ident: str) -> None:
    assert parse_single_json(body, NAMES).ids == [ident]


def test_batch_and_explain_fields_given_twice_are_refused() -> None:
    row = "[1, 2, 3]"
    for parse, body in [
        (lambda b: parse_batch_json(b, NAMES, 10), f'{{"vectors": [{row}], "vectors": [{row}]}}'),
        (lambda b: parse_batch_json(b, NAMES, 10), f'{{"vectors": [{row}], "ids": ["a:"], "ids": ["b"]}}'),
        (lambda b: parse_explain_json(b, NAMES), f'{{"values": {row}, "top_k": 1, "top_k": 2}}'),
    ]:
        with pytest.raises(InvalidInput) as caught:
            parse(body.encode())
        assert caught.value.code == "duplicate_field"


# --- the JSON batch fast path (simdjson) -------------------------------------------------------------------


def _both(body: bytes, n: int = 3, max_batch: int = 10) -> tuple[Readings | None, Readings | None]:
    """(fast path's answer or None, full path's answer or None when it refuses)."""
    try:
        full: Readings | None = _batch_json_full(body, [f"s{i}" for i in range(n)], max_batch)
    except (InvalidInput, MalformedRequest, PayloadTooLarge):
        full = None
    return _batch_json_fast(body, n, max_batch), full


def test_the_fast_path_reads_what_the_full_path_reads_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.normal(0, 1e3, size=(20, 8)).astype(np.float32),  # what orjson writes for float32
            np.array([[0.0, -0.0, 1e-45, -1e-45, 1e-50, 3.4028235e38, -3.4028235e38, 7]], np.float32),
        ]
    )
    bodies = [
        orjson.dumps({"vectors": x}, option=orjson.OPT_SERIALIZE_NUMPY),
        orjson.dumps(
            {"vectors": x.astype(np.float64).tolist(), "ids": [f"r:[{i}]\u00e9" for i in range(21)]}
        ),
        json.dumps(
            {"ids": None, "vectors": [[1, -0, 9007199254740993, 2**63, 1.5e-320, 5, 6, 1e38]]}
        ).encode(),
        b' \n{ "vectors" : [ [1,2,3,4,5,6,7,8] ] }\t',
        orjson.dumps(
            {
                "vectors": x[:3].astype(np.float64).tolist(),
                "asset": "line-3/press:[7]",
                "ts": ["2026-11-26T06:12:00Z", 1795673521, "2026-11-26T07:12:02+01:00"],
            }
        ),  # fmt: skip
    ]
    for body in bodies:
        fast, full = _both(body, n=8, max_batch=100)
        assert fast is not None and full is not None, body[:80]
        assert fast.x.dtype == np.float32 and fast.x.flags.c_contiguous
        assert fast.x.tobytes() == full.x.tobytes()  # bit for bit, signs of zero included
        assert fast.ids == full.ids
        assert fast.ts == full.ts and fast.asset == full.asset


@pytest.mark.parametrize(
    "body",
    [
        b'{"vectors": [[1, 2, true]]}',
        b'{"vectors": [[1, 2, null]]}',
        b'{"vectors": [[1, 2, "3"]]}',
        b'{"vectors": [[1, 2, [3]]]}',
        b'\xef\xbb\xbf{"vectors": [[1, 2, 3]]}',  # a BOM: simdjson would skip it, the full path refuses it
        b'{"vectors": [[1, 2, 3]], "ids": ["a\x01b"]}',  # a raw control character in a string
        b'{"vectors": [[1, [], [2, 3]]]}',
        b'{"vectors": [[1, 2, {"a": 3}]]}',
        b'{"vectors": [[1, 2, [3]]], "ids": ["\\u005b"]}',  # an escaped "[" must not balance the count
        b'{"vectors": [[1, 2, NaN]]}',
        b'{"vectors": [[1, 2, 1e39]]}',
        b'{"vectors": [[1, 2, -1e309]]}',
        b'{"vectors": [[1, 2]]}',
        b'{"vectors": []}',
        b'{"vectors": [[1, 2, 3]], "ids": ["a", "b"]}',
        b'{"vectors": [[1, 2, 3]], "ids": [1]}',
        b'{"vectors": [[1, 2, 3]], "ids": "a"}',
        b'{"vectors": [[1, 2, 3]], "id": "a"}',
        b'{"vectors": [[1, 2, 3]], "vectors": [[4, 5, 6]]}',
        b'{"vectors": [[1, 2, 3]]} []',
        b'{"vectors": [[1, 2, 3]],}',
        b'{"vectors": [[1, 2, 3]], "ids": ["\xff"]}',
        b'{"vectors": {"0": [1, 2, 3]}}',
        b"[[1, 2, 3]]",
        b'{"vectors": [[1, 2, 3]]' + b"]" * 5,
        b'{"vectors": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"vectors": [[1, 2, 3]], "ts": ["yesterday"]}',
        b'{"vectors": [[1, 2, 3]], "ts": [1, 2]}',
        b'{"vectors": [[1, 2, 3]], "ts": [[1]]}',
        b'{"vectors": [[1, 2, [3]]], "ts": ["2026-11-26T06:12:00Z["]}',  # a "[" in a string balances nothing
        b'{"vectors": [[1, 2, 3]], "ts": 5}',
        b'{"vectors": [[1, 2, 3]], "ts": [true]}',
    ],
)
def test_the_fast_path_leaves_every_bad_body_to_the_full_path(body: bytes) -> None:
    fast, full = _both(body)
    assert fast is None
    assert full is None  # the full path refuses it, with the error that names what is wrong


def test_the_fast_path_refuses_too_many_rows_as_the_full_path_does() -> None:
    """The one refusal of the fast path: more rows than max_batch, answered from simdjson's count before
    any list is built (the full path held ~180 MiB more for a 64 MiB body; docs/deploy.md)."""
    body = json.dumps({"vectors": [[1, 2, 3]] * 11}).encode()
    names = ["s0", "s1", "s2"]
    with pytest.raises(PayloadTooLarge) as full:
        _batch_json_full(body, names, 10)
    with pytest.raises(PayloadTooLarge) as fast:
        _batch_json_fast(body, 3, 10)
    assert (
        fast.value.code == full.value.code == "batch_too_large" and fast.value.message == full.value.message
    )


def test_the_fast_path_may_decline_what_the_full_path_reads() -> None:
    """Integers beyond 64 bits (simdjson's limit) and escaped ids go the full way, and are read there."""
    for body in (
        b'{"vectors": [[1, 2, 18446744073709551616]]}',
        b'{"vectors": [[1, 2, 3]], "ids": ["\\u00e9"]}',
    ):
        fast, full = _both(body)
        assert fast is None and full is not None


# --- the single-reading fast path (simdjson) ---------------------------------------------------------------


def _single_both(body: bytes, n: int = 3) -> tuple[Readings | None, Readings | None]:
    """(fast path's answer or None, full path's answer or None when it refuses)."""
    try:
        full: Readings | None = _single_json_full(body, [f"s{i}" for i in range(n)])
    except (InvalidInput, MalformedRequest, PayloadTooLarge):
        full = None
    return _single_json_fast(body, n), full


def test_the_single_fast_path_reads_what_the_full_path_reads_bit_for_bit() -> None:
    x = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-50, 3.4028235e38, -3.4028235e38, 7], np.float32)
    bodies = [
        orjson.dumps({"values": x}, option=orjson.OPT_SERIALIZE_NUMPY),
        orjson.dumps({"values": x.astype(np.float64).tolist(), "id": "r:[1]\u00e9", "asset": "press:[7]"}),
        json.dumps({"id": None, "values": [1, -0, 9007199254740993, 2**63, 1.5e-320, 5, 6, 1e38]}).encode(),
        b' \n{ "values" : [1,2,3,4,5,6,7,8] }\t',
        orjson.dumps({"values": x.astype(np.float64).tolist(), "ts": "2026-11-26T06:12:00Z"}),
        orjson.dumps({"values": x.astype(np.float64).tolist(), "ts": 1795673521, "asset": "a"}),
        orjson.dumps({"values": x.astype(np.float64).tolist(), "ts": 1795673521.25}),
    ]
    for body in bodies:
        fast, full = _single_both(body, n=8)
        assert fast is not None and full is not None, body[:80]
        assert fast.x.dtype == np.float32 and fast.x.flags.c_contiguous and fast.x.shape == (1, 8)
        assert fast.x.tobytes() == full.x.tobytes()  # bit for bit, signs of zero included
        assert fast.ids == full.ids and fast.ts == full.ts and fast.asset == full.asset


@pytest.mark.parametrize(
    "body",
    [
        b'{"values": [1, 2, true]}',
        b'{"values": [1, 2, null]}',
        b'{"values": [1, 2, "3"]}',
        b'{"values": [1, 2, [3]]}',
        b'{"values": [1, [2], 3]}',
        b'{"values": [[1, 2, 3]]}',
        b'\xef\xbb\xbf{"values": [1, 2, 3]}',
        b'{"values": [1, 2, 3], "id": "a\x01b"}',
        b'{"values": [1, 2, {"a": 3}]}',
        b'{"values": [1, 2, [3]], "id": "\\u005b"}',
        b'{"values": [1, [2], 3], "id": "["}',  # a "[" in a string balances nothing
        b'{"values": [1, 2, NaN]}',
        b'{"values": [1, 2, 1e39]}',
        b'{"values": [1, 2, -1e309]}',
        b'{"values": [1, 2]}',
        b'{"values": [1, 2, 3, 4]}',
        b'{"values": []}',
        b'{"values": [1, 2, 3], "id": 1}',
        b'{"values": [1, 2, 3], "id": ["a"]}',
        b'{"values": [1, 2, 3], "top_k": 1}',
        b'{"values": [1, 2, 3], "vectors": [[1, 2, 3]]}',
        b'{"values": [1, 2, 3], "values": [4, 5, 6]}',
        b'{"values": [1, 2, 3]} []',
        b'{"values": [1, 2, 3],}',
        b'{"values": [1, 2, 3], "id": "\xff"}',
        b'{"values": {"0": 1, "1": 2, "2": 3}}',
        b"[1, 2, 3]",
        b'{"values": [1, 2, 3]' + b"]" * 5,
        b'{"values": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"values": [1, 2, 3], "ts": "yesterday"}',
        b'{"values": [1, 2, 3], "ts": "2026-11-26T06:12:00"}',  # no zone
        b'{"values": [1, 2, 3], "ts": 1795673521000}',  # milliseconds by mistake
        b'{"values": [1, 2, 3], "ts": [1]}',
        b'{"values": [1, 2, 3], "ts": true}',
        b'{"id": "a"}',
    ],
)
def test_the_single_fast_path_leaves_every_bad_body_to_the_full_path(body: bytes) -> None:
    fast, full = _single_both(body)
    assert fast is None
    assert full is None  # the full path refuses it, with the error that names what is wrong


def test_the_single_fast_path_may_decline_what_the_full_path_reads() -> None:
    for body in (
        b'{"values": [1, 2, 18446744073709551616]}',
        b'{"values": [1, 2, 3], "id": "\\u00e9"}',
        b'{"values": [1, 2, 3], "asset": 7}',  # the asset rules (wire.assets) name it, after parsing
    ):
        fast, full = _single_both(body)
        assert fast is None and full is not None


def test_a_body_larger_than_a_reading_needs_never_grows_the_reused_parser() -> None:
    """A parser keeps the capacity of its largest document: a body past what a reading needs gets one of
    its own (the thread's stays small), and is still read."""
    import factory_anomaly.app.wire.parse as parse

    class Spy:
        def __init__(self) -> None:
            self.parser, self.bodies = simdjson.Parser(), 0

        def parse(self, body: bytes) -> object:
            self.bodies += 1
            return self.parser.parse(body)

    spy = Spy()
    parse._thread.parser = spy
    try:
        small = b'{"values": [1, 2, 3]}'
        assert _single_json_fast(small, 3) is not None and spy.bodies == 1
        padded = b'{"values": [1, 2, 3]' + b" " * (parse.REUSED_PARSER_SLACK_BYTES + 200) + b"}"
        read = _single_json_fast(padded, 3)
        assert read is not None and read.x.tolist() == [[1.0, 2.0, 3.0]]
        assert spy.bodies == 1 and parse._thread.parser is spy  # not through the thread's parser
    finally:
        del parse._thread.parser
