"""A model version in memory: its verified manifest and warmed-up onnxruntime session(s), and the threshold
rule applied to the graphs' outputs. Immutable: a reload builds a new one; a request keeps the one it
started with.

The scorer graph (see `training/export.py`): input float32 [N, n_sensors] raw readings in the manifest's
sensor order; outputs `score` float32 [N] and `sensor_error` float32 [N, n_sensors]. A reading is anomalous
when score > threshold, compared in float64 as training calibrated it.

The optional explainer graph (manifest role "explainer"; see `training/explainer.py`) takes the same input
and outputs `attention` float32 [N, n_sensors] (non-negative, rows sum to 1), `score` and `sensor_error` as
the scorer's (it contains the frozen scorer); `serving.explaining` turns its outputs into answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime as ort

from factory_anomaly.alarms.jitter import JitterSpec
from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.alarms.stuck import StuckLimits
from factory_anomaly.alarms.velocity import VelocitySpec
from factory_anomaly.app.errors import ExplainerUnavailable
from factory_anomaly.app.serving.drift import DriftDetector
from factory_anomaly.artifact import EXPLAINER, Manifest
from factory_anomaly.explain.ranking import largest

SCORE_OUTPUT = "score"
SENSOR_ERROR_OUTPUT = "sensor_error"
ATTENTION_OUTPUT = "attention"
EXPECTED_OUTPUT = "expected"  # explainers exported since 2026-11-27: the reconstruction in sensor units
OUTPUTS = (SCORE_OUTPUT, SENSOR_ERROR_OUTPUT)
EXPLAINER_OUTPUTS = (ATTENTION_OUTPUT, SCORE_OUTPUT, SENSOR_ERROR_OUTPUT)
OUTPUT_RANKS = {ATTENTION_OUTPUT: 2, SCORE_OUTPUT: 1, SENSOR_ERROR_OUTPUT: 2, EXPECTED_OUTPUT: 2}


@dataclass(frozen=True)
class Assessment:
    """The outcome for N readings: `scores` float32 [N], `is_anomaly` bool [N], for each anomalous row
    the top sensors by `sensor_error` as (name, value), largest first, and how long the graph ran."""

    scores: np.ndarray
    is_anomaly: np.ndarray
    top_sensors: dict[int, list[tuple[str, float]]]
    run_seconds: float = 0.0  # wall time of the onnxruntime run that produced the scores
    sensor_error: np.ndarray | None = None  # float32 [N, n_sensors]: alarm episodes name their sensors


@dataclass(frozen=True)
class LoadedModel:
    """A verified manifest, its warmed-up onnxruntime session(s) and the provider it actually runs on.

    Immutable: a reload builds a new one, and a request keeps the one it started with. `explainer` is the
    explainer graph's session when the version has one (same options and provider as `session`).
    `calibration` is the one part that changes: the calibration-drift detector counting what this version
    flags against its manifest's `target_fpr` (`serving.drift`). Being the model's, it is one per loaded
    version: a reload starts a fresh one (a new version makes a new promise), and the readings of a
    request that finishes on the previous version count against the previous promise.
    """

    manifest: Manifest
    path: Path
    session: ort.InferenceSession
    provider: str  # the execution provider actually used, e.g. "CPUExecutionProvider"
    input_name: str
    loaded_at: str  # ISO 8601 UTC
    load_seconds: float  # verification + session creation + warm-up
    calibration: DriftDetector
    explainer: ort.InferenceSession | None = None

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def threshold(self) -> float:
        return self.manifest.threshold.value

    @property
    def sensor_names(self) -> tuple[str, ...]:
        return self.manifest.sensor_names

    @property
    def sensor_units(self) -> tuple[str, ...] | None:
        """Each sensor's unit as the training data named it ("" unknown); None when it named none."""
        return self.manifest.sensor_units

    @property
    def has_explainer(self) -> bool:
        return self.explainer is not None

    @cached_property
    def training_range(self) -> tuple[np.ndarray, np.ndarray]:
        """(sensor_low, sensor_high) float64 [n]: the range each sensor read in training."""
        m = self.manifest
        return np.asarray(m.sensor_low, dtype=np.float64), np.asarray(m.sensor_high, dtype=np.float64)

    @cached_property
    def stuck_limits(self) -> StuckLimits | None:
        """The version's stuck-sensor limits with the floor and ceiling they hold between (None: no
        stuck channel)."""
        spec = self.manifest.alarms
        if spec is None or spec.stuck_limits is None:
            return None
        m = self.manifest
        return StuckLimits(np.asarray(m.sensor_low), np.asarray(m.sensor_high), np.asarray(spec.stuck_limits))

    @cached_property
    def jitter(self) -> JitterSpec | None:
        """The version's jitter channel (None: none)."""
        spec = self.manifest.alarms
        if spec is None or spec.jitter is None:
            return None
        return JitterSpec.of(spec.jitter, self.manifest.sensor_low)

    @cached_property
    def velocity(self) -> VelocitySpec | None:
        """The version's velocity channel (None: none)."""
        spec = self.manifest.alarms
        if spec is None or spec.velocity is None:
            return None
        return VelocitySpec.of(spec.velocity)

    @cached_property
    def alarm_rule(self) -> EpisodeRule | None:
        """The version's per-asset episode rule (None: a version from before alarm episodes)."""
        spec = self.manifest.alarms
        return None if spec is None else EpisodeRule.of(spec)

    def score(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x float32 [N, n_sensors] -> (score float32 [N], sensor_error float32 [N, n_sensors])."""
        self._check_input(x)
        score, sensor_error = self.session.run(list(OUTPUTS), {self.input_name: x})
        return score, sensor_error

    def require_explainer(self) -> ort.InferenceSession:
        """The explainer graph's session, or 404 `explainer_unavailable` saying how to get one."""
        if self.explainer is None:
            raise ExplainerUnavailable(
                f"model version {self.version} has no explainer graph; retrain with the explainer "
                "(`python -m factory_anomaly.training train` trains it unless --no-explainer; "
                "`python -m factory_anomaly.training explain` "
                "adds one to an existing version), then reload"
            )
        return self.explainer

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x float32 [N, n_sensors] -> the explainer graph's (attention float32 [N, n_sensors], score
        float32 [N], sensor_error float32 [N, n_sensors]); `explainer_unavailable` without an explainer."""
        attention, score, sensor_error, _ = self.explain_with_expected(x)
        return attention, score, sensor_error

    def explain_with_expected(
        self, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """`explain`'s outputs and, from the same graph run, `expected` float32 [N, n_sensors] (the model's
        reconstruction in sensor units), or None for an explainer exported before it had that output."""
        session = self.require_explainer()
        self._check_input(x)
        input_name = self.manifest.graphs[EXPLAINER].inputs[0].name  # checked against the session at load
        if not self._explainer_has_expected:
            attention, score, sensor_error = session.run(list(EXPLAINER_OUTPUTS), {input_name: x})
            return attention, score, sensor_error, None
        attention, score, sensor_error, expected = session.run(
            [*EXPLAINER_OUTPUTS, EXPECTED_OUTPUT], {input_name: x}
        )
        return attention, score, sensor_error, expected

    @cached_property
    def _explainer_has_expected(self) -> bool:
        spec = self.manifest.graphs.get(EXPLAINER)
        return spec is not None and any(t.name == EXPECTED_OUTPUT for t in spec.outputs)

    @cached_property
    def _training_range(self) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.asarray(self.manifest.sensor_low, dtype=np.float32),
            np.asarray(self.manifest.sensor_high, dtype=np.float32),
        )

    def out_of_range_share(self, x: np.ndarray) -> np.ndarray:
        """x float32 [N, n_sensors] -> float64 [N]: each reading's share of sensors strictly outside the
        training range [sensor_low, sensor_high] of the manifest (input drift; 0 for a typical reading)."""
        low, high = self._training_range
        if len(x) == 1:  # two counts cost half of one count of an or-ed mask, on one row
            return np.array([(np.count_nonzero(x < low) + np.count_nonzero(x > high)) / x.shape[1]])
        return np.count_nonzero((x < low) | (x > high), axis=1) / x.shape[1]

    def _check_input(self, x: np.ndarray) -> None:
        n = self.manifest.n_sensors
        if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != n or len(x) == 0:
            raise ValueError(f"expected float32 [N >= 1, {n}], got {x.dtype} {list(x.shape)}")

    def assess(self, x: np.ndarray, top_k: int) -> Assessment:
        """Score `x` and name the `top_k` sensors of each anomalous row (score > threshold, or not finite)."""
        started = time.perf_counter()
        scores, sensor_error = self.score(x)
        return self.assess_outputs(scores, sensor_error, top_k, time.perf_counter() - started)

    def assess_outputs(
        self, scores: np.ndarray, sensor_error: np.ndarray, top_k: int, run_seconds: float = 0.0
    ) -> Assessment:
        """The threshold rule on graph outputs already computed (the scorer's or the explainer's): scores
        float32 [N], sensor_error float32 [N, n_sensors]; names the `top_k` sensors of each anomalous row
        by sensor_error. `run_seconds` is the graph's run time, passed through for the metrics."""
        # Compared in float64 (a float32 comparison would round the threshold), and written as "not <=" so
        # that a NaN score (readings near float32's limits overflow inside the graph) counts as anomalous.
        is_anomaly = ~(scores.astype(np.float64) <= self.threshold)
        top: dict[int, list[tuple[str, float]]] = {}
        if top_k > 0 and is_anomaly.any():
            for row in np.flatnonzero(is_anomaly).tolist():
                errors = sensor_error[row]
                top[row] = [(self.sensor_names[j], float(errors[j])) for j in largest(errors, top_k).tolist()]
        return Assessment(scores, is_anomaly, top, run_seconds, sensor_error)
