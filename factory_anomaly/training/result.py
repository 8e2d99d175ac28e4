"""What one training run produced, in memory: the hand-over from fitting to publishing.

`pipeline` builds a `TrainResult`; `publish` writes it as a version, and `card` describes it. Both read it
from here, never from the module that fitted it, so the dependencies run one way: fit -> result <- publish.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from factory_anomaly.alarms.jitter import JitterSpec
from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.alarms.velocity import VelocitySpec
from factory_anomaly.training.baseline import PCABaseline
from factory_anomaly.training.explainer import SensorAttentionExplainer
from factory_anomaly.training.model import AnomalyScorer
from factory_anomaly.training.threshold import Threshold


@dataclass
class TrainResult:
    """Everything a training run produced, in memory; `publish.publish` turns it into an artifact."""

    scorer: AnomalyScorer  # eval mode
    sensor_names: tuple[str, ...]
    sensor_low: np.ndarray  # float64 [n]: smallest training reading per sensor (input-drift reference)
    sensor_high: np.ndarray  # float64 [n]: largest
    threshold: Threshold
    baseline: PCABaseline
    baseline_threshold: Threshold
    history: list[dict[str, float]]  # one record per autoencoder epoch (TRAINING_LOG_FILE)
    calibration: np.ndarray  # raw calibration rows (parity checks on real data)
    calibration_scores: np.ndarray  # their scores
    summary: dict[str, Any]  # config, splits, data fingerprint, timings, held-out metrics
    explainer: SensorAttentionExplainer | None = None  # eval mode; scorer frozen inside
    alarm_rule: EpisodeRule | None = None  # None: too few normal readings to calibrate one
    stuck_limits: np.ndarray | None = None  # int [n] (`alarms.stuck`); None: no stuck channel
    jitter: JitterSpec | None = None  # the jitter channel (`alarms.jitter`), calibrated; None: none
    velocity: VelocitySpec | None = None  # the velocity channel (`alarms.velocity`), calibrated; None: none
    sensor_units: tuple[str, ...] | None = None  # per sensor ("" unknown); None: the data named none
