"""Read back the torch side of a published version (model.pt), for tests, retraining and the explainer.

Serving never uses this: it runs the ONNX graph. `evaluate` does too, so what is evaluated is what is served.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from factory_anomaly.artifact import Manifest, verify_artifact
from factory_anomaly.training.baseline import PCABaseline
from factory_anomaly.training.evaluate import BASELINE_FILE, open_model
from factory_anomaly.training.model import AnomalyScorer, Autoencoder
from factory_anomaly.training.threshold import Threshold

CHECKPOINT_FILE = "model.pt"


@dataclass(frozen=True)
class TrainedModel:
    scorer: AnomalyScorer  # in eval mode
    sensor_names: tuple[str, ...]
    threshold: Threshold
    baseline: PCABaseline
    baseline_threshold: Threshold
    manifest: Manifest
    directory: Path  # the version directory


def load_trained(path: str | Path) -> TrainedModel:
    """Load a version directory, or the version a model directory's CURRENT names (verified first)."""
    model = open_model(Path(path))
    directory, manifest = model.directory, verify_artifact(model.directory)
    checkpoint = torch.load(directory / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    n = int(checkpoint["n_sensors"])
    scorer = AnomalyScorer(Autoencoder(n, checkpoint["hidden"]), torch.zeros(n), torch.ones(n))
    scorer.load_state_dict(checkpoint["state_dict"])
    scorer.eval()
    return TrainedModel(
        scorer=scorer,
        sensor_names=manifest.sensor_names,
        threshold=model.threshold,
        baseline=PCABaseline.load(directory / BASELINE_FILE),
        baseline_threshold=model.baseline_threshold,
        manifest=manifest,
        directory=directory,
    )
