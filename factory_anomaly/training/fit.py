"""The one early-stopping training loop: the autoencoder and the attention explainer both run on it.

Each epoch: the model in train mode; the epoch's batches through the model's `step`, whose `"loss"` the
optimiser minimises (every value `step` returns is averaged over the epoch's rows and recorded as
`train_<name>`); the model in eval mode and `validate()`; the scheduler, if any, sees the validation value;
the epoch counts as an improvement by the model's own rule (`EarlyStopping`), and then the state is kept.
Training stops after `patience` epochs without an improvement, or after `max_epochs`, and the kept state
is restored. One record per epoch, in this key order (TRAINING_LOG_FILE holds the autoencoder's):

  epoch, train_<name> ..., <monitor>, learning_rate, improved (1.0 / 0.0), seconds

Determinism is the caller's first step, before it builds its model (weight initialisation draws from
torch's global generator): `seed_torch`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

log = logging.getLogger("training.fit")

Batch = tuple[torch.Tensor, ...]
"""One training batch: tensors that share their first (row) dimension."""
Step = Callable[[Batch], dict[str, torch.Tensor]]
"""Batch -> named scalar losses; `"loss"` is minimised, all are averaged over rows into the record."""


def seed_torch(seed: int, threads: int = 0) -> None:
    """Seed torch's global generator, refuse nondeterministic kernels, and pin the intra-op threads when
    `threads` > 0 (0 leaves torch's default): the same fit twice on one machine gives the same weights."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    if threads > 0:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class EarlyStopping:
    """What counts as a better validation value, and how long to wait for one."""

    monitor: str  # the validation value's name in the record ("val_mse", "val_loss"); lower is better
    patience: int  # epochs without an improvement before stopping
    min_improvement: float  # how much lower than the best so far a value must be to count
    relative: bool  # True: value < best · (1 − min_improvement); False: value < best − min_improvement

    def improves(self, value: float, best: float) -> bool:
        if self.relative:
            return value < best * (1.0 - self.min_improvement)
        return value < best - self.min_improvement


@dataclass(frozen=True)
class FitPlan:
    name: str  # the progress bar's label and the log lines' prefix
    max_epochs: int
    stopping: EarlyStopping
    progress: bool = True  # a tqdm bar on stderr (epochs are logged either way)


def fit(
    model: nn.Module,
    optimiser: torch.optim.Optimizer,
    batches: Callable[[int], Iterable[Batch]],
    step: Step,
    validate: Callable[[], float],
    plan: FitPlan,
    scheduler: Callable[[float], object] | None = None,
) -> list[dict[str, float]]:
    """Train `model` in place (see the module docstring); return one record per epoch run.

    `batches(epoch)` gives the epoch's training batches; `validate()` the validation value, computed in
    eval mode; `scheduler(value)` (e.g. `ReduceLROnPlateau.step`) runs after each validation.
    """
    stopping = plan.stopping
    best, best_epoch, best_state = math.inf, -1, None
    history: list[dict[str, float]] = []
    bar = tqdm(range(plan.max_epochs), desc=plan.name, unit="epoch", disable=not plan.progress)
    try:
        for epoch in bar:
            started = time.perf_counter()
            model.train()
            train = _train_epoch(optimiser, batches(epoch), step)
            model.eval()
            value = validate()
            if scheduler is not None:
                scheduler(value)
            improved = stopping.improves(value, best)
            if improved:
                best, best_epoch = value, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            record = {"epoch": epoch, **train, stopping.monitor: value}
            record |= {"learning_rate": optimiser.param_groups[0]["lr"], "improved": float(improved)}
            record["seconds"] = time.perf_counter() - started
            history.append(record)
            _log_epoch(plan.name, record, stopping.monitor)
            bar.set_postfix({stopping.monitor: f"{value:.4f}", "best": f"{best:.4f}@{best_epoch}"})
            if epoch - best_epoch >= stopping.patience:
                log.info(
                    "%s: early stop, no validation improvement for %d epochs (best epoch %d)",
                    plan.name,
                    stopping.patience,
                    best_epoch,
                )
                break
    finally:
        bar.close()
    if best_state is None:
        raise RuntimeError(f"{plan.name}: no epoch improved on the start (is the validation value NaN?)")
    model.load_state_dict(best_state)
    model.eval()
    return history


def _train_epoch(optimiser: torch.optim.Optimizer, batches: Iterable[Batch], step: Step) -> dict[str, float]:
    """One pass over `batches`: each `step`'s "loss" minimised; every returned value averaged over rows."""
    sums: dict[str, float] = {}
    rows = 0
    for batch in batches:
        losses = step(batch)
        optimiser.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimiser.step()
        n = len(batch[0])
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.detach().item() * n
        rows += n
    return {f"train_{name}": total / rows for name, total in sums.items()}


def _log_epoch(name: str, record: dict[str, float], monitor: str) -> None:
    shown = [key for key in record if key.startswith("train_")] + [monitor]
    values = ", ".join(f"{key.replace('_', ' ')} {record[key]:.5f}" for key in shown)
    mark = " *" if record["improved"] else ""
    log.info("%s epoch %d: %s%s, lr %.2g", name, record["epoch"], values, mark, record["learning_rate"])
