"""Per-sensor standardisation fitted on the training split (numpy only; export bakes it into the graph).

Why: sensors report in different units and ranges (rpm in the thousands, volts near 24), and an
unscaled squared error would be dominated by the widest sensors. Each sensor becomes (x - mean) / scale.

Constant sensors: a sensor whose training values are all equal has no spread to divide by. It keeps
scale = 1.0 in its own unit (a deviation of one unit counts like one standard deviation elsewhere) and is
reported by name; the trainer warns by default or refuses with `--on-constant error`. Nearly constant
sensors (quantised readings that rarely change) have a small but real spread and are scaled by it, with a
floor of `MIN_RELATIVE_SCALE` of their magnitude so float32 round-off can never become a standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_RELATIVE_SCALE = 1e-6


@dataclass(frozen=True)
class Standardiser:
    mean: np.ndarray  # float32 [n_sensors]
    scale: np.ndarray  # float32 [n_sensors], > 0
    constant: np.ndarray  # bool [n_sensors]: no spread in training

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardiser:
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"standardisation needs a 2-D array with at least 2 rows, got shape {x.shape}")
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        floor = MIN_RELATIVE_SCALE * np.maximum(np.abs(mean), 1.0)
        constant = np.ptp(x, axis=0) == 0
        scale = np.where(constant, 1.0, np.maximum(std, floor))
        return cls(mean.astype(np.float32), scale.astype(np.float32), constant)

    @property
    def n_sensors(self) -> int:
        return int(self.mean.shape[0])

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((np.asarray(values, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "constant": self.constant.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardiser:
        return cls(
            np.asarray(d["mean"], dtype=np.float32),
            np.asarray(d["scale"], dtype=np.float32),
            np.asarray(d["constant"], dtype=bool),
        )
