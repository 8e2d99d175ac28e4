"""One training run in memory, in data-flow order; it writes nothing (`publish` does, from its result).

  split by time (`splits`) -> standardise on the training rows (`scaling`) -> fit the autoencoder
  (`autoencoder`) -> residual scale on the validation rows -> threshold on the calibration rows
  (`threshold`) -> PCA baseline (`baseline`) -> held-out detection metrics -> attention explainer
  (`explainer`), measured on faults injected into the calibration rows -> `TrainResult`

`refit_explainer` reruns only the last step for a published version, on the recording it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from factory_anomaly.artifact import TRAINING_LOG_FILE, sha256_file
from factory_anomaly.training.autoencoder import fit_autoencoder
from factory_anomaly.training.baseline import PCABaseline
from factory_anomaly.training.checkpoint import TrainedModel
from factory_anomaly.training.config import TrainConfig
from factory_anomaly.training.data import DataError, Dataset
from factory_anomaly.training.explainer import (
    ExplainerConfig,
    FaultInjector,
    SensorAttentionExplainer,
    explain_in_batches,
    explainer_summary,
    fit_explainer,
    residual_unit,
)
from factory_anomaly.training.metrics import detection_metrics, ranking_by_kind
from factory_anomaly.training.model import AnomalyScorer, count_trainable_parameters, score_in_batches
from factory_anomaly.training.result import TrainResult
from factory_anomaly.training.scaling import Standardiser
from factory_anomaly.training.splits import Splits, split_in_time
from factory_anomaly.training.threshold import Threshold, best_f1_threshold, calibrate

log = logging.getLogger("training.pipeline")

EXPLAINER_HELD_OUT_SAMPLES = 1500


def fit_models(data: Dataset, config: TrainConfig, val_data: Dataset | None = None) -> TrainResult:
    """Split, standardise, fit the autoencoder, scale residuals, calibrate, fit the PCA baseline and (unless
    `config.explainer` is off) the explainer."""
    if val_data is not None and val_data.sensor_names != data.sensor_names:
        raise DataError(
            f"--val-data sensors differ from --data sensors ({val_data.n_sensors} vs {data.n_sensors})"
        )
    if config.on_constant not in ("warn", "error"):
        raise ValueError(f"on_constant must be 'warn' or 'error', got {config.on_constant!r}")
    started = time.perf_counter()
    splits = split_in_time(data, val_data, config.split_blocks, config.gap_fraction)
    standardiser = Standardiser.fit(splits.train)
    constant = _constant_sensors(standardiser, data.sensor_names, config.on_constant)
    scorer, history, fit_seconds = _fit_scorer(splits, standardiser, config)
    calibration_scores, _ = score_in_batches(scorer, splits.calibration)
    threshold = calibrate(calibration_scores.astype(np.float64), config.target_fpr)
    log.info("threshold %.5g (%s, target false-alarm rate %g, %d calibration rows)",
             threshold.value, threshold.method, threshold.target_fpr, threshold.n_calibration)  # fmt: skip

    pca = PCABaseline.fit(splits.train, splits.validation, standardiser, config.hidden[-1])
    pca_threshold = calibrate(pca.score(splits.calibration)[0], config.target_fpr)
    held_out = _held_out_metrics(scorer, threshold, pca, pca_threshold, splits)

    parameters = count_trainable_parameters(scorer.autoencoder)  # before the explainer freezes it
    explainer = None
    explainer_section: dict[str, Any] = {}
    if config.explainer:
        explainer, explainer_section = _fit_explainer(scorer, splits, config)

    best = min(history, key=lambda r: r["val_mse"])
    summary = {
        "config": asdict(config),
        "architecture": {
            "n_sensors": data.n_sensors,
            "hidden": list(config.hidden),
            "trainable_parameters": parameters,
        },
        "constant_sensors": constant,
        "splits": splits.description,
        "data": _fingerprint(data) | ({"val_data": _fingerprint(val_data)} if val_data is not None else {}),
        "epochs_run": len(history),
        "best_epoch": int(best["epoch"]),
        "best_val_mse": best["val_mse"],
        "fit_seconds": fit_seconds,
        "total_seconds": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
        "held_out": held_out,
        "explainer": explainer_section,
    }
    return TrainResult(
        scorer=scorer,
        sensor_names=tuple(data.sensor_names),
        sensor_low=splits.train.min(axis=0).astype(np.float64),
        sensor_high=splits.train.max(axis=0).astype(np.float64),
        threshold=threshold,
        baseline=pca,
        baseline_threshold=pca_threshold,
        history=history,
        calibration=splits.calibration,
        calibration_scores=calibration_scores,
        summary=summary,
        explainer=explainer,
    )


def _fit_scorer(
    splits: Splits, standardiser: Standardiser, config: TrainConfig
) -> tuple[AnomalyScorer, list[dict[str, float]], float]:
    """The autoencoder fitted on the standardised training rows, wrapped from raw readings to the score with
    the residual scale of the validation rows (eval mode); its epoch records; the fit's seconds."""
    train_z, val_z = standardiser.transform(splits.train), standardiser.transform(splits.validation)
    log.info("training on %d rows x %d sensors (%s)", len(train_z), train_z.shape[1], splits.description)
    started = time.perf_counter()
    autoencoder, history = fit_autoencoder(train_z, val_z, config)
    seconds = time.perf_counter() - started
    scorer = AnomalyScorer(
        autoencoder, torch.from_numpy(standardiser.mean), torch.from_numpy(standardiser.scale)
    )
    scorer.eval()
    with torch.no_grad():
        scorer.set_residual_scale(scorer.residuals(torch.from_numpy(splits.validation)))
    return scorer, history, seconds


