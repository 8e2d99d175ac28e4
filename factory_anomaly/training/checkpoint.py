"""The torch side of a published version (CHECKPOINT_FILE): written when it is published, read back for
tests, retraining and the explainer. Its format is defined here only:
{"state_dict", "n_sensors", "hidden", "aggregate", "model", "forest", "latent"} (checkpoints from before the
aggregate score by the mean; from before the variants, "model" is "ae"; "forest" and "latent" rebuild the
ensemble partner, if any, before its buffers load).

Serving never uses this: it runs the ONNX graph. `evaluate` does too, so what is evaluated is what is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from factory_anomaly.artifact import BASELINE_FILE, CHECKPOINT_FILE, Manifest, verify_artifact
from factory_anomaly.training.baseline import PCABaseline
from factory_anomaly.training.evaluate import open_model
from factory_anomaly.training.forest import TorchIsolationForest
from factory_anomaly.training.latent import LatentGaussian
from factory_anomaly.training.model import AnomalyScorer, build_autoencoder
from factory_anomaly.training.threshold import Threshold


@dataclass(frozen=True)
class TrainedModel:
    scorer: AnomalyScorer  # in eval mode
    sensor_names: tuple[str, ...]
    threshold: Threshold
    baseline: PCABaseline
    baseline_threshold: Threshold
    manifest: Manifest
    directory: Path  # the version directory


def save_checkpoint(scorer: AnomalyScorer, hidden: Sequence[int], directory: Path) -> Path:
    """Write the scorer's weights (autoencoder, standardisation, residual scale) and the autoencoder's
    variant into `directory`."""
    path = directory / CHECKPOINT_FILE
    n_sensors = int(scorer.mean.numel())
    torch.save(
        {
            "state_dict": scorer.state_dict(),
            "n_sensors": n_sensors,
            "hidden": list(hidden),
            "aggregate": scorer.aggregate,
            "model": scorer.autoencoder.kind,
            "forest": None if scorer.forest is None else scorer.forest.shape,
            "latent": None if scorer.latent is None else scorer.latent.width,
        },
        path,
    )
    return path


def load_trained(path: str | Path) -> TrainedModel:
    """Load a version directory, or the version a model directory's CURRENT names (verified first)."""
    model = open_model(Path(path))
    directory, manifest = model.directory, verify_artifact(model.directory)
    checkpoint = torch.load(directory / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    n = int(checkpoint["n_sensors"])
    aggregate = checkpoint.get("aggregate", "mean")
    autoencoder = build_autoencoder(checkpoint.get("model", "ae"), n, checkpoint["hidden"])
    scorer = AnomalyScorer(autoencoder, torch.zeros(n), torch.ones(n), aggregate=aggregate)
    state = checkpoint["state_dict"]
    state.setdefault("aggregate_scale", torch.ones(2))
    state.setdefault("tail_anchor", torch.ones(1))  # checkpoints before the tail shape: plain r²
    state.setdefault("tail_exponent", torch.ones(n))
    state.setdefault("tail_limit", torch.full((n,), float("inf")))  # before the limit: tempered to the end
    state.setdefault("ensemble_scale", torch.ones(2))
    if checkpoint.get("forest"):
        scorer.set_forest(TorchIsolationForest(**checkpoint["forest"]))
    if checkpoint.get("latent"):
        scorer.set_latent(LatentGaussian(int(checkpoint["latent"])))
    scorer.load_state_dict(state)
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
