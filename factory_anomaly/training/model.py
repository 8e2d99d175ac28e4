"""The seed's fully connected autoencoder and its L2-regularised loss.

Default architecture (seed, Part I.I, Task 1): Linear 1000→512, ReLU, 512→32, ReLU, 32→512, ReLU,
512→1000 with a linear output: 1,058,824 trainable parameters. The input width follows the data and the
hidden widths are configurable; the decoder mirrors the encoder. `AnomalyScorer` wraps it from raw
readings to the score, and `score_in_batches` runs that over many rows.

Loss (seed, equation 10): L = MSE + λ·Σ_j ‖W_j‖², the squared Frobenius norms of the weight matrices only
(biases are not penalised). Convention: we implement equation 10 literally, so the penalty's gradient is
2λW. The seed's update rule (equation 11) writes λW, i.e. it folds the 2 into λ: our λ = λ_eq11 / 2.
The penalty is part of the loss (not the optimiser's weight_decay), so it means the same under any optimiser.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

DEFAULT_HIDDEN: tuple[int, ...] = (512, 32)


class Autoencoder(nn.Module):
    """x [N, n_sensors] (standardised) → reconstruction [N, n_sensors]."""

    def __init__(self, n_sensors: int, hidden: Sequence[int] = DEFAULT_HIDDEN) -> None:
        super().__init__()
        if n_sensors < 1 or not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"invalid autoencoder sizes: n_sensors={n_sensors}, hidden={tuple(hidden)}")
        self.n_sensors = n_sensors
        self.hidden = tuple(int(h) for h in hidden)
        widths = [n_sensors, *self.hidden]
        encoder: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            encoder += [nn.Linear(w_in, w_out), nn.ReLU()]  # the seed keeps a ReLU on the bottleneck too
        back = widths[::-1]
        decoder: list[nn.Module] = []
        for w_in, w_out in zip(back[:-1], back[1:], strict=True):
            decoder += [nn.Linear(w_in, w_out), nn.ReLU()]
        decoder.pop()  # linear output: standardised readings are signed and unbounded
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def count_trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The W_j of equation 10: every Linear layer's weight, no biases."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def l2_penalty(model: nn.Module) -> torch.Tensor:
    return torch.stack([w.pow(2).sum() for w in weight_matrices(model)]).sum()


def regularised_loss(
    model: nn.Module, x: torch.Tensor, reconstruction: torch.Tensor, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSE + λ·Σ‖W‖², MSE): the second is what early stopping and the anomaly score are based on."""
    mse = torch.mean((reconstruction - x) ** 2)
    return mse + l2 * l2_penalty(model), mse


RESIDUAL_SCALE_FLOOR = 1e-2  # in reading standard deviations: no sensor is trusted to 1 % of its spread


class AnomalyScorer(nn.Module):
    """Raw readings float32 [N, n_sensors] → (score [N], sensor_error [N, n_sensors]).

    One module from raw readings to score, so that the exported graph, the calibrated threshold and the
    evaluation all use the same definition:
      z = (x − mean) / scale                       per-sensor standardisation from the training split
      r = (autoencoder(z) − z) / residual_scale    residual in units of that sensor's normal residual RMS
      sensor_error = r²,  score = mean over sensors of r²
    Dividing by the residual RMS measured on held-out normal rows puts every sensor on the same footing: a
    sensor the autoencoder reconstructs to within 2 % of its spread counts a 10 % miss as 25 squared units
    rather than being drowned by sensors whose normal residual is large. Under normal operation each r is
    about unit-variance, so the score is about 1.
    """

    mean: torch.Tensor
    scale: torch.Tensor
    residual_scale: torch.Tensor

    def __init__(
        self,
        autoencoder: Autoencoder,
        mean: torch.Tensor,
        scale: torch.Tensor,
        residual_scale: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        n = autoencoder.n_sensors
        self.autoencoder = autoencoder
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(n))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).reshape(n))
        rs = torch.ones(n) if residual_scale is None else torch.as_tensor(residual_scale, dtype=torch.float32)
        self.register_buffer("residual_scale", rs.reshape(n))

    def residuals(self, raw: torch.Tensor) -> torch.Tensor:
        """Standardised reconstruction residual [N, n_sensors] before residual scaling."""
        z = (raw - self.mean) / self.scale
        return self.autoencoder(z) - z

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.residuals(raw) / self.residual_scale
        sensor_error = r * r
        return sensor_error.mean(dim=1), sensor_error

    def set_residual_scale(self, residuals: torch.Tensor) -> None:
        """Fit the residual RMS per sensor from held-out normal residuals [N, n_sensors]."""
        rms = residuals.pow(2).mean(dim=0).sqrt()
        self.residual_scale.copy_(rms.clamp_min(RESIDUAL_SCALE_FLOOR))


def score_in_batches(
    scorer: AnomalyScorer, raw: np.ndarray, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """(score [N], sensor_error [N, n]) as float32 numpy, without building one huge graph."""
    scores, errors = [], []
    with torch.no_grad():
        for i in range(0, len(raw), batch_size):
            s, e = scorer(torch.from_numpy(np.ascontiguousarray(raw[i : i + batch_size], dtype=np.float32)))
            scores.append(s.numpy())
            errors.append(e.numpy())
    return np.concatenate(scores), np.concatenate(errors)
