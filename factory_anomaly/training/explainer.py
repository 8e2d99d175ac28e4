"""Attention explainer: which sensors made a reading anomalous, learned by self-supervision on normal rows.

Sensors are tokens (n of them per reading). Shapes for a batch of N readings, d = D_MODEL, d_k = D_KEY:

  raw readings            x_raw  [N, n]
  standardised reading    z      [N, n]         (x_raw − mean) / scale, the frozen scorer's standardisation
  scaled residual         r      [N, n]         (AE(z) − z) / residual_scale, the frozen autoencoder's
  token features          f      [N, n, 4]      z, r, |r|, log(r² + ε)
  tokens                  X      [N, n, d]      f·W_fᵀ + b_f + E, E [n, d] a learned per-sensor embedding
  self-attention (the seed's Part II, one head):
                          Q = X·W_qᵀ + b_q  [N, n, d_k]     K = X·W_kᵀ + b_k  [N, n, d_k]
                          V = X·W_vᵀ + b_v  [N, n, d]
                          α = softmax(Q·Kᵀ / √d_k) over keys  [N, n, n]
                          Z = α·V           [N, n, d]
                          O = Z·W_oᵀ + b_o  [N, n, d]       (output projection)
  residual + norm         H = LayerNorm(X + O)   [N, n, d]
  attention pooling       a = softmax over sensors of (H·w_pᵀ + b_p)   [N, n]: non-negative, sums to 1

`a` is the explanation: the share of the blame each sensor gets. The self-attention lets a sensor's token
see the others (its station, its correlated group), which the per-sensor error ranking cannot: a
correlation break or a group drift spreads a small error over many sensors.

Training (the autoencoder frozen): inject faults into normal rows — spike, stuck-at, group drift,
correlation break, noise burst, the plant's kinds, written generically so they apply to a user's own
data — and minimise the cross-entropy between `a` and the normalised fault mask. Groups of related
sensors come from the training rows' correlations (no plant layout needed). Magnitudes are in units of
each sensor's normal residual (scale × residual_scale), so a fault is as hard for every sensor.

Cost: the n×n attention is 2·n²·(d_k + d) multiply-adds per reading (96 M for n = 1000). Its latency
against the 10 ms explain budget is measured in docs/explainer.md ("Cost"), with the command.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from factory_anomaly.training.fit import Batch, EarlyStopping, FitPlan, fit, seed_torch
from factory_anomaly.training.model import AnomalyScorer, aggregate_errors

D_MODEL = 32
D_KEY = 16
N_FEATURES = 4
LOG_EPS = 1e-3
EXPLAINER_KINDS: tuple[str, ...] = ("spike", "stuck", "drift", "correlation_break", "noise_burst")
NEIGHBOURS = 40  # related sensors kept per sensor for group faults
MIN_IMPROVEMENT = 1e-4  # validation cross-entropy drop (absolute) that counts for early stopping
VALIDATION_BATCH_ROWS = 256


class SensorAttentionExplainer(nn.Module):
    """Raw readings [N, n] → (attention [N, n], score [N], sensor_error [N, n]); see the module docstring."""

    def __init__(self, scorer: AnomalyScorer, d_model: int = D_MODEL, d_key: int = D_KEY) -> None:
        super().__init__()
        n = int(scorer.mean.numel())
        self.scorer = scorer
        for p in self.scorer.parameters():
            p.requires_grad_(False)
        self.d_key = d_key
        self.features = nn.Linear(N_FEATURES, d_model)
        self.sensor_embedding = nn.Parameter(torch.randn(n, d_model) * 0.02)
        self.w_q = nn.Linear(d_model, d_key)
        self.w_k = nn.Linear(d_model, d_key)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.pool = nn.Linear(d_model, 1)

    def train(self, mode: bool = True) -> SensorAttentionExplainer:
        super().train(mode)
        self.scorer.eval()  # frozen, always
        return self

    def tokens(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens X [N, n, d], scaled residual r [N, n]) with the frozen scorer."""
        s = self.scorer
        z = (raw - s.mean) / s.scale
        r = (s.autoencoder(z) - z) / s.residual_scale
        features = torch.stack([z, r, r.abs(), torch.log(r * r + LOG_EPS)], dim=-1)
        return self.features(features) + self.sensor_embedding, r

    def logits(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pooling logits [N, n], scaled residual r [N, n])."""
        x, r = self.tokens(raw)
        q, k, v = self.w_q(x), self.w_k(x), self.w_v(x)
        alpha = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(self.d_key), dim=-1)
        h = self.norm(x + self.w_o(alpha @ v))
        return self.pool(h).squeeze(-1), r

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(attention [N, n], score [N], sensor_error [N, n], expected [N, n]): `expected` is the frozen
        autoencoder's reconstruction in each sensor's own unit, the value the model expected there (what
        an operator compares the reading with)."""
        logits, r = self.logits(raw)
        s = self.scorer
        sensor_error = s.sensor_error(r)
        score = s.with_partner(
            (raw - s.mean) / s.scale, aggregate_errors(sensor_error, s.aggregate, s.aggregate_scale)
        )
        expected = raw + r * s.residual_scale * s.scale
        return torch.softmax(logits, dim=-1), score, sensor_error, expected


