"""Produce a published version: fit in memory (`pipeline`), then publish atomically (`publish`).

The top of the training side: the CLI's `train` and `explain` commands call these two functions, and
nothing below imports this module, so the dependencies run one way (train -> pipeline, publish -> result).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from factory_anomaly.training.checkpoint import load_trained
from factory_anomaly.training.config import TrainConfig
from factory_anomaly.training.data import Dataset
from factory_anomaly.training.pipeline import fit_models, refit_explainer
from factory_anomaly.training.publish import publish

if TYPE_CHECKING:
    from factory_anomaly.training.evaluate import TestRecording

__all__ = ["TrainConfig", "add_explainer", "train"]


def train(
    data: Dataset,
    model_dir: Path,
    config: TrainConfig,
    val_data: Dataset | None = None,
    test: TestRecording | None = None,
    sensor_units: tuple[str, ...] | None = None,
) -> Path:
    """Train and publish a new version under `model_dir` (= <store>/<name>); return the version's path.
    `sensor_units` (`data.load_sensor_units`), one per sensor of `data`, go to the manifest as they are.

    The version is built beside its final place and renamed into it, and `CURRENT` moves to it only once
    it verifies: a failing or interrupted run leaves neither a partial version nor a moved `CURRENT`.
    """
    return publish(replace(fit_models(data, config, val_data), sensor_units=sensor_units), model_dir, test)


def add_explainer(
    model_dir: Path,
    data: Dataset,
    val_data: Dataset | None = None,
    test: TestRecording | None = None,
    *,
    epochs: int | None = None,
    progress: bool = True,
    sensor_units: tuple[str, ...] | None = None,
) -> Path:
    """Train the explainer for the version `model_dir/CURRENT` names, keeping its autoencoder, and publish
    the pair as a new version. `data` (and `val_data`) must be the recording the version was trained on
    (its sha256 is checked), so the splits — and the result — are those `train` would have produced.
    The version's sensor units carry over, replaced by `sensor_units` when given."""
    trained = load_trained(model_dir)
    result = refit_explainer(trained, data, val_data, epochs=epochs, progress=progress)
    if sensor_units is not None:
        result = replace(result, sensor_units=sensor_units)
    return publish(result, model_dir, test)
