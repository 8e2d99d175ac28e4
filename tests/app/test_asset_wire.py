"""The asset and timestamp rules of `wire.assets`, case by case (the HTTP tests send a sample of them)."""

from __future__ import annotations

import pytest

from factory_anomaly.app.errors import InvalidInput
from factory_anomaly.app.wire.assets import binary_ts, parse_asset, parse_ts, parse_ts_list, request_asset


@pytest.mark.parametrize("name", ["press-7", "line_3/press.7:a", "A" * 128, "0"])
def test_valid_asset_names(name: str) -> None:
    assert parse_asset(name, "X-Asset") == name


@pytest.mark.parametrize("name", ["", "A" * 129, "press 7", "presse-\u00e9", "a\nb", "a#b", 7, None])
def test_invalid_asset_names(name: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_asset(name, "X-Asset")
    assert caught.value.code == "invalid_asset" and "X-Asset" in caught.value.message


def test_the_body_asset_must_match_the_header() -> None:
    assert request_asset("press-7", "press-7") == "press-7"
    assert request_asset("press-7", None) == "press-7" and request_asset(None, None) is None
    for header, body in (("press-7", "press-8"), (None, "press-7")):
        with pytest.raises(InvalidInput) as caught:
            request_asset(header, body)
        assert caught.value.code == "asset_mismatch"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2026-11-26T06:12:00Z", 1_795_673_520.0), ("2026-11-26T07:12:00+01:00", 1_795_673_520.0),
     ("2026-11-26T06:12:00.250Z", 1_795_673_520.25), (1_795_673_520, 1_795_673_520.0), (0.5, 0.5)],
)  # fmt: skip
def test_timestamps(value: object, seconds: float) -> None:
    assert parse_ts(value, "ts") == seconds


@pytest.mark.parametrize(
    "value", ["2026-11-26T06:12:00", "06:12", "", -1, 1.7e12, float("nan"), True, None, [1]]
)
def test_bad_timestamps(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_ts(value, "ts")
    assert caught.value.code == "invalid_ts"


def test_a_batch_gives_one_time_per_vector_or_none() -> None:
    assert parse_ts_list(None, 2) == [None, None]
    assert parse_ts_list([1, "1970-01-01T00:00:02Z"], 2) == [1.0, 2.0]
    with pytest.raises(InvalidInput, match="one timestamp per vector"):
        parse_ts_list([1], 2)


def test_binary_times_from_the_headers() -> None:
    assert binary_ts(None, None, 3) == [None, None, None]
    assert binary_ts("100", "0.5", 3) == [100.0, 100.5, 101.0]
    assert binary_ts("1970-01-01T00:01:40Z", None, 1) == [100.0]
    for start, step, rows in ((None, "1", 2), ("100", None, 2), ("100", "-1", 2), ("100", "fast", 2)):
        with pytest.raises(InvalidInput) as caught:
            binary_ts(start, step, rows)
        assert caught.value.code == "invalid_ts"
