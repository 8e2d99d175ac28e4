"""Explaining a reading with the attention explainer graph: which sensors the model blames; framework-free.

One run of the explainer graph (`LoadedModel.explain`, see `app.scoring`) answers a request: it outputs
`attention` float32 [N, n] (non-negative, each row sums to 1: a sensor's share of the blame), and `score`
float32 [N] and `sensor_error` float32 [N, n], which equal the scorer graph's up to float rounding because
the explainer contains the frozen scorer. The explanation therefore reports the explainer's own score
(running the scorer as well would double the cost for the same number), and `is_anomaly` follows exactly
the rule of /v1/score: score > threshold compared in float64, and a score that is not finite is anomalous.

Per sensor:
  attention     the graph's float32 value, unchanged
  error_share   sensor_error[j] / Σ_i sensor_error[i] over the reading's n sensors (the sum in float64):
                the sensor's share of the reconstruction error, in [0, 1]; None when the sum is not finite
                and positive (a reading that overflows inside the graph)
  value         the reading's value, as sent
  expected      the value the model expected there: its reconstruction in the sensor's unit (None for an
                explainer exported before the graph had that output)
  out_of_range  how far outside its training range [sensor_low, sensor_high], in ranges (0 inside)
  direction     "high" or "low": against the training range when outside it, else against `expected`;
                None inside the range when there is no expected value
  unit          the sensor's unit where the training data named one (`train --sensor-units`), else None
Sensors are listed in the operator's order (`factory_anomaly.explain.ranking`): out of range first, then
by error; attention is reported beside it, not used to order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from factory_anomaly.app.model import Assessment, LoadedModel
from factory_anomaly.explain.ranking import order_by_excess, out_of_range


@dataclass(frozen=True)
class SensorBlame:
    index: int  # position in the model's sensor order
    name: str
    attention: float  # a float32 value
    error_share: float | None
    value: float
    expected: float | None
    out_of_range: float  # in training ranges; 0 inside
    direction: str | None  # "high", "low", or None inside the range
    unit: str | None  # as the training data named it; None where it named none


@dataclass(frozen=True)
class Explanation:
    """One reading's explanation: `assessment` (its score, is_anomaly and, when anomalous, the top sensors
    by sensor_error for the anomaly log, as /v1/score logs them) and the `top_k` sensors in the operator's
    order."""

    assessment: Assessment
    sensors: list[SensorBlame]

    @property
    def score(self) -> float:
        return float(self.assessment.scores[0])

    @property
    def is_anomaly(self) -> bool:
        return bool(self.assessment.is_anomaly[0])


def explain_reading(model: LoadedModel, x: np.ndarray, top_k: int, log_top_k: int) -> Explanation:
    """x float32 [1, n_sensors] -> its explanation with the `top_k` sensors in the operator's order
    (1 <= top_k <= n); `log_top_k` sensors by sensor_error go to the assessment for the anomaly log."""
    if len(x) != 1:
        raise ValueError(f"explain_reading takes one reading, got {len(x)} rows")
    started = time.perf_counter()
    attention, scores, sensor_error, expected = model.explain_with_expected(x)
    assessment = model.assess_outputs(scores, sensor_error, log_top_k, time.perf_counter() - started)
    errors = sensor_error[0]
    total = float(np.sum(errors, dtype=np.float64))
    usable = math.isfinite(total) and total > 0
    low, high = model.training_range
    reading = x[0].astype(np.float64)
    excess = out_of_range(reading, low, high)
    units = model.sensor_units
    sensors = []
    for j in order_by_excess(excess, errors, top_k).tolist():
        share = float(errors[j]) / total if usable else math.nan
        guess = None if expected is None else float(expected[0, j])
        if excess[j] > 0:
            direction: str | None = "high" if reading[j] > high[j] else "low"
        else:
            direction = None if guess is None else ("high" if reading[j] >= guess else "low")
        sensors.append(
            SensorBlame(
                index=j,
                name=model.sensor_names[j],
                attention=float(attention[0, j]),
                error_share=share if math.isfinite(share) else None,
                value=float(reading[j]),
                expected=guess,
                out_of_range=float(excess[j]),
                direction=direction,
                unit=(units[j] or None) if units is not None else None,
            )
        )
    return Explanation(assessment, sensors)
