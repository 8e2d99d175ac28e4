"""Fit the autoencoder on standardised normal rows, on the one training loop (`fit`).

Adam on MSE + λΣ‖W‖² (`model.regularised_loss`) over mini-batches reshuffled each epoch, the learning
rate halved when the validation MSE plateaus, and early stopping on the validation MSE with a *relative*
improvement rule (an epoch counts when it beats the best by `TrainConfig.min_improvement` of the best);
the explainer keeps its absolute rule. Each keeps the rule its shipped results were trained with.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from factory_anomaly.training.config import TrainConfig
from factory_anomaly.training.fit import Batch, EarlyStopping, FitPlan, fit, seed_torch
from factory_anomaly.training.model import Autoencoder, auto_hidden, regularised_loss

VALIDATION_BATCH_ROWS = 4096


def fit_autoencoder(
    train_z: np.ndarray, val_z: np.ndarray, config: TrainConfig
) -> tuple[Autoencoder, list[dict[str, float]]]:
    """Train on `train_z`, stop early on `val_z` (float32 [rows, n], standardised).

    Returns the weights of the best validation epoch (eval mode) and one log record per epoch:
    epoch, train_loss, train_mse, val_mse, learning_rate, improved, seconds.
    """
    seed_torch(config.seed, config.threads)
    model = Autoencoder(train_z.shape[1], config.hidden or auto_hidden(train_z.shape[1]))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=0.5, patience=max(1, config.patience // 3)
    )
    x_train, x_val = torch.from_numpy(train_z), torch.from_numpy(val_z)
    order = torch.Generator().manual_seed(config.seed)

    def batches(epoch: int) -> Iterator[Batch]:  # a generator: one batch in memory at a time
        perm = torch.randperm(len(x_train), generator=order)
        for i in range(0, len(x_train), config.batch_size):
            yield (x_train[perm[i : i + config.batch_size]],)

    def step(batch: Batch) -> dict[str, torch.Tensor]:
        (xb,) = batch
        loss, mse = regularised_loss(model, xb, model(xb), config.l2)
        return {"loss": loss, "mse": mse}

    stopping = EarlyStopping("val_mse", config.patience, config.min_improvement, relative=True)
    plan = FitPlan("autoencoder", config.max_epochs, stopping, config.progress)
    history = fit(model, optimiser, batches, step, lambda: _mean_mse(model, x_val), plan, plateau.step)
    return model, history


def _mean_mse(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Mean squared reconstruction error over every entry of `x`, in batches, without gradients."""
    with torch.no_grad():
        total = sum(
            float(((model(x[i : i + VALIDATION_BATCH_ROWS]) - x[i : i + VALIDATION_BATCH_ROWS]) ** 2).sum())
            for i in range(0, len(x), VALIDATION_BATCH_ROWS)
        )
    return total / x.numel()
