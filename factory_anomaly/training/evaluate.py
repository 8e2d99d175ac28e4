"""Evaluate a model artifact on a (labelled) recording and write a JSON report.

The autoencoder is scored by the artifact's own ONNX graph through onnxruntime — what is evaluated is what
the service runs. The report holds, for the autoencoder and the PCA baseline side by side (same data, same
run): ROC-AUC, PR-AUC, precision / recall / F1 / false-alarm rate at each model's stored threshold, recall
per fault kind, and — where per-row fault sensors are given — HitRate and NDCG at 100 % and 150 % of a
per-sensor ranking by squared standardised residual. Ranking metrics are averaged over every anomalous row
that has ground-truth fault sensors, whether the detector flagged it or not.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.artifact import (
    BASELINE_FILE,
    EXPLAINER,
    MANIFEST_FILE,
    SCORER,
    ArtifactError,
    Manifest,
    read_manifest,
    resolve_current,
    verify_artifact,
)
from factory_anomaly.training.baseline import PCABaseline
from factory_anomaly.training.data import (
    DataError,
    align_sensors,
    load_dataset,
    load_fault_sensors,
    load_labels,
)
from factory_anomaly.training.episode_quality import channel_evidence, judge_episodes
from factory_anomaly.training.metrics import (
    binomial_interval,
    detection_metrics,
    ranking_by_kind,
    ranking_metrics,
)
from factory_anomaly.training.threshold import Threshold, best_f1_threshold

SCORING_BATCH_ROWS = 4096


@dataclass(frozen=True)
class TestRecording:
    """A recording to evaluate on: the data file, and optionally labels and per-row fault sensors."""

    data: Path
    labels: Path | None = None
    fault_sensors: Path | None = None


class ArtifactModel:
    """The artifact's scorer graph (onnxruntime, CPU) and its PCA baseline, read from a version directory."""

    def __init__(self, directory: Path, manifest: Manifest) -> None:
        self.directory = directory
        self.manifest = manifest
        graph = manifest.graphs[SCORER]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(directory / graph.file), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = graph.inputs[0].name
        self.output_names = [t.name for t in graph.outputs]
        t = manifest.threshold
        self.threshold = Threshold(t.value, t.method, t.target_fpr, t.n_calibration)
        self.baseline = PCABaseline.load(directory / BASELINE_FILE)
        self.explainer: ort.InferenceSession | None = None
        if EXPLAINER in manifest.graphs:
            self.explainer = ort.InferenceSession(
                str(directory / manifest.graphs[EXPLAINER].file), options, providers=["CPUExecutionProvider"]
            )
        self.baseline_threshold = Threshold.from_dict(manifest.training["baseline_pca"]["threshold"])

    def attention(self, raw: np.ndarray) -> np.ndarray:
        """Explainer attention float32 [N, n] (the artifact must have an explainer graph)."""
        assert self.explainer is not None
        out = []
        for i in range(0, len(raw), 256):
            x = np.ascontiguousarray(raw[i : i + 256], dtype=np.float32)
            out.append(self.explainer.run(["attention"], {self.input_name: x})[0])
        return np.concatenate(out)

    def score(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score float32 [N], sensor_error float32 [N, n]) from the ONNX graph, in batches."""
        scores, errors = [], []
        for i in range(0, len(raw), SCORING_BATCH_ROWS):
            x = np.ascontiguousarray(raw[i : i + SCORING_BATCH_ROWS], dtype=np.float32)
            s, e = self.session.run(self.output_names, {self.input_name: x})
            scores.append(s)
            errors.append(e)
        return np.concatenate(scores), np.concatenate(errors)


def open_model(path: Path, *, verify: bool = True) -> ArtifactModel:
    """`path` is a version directory, or a model directory whose `CURRENT` names one.

    A published version is verified (checksums and consistency); `verify=False` reads a version still
    being built, whose manifest does not list its files yet.
    """
    path = Path(path)
    if not (path / MANIFEST_FILE).is_file():
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: model not found")
        try:
            path = resolve_current(path)
        except ArtifactError as exc:
            raise FileNotFoundError(f"{path} is not a model artifact: {exc}") from exc
    manifest = verify_artifact(path) if verify else read_manifest(path)
    return ArtifactModel(path, manifest)


@dataclass(frozen=True)
class Evaluation:
    report: dict[str, Any]
    labels: np.ndarray  # int8 [N]
    fault_kinds: np.ndarray | None  # object [N]
    scores: dict[str, np.ndarray]  # "autoencoder" / "baseline_pca" -> float64 [N]


def evaluate_recording(model: ArtifactModel, test: TestRecording, *, impute: bool = False) -> Evaluation:
    """Score `test` with the artifact and its baseline; labels from `test.labels` or a `label` column."""
    names = model.manifest.sensor_names
    raw = load_dataset(test.data, impute=impute)
    data = align_sensors(raw, names)
    fault_kinds = None
    if test.labels is not None:
        labels, fault_kinds = load_labels(test.labels, data.n_rows)
    elif data.labels is not None:
        labels = data.labels
    else:
        raise DataError(f"{test.data}: no labels: give --labels FILE or a 'label' column in the data")
    fault_sensors = None
    if test.fault_sensors is not None:
        # indices refer to the data file's columns; translate them to the model's column order
        in_file = load_fault_sensors(test.fault_sensors, data.n_rows, data.n_sensors)
        model_index = {name: j for j, name in enumerate(names)}
        to_model = [model_index[name] for name in raw.sensor_names]
        fault_sensors = {r: sorted(to_model[j] for j in sensors) for r, sensors in in_file.items()}

    started = time.perf_counter()
    ae_scores, ae_errors = model.score(data.values)
    ae_seconds = time.perf_counter() - started
    pca_scores, pca_errors = model.baseline.score(data.values)
    report: dict[str, Any] = {
        "model": {"name": model.manifest.name, "version": model.manifest.version},
        "data": {"file": str(test.data), "rows": data.n_rows, "sensors": data.n_sensors},
        "threshold": model.threshold.to_dict(),
        "scoring_seconds": ae_seconds,
    }
    scores: dict[str, np.ndarray] = {}
    for name, s, errors, threshold in (
        ("autoencoder", ae_scores.astype(np.float64), ae_errors, model.threshold.value),
        ("baseline_pca", pca_scores, pca_errors, model.baseline_threshold.value),
    ):
        section = detection_metrics(s, labels, threshold, fault_kinds)
        section |= _against_target(section, model.threshold.target_fpr)
        if 0 < section["n_anomalous"] < section["n_rows"]:
            section["best_f1"] = best_f1_threshold(s, labels)["f1"]
        if fault_sensors is not None:
            section["ranking"] = ranking_metrics(errors, fault_sensors)
        report[name] = section
        scores[name] = s
    if fault_sensors and model.explainer is not None:
        report["explainer_ranking"] = _explainer_ranking(
            model, data.values, ae_errors, fault_sensors, fault_kinds
        )
    alarms = model.manifest.alarms
    if alarms is not None:  # the recording replayed as one asset's readings, in its time order
        evidence = channel_evidence(model.manifest.to_dict(), data.values)
        report["alarm_episodes"] = judge_episodes(scores["autoencoder"], labels, fault_kinds,
                                                  EpisodeRule.of(alarms), alarms.reading_period_s,
                                                  evidence=evidence)  # fmt: skip
    return Evaluation(report, labels, fault_kinds, scores)


def _against_target(section: dict[str, Any], target_fpr: float) -> dict[str, Any]:
    """The realised false-alarm rate against the promise: expected false alarms, the ratio, and the ratio's
    exact 95 % interval (what docs/quality.md reports per set)."""
    normal = section["n_rows"] - section["n_anomalous"]
    if not normal:
        return {}
    low, high = binomial_interval(section["false_positives"], normal)
    return {
        "target_fpr": target_fpr,
        "expected_false_alarms": normal * target_fpr,
        "false_alarm_ratio": section["false_positives"] / (normal * target_fpr),
        "false_alarm_ratio_ci95": [low / target_fpr, high / target_fpr],
    }


def _explainer_ranking(
    model: ArtifactModel,
    values: np.ndarray,
    errors: np.ndarray,
    fault_sensors: dict[int, list[int]],
    fault_kinds: np.ndarray | None,
) -> dict[str, Any]:
    """Attention vs error ranking vs a random ranking, per fault kind, on rows with known fault sensors."""
    rows = sorted(r for r, sensors in fault_sensors.items() if sensors)
    kinds = fault_kinds[rows] if fault_kinds is not None else np.full(len(rows), "unknown", dtype=object)
    local = {i: fault_sensors[r] for i, r in enumerate(rows)}
    rankings = {
        "attention": model.attention(values[rows]),
        "error": errors[rows],
        "random": np.random.default_rng(0).random((len(rows), values.shape[1])),
    }
    return ranking_by_kind(rankings, local, kinds)


def evaluate(
    model_path: Path,
    data_path: Path,
    labels_path: Path | None = None,
    fault_sensors_path: Path | None = None,
    *,
    impute: bool = False,
) -> dict[str, Any]:
    """The `python -m factory_anomaly.training evaluate` report for a published artifact (version or model
    directory)."""
    model = open_model(model_path)
    return evaluate_recording(
        model, TestRecording(data_path, labels_path, fault_sensors_path), impute=impute
    ).report


def write_report(report: dict[str, Any], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    return out
