"""The sensors an operator hears about first: out of their training range first, then by error.

Why this order: an explanation must never send a technician to a sensor that does not carry the anomaly.
A sensor reading far outside everything it read in training is the first thing to check, whatever a
model makes of it; and among sensors inside their range, the reconstruction error (the tempered squared
residual each sensor contributes to the score, `sensor_error`) is the ranking whose top sensors, when
set back to normal, take most of the score away (docs/explainer.md, "Faithful by deletion"). The
attention explainer's distribution stays in the answer beside it, but does not decide the order: on a
reading unlike its injected training faults it can be nearly uniform.

Out of range is measured in training ranges: (low − x) / (high − low) below, (x − high) / (high − low)
above, 0 inside; a sensor whose training range is a single value gets a width of 1e-6 of its magnitude
(at least 1e-6), so any move off that value counts as far out.
"""

from __future__ import annotations

import numpy as np

MIN_RELATIVE_WIDTH = 1e-6


def range_widths(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """float64 [n]: each sensor's training range, floored so a constant sensor still has a width."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    floor = MIN_RELATIVE_WIDTH * np.maximum(np.maximum(np.abs(low), np.abs(high)), 1.0)
    return np.maximum(high - low, floor)


def out_of_range(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """float64 [..., n]: how far each reading lies outside its sensor's training range, in ranges (0
    inside; positive both below and above)."""
    x = np.asarray(x, dtype=np.float64)
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return np.maximum(np.maximum(low - x, x - high), 0.0) / range_widths(low, high)


def order_sensors(
    x: np.ndarray, sensor_error: np.ndarray, low: np.ndarray, high: np.ndarray, top_k: int | None = None
) -> np.ndarray:
    """int [top_k] (all sensors when None): one reading's sensors [n] in the operator's order: out of
    range first, furthest first; then by sensor_error, largest first; ties by index. A NaN or
    infinite error counts as the largest."""
    return order_by_excess(out_of_range(x, low, high), sensor_error, top_k)


def order_by_excess(excess: np.ndarray, sensor_error: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """`order_sensors` from the reading's `out_of_range` [n], for a caller that reports it too."""
    error = np.nan_to_num(np.asarray(sensor_error, dtype=np.float64), nan=np.inf)
    order = np.lexsort((np.arange(excess.size), -error, -excess))
    return order if top_k is None else order[:top_k]


PARTIAL_SORT_FROM = 2048
"""Sensors from which `largest` partially sorts: below it one stable sort of them all is faster (numpy's
partition, mask and second sort cost more than they save on a 1 000-sensor model; docs/benchmarks.md)."""


def largest(values: np.ndarray, k: int) -> np.ndarray:
    """int [min(k, n)]: the first k of a stable descending sort of `values` [n] (ties by index, NaN as the
    largest). On a wide model (PARTIAL_SORT_FROM sensors or more), found with a partial sort, which costs
    a fraction of sorting them all."""
    keys = np.asarray(values).astype(np.result_type(values, np.float32))  # a copy, negated in place
    np.nan_to_num(keys, copy=False, nan=np.inf)
    np.negative(keys, out=keys)
    if k >= keys.size or keys.size < PARTIAL_SORT_FROM:
        return np.argsort(keys, kind="stable")[:k]
    cut = np.partition(keys, k - 1)[k - 1]  # the k-th smallest key: every one of the first k is <= it
    candidates = np.flatnonzero(keys <= cut)  # ascending index, ties at the cut included
    return candidates[np.argsort(keys[candidates], kind="stable")][:k]


def order_rows(
    x: np.ndarray, sensor_error: np.ndarray, low: np.ndarray, high: np.ndarray, top_k: int
) -> np.ndarray:
    """int [N, top_k]: `order_sensors` for each of N readings [N, n] (the benchmarks' batch form)."""
    error = np.nan_to_num(np.asarray(sensor_error, dtype=np.float64), nan=np.inf)
    ranked = np.argsort(-error, axis=1, kind="stable")[:, :top_k]
    for i in np.flatnonzero(out_of_range(x, low, high).any(axis=1)).tolist():
        ranked[i] = order_sensors(x[i], sensor_error[i], low, high, top_k)
    return ranked
