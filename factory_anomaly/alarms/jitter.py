"""Jitter evidence: a sensor whose reading-to-reading jitter has risen far above what its level explains.

Why a channel of its own: a noise burst (a loose connector, a failing bearing, an earth fault) adds
variance, not an offset, so each reading of the burst is a plausible value and the model's score barely
moves; what changes is how much the reading jumps between readings. The second difference
d_t = x_t − 2·x_{t−1} + x_{t−2} cancels the process's level and slope, leaving mostly the sensor's own noise.

Why the noise model depends on the level: a sensor with a convex response (vibration grows exponentially
with load, pressure quadratically) also jitters with the process, in proportion to how far it reads above
its floor. Measured on the synthetic plant, a plain per-sensor scale of d lets rare, normal, high-load
stretches reach 3-6 times the statistic's fitted daily maximum, so no level holds from one day to the
next; docs/quality.md has the figures. So each sensor j gets E[d²] = a_j + b_j·(x_{t−1} − low_j)², fitted
on normal data by least squares (b_j ≥ 0), with low_j its training minimum.

The statistic, per sensor: v_t, an exponentially weighted mean (weight `lam`) of d_t² / (a_j + b_j·u²),
about 1 in normal operation. Sensors still differ in how heavy v's upper tail is, so each gets its own
exponential tail above its normal 99th percentile, with mean excess c_j; the sensor's evidence is
(v_j − tail_start_j) / c_j, the tail's e-folds (0 at or below the start), and a reading's is the largest
over sensors. Its level is calibrated at training time (`training.episodes`) to a share of the false
episodes per asset-day; a reading above it counts as over the level in the asset's episode rule.

numpy only: training, the quality benchmark and the serving process run this same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_LAM = 0.05  # the weight of the newest reading: a memory of about 20 readings
TAIL_QUANTILE = 0.99  # where each sensor's exponential tail starts
MIN_ROWS = 200  # normal readings the noise model and the tails need
_CHUNK = 4096


@dataclass(frozen=True, eq=False)
class JitterSpec:
    """A version's jitter channel, per sensor: the floor its level is measured from (`low`), the noise
    model (`noise_floor` a, `noise_slope` b), the tail's start and mean excess; the smoothing weight and
    the `level` on a reading's evidence (None: not calibrated, no evidence)."""

    low: np.ndarray
    noise_floor: np.ndarray
    noise_slope: np.ndarray
    tail_start: np.ndarray
    tail_excess: np.ndarray
    lam: float = DEFAULT_LAM
    level: float | None = None

    @property
    def active(self) -> np.ndarray:
        """Sensors the channel judges: those that move in normal data and have a tail."""
        return (self.noise_floor > 0) & (self.tail_excess > 0)

    @classmethod
    def of(cls, section: Any, low: Any) -> JitterSpec:
        """The channel a manifest's `alarms.jitter` section (or its JSON) holds, with the version's
        `sensor_low` as the floor."""
        fields = section if isinstance(section, dict) else vars(section)
        arrays = {name: np.asarray(fields[name], dtype=np.float64)
                  for name in ("noise_floor", "noise_slope", "tail_start", "tail_excess")}  # fmt: skip
        return cls(low=np.asarray(low, dtype=np.float64), lam=float(fields["lam"]),
                   level=float(fields["level"]), **arrays)  # fmt: skip

    def with_level(self, level: float | None) -> JitterSpec:
        return JitterSpec(self.low, self.noise_floor, self.noise_slope, self.tail_start, self.tail_excess,
                          self.lam, level)  # fmt: skip


