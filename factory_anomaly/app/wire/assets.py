"""The asset a request's readings belong to, and their timestamps; framework-free.

The asset travels in the `X-Asset` header so a proxy can route on it (every reading of an asset must
reach the process that holds its alarm state); a JSON body may repeat it as `"asset"`, which must then be
the same. Timestamps are RFC 3339 with a zone ("2026-11-26T06:12:00Z") or Unix seconds; a binary batch
gives its first reading's time in `X-Ts-Start` and the step in `X-Ts-Step-S`. A reading without one is
stamped with its arrival time.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from factory_anomaly.app.errors import ErrorCode, InvalidInput

ASSET_HEADER = "x-asset"
TS_START_HEADER = "x-ts-start"
TS_STEP_HEADER = "x-ts-step-s"
ASSET_PATTERN = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
EARLIEST_TS = 0.0  # 1970-01-01
LATEST_TS = 32_503_680_000.0  # 3000-01-01: beyond it a number is a unit mistake (milliseconds), not a time
_SHOW_CHARS = 40


def parse_asset(value: Any, where: str) -> str:
    """A valid asset name, or 422 `invalid_asset` naming where it came from."""
    if type(value) is not str or not ASSET_PATTERN.fullmatch(value):
        raise InvalidInput(
            f"{where} must be 1-128 characters of A-Z a-z 0-9 . _ : / -, got {_show(value)}",
            code=ErrorCode.INVALID_ASSET,
        )
    return value


def request_asset(header: str | None, body_asset: Any = None) -> str | None:
    """The request's asset: the header's, checked against the body's when both are given."""
    asset = None if header is None else parse_asset(header, "X-Asset")
    if body_asset is None:
        return asset
    given = parse_asset(body_asset, "asset")
    if asset is None:
        raise InvalidInput(
            "the body names an asset but the X-Asset header is missing; send the asset in X-Asset "
            "(a proxy routes on it)",
            code=ErrorCode.ASSET_MISMATCH,
        )
    if given != asset:
        raise InvalidInput(
            f"the body's asset {given!r} differs from the X-Asset header {asset!r}",
            code=ErrorCode.ASSET_MISMATCH,
        )
    return asset


def parse_ts(value: Any, where: str) -> float:
    """Seconds since the epoch from an RFC 3339 string with a zone or a JSON number of Unix seconds."""
    if type(value) in (int, float):
        seconds = float(value)
    elif type(value) is str:
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            raise _bad_ts(where, value) from None
        if stamp.tzinfo is None:
            raise InvalidInput(
                f"{where} {_show(value)} has no time zone; add one (e.g. Z for UTC)",
                code=ErrorCode.INVALID_TS,
            )
        seconds = stamp.timestamp()
    else:
        raise _bad_ts(where, value)
    if not (math.isfinite(seconds) and EARLIEST_TS <= seconds <= LATEST_TS):
        raise InvalidInput(
            f"{where} is {_show(value)}, outside 1970-3000 in Unix seconds (milliseconds by mistake?)",
            code=ErrorCode.INVALID_TS,
        )
    return seconds


def parse_ts_list(value: Any, rows: int) -> list[float | None]:
    """A batch's `ts`: one timestamp per vector (or none at all)."""
    if value is None:
        return [None] * rows
    if type(value) is not list or len(value) != rows:
        got = f"{len(value)} entries" if type(value) is list else _show(value)
        raise InvalidInput(f"ts must be a list of one timestamp per vector ({rows}), got {got}",
                           code=ErrorCode.INVALID_TS)  # fmt: skip
    return [parse_ts(item, f"ts[{i}]") for i, item in enumerate(value)]


def binary_ts(start: str | None, step: str | None, rows: int) -> list[float | None]:
    """Timestamps of a binary batch from `X-Ts-Start` (RFC 3339 or Unix seconds) and `X-Ts-Step-S`."""
    if start is None:
        if step is not None:
            raise InvalidInput("X-Ts-Step-S needs X-Ts-Start", code=ErrorCode.INVALID_TS)
        return [None] * rows
    try:
        first = parse_ts(float(start), "X-Ts-Start")
    except ValueError:
        first = parse_ts(start, "X-Ts-Start")
    if step is None:
        if rows > 1:
            raise InvalidInput(
                "X-Ts-Start with more than one row needs X-Ts-Step-S", code=ErrorCode.INVALID_TS
            )
        return [first]
    try:
        seconds = float(step)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise InvalidInput(f"X-Ts-Step-S must be seconds >= 0, got {_show(step)}", code=ErrorCode.INVALID_TS)
    return [first + i * seconds for i in range(rows)]


def _bad_ts(where: str, value: Any) -> InvalidInput:
    return InvalidInput(
        f"{where} must be an RFC 3339 time with a zone (2026-11-26T06:12:00Z) or Unix seconds, "
        f"got {_show(value)}",
        code=ErrorCode.INVALID_TS,
    )


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."
