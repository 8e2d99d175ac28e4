"""The settings of one training run: every knob `python -m factory_anomaly.training train` exposes.

The manifest records them (`training.config`), so `explain` can rebuild a version's run exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from factory_anomaly.training.model import DEFAULT_HIDDEN
from factory_anomaly.training.splits import DEFAULT_GAP_FRACTION, DEFAULT_SPLIT_BLOCKS
from factory_anomaly.training.threshold import DEFAULT_TARGET_FPR


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    l2: float = 1e-6  # λ of the seed's equation 10 (gradient 2λW)
    learning_rate: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 150
    patience: int = 12  # epochs without a validation improvement before stopping
    min_improvement: float = 1e-3  # relative validation-MSE improvement that counts
    target_fpr: float = DEFAULT_TARGET_FPR
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default for this machine
    on_constant: str = "warn"  # "warn" or "error" for sensors constant in the training split
    split_blocks: int = DEFAULT_SPLIT_BLOCKS  # 1 = train on the past, hold out the future
    gap_fraction: float = DEFAULT_GAP_FRACTION
    explainer: bool = True  # train the attention explainer after the autoencoder
    explainer_epochs: int = 12
    explainer_samples_per_epoch: int = 2048
    progress: bool = True
