"""Evaluate a trained model on a (labelled) recording and write a JSON report.

The report holds, for the autoencoder and the PCA baseline side by side (same data, same run):
ROC-AUC, PR-AUC, precision / recall / F1 / false-alarm rate at each model's stored threshold, recall per
fault kind, and — where per-row fault sensors are given — HitRate and NDCG at 100 % and 150 % of a
per-sensor ranking by squared standardised residual. Ranking metrics are averaged over every anomalous row
that has ground-truth fault sensors, whether the detector flagged it or not.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.checkpoint import load_trained
from training.data import DataError, align_sensors, load_dataset, load_fault_sensors, load_labels
from training.metrics import detection_metrics, ranking_metrics
from training.train import score_in_batches


def evaluate(
    model_dir: Path,
    data_path: Path,
    labels_path: Path | None = None,
    fault_sensors_path: Path | None = None,
    *,
    impute: bool = False,
) -> dict[str, Any]:
    trained = load_trained(model_dir)
    raw = load_dataset(data_path, impute=impute)
    data = align_sensors(raw, trained.sensor_names)
    fault_kinds = None
    if labels_path is not None:
        labels, fault_kinds = load_labels(labels_path, data.n_rows)
    elif data.labels is not None:
        labels = data.labels
    else:
        raise DataError(f"{data_path}: no labels: give --labels FILE or a 'label' column in the data")
    fault_sensors = None
    if fault_sensors_path is not None:
        # indices refer to the data file's columns; translate them to the model's column order
        in_file = load_fault_sensors(fault_sensors_path, data.n_rows, data.n_sensors)
        model_index = {name: j for j, name in enumerate(trained.sensor_names)}
        to_model = [model_index[name] for name in raw.sensor_names]
        fault_sensors = {r: sorted(to_model[j] for j in sensors) for r, sensors in in_file.items()}

    started = time.perf_counter()
    ae_scores, ae_errors = score_in_batches(trained.scorer, data.values)
    ae_seconds = time.perf_counter() - started
    pca_scores, pca_errors = trained.baseline.score(data.values)
    report: dict[str, Any] = {
        "model": str(model_dir),
        "data": {"file": str(data_path), "rows": data.n_rows, "sensors": data.n_sensors},
        "threshold": trained.threshold.to_dict(),
        "scoring_seconds": ae_seconds,
    }
    for name, scores, errors, threshold in (
        ("autoencoder", ae_scores.astype(np.float64), ae_errors, trained.threshold.value),
        ("baseline_pca", pca_scores, pca_errors, trained.baseline_threshold.value),
    ):
        section = detection_metrics(scores, labels, threshold, fault_kinds)
        if fault_sensors is not None:
            section["ranking"] = ranking_metrics(errors, fault_sensors)
        report[name] = section
    return report


def write_report(report: dict[str, Any], out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    return out
