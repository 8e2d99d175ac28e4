"""Calibrating the per-asset episode rule (`factory_anomaly.alarms.rule`) on normal data: the level at
which k of n readings above it happen by chance about `target` times per asset-day.

Why extreme-value extrapolation: the promise is per day (one false episode a day at one reading a
second is one in 86 400 windows), and a training recording covers a day or less, so the level cannot be
read off as an empirical quantile. The rule fires when the k-th largest score of the last n readings
exceeds the level, so the daily false-episode count is governed by that statistic's maxima. Its maxima
over blocks of b readings are fitted by a Gumbel law (method of moments, on the log score: scores are
positive and their tail is closer to exponential there), and max-stability carries the fit from blocks
to days: the maximum over m blocks is Gumbel with location μ + β·log m. The level L then satisfies
P(a day's maximum ≤ L) = exp(−target), i.e. about `target` exceedances a day. Normal scores here are the
out-of-fold scores in time order, so the windows see the persistence normal operation really has (why
that matters, measured: docs/training.md, "Alarm episodes").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from factory_anomaly.alarms.jitter import MIN_ROWS as JITTER_MIN_ROWS
from factory_anomaly.alarms.jitter import JitterSpec, evidence, fit_jitter
from factory_anomaly.alarms.rule import EpisodeRule, episodes, kth_largest_in_window
from factory_anomaly.alarms.velocity import DEFAULT_LAG, VelocitySpec, clean_windows, fit_velocity, statistic
from factory_anomaly.alarms.velocity import MIN_ROWS as VELOCITY_MIN_ROWS
from factory_anomaly.training.data import Dataset
from factory_anomaly.training.metrics import poisson_interval

DAY_S = 86_400.0
EULER_GAMMA = 0.5772156649015329
MIN_BLOCKS = 20  # block maxima the Gumbel fit needs
BLOCK_WINDOWS = 10  # a block spans at least this many windows of n readings
METHOD = "gumbel_block_maxima"
JITTER_SHARE = 0.5
"""The share of the false-episode target per asset-day the jitter channel is calibrated to; the score's
rule gets the rest, so that the two together keep the target (each episode needs one of them)."""
JITTER_BLOCK = 100  # readings per block of the jitter evidence's maxima, at least
VELOCITY_SHARE = 0.25
"""The share of the target the velocity channel is calibrated to. Small, because its statistic's tail is
thin (a Gaussian change's Mahalanobis distance): a quarter of the target raises its level little, and the
score's rule, whose tail is heavy, keeps most of it (docs/quality.md)."""
VELOCITY_BLOCK = 100  # readings per block of the velocity statistic's maxima, at least


def reading_period(data: Dataset, declared: float | None) -> tuple[float, str]:
    """Seconds between readings: the declared value, else the median step of the data's timestamps, else
    one second (assumed, and said so)."""
    if declared is not None:
        return float(declared), "declared"
    if data.timestamps is not None and data.timestamps.size > 1:
        steps = np.diff(data.timestamps).astype("timedelta64[ns]").astype(np.float64) / 1e9
        median = float(np.median(steps))
        if median > 0:
            return median, "timestamps"
    return 1.0, "assumed"


def _gumbel_level(
    statistic: np.ndarray, min_block: int, per_day: float, target_per_day: float, log_scale: bool
) -> tuple[float, int, int, float, float] | None:
    """The level a day's maximum of `statistic` exceeds about `target_per_day` times (Gumbel law of its
    block maxima, method of moments; on the log where `log_scale`), with the block length, the number of
    blocks and the law's location and scale; None when there are too few blocks (or, on the log scale, a
    value that is not positive)."""
    block = max(min_block, statistic.size // 100)
    blocks = statistic.size // block
    if blocks < MIN_BLOCKS or (log_scale and not np.all(statistic > 0)):
        return None
    maxima = statistic[: blocks * block].reshape(blocks, block).max(axis=1)
    maxima = np.log(maxima) if log_scale else maxima
    beta = float(np.std(maxima, ddof=1)) * math.sqrt(6.0) / math.pi
    mu = float(np.mean(maxima)) - EULER_GAMMA * beta
    level = mu + beta * math.log(per_day / block) - beta * math.log(target_per_day)
    return (math.exp(level) if log_scale else level), block, blocks, mu, beta


def calibrate_episode_rule(
    normal_scores: np.ndarray,
    period_s: float,
    target_per_day: float,
    k: int,
    n: int,
    close_after_s: float,
) -> tuple[EpisodeRule | None, dict[str, Any]]:
    """The rule's level for `target_per_day` false episodes per asset-day, from normal scores in time
    order; (None, why) when they are too few for the fit."""
    scores = np.asarray(normal_scores, dtype=np.float64)
    close_after = max(n, math.ceil(close_after_s / period_s))
    per_day = DAY_S / period_s
    facts: dict[str, Any] = {"k": k, "n": n, "close_after": close_after, "reading_period_s": period_s,
                             "target_episodes_per_day": target_per_day, "method": METHOD}  # fmt: skip
    statistic = kth_largest_in_window(scores, k, n)
    fit = _gumbel_level(statistic, BLOCK_WINDOWS * n, per_day, target_per_day, log_scale=True)
    if fit is None:
        needed = MIN_BLOCKS * BLOCK_WINDOWS * n + n - 1
        why = f"{scores.size} normal readings; the fit needs at least {needed}"
        return None, facts | {"calibrated": False, "why": why}
    level, block, blocks, mu, beta = fit
    rule = EpisodeRule(k=k, n=n, level=level, close_after=close_after)
    days = scores.size / per_day
    found = len(episodes(scores, rule))
    low, high = poisson_interval(found)
    return rule, facts | {
        "calibrated": True,
        "level": level,
        "block_readings": block,
        "blocks": blocks,
        "gumbel_log_location": mu,
        "gumbel_log_scale": beta,
        "days_covered": days,
        "extrapolation": per_day / target_per_day / scores.size,
        "episodes_on_normal_scores": found,
        "episodes_per_day_on_normal_scores": found / days,
        "episodes_per_day_ci95": [low / days, high / days],
    }


def calibrate_jitter(
    normal: np.ndarray, low: np.ndarray, period_s: float, target_per_day: float
) -> tuple[JitterSpec | None, dict[str, Any]]:
    """The jitter channel (`factory_anomaly.alarms.jitter`) fitted on normal readings in time order, its
    level set for `target_per_day` false episodes per asset-day by the Gumbel law of its evidence's block
    maxima; (None, why) when the readings are too few."""
    x = np.asarray(normal)
    facts: dict[str, Any] = {"target_episodes_per_day": target_per_day, "method": METHOD}
    needed = max(JITTER_MIN_ROWS, MIN_BLOCKS * JITTER_BLOCK)
    if x.shape[0] < needed:
        why = f"{x.shape[0]} normal readings; the fit needs at least {needed}"
        return None, facts | {"calibrated": False, "why": why}
    spec = fit_jitter(x, low)
    statistic = evidence(x, spec)
    fit = _gumbel_level(statistic, JITTER_BLOCK, DAY_S / period_s, target_per_day, log_scale=False)
    if fit is None:  # not reached: `needed` rows always make enough blocks
        return None, facts | {"calibrated": False, "why": "too few blocks for the fit"}
    level, block, blocks, mu, beta = fit
    spec = spec.with_level(level)
    flagged = statistic > level
    days = x.shape[0] * period_s / DAY_S
    return spec, facts | {
        "calibrated": True,
        "level": level,
        "lam": spec.lam,
        "active_sensors": int(np.count_nonzero(spec.active)),
        "block_readings": block,
        "blocks": blocks,
        "gumbel_location": mu,
        "gumbel_scale": beta,
        "days_covered": days,
        "readings_over_level_on_normal": int(np.count_nonzero(flagged)),
    }


def calibrate_velocity(
    x: np.ndarray,
    normal: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    period_s: float,
    target_per_day: float,
    components: int,
) -> tuple[VelocitySpec | None, dict[str, Any]]:
    """The velocity channel (`factory_anomaly.alarms.velocity`) fitted on readings `x` in time order,
    standardised as the scorer does, from the changes within stretches of `normal` (bool [N]) readings;
    its level set for `target_per_day` false episodes per asset-day (each reading over it opens one) by
    the Gumbel law of its statistic's block maxima (on the log: the statistic is a sum of squares,
    positive, with a tail near exponential there); (None, why) when the changes are too few."""
    x = np.asarray(x)
    facts: dict[str, Any] = {"target_episodes_per_day": target_per_day, "method": METHOD}
    needed = max(VELOCITY_MIN_ROWS, MIN_BLOCKS * VELOCITY_BLOCK)
    windows = clean_windows(normal, DEFAULT_LAG)
    if np.count_nonzero(windows) < needed:
        why = f"{np.count_nonzero(windows)} changes within normal stretches; the fit needs at least {needed}"
        return None, facts | {"calibrated": False, "why": why}
    spec = fit_velocity(x, center, scale, components, DEFAULT_LAG, normal)
    values = statistic(x, spec)[windows]
    fit = _gumbel_level(values + 1e-12, VELOCITY_BLOCK, DAY_S / period_s, target_per_day, log_scale=True)
    if fit is None:  # not reached: `needed` rows always make enough blocks
        return None, facts | {"calibrated": False, "why": "too few blocks for the fit"}
    level, block, blocks, mu, beta = fit
    days = values.size * period_s / DAY_S
    return spec.with_level(level), facts | {
        "calibrated": True,
        "level": level,
        "lag": spec.lag,
        "components": spec.components,
        "block_readings": block,
        "blocks": blocks,
        "gumbel_log_location": mu,
        "gumbel_log_scale": beta,
        "days_covered": days,
        "readings_over_level_on_normal": int(np.count_nonzero(values > level)),
    }
