"""Classical detectors the autoencoder is judged against, through the *same* calibration procedure.

Each is fitted on standardised normal rows and scores rows (higher = more anomalous):
- `pca`: PCA reconstruction, mean squared residual per sensor scaled like the autoencoder's;
- `iforest`: scikit-learn's IsolationForest (the seed's suggested ensemble partner), minus its score;
- `knn`: mean Euclidean distance to the k nearest training rows;
- `max_abs_z`: the largest |z| over sensors, the rule a plant's limit alarms apply.

`cross_fit_detector` runs one of them through `crossfit`'s folds exactly as `pipeline` runs the
autoencoder: out-of-fold scores of every normal row (the calibration sample), then a fit on all rows. A
comparison at the threshold then measures the detector, not a difference in how its threshold was set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors

from factory_anomaly.training.crossfit import final_fit, plan_folds
from factory_anomaly.training.model import auto_hidden, robust_residual_scale
from factory_anomaly.training.scaling import Standardiser

KNN_NEIGHBOURS = 5
KNN_MAX_TRAIN_ROWS = 5000  # the reference rows are subsampled above this: kNN cost grows with both sides
SCORE_BATCH_ROWS = 8192


class Detector(Protocol):
    def fit(self, train_z: np.ndarray, validation_z: np.ndarray) -> Detector: ...

    def score(self, z: np.ndarray) -> np.ndarray: ...


@dataclass
class PCADetector:
    """Linear reconstruction with the autoencoder's bottleneck width and its residual scaling."""

    k: int = 0
    seed: int = 0

    def fit(self, train_z: np.ndarray, validation_z: np.ndarray) -> PCADetector:
        k = self.k or auto_hidden(train_z.shape[1])[-1]
        self._pca = PCA(n_components=min(k, *train_z.shape), svd_solver="full", random_state=self.seed)
        self._pca.fit(train_z)
        self._spread = robust_residual_scale(self._residuals(validation_z))
        return self

    def _residuals(self, z: np.ndarray) -> np.ndarray:
        return self._pca.inverse_transform(self._pca.transform(z)) - z

    def score(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(np.mean((self._residuals(z) / self._spread) ** 2, axis=1), dtype=np.float64)


@dataclass
class IsolationForestDetector:
    n_estimators: int = 200
    seed: int = 0

    def fit(self, train_z: np.ndarray, validation_z: np.ndarray) -> IsolationForestDetector:
        self._forest = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed, n_jobs=1)
        self._forest.fit(train_z)
        return self

    def score(self, z: np.ndarray) -> np.ndarray:
        return -np.asarray(self._forest.score_samples(z), dtype=np.float64)


@dataclass
class KNNDetector:
    k: int = KNN_NEIGHBOURS
    seed: int = 0

    def fit(self, train_z: np.ndarray, validation_z: np.ndarray) -> KNNDetector:
        rows = train_z
        if rows.shape[0] > KNN_MAX_TRAIN_ROWS:
            pick = np.random.default_rng(self.seed).choice(rows.shape[0], KNN_MAX_TRAIN_ROWS, replace=False)
            rows = rows[np.sort(pick)]
        self._k = min(self.k, rows.shape[0])
        self._nn = NearestNeighbors(n_neighbors=self._k).fit(rows)
        return self

    def score(self, z: np.ndarray) -> np.ndarray:
        out = [
            self._nn.kneighbors(z[i : i + SCORE_BATCH_ROWS])[0].mean(axis=1)
            for i in range(0, z.shape[0], SCORE_BATCH_ROWS)
        ]
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


@dataclass
class MaxAbsZDetector:
    def fit(self, train_z: np.ndarray, validation_z: np.ndarray) -> MaxAbsZDetector:
        return self

    def score(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(np.abs(z).max(axis=1), dtype=np.float64)


DETECTORS: dict[str, Callable[[int], Detector]] = {
    "pca": lambda seed: PCADetector(seed=seed),
    "iforest": lambda seed: IsolationForestDetector(seed=seed),
    "knn": lambda seed: KNNDetector(seed=seed),
    "max_abs_z": lambda seed: MaxAbsZDetector(),
}


@dataclass
class CrossFitted:
    """A detector fitted on all normal rows, with the out-of-fold scores its threshold is calibrated on."""

    detector: Detector
    standardiser: Standardiser
    normal_scores: np.ndarray
    fit_seconds: float

    def score(self, raw: np.ndarray) -> np.ndarray:
        return self.detector.score(self.standardiser.transform(raw))


def cross_fit_detector(
    name: str, normal: np.ndarray, folds: int, gap_fraction: float, split_blocks: int, seed: int = 0
) -> CrossFitted:
    """Detector `name` through the autoencoder's procedure (see the module docstring)."""
    make = DETECTORS[name]
    started = time.perf_counter()
    standardiser = Standardiser.fit(normal)
    z = standardiser.transform(normal)
    scores = np.empty(z.shape[0], dtype=np.float64)
    for fold in plan_folds(z.shape[0], folds, gap_fraction, split_blocks):
        detector = make(seed).fit(z[fold.train], z[fold.validation])
        scores[fold.held_out] = detector.score(z[fold.held_out])
    final = final_fit(z.shape[0], split_blocks)
    detector = make(seed).fit(z[final.train], z[final.validation])
    return CrossFitted(detector, standardiser, scores, time.perf_counter() - started)