# --- fault injection on normal rows -----------------------------------------------------------------------


@dataclass(frozen=True)
class ExplainerConfig:
    epochs: int = 20
    samples_per_epoch: int = 4096
    validation_samples: int = 1024
    batch_size: int = 32
    learning_rate: float = 2e-3
    patience: int = 4
    seed: int = 0
    progress: bool = True


class FaultInjector:
    """Injects the plant's fault kinds into copies of normal rows; returns rows, mask and kinds.

    `unit` [n]: one normal residual in raw units per sensor; `neighbours` [n, NEIGHBOURS]: the sensors most
    correlated with each sensor in the training rows (its related group).
    """

    def __init__(self, rows: np.ndarray, unit: np.ndarray, neighbours: np.ndarray, seed: int) -> None:
        self.rows, self.unit, self.neighbours = rows, unit, neighbours
        self.rng = np.random.default_rng(seed)
        self.last_sources = np.zeros(0, dtype=np.int64)

    @classmethod
    def from_training_rows(cls, rows: np.ndarray, unit: np.ndarray, seed: int) -> FaultInjector:
        sample = rows[np.random.default_rng(seed).choice(len(rows), size=min(len(rows), 5000), replace=False)]
        sd = sample.std(axis=0)
        z = (sample - sample.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
        corr = np.abs(z.T @ z) / len(z)
        np.fill_diagonal(corr, -1.0)
        k = min(NEIGHBOURS, rows.shape[1] - 1)
        neighbours = np.argsort(-corr, axis=1)[:, :k]
        return cls(rows, unit, neighbours, seed)

    def _group(self, size_low: int, size_high: int) -> np.ndarray:
        n = self.rows.shape[1]
        seed = int(self.rng.integers(n))
        k = int(self.rng.integers(size_low, size_high + 1)) - 1
        return np.concatenate([[seed], self.neighbours[seed, : max(0, min(k, self.neighbours.shape[1]))]])

    def sample(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows float32 [count, n], fault mask bool [count, n], kinds object [count])."""
        n = self.rows.shape[1]
        picked = self.rng.integers(len(self.rows), size=count)
        self.last_sources = picked  # the normal row each sample started from (tests, debugging)
        out = self.rows[picked].astype(np.float32, copy=True)
        mask = np.zeros((count, n), dtype=bool)
        kinds = self.rng.choice(EXPLAINER_KINDS, size=count)
        for i, kind in enumerate(kinds):
            if kind == "spike":
                sensors = self.rng.choice(n, size=int(self.rng.integers(1, 4)), replace=False)
                size = self.rng.uniform(6.0, 12.0, size=sensors.size) * self.rng.choice(
                    [-1.0, 1.0], sensors.size
                )
                out[i, sensors] += size * self.unit[sensors]
            elif kind == "stuck":  # a plausible value: the sensor's reading in another normal row
                sensors = self.rng.choice(n, size=int(self.rng.integers(1, 4)), replace=False)
                out[i, sensors] = self.rows[int(self.rng.integers(len(self.rows))), sensors]
            elif kind == "drift":
                sensors = self._group(2, 12)
                out[i, sensors] += (
                    self.rng.uniform(4.0, 8.0) * self.rng.choice([-1.0, 1.0]) * self.unit[sensors]
                )
            elif kind == "correlation_break":  # each value in range, jointly inconsistent with the rest
                sensors = self._group(5, 40)
                out[i, sensors] = self.rows[int(self.rng.integers(len(self.rows))), sensors]
            else:  # noise_burst
                sensors = self._group(2, 6)
                spread = self.rng.uniform(4.0, 8.0)
                out[i, sensors] += self.rng.normal(size=sensors.size) * spread * self.unit[sensors]
            mask[i, sensors] = True
        return out, mask, kinds


def residual_unit(scorer: AnomalyScorer) -> np.ndarray:
    """One normal residual per sensor, in the sensor's raw unit."""
    return (scorer.scale * scorer.residual_scale).detach().numpy().astype(np.float64)


def _loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between the attention distribution and the normalised fault mask."""
    target = mask / mask.sum(dim=1, keepdim=True)
    return -(target * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def fit_explainer(
    scorer: AnomalyScorer, train_rows: np.ndarray, val_rows: np.ndarray, config: ExplainerConfig
) -> tuple[SensorAttentionExplainer, list[dict[str, float]]]:
    """Train the attention on injected faults (scorer frozen), on the one training loop (`fit`), with fresh
    faults each epoch and a fixed validation set; keep the best validation epoch (an *absolute*
    improvement of `MIN_IMPROVEMENT` in cross-entropy counts)."""
    seed_torch(config.seed)
    model = SensorAttentionExplainer(scorer)
    unit = residual_unit(scorer)
    train_faults = FaultInjector.from_training_rows(train_rows, unit, config.seed)
    val_faults = FaultInjector(val_rows, unit, train_faults.neighbours, config.seed + 1)
    val_x, val_mask, _ = val_faults.sample(config.validation_samples)
    val_x_t, val_mask_t = torch.from_numpy(val_x), torch.from_numpy(val_mask.astype(np.float32))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=config.learning_rate)

    def batches(epoch: int) -> Iterator[Batch]:
        x, mask, _ = train_faults.sample(config.samples_per_epoch)
        x_t, mask_t = torch.from_numpy(x), torch.from_numpy(mask.astype(np.float32))
        for i in range(0, len(x_t), config.batch_size):
            yield x_t[i : i + config.batch_size], mask_t[i : i + config.batch_size]

    def step(batch: Batch) -> dict[str, torch.Tensor]:
        x, mask = batch
        return {"loss": _loss(model.logits(x)[0], mask)}

    def validate() -> float:
        rows = VALIDATION_BATCH_ROWS
        with torch.no_grad():
            return sum(
                _loss(model.logits(val_x_t[i : i + rows])[0], val_mask_t[i : i + rows]).item()
                * len(val_x_t[i : i + rows])
                for i in range(0, len(val_x_t), rows)
            ) / len(val_x_t)

    stopping = EarlyStopping("val_loss", config.patience, MIN_IMPROVEMENT, relative=False)
    plan = FitPlan("explainer", config.epochs, stopping, config.progress)
    return model, fit(model, optimiser, batches, step, validate, plan)


def explain_in_batches(
    explainer: SensorAttentionExplainer, raw: np.ndarray, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(attention [N, n], sensor_error [N, n]) as float32 numpy."""
    attention, errors = [], []
    with torch.no_grad():
        for i in range(0, len(raw), batch_size):
            a, _, e, _ = explainer(
                torch.from_numpy(np.ascontiguousarray(raw[i : i + batch_size], dtype=np.float32))
            )
            attention.append(a.numpy())
            errors.append(e.numpy())
    return np.concatenate(attention), np.concatenate(errors)


def explainer_summary(
    config: ExplainerConfig, history: list[dict[str, float]], seconds: float
) -> dict[str, Any]:
    best = min(history, key=lambda r: r["val_loss"])
    return {
        "config": asdict(config),
        "architecture": {"d_model": D_MODEL, "d_key": D_KEY, "features": ["z", "r", "|r|", "log(r^2+1e-3)"]},
        "epochs_run": len(history),
        "best_epoch": int(best["epoch"]),
        "best_val_loss": best["val_loss"],
        "fit_seconds": seconds,
    }
