"""Fit the autoencoder on standardised normal rows, on the one training loop (`fit`).

Adam on MSE + λΣ‖W‖² (`model.regularised_loss`) over mini-batches reshuffled each epoch, the learning
rate warmed up then annealed over `max_epochs` (`one_cycle`), and early stopping on the validation MSE
with a *relative* improvement rule (an epoch counts when it beats the best by
`TrainConfig.min_improvement` of the best); the explainer keeps its absolute rule.

The per-batch step depends on the variant (`TrainConfig.model`, docs/training.md "Model variants"):
  ae   the seed's: reconstruct the batch from itself
  dae  reconstruct the clean batch from a corrupted copy (`corrupt`); inference sees clean readings
  vae  decode a latent sampled by the reparameterisation trick; loss MSE + β·KL/n + λΣ‖W‖² (`vae_losses`)
Validation is the same for all three: the MSE of the deterministic reconstruction (`forward`) of clean
validation rows, which is what the score is made of. Corruption and latent samples draw from their own
generator (seeded from `TrainConfig.seed`), so a fit stays reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from factory_anomaly.training.config import TrainConfig
from factory_anomaly.training.fit import Batch, EarlyStopping, FitPlan, Step, fit, seed_torch
from factory_anomaly.training.model import (
    Autoencoder,
    VariationalAutoencoder,
    auto_hidden,
    build_autoencoder,
    kl_divergence,
    regularised_loss,
)

VALIDATION_BATCH_ROWS = 4096


def fit_autoencoder(
    train_z: np.ndarray, val_z: np.ndarray, config: TrainConfig
) -> tuple[Autoencoder, list[dict[str, float]]]:
    """Train on `train_z`, stop early on `val_z` (float32 [rows, n], standardised).

    Returns the weights of the best validation epoch (eval mode) and one log record per epoch:
    epoch, train_loss, train_mse (train_kl for "vae"), val_mse, learning_rate, improved, seconds.
    """
    seed_torch(config.seed, config.threads)
    n = train_z.shape[1]
    model = build_autoencoder(config.model, n, config.hidden or auto_hidden(n))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda epoch: one_cycle(epoch, config.max_epochs))
    x_train, x_val = torch.from_numpy(train_z), torch.from_numpy(val_z)
    order = torch.Generator().manual_seed(config.seed)

    def batches(epoch: int) -> Iterator[Batch]:  # a generator: one batch in memory at a time
        perm = torch.randperm(len(x_train), generator=order)
        for i in range(0, len(x_train), config.batch_size):
            yield (x_train[perm[i : i + config.batch_size]],)

    step = _step(model, config, torch.Generator().manual_seed(config.seed + 1))
    stopping = EarlyStopping("val_mse", config.patience, config.min_improvement, relative=True)
    plan = FitPlan("autoencoder", config.max_epochs, stopping, config.progress)
    history = fit(
        model, optimiser, batches, step, lambda: _mean_mse(model, x_val), plan, lambda _: schedule.step()
    )
    return model, history


def _step(model: Autoencoder, config: TrainConfig, noise: torch.Generator) -> Step:
    """The per-batch losses of `model`'s variant; `noise` draws the corruption or the latent samples."""

    def step(batch: Batch) -> dict[str, torch.Tensor]:
        (xb,) = batch
        if isinstance(model, VariationalAutoencoder):
            return vae_losses(model, xb, config.vae_beta, config.l2, noise)
        seen = xb
        if model.kind == "dae":
            seen = corrupt(xb, config.dae_noise_std, config.dae_mask_fraction, noise)
        loss, mse = regularised_loss(model, xb, model(seen), config.l2)
        return {"loss": loss, "mse": mse}

    return step


def corrupt(x: torch.Tensor, noise_std: float, mask_fraction: float, noise: torch.Generator) -> torch.Tensor:
    """The denoising autoencoder's input: standardised rows x [N, n] plus Gaussian noise of `noise_std`
    (in reading standard deviations), then a `mask_fraction` of the entries, drawn independently, set to 0
    (the sensor's training mean). A new tensor; `x` is untouched, it is the reconstruction target."""
    out = x + noise_std * torch.randn(x.shape, generator=noise, dtype=x.dtype) if noise_std > 0 else x.clone()
    if mask_fraction > 0:
        out = out * (torch.rand(x.shape, generator=noise, dtype=x.dtype) >= mask_fraction)
    return out


def vae_losses(
    model: VariationalAutoencoder, x: torch.Tensor, beta: float, l2: float, noise: torch.Generator
) -> dict[str, torch.Tensor]:
    """One batch's VAE losses: {"loss": MSE + β·KL/n + λΣ‖W‖², "mse", "kl"}.

    The latent is sampled by the reparameterisation trick, z = mean + exp(log_var / 2)·ε with ε ~ N(0, I),
    so the gradient flows through mean and log_var. "mse" is the reconstruction error of that sample over
    every entry (as the autoencoder's), "kl" is KL(q(z|x) ‖ N(0, I)) per row in nats, summed over the
    bottleneck. Dividing KL by the sensor count n puts it on the MSE's per-entry footing: n·loss =
    SSE + β·KL (+ the penalty), the negative evidence lower bound of a Gaussian decoder of variance β/2
    per standardised sensor, up to constants.
    """
    mean, log_var = model.encode(x)
    sample = mean + torch.exp(0.5 * log_var) * torch.randn(mean.shape, generator=noise, dtype=mean.dtype)
    loss, mse = regularised_loss(model, x, model.decoder(sample), l2)
    kl = kl_divergence(mean, log_var).mean()
    return {"loss": loss + beta * kl / x.shape[1], "mse": mse, "kl": kl}


WARMUP_FRACTION = 0.1


def one_cycle(epoch: int, epochs: int) -> float:
    """The learning rate's factor at `epoch` (0-based, applied after it): a linear warm-up over the first
    tenth of the epochs, then a cosine decay towards zero at `epochs`. Converges in fewer epochs than a
    constant rate halved on plateaus (docs/quality.md, "Training time"), and the last epochs, at small
    rates, settle the weights rather than jitter them."""
    warmup = max(1, round(WARMUP_FRACTION * epochs))
    step = epoch + 1
    if step < warmup:
        return step / warmup
    progress = min(1.0, (step - warmup) / max(1, epochs - warmup))
    return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))


def _mean_mse(model: torch.nn.Module, x: torch.Tensor) -> float:
    """Mean squared reconstruction error over every entry of `x`, in batches, without gradients."""
    with torch.no_grad():
        total = sum(
            float(((model(x[i : i + VALIDATION_BATCH_ROWS]) - x[i : i + VALIDATION_BATCH_ROWS]) ** 2).sum())
            for i in range(0, len(x), VALIDATION_BATCH_ROWS)
        )
    return total / x.numel()
