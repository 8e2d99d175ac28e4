"""The ensemble partner that scores beside the autoencoder (`--ensemble`, the seed's task 5), fitted
through the same cross-fitting as the autoencoder and combined on a calibrated scale.

Why a partner at all: the reconstruction error misses what the autoencoder reconstructs well. An
IsolationForest on the standardised readings (`forest.py`) isolates rows in sparse regions of the input;
a Gaussian of the bottleneck codes (`latent.py`) sees readings that stay on the learned manifold but in a
combination of states normal operation does not visit. Each partner's raw score is divided by its own
held-out normal tail quantile, as the autoencoder's is, and the larger one is the score
(`AnomalyScorer.with_partner`), so either can raise it and neither needs the other's units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from factory_anomaly.training.forest import TorchIsolationForest, fit_forest
from factory_anomaly.training.latent import LatentGaussian
from factory_anomaly.training.model import AnomalyScorer, Autoencoder, tail_level

PARTNER_BATCH = 4096  # rows per forward pass when scoring held-out rows


def fit_partner(kind: str, autoencoder: Autoencoder, train_z: np.ndarray, seed: int) -> nn.Module:
    """The ensemble partner of `kind` (`ENSEMBLES`) fitted on standardised normal rows: an IsolationForest
    on them, or a Gaussian of `autoencoder`'s codes of them."""
    if kind == "iforest":
        return TorchIsolationForest.from_sklearn(fit_forest(train_z, seed))
    if kind == "latent":
        with torch.no_grad():
            return LatentGaussian.fit(autoencoder.code(torch.from_numpy(train_z)).numpy())
    raise ValueError(f"unknown ensemble {kind!r}")


def partner_scores(partner: nn.Module, autoencoder: Autoencoder, z: np.ndarray) -> np.ndarray:
    """A fitted partner's raw scores [N] of standardised rows z (float64)."""
    rows = torch.from_numpy(np.ascontiguousarray(z))
    with torch.no_grad():
        if isinstance(partner, LatentGaussian):
            rows = autoencoder.code(rows)
        return np.concatenate(
            [partner(rows[i : i + PARTNER_BATCH]).numpy() for i in range(0, rows.shape[0], PARTNER_BATCH)]
        ).astype(np.float64)


def attach_partner(
    scorer: AnomalyScorer, kind: str, train_z: np.ndarray, val_z: np.ndarray, autoencoder_val: np.ndarray,
    seed: int,
) -> None:  # fmt: skip
    """Fit the partner on the shipped fit's training rows and add it to `scorer`, each score's normaliser
    its tail quantile on the validation rows (`autoencoder_val`: the autoencoder's scores of them)."""
    partner = fit_partner(kind, scorer.autoencoder, train_z, seed)
    level = tail_level(val_z.shape[0])
    partner_val = partner_scores(partner, scorer.autoencoder, val_z)
    scale = (float(np.quantile(autoencoder_val, level)), float(np.quantile(partner_val, level)))
    if isinstance(partner, LatentGaussian):
        scorer.set_latent(partner, scale)
    elif isinstance(partner, TorchIsolationForest):
        scorer.set_forest(partner, scale)


def with_partner_scores(
    scorer: AnomalyScorer, kind: str, autoencoder: np.ndarray, partner: np.ndarray
) -> tuple[np.ndarray, dict[str, Any]]:
    """Calibration scores of the ensemble: the larger of the two normalised out-of-fold scores, as the
    scorer's `with_partner` combines them on new rows."""
    c = scorer.ensemble_scale.numpy().astype(np.float64)
    combined = np.maximum(autoencoder / c[0], partner / c[1])
    share = float(np.mean(partner / c[1] > autoencoder / c[0]))
    return combined, {"ensemble": {"kind": kind, "scale": c.tolist(), "partner_sets_score_share": share}}