def _standardised_squares(x: np.ndarray, low: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 [N, n]: d_t² / (a + b·(x_{t−1} − low)²); NaN for the first two readings and where the
    variance is 0."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    if x.shape[0] < 3:
        return out
    d = x[2:] - 2.0 * x[1:-1] + x[:-2]
    variance = a + b * np.square(x[1:-1] - low)
    out[2:] = np.divide(d * d, variance, out=np.full_like(d, np.nan), where=variance > 0)
    return out


def _smoothed(z2: np.ndarray, lam: float, start: np.ndarray | None = None) -> np.ndarray:
    """The exponentially weighted mean of z2 along the readings, from `start` (else 1, the normal level,
    so a series's first readings raise nothing); a NaN leaves it where it was."""
    v = np.empty_like(z2)
    current = np.ones(z2.shape[1]) if start is None else np.asarray(start, dtype=np.float64).copy()
    keep = 1.0 - lam
    for t in range(z2.shape[0]):
        row = z2[t]
        current = np.where(np.isnan(row), current, keep * current + lam * row)
        v[t] = current
    return v


def fit_noise_model(normal: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) per sensor: E[d²] = a + b·(x_{t−1} − low)² by least squares on normal readings in time
    order, b ≥ 0 and a > 0 (a sensor whose d is always 0 gets a = 0: inactive)."""
    x = np.asarray(normal, dtype=np.float64)
    d2 = np.square(x[2:] - 2.0 * x[1:-1] + x[:-2])
    u = np.square(x[1:-1] - low)
    mean_d2, mean_u = d2.mean(axis=0), u.mean(axis=0)
    spread = np.square(u - mean_u).mean(axis=0)
    together = ((u - mean_u) * (d2 - mean_d2)).mean(axis=0)
    b = np.maximum(np.divide(together, spread, out=np.zeros_like(spread), where=spread > 0), 0.0)
    a = np.maximum(mean_d2 - b * mean_u, 1e-3 * mean_d2)  # a variance floor: never below 0.1 % of E[d²]
    return a, b


def fit_jitter(normal: np.ndarray, low: np.ndarray, lam: float = DEFAULT_LAM) -> JitterSpec:
    """The noise model and tails from normal readings in time order (at least MIN_ROWS); no level yet
    (`JitterSpec.with_level`, from `evidence` on the same readings)."""
    x = np.asarray(normal, dtype=np.float64)
    if x.shape[0] < MIN_ROWS:
        raise ValueError(f"the jitter channel needs at least {MIN_ROWS} normal readings, got {x.shape[0]}")
    low = np.asarray(low, dtype=np.float64)
    a, b = fit_noise_model(x, low)
    v = _smoothed(_standardised_squares(x, low, a, b), lam)
    v = v[min(x.shape[0] // 2, math.ceil(3.0 / lam)) :]  # past the start's influence
    start = np.quantile(v, TAIL_QUANTILE, axis=0)
    over = v > start
    excess = np.where(over, v - start, 0.0).sum(axis=0) / np.maximum(over.sum(axis=0), 1)
    return JitterSpec(low=low, noise_floor=a, noise_slope=b, tail_start=start, tail_excess=excess, lam=lam)


def sensor_evidence(v: np.ndarray, spec: JitterSpec) -> np.ndarray:
    """float64 [..., n]: each sensor's e-folds of v above its tail start (0 at or below, or inactive)."""
    e = np.divide(v - spec.tail_start, spec.tail_excess, out=np.zeros_like(v), where=spec.active)
    return np.maximum(e, 0.0)


def evidence(x: np.ndarray, spec: JitterSpec) -> np.ndarray:
    """float64 [N]: a series's reading evidence (its largest sensor's), for training and the replay."""
    z2 = _standardised_squares(x, spec.low, spec.noise_floor, spec.noise_slope)
    out = np.empty(z2.shape[0])
    start = None
    for a in range(0, z2.shape[0], _CHUNK):
        v = _smoothed(z2[a : a + _CHUNK], spec.lam, start)
        start = v[-1]
        out[a : a + _CHUNK] = sensor_evidence(v, spec).max(axis=1, initial=0.0)
    return out


def jitter_over(x: np.ndarray, spec: JitterSpec) -> np.ndarray:
    """bool [N]: the readings of a series whose evidence exceeds the level (the series replay)."""
    if spec.level is None:
        return np.zeros(np.asarray(x).shape[0], dtype=bool)
    return evidence(x, spec) > spec.level


class JitterTracker:
    """One asset's jitter, reading by reading (O(n_sensors) numpy per reading): the same numbers as
    `evidence` on the asset's readings in order."""

    def __init__(self, spec: JitterSpec) -> None:
        self.spec = spec
        self.before: np.ndarray | None = None  # x_{t-2}
        self.last: np.ndarray | None = None  # x_{t-1}
        self.v = np.ones(spec.low.shape)

    def push(self, x: np.ndarray) -> list[tuple[int, float]]:
        """Add a reading [n]; (sensor, evidence) of each sensor whose evidence exceeds the level, largest
        first."""
        x = np.asarray(x, dtype=np.float64)
        spec = self.spec
        if self.before is not None and self.last is not None:
            d = x - 2.0 * self.last + self.before
            variance = spec.noise_floor + spec.noise_slope * np.square(self.last - spec.low)
            z2 = np.divide(d * d, variance, out=np.full_like(d, np.nan), where=variance > 0)
            self.v = np.where(np.isnan(z2), self.v, (1.0 - spec.lam) * self.v + spec.lam * z2)
        self.before, self.last = self.last, x.copy()
        if spec.level is None:
            return []
        e = sensor_evidence(self.v, spec)
        over = np.flatnonzero(e > spec.level)
        return [(int(j), float(e[j])) for j in over[np.argsort(-e[over], kind="stable")]]
