"""Velocity evidence: the process state changing faster than it ever does in normal operation.

Why a channel of its own: a process excursion (a feed upset, a valve slamming, a server's load jumping)
moves many sensors together, consistently with each other, so every reading of it can be one the model
reconstructs well: a rare state, not an impossible one, and normal operation visits rare states too.
What sets it apart is how fast the state got there. ISA-18.2 knows this as the rate-of-change alarm; here
it watches the whole process at once rather than one tag.

The state: the projection p_t of the standardised reading onto the normal readings' first `components`
principal directions (a linear map, so sensor noise projects to a fixed, tiny spread). Its change over
`lag` readings, c_t = p_t − p_{t−lag}, is judged by its squared Mahalanobis distance from the normal
changes (their mean and covariance on the training readings in time order). Measured on the synthetic plant
and the SMD server machines, this statistic keeps its normal maxima from one day to the next (unlike the
per-sensor temporal statistics of docs/quality.md), because it never looks at a single sensor's tail.

A reading over the channel's level opens an episode on its own: an abrupt change lasts only the `lag`
readings its difference spans, too few for the score's k of n. Its level is calibrated at training time
(`training.episodes`) for a share of the false episodes per asset-day.

numpy only: training, the quality benchmark and the serving process run this same code.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

DEFAULT_COMPONENTS = 8
DEFAULT_LAG = 3  # readings: a change spread over a few readings still counts as one jump
MIN_ROWS = 200  # normal readings the directions and the change covariance need
TOP_MOVED = 3  # sensors named as having moved most in an abrupt change
_CHUNK = 8192


@dataclass(frozen=True, eq=False)
class VelocitySpec:
    """A version's velocity channel: the standardisation (`center`, `scale`, the scorer's own), the
    principal directions [components, n] (`directions`), the normal changes' mean [components] and
    inverse covariance (`change_mean`, `change_precision`), the `lag` in readings and the `level` on the
    statistic (None: not calibrated, no evidence)."""

    center: np.ndarray
    scale: np.ndarray
    directions: np.ndarray
    change_mean: np.ndarray
    change_precision: np.ndarray
    lag: int = DEFAULT_LAG
    level: float | None = None

    @property
    def components(self) -> int:
        return int(self.directions.shape[0])

    @classmethod
    def of(cls, section: Any) -> VelocitySpec:
        """The channel a manifest's `alarms.velocity` section (or its JSON) holds."""
        fields = section if isinstance(section, dict) else vars(section)
        names = ("center", "scale", "directions", "change_mean", "change_precision")
        arrays = {name: np.asarray(fields[name], dtype=np.float64) for name in names}
        return cls(lag=int(fields["lag"]), level=float(fields["level"]), **arrays)

    def with_level(self, level: float | None) -> VelocitySpec:
        return VelocitySpec(self.center, self.scale, self.directions, self.change_mean,
                            self.change_precision, self.lag, level)  # fmt: skip

    def project(self, x: np.ndarray) -> np.ndarray:
        """float64 [..., components]: the state of readings [..., n]."""
        weights, offset = self._projection
        return np.asarray(x, dtype=np.float64) @ weights - offset

    @cached_property
    def _projection(self) -> tuple[np.ndarray, np.ndarray]:
        """((directions / scale)ᵀ [n, components], center's projection [components]): the standardisation
        folded into the directions once, so a reading costs one matrix-vector product."""
        weights = (self.directions / self.scale).T
        return weights, self.center @ weights

    def distance(self, change: np.ndarray) -> np.ndarray:
        """float64 [...]: squared Mahalanobis distance of state changes [..., components] from normal."""
        d = np.asarray(change, dtype=np.float64) - self.change_mean
        return np.einsum("...i,ij,...j->...", d, self.change_precision, d)


def clean_windows(normal: np.ndarray, lag: int) -> np.ndarray:
    """bool [N]: readings whose change over `lag` readings spans normal readings only (a labelled fault
    inside, or at either end, would teach the channel that jumps are normal)."""
    bad = np.concatenate([[0], np.cumsum(~np.asarray(normal, dtype=bool))])
    out = np.zeros(bad.size - 1, dtype=bool)
    out[lag:] = bad[lag + 1 :] - bad[: -lag - 1] == 0
    return out


