"""A second ensemble partner: how far a reading's bottleneck code lies from the normal codes.

Why: the reconstruction error sees readings that leave the manifold the autoencoder learned; a reading
that stays on it but in a combination of states normal operation never visits (every value plausible,
their mix not) reconstructs well and goes unseen. The code the encoder gives it does stand out. A
Gaussian fitted to the normal codes (Ledoit-Wolf shrinkage, so a bottleneck wider than the rows allow, or
a unit that never fires, still has a well-conditioned covariance) scores that by the squared Mahalanobis
distance. As a torch module inside `AnomalyScorer` it is exported, calibrated and parity-checked with the
rest of the score, like the IsolationForest partner (`forest.py`).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import nn


class LatentGaussian(nn.Module):
    """Codes [N, b] → squared Mahalanobis distance [N] from the normal codes' mean, under their
    shrunk covariance Σ: ‖(code − center) · W‖², with W Wᵀ = Σ⁻¹."""

    center: torch.Tensor
    whitening: torch.Tensor

    def __init__(self, width: int) -> None:
        super().__init__()
        self.register_buffer("center", torch.zeros(width))
        self.register_buffer("whitening", torch.eye(width))

    @property
    def width(self) -> int:
        """What a checkpoint records to rebuild the module before loading its buffers."""
        return int(self.center.numel())

    @classmethod
    def fit(cls, codes: np.ndarray) -> LatentGaussian:
        """Fit to normal codes [N, b] (N >= 2)."""
        codes = np.asarray(codes, dtype=np.float64)
        if codes.ndim != 2 or codes.shape[0] < 2:
            raise ValueError(f"a latent Gaussian needs at least 2 codes, got shape {codes.shape}")
        estimate = LedoitWolf().fit(codes)
        covariance = estimate.covariance_
        # a floor relative to the average variance keeps a code that never varied (shrinkage of an
        # all-zero covariance is still zero) from dividing by zero
        floor = 1e-6 * max(float(np.trace(covariance)) / covariance.shape[0], 1e-12)
        covariance = covariance + floor * np.eye(covariance.shape[0])
        whitening = np.linalg.cholesky(np.linalg.inv(covariance))
        module = cls(codes.shape[1])
        with torch.no_grad():
            module.center.copy_(torch.from_numpy(estimate.location_.astype(np.float32)))
            module.whitening.copy_(torch.from_numpy(whitening.astype(np.float32)))
        return module

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        white = (code - self.center) @ self.whitening
        return (white * white).sum(dim=1)
