"""Numbers on the wire: JSON has no NaN or Infinity."""

from __future__ import annotations

import math


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or Infinity: a non-finite number (or None) is written as null."""
    return value if value is not None and math.isfinite(value) else None