def _constant_sensors(standardiser: Standardiser, names: tuple[str, ...], on_constant: str) -> list[str]:
    """Names of the sensors constant in the training split: warned about, or refused with "error"."""
    constant = [names[j] for j in np.flatnonzero(standardiser.constant)]
    if constant:
        message = (
            f"{len(constant)} sensor(s) constant in the training split: {constant[:10]}"
            f"{' …' if len(constant) > 10 else ''}; they keep scale 1.0 in their own unit"
        )
        if on_constant == "error":
            raise DataError(message + " (refused: --on-constant error)")
        log.warning(message)
    return constant


def _held_out_metrics(
    scorer: AnomalyScorer, threshold: Threshold, pca: PCABaseline, pca_threshold: Threshold, splits: Splits
) -> dict[str, Any]:
    """Detection metrics of both detectors on the held-out rows, when they hold labelled anomalies."""
    if not splits.held_out_labels.any():
        return {}
    ae_scores, _ = score_in_batches(scorer, splits.held_out_values)
    pca_scores, _ = pca.score(splits.held_out_values)
    y = splits.held_out_labels
    return {
        "autoencoder": detection_metrics(ae_scores.astype(np.float64), y, threshold.value)
        | {"best_f1": best_f1_threshold(ae_scores.astype(np.float64), y)},
        "baseline_pca": detection_metrics(pca_scores, y, pca_threshold.value)
        | {"best_f1": best_f1_threshold(pca_scores, y)},
    }


def refit_explainer(
    trained: TrainedModel,
    data: Dataset,
    val_data: Dataset | None = None,
    *,
    epochs: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """The published version `trained` with a newly trained explainer, as a new `TrainResult`.

    `data` (and `val_data`) must be the recording the version was trained on (its sha256 is checked), so
    the splits, and with them the explainer, are those `fit_models` would have produced."""
    summary = dict(trained.manifest.training)
    if _fingerprint(data)["sha256"] != summary["data"]["sha256"]:
        raise DataError(f"{data.source} is not the recording {trained.directory.name} was trained on")
    if data.sensor_names != trained.sensor_names:
        raise DataError(f"{data.source}: sensors differ from the model's")
    recorded_config: dict[str, Any] = dict(summary["config"])
    recorded_config["hidden"] = tuple(recorded_config["hidden"])  # a JSON list back to the tuple
    config = replace(TrainConfig(**recorded_config), explainer=True, progress=progress)
    if epochs is not None:
        config = replace(config, explainer_epochs=epochs)
    splits = split_in_time(data, val_data, config.split_blocks, config.gap_fraction)
    scorer = trained.scorer
    explainer, section = _fit_explainer(scorer, splits, config)
    summary["config"] = asdict(config)
    summary["explainer"] = section
    log_lines = (trained.directory / TRAINING_LOG_FILE).read_text().splitlines()
    calibration_scores, _ = score_in_batches(scorer, splits.calibration)
    return TrainResult(
        scorer=scorer,
        sensor_names=trained.sensor_names,
        sensor_low=np.asarray(trained.manifest.sensor_low),
        sensor_high=np.asarray(trained.manifest.sensor_high),
        threshold=trained.threshold,
        baseline=trained.baseline,
        baseline_threshold=trained.baseline_threshold,
        history=[json.loads(line) for line in log_lines],
        calibration=splits.calibration,
        calibration_scores=calibration_scores,
        summary=summary,
        explainer=explainer,
    )


def _fit_explainer(
    scorer: AnomalyScorer, splits: Splits, config: TrainConfig
) -> tuple[SensorAttentionExplainer, dict[str, Any]]:
    """Train the attention on faults injected into training rows (validation rows for early stopping) and
    measure it, the error ranking and a random ranking on faults injected into the calibration rows."""
    explainer_config = ExplainerConfig(
        epochs=config.explainer_epochs,
        samples_per_epoch=config.explainer_samples_per_epoch,
        seed=config.seed,
        progress=config.progress,
    )
    started = time.perf_counter()
    explainer, history = fit_explainer(scorer, splits.train, splits.validation, explainer_config)
    seconds = time.perf_counter() - started
    neighbours = FaultInjector.from_training_rows(splits.train, residual_unit(scorer), config.seed).neighbours
    injector = FaultInjector(splits.calibration, residual_unit(scorer), neighbours, config.seed + 2)
    rows, mask, kinds = injector.sample(EXPLAINER_HELD_OUT_SAMPLES)
    attention, errors = explain_in_batches(explainer, rows)
    rankings = {
        "attention": attention,
        "error": errors,
        "random": np.random.default_rng(config.seed).random(errors.shape),
    }
    fault_sensors = {i: np.flatnonzero(m).tolist() for i, m in enumerate(mask)}
    section = explainer_summary(explainer_config, history, seconds)
    section["held_out_ranking"] = ranking_by_kind(rankings, fault_sensors, kinds)
    section["held_out_ranking_rows"] = EXPLAINER_HELD_OUT_SAMPLES
    hit = {m: section["held_out_ranking"][m]["all"]["hitrate@150%"] for m in rankings}
    log.info("explainer held-out HitRate@150%%: %s", hit)
    return explainer, section


def _fingerprint(data: Dataset) -> dict[str, Any]:
    """Rows, sensors and the sha256 of the source file (of the float32 values for in-memory data)."""
    if data.source.is_file():
        digest, what = sha256_file(data.source), "file"
    else:
        digest, what = hashlib.sha256(np.ascontiguousarray(data.values).tobytes()).hexdigest(), "values"
    return {
        "file": str(data.source),
        "rows": data.n_rows,
        "sensors": data.n_sensors,
        "sha256": digest,
        "sha256_of": what,
    }
