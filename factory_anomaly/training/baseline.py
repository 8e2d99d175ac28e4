"""PCA reconstruction baseline: the linear detector the autoencoder has to beat.

Same bottleneck width as the autoencoder, same standardisation, same residual scaling and the same score
definition (see `model.AnomalyScorer`), fitted on the same training rows, so that the comparison isolates
what the nonlinear encoder/decoder adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from factory_anomaly.training.model import RESIDUAL_SCALE_FLOOR
from factory_anomaly.training.scaling import Standardiser


@dataclass(frozen=True)
class PCABaseline:
    standardiser: Standardiser
    mean: np.ndarray  # float64 [n]: PCA centre in standardised space
    components: np.ndarray  # float64 [k, n]: orthonormal rows
    residual_scale: np.ndarray  # float64 [n]

    @classmethod
    def fit(
        cls, train_raw: np.ndarray, val_raw: np.ndarray, standardiser: Standardiser, k: int
    ) -> PCABaseline:
        z = standardiser.transform(train_raw).astype(np.float64)
        k = min(k, z.shape[0], z.shape[1])
        pca = PCA(n_components=k, svd_solver="full").fit(z)
        base = cls(standardiser, pca.mean_, pca.components_, np.ones(z.shape[1]))
        rms = np.sqrt(np.mean(base.residuals(val_raw) ** 2, axis=0))
        return cls(standardiser, pca.mean_, pca.components_, np.maximum(rms, RESIDUAL_SCALE_FLOOR))

    def residuals(self, raw: np.ndarray) -> np.ndarray:
        z = self.standardiser.transform(raw).astype(np.float64) - self.mean
        return (z @ self.components.T) @ self.components - z

    def score(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(score [N], sensor_error [N, n]) with the autoencoder's definition."""
        r = self.residuals(raw) / self.residual_scale
        sensor_error = r * r
        return sensor_error.mean(axis=1), sensor_error

    def save(self, path: Path) -> Path:
        np.savez(
            path,
            std_mean=self.standardiser.mean,
            std_scale=self.standardiser.scale,
            std_constant=self.standardiser.constant,
            mean=self.mean,
            components=self.components,
            residual_scale=self.residual_scale,
        )
        return path

    @classmethod
    def load(cls, path: Path) -> PCABaseline:
        with np.load(path) as f:
            std = Standardiser(f["std_mean"], f["std_scale"], f["std_constant"])
            return cls(std, f["mean"], f["components"], f["residual_scale"])
