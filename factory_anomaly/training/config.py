"""The settings of one training run: every knob `python -m factory_anomaly.training train` exposes.

The manifest records them (`training.config`), so `explain` can rebuild a version's run exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from factory_anomaly.training.crossfit import DEFAULT_GAP_FRACTION as CROSSFIT_GAP_FRACTION
from factory_anomaly.training.model import DEFAULT_AGGREGATE, DEFAULT_MODEL, ENSEMBLES, MODEL_KINDS
from factory_anomaly.training.splits import DEFAULT_GAP_FRACTION, DEFAULT_SPLIT_BLOCKS
from factory_anomaly.training.threshold import DEFAULT_TARGET_FPR


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] | None = None  # None: `model.auto_hidden` (the seed's 512,32 at 1000 sensors)
    l2: float = 1e-6  # λ of the seed's equation 10 (gradient 2λW)
    learning_rate: float = 3e-3  # the peak of the one-cycle schedule (autoencoder.one_cycle)
    batch_size: int = 256
    max_epochs: int = 40  # each of the folds' fits and the shipped one; the schedule spans them
    patience: int = 10  # epochs without a validation improvement before stopping
    min_improvement: float = 1e-3  # relative validation-MSE improvement that counts
    target_fpr: float = DEFAULT_TARGET_FPR
    accept_tightest_target: bool = False  # train at the tightest supported target instead of refusing
    aggregate: str = DEFAULT_AGGREGATE  # how per-sensor errors become the score (model.AGGREGATES)
    folds: int = 0  # cross-fitting folds for the out-of-fold scores; 0: `crossfit.default_folds` (5 or 3)
    crossfit_gap_fraction: float = CROSSFIT_GAP_FRACTION
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default for this machine
    on_constant: str = "warn"  # "warn" or "error" for sensors constant in the training split
    split_blocks: int = DEFAULT_SPLIT_BLOCKS  # time blocks each fit's rows are cut into (train | validation)
    gap_fraction: float = DEFAULT_GAP_FRACTION
    explainer: bool = True  # train the attention explainer after the autoencoder
    explainer_epochs: int = 12
    explainer_samples_per_epoch: int = 1024
    progress: bool = True
    # The autoencoder variant (model.MODEL_KINDS) and its knobs; why these defaults: docs/training.md,
    # "Model variants".
    model: str = DEFAULT_MODEL  # "ae" (the seed's), "dae" (denoising), "vae" (variational)
    ensemble: str = "none"  # "iforest": an IsolationForest scores beside the autoencoder (forest.py)
    dae_noise_std: float = 0.2  # "dae": Gaussian input noise, in reading standard deviations
    dae_mask_fraction: float = 0.0  # "dae": share of input entries set to the training mean
    vae_beta: float = 1.0  # "vae": weight of KL / n_sensors beside the MSE
    # Alarm episodes per asset (`factory_anomaly.alarms`, `episodes.py`): k of the last n readings above
    # a level calibrated for `alarm_target_per_day` false episodes per asset-day; closed after
    # `alarm_close_after_s` without one (at least n readings). The reading period: the data's timestamps,
    # else `reading_period_s`, else one second (recorded as assumed).
    alarm_target_per_day: float = 1.0
    alarm_k: int = 3
    alarm_n: int = 10
    alarm_close_after_s: float = 300.0
    # the jitter channel (`factory_anomaly.alarms.jitter`), calibrated for `episodes.JITTER_SHARE` of
    # the alarm target; off (the default, docs/quality.md says why): the score's rule gets all of it
    alarm_jitter: bool = False
    # the velocity channel (`factory_anomaly.alarms.velocity`): an abrupt change of the process state,
    # judged on its first `alarm_velocity_components` principal directions, opens an episode on its own;
    # calibrated for `episodes.VELOCITY_SHARE` of the alarm target
    alarm_velocity: bool = True
    alarm_velocity_components: int = 8
    reading_period_s: float | None = None

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"unknown model {self.model!r}; expected one of {', '.join(MODEL_KINDS)}")
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"unknown ensemble {self.ensemble!r}; expected one of {', '.join(ENSEMBLES)}")
        if not self.dae_noise_std >= 0.0:
            raise ValueError(f"dae_noise_std must be >= 0, got {self.dae_noise_std}")
        if not 0.0 <= self.dae_mask_fraction < 1.0:
            raise ValueError(f"dae_mask_fraction must be in [0, 1), got {self.dae_mask_fraction}")
        if not self.vae_beta >= 0.0:
            raise ValueError(f"vae_beta must be >= 0, got {self.vae_beta}")
        if self.alarm_velocity_components < 1:
            raise ValueError(f"alarm_velocity_components must be >= 1, got {self.alarm_velocity_components}")
        if not self.alarm_target_per_day > 0.0:
            raise ValueError(f"alarm target must be > 0 episodes a day, got {self.alarm_target_per_day}")
        if not 1 <= self.alarm_k <= self.alarm_n:
            raise ValueError(f"alarm rule needs 1 <= k <= n, got k={self.alarm_k}, n={self.alarm_n}")
        if not self.alarm_close_after_s >= 0.0:
            raise ValueError(f"alarm close-after must be >= 0 s, got {self.alarm_close_after_s}")
        if self.reading_period_s is not None and not self.reading_period_s > 0.0:
            raise ValueError(f"reading period must be > 0 s, got {self.reading_period_s}")
