"""Stuck-sensor evidence: a sensor whose reading has not changed for longer than it ever does in normal
operation, while away from its recorded floor and ceiling.

Why a channel of its own: a stuck sensor has no noise, and its frozen value is usually a plausible one,
so the model's score barely moves (on the plant, the per-reading score catches 14 % of stuck episodes).
Repeats are normal for some sensors: coarse quantisation, or a reading clipped at a physical limit (a
vibration at 0, a valve at 100 %). So a repeat at the sensor's training minimum or maximum does not count,
and each sensor gets its own limit from the normal data: `STUCK_FACTOR` times the longest run of repeats
it showed there, plus `STUCK_MARGIN`. For a sensor whose repeats are independent with probability p, the
longest run in N readings grows like log N / log(1/p): a recording ten times longer than the training
data lengthens it by well under the factor. A sensor with no usable limit (it barely ever changes) gets 0:
its channel is off, since frozen and idle cannot be told apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STUCK_FACTOR = 2.0
STUCK_MARGIN = 3
MAX_USEFUL_RUN = 1000  # a sensor repeating this long in normal data gives no stuck evidence


def repeat_runs(x: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """int32 [N, n]: for each reading and sensor, how many consecutive readings before it had the same
    value, counting only values strictly between the sensor's `low` and `high`."""
    x = np.asarray(x)
    counted = np.zeros(x.shape, dtype=bool)
    counted[1:] = (x[1:] == x[:-1]) & (x[1:] > low) & (x[1:] < high)
    runs = np.zeros(x.shape, dtype=np.int32)
    current = np.zeros(x.shape[1], dtype=np.int32)
    for t in range(x.shape[0]):
        current = np.where(counted[t], current + 1, 0)
        runs[t] = current
    return runs


def stuck_limits(normal: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Per-sensor run limit (int64 [n]) from normal readings in time order; 0 = no stuck evidence."""
    longest = repeat_runs(normal, low, high).max(axis=0).astype(np.int64)
    limits = np.ceil(STUCK_FACTOR * longest).astype(np.int64) + STUCK_MARGIN
    limits[longest >= MAX_USEFUL_RUN] = 0
    return limits


def stuck_over(x: np.ndarray, low: np.ndarray, high: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """bool [N]: readings of a series with some sensor stuck beyond its limit (the series replay)."""
    runs = repeat_runs(x, low, high)
    active = limits > 0
    return np.any(runs[:, active] > limits[active], axis=1)


@dataclass(frozen=True, eq=False)
class StuckLimits:
    """A version's stuck channel: the floor and ceiling repeats must stay between, and the limits."""

    low: np.ndarray
    high: np.ndarray
    limits: np.ndarray


class StuckTracker:
    """One asset's repeat runs, reading by reading (O(n_sensors) numpy per reading)."""

    def __init__(self, spec: StuckLimits) -> None:
        self.spec = spec
        self.low, self.high = np.asarray(spec.low), np.asarray(spec.high)
        self.limits = np.asarray(spec.limits)
        self.active = self.limits > 0
        # a sensor is stuck once its run exceeds this: its limit, or never for a sensor without one
        self.cutoff = np.where(self.active, self.limits, np.iinfo(np.int64).max)
        self.last: np.ndarray | None = None
        self.runs = np.zeros(self.limits.shape, dtype=np.int64)

    def push(self, x: np.ndarray) -> list[tuple[int, int]]:
        """Add a reading [n]; returns (sensor, run) of each sensor stuck beyond its limit."""
        x = np.asarray(x)
        runs = self.runs
        if self.last is None:
            runs[:] = 0
        else:
            counted = x == self.last
            counted &= x > self.low
            counted &= x < self.high
            runs += 1
            runs *= counted  # in place: a sensor that moved starts again from 0
        self.last = x.copy()
        over = runs > self.cutoff
        if not over.any():
            return []
        stuck = np.flatnonzero(over)
        return list(zip(stuck.tolist(), runs[stuck].tolist(), strict=True))
