"""Read back what `train` wrote, for evaluation and (next) ONNX export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.baseline import PCABaseline
from training.model import AnomalyScorer, Autoencoder
from training.threshold import Threshold

REQUIRED_FILES = ("model.pt", "training.json", "threshold.json", "baseline_pca.npz")


@dataclass(frozen=True)
class TrainedModel:
    scorer: AnomalyScorer  # in eval mode
    sensor_names: tuple[str, ...]
    threshold: Threshold
    baseline: PCABaseline
    baseline_threshold: Threshold
    summary: dict[str, Any]  # training.json
    directory: Path


def load_trained(directory: str | Path) -> TrainedModel:
    """Load a training output directory; FileNotFoundError names the first missing file."""
    directory = Path(directory)
    for name in REQUIRED_FILES:
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory} is not a training output: {name} is missing")
    checkpoint = torch.load(directory / "model.pt", map_location="cpu", weights_only=True)
    scorer = AnomalyScorer(
        Autoencoder(int(checkpoint["n_sensors"]), checkpoint["hidden"]),
        torch.zeros(checkpoint["n_sensors"]),
        torch.ones(checkpoint["n_sensors"]),
    )
    scorer.load_state_dict(checkpoint["state_dict"])
    scorer.eval()
    summary = json.loads((directory / "training.json").read_text())
    return TrainedModel(
        scorer=scorer,
        sensor_names=tuple(summary["sensor_names"]),
        threshold=Threshold.from_dict(json.loads((directory / "threshold.json").read_text())),
        baseline=PCABaseline.load(directory / "baseline_pca.npz"),
        baseline_threshold=Threshold.from_dict(summary["baseline_pca_threshold"]),
        summary=summary,
        directory=directory,
    )