def fit_velocity(
    x: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    components: int = DEFAULT_COMPONENTS,
    lag: int = DEFAULT_LAG,
    normal: np.ndarray | None = None,
) -> VelocitySpec:
    """The directions and the normal changes' law from readings in time order, standardised by the
    scorer's `center` and `scale`; `normal`: bool [N], the readings to learn from (default all; at least
    MIN_ROWS). No level yet (`VelocitySpec.with_level`, from `statistic` on the same readings). At most
    half as many components as sensors."""
    x = np.asarray(x, dtype=np.float64)
    normal = np.ones(x.shape[0], dtype=bool) if normal is None else np.asarray(normal, dtype=bool)
    if np.count_nonzero(normal) < MIN_ROWS:
        raise ValueError(f"the velocity channel needs at least {MIN_ROWS} normal readings, got "
                         f"{np.count_nonzero(normal)}")  # fmt: skip
    if components < 1 or lag < 1:
        raise ValueError(f"components and lag must be positive, got {components} and {lag}")
    center, scale = np.asarray(center, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    z = (x - center) / scale
    rows = z[normal]
    step = max(1, rows.shape[0] // 20_000)  # the directions need no more rows than this
    k = max(1, min(components, x.shape[1] // 2))
    directions = np.linalg.svd(rows[::step] - rows.mean(axis=0), full_matrices=False)[2][:k]
    p = z @ directions.T
    change = (p[lag:] - p[:-lag])[clean_windows(normal, lag)[lag:]]
    if change.shape[0] < MIN_ROWS:
        raise ValueError(f"the velocity channel needs at least {MIN_ROWS} changes within normal stretches, "
                         f"got {change.shape[0]}")  # fmt: skip
    covariance = np.atleast_2d(np.cov(change, rowvar=False))
    return VelocitySpec(center=center, scale=scale, directions=directions, change_mean=change.mean(axis=0),
                        change_precision=np.linalg.pinv(covariance), lag=lag)  # fmt: skip


def statistic(x: np.ndarray, spec: VelocitySpec) -> np.ndarray:
    """float64 [N]: each reading's change statistic in a series (0 for its first `lag` readings)."""
    x = np.asarray(x)
    out = np.zeros(x.shape[0])
    lag = spec.lag
    if x.shape[0] <= lag:
        return out
    p = np.concatenate([spec.project(x[a : a + _CHUNK]) for a in range(0, x.shape[0], _CHUNK)])
    out[lag:] = spec.distance(p[lag:] - p[:-lag])
    return out


def velocity_over(x: np.ndarray, spec: VelocitySpec) -> np.ndarray:
    """bool [N]: the readings of a series whose statistic exceeds the level (the series replay)."""
    if spec.level is None:
        return np.zeros(np.asarray(x).shape[0], dtype=bool)
    return statistic(x, spec) > spec.level


class VelocityTracker:
    """One asset's state changes, reading by reading (one projection per reading): the same numbers as
    `statistic` on the asset's readings in order."""

    def __init__(self, spec: VelocitySpec) -> None:
        self.spec = spec
        self.states: deque[np.ndarray] = deque(maxlen=spec.lag + 1)
        self.readings: deque[np.ndarray] = deque(maxlen=spec.lag + 1)

    def push(self, x: np.ndarray) -> tuple[float, list[int]]:
        """Add a reading [n]; (the statistic over the level's multiple, the sensors that moved most over
        the lag, largest first) when the statistic exceeds the level, else (0.0, [])."""
        spec = self.spec
        x = np.asarray(x, dtype=np.float64)
        self.states.append(spec.project(x))
        self.readings.append(x)
        if spec.level is None or len(self.states) <= spec.lag:
            return 0.0, []
        value = float(spec.distance(self.states[-1] - self.states[0]))
        if not value > spec.level:
            return 0.0, []
        moved = np.abs(self.readings[-1] - self.readings[0]) / spec.scale
        top = np.argsort(-moved, kind="stable")[:TOP_MOVED]
        return value / spec.level, [int(j) for j in top]
