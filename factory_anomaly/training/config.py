"""The settings of one training run: every knob `python -m factory_anomaly.training train` exposes.

The manifest records them (`training.config`), so `explain` can rebuild a version's run exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from factory_anomaly.training.crossfit import DEFAULT_FOLDS
from factory_anomaly.training.crossfit import DEFAULT_GAP_FRACTION as CROSSFIT_GAP_FRACTION
from factory_anomaly.training.model import DEFAULT_AGGREGATE
from factory_anomaly.training.splits import DEFAULT_GAP_FRACTION, DEFAULT_SPLIT_BLOCKS
from factory_anomaly.training.threshold import DEFAULT_TARGET_FPR


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] | None = None  # None: `model.auto_hidden` (the seed's 512,32 at 1000 sensors)
    l2: float = 1e-6  # λ of the seed's equation 10 (gradient 2λW)
    learning_rate: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 80  # each of the folds' fits and the shipped one (docs/quality.md: time)
    patience: int = 10  # epochs without a validation improvement before stopping
    min_improvement: float = 1e-3  # relative validation-MSE improvement that counts
    target_fpr: float = DEFAULT_TARGET_FPR
    accept_tightest_target: bool = False  # train at the tightest supported target instead of refusing
    aggregate: str = DEFAULT_AGGREGATE  # how per-sensor errors become the score (model.AGGREGATES)
    folds: int = DEFAULT_FOLDS  # cross-fitting folds for the out-of-fold calibration scores
    crossfit_gap_fraction: float = CROSSFIT_GAP_FRACTION
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default for this machine
    on_constant: str = "warn"  # "warn" or "error" for sensors constant in the training split
    split_blocks: int = DEFAULT_SPLIT_BLOCKS  # time blocks each fit's rows are cut into (train | validation)
    gap_fraction: float = DEFAULT_GAP_FRACTION
    explainer: bool = True  # train the attention explainer after the autoencoder
    explainer_epochs: int = 12
    explainer_samples_per_epoch: int = 2048
    progress: bool = True
