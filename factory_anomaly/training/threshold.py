"""Alarm threshold calibration on held-out normal anomaly scores.

A reading is anomalous when ``score > threshold``: every function here uses that strict rule, so a threshold
equal to a calibration score does not flag that score.

Why ``DEFAULT_TARGET_FPR = 1e-4``: a plant sends one reading per second per machine, 86 400 readings a day.
At a false-alarm rate of 1e-4 that is about 8.6 raw flags per machine-day, which the alerting layer turns
into alerts only when flags cluster in time. 1e-3 would be about 86 raw flags a day (alarm fatigue); 1e-5
cannot be estimated from the few thousand held-out normal rows a plant typically has, even with a tail model.

Two estimators, chosen by how many calibration scores are expected above the target quantile:

* ``empirical_quantile`` when ``n * target_fpr >= MIN_EXPECTED_EXCEEDANCES``: an order statistic of the
  calibration sample, no distributional assumption.
* ``pot_gpd`` otherwise: peaks over threshold. The top of the sample is modelled by a generalised Pareto
  distribution (GPD), the limit law of threshold excesses (Pickands-Balkema-de Haan), and the quantile is
  extrapolated from it. Its error grows with the extrapolation distance ``log(k_tail / (n * target_fpr))``,
  so a tail-fit threshold is a wide estimate, not a guarantee (how wide, simulated from 2 000 rows:
  docs/training.md, "How far a tail-fit threshold can be trusted"). More held-out rows help more than any
  tuning: 100 000 rows reach the empirical method at the default target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize

DEFAULT_TARGET_FPR: float = 1e-4
"""Target false-alarm rate per reading; see the module docstring for the alarm-budget arithmetic."""

MIN_EXPECTED_EXCEEDANCES: float = 10.0
"""Below this many expected calibration exceedances an order statistic is too noisy: use the GPD tail."""

METHODS: tuple[str, ...] = ("empirical_quantile", "pot_gpd")

_MIN_BODY_ROWS = 10
"""Rows the POT method wants below ``u``, so that ``u`` is a real order statistic, not the sample minimum."""
_XI_BOUNDS = (-0.5, 1.0)
"""Shapes outside this range are clamped: below -0.5 the MLE is irregular, above 1 the tail has no mean."""
_XI_SEARCH_BOUNDS = (-1.0, 3.0)
"""The MLE is searched here; below -1 the GPD likelihood is unbounded."""
_XI_EXPONENTIAL_ATOL = 1e-6


@dataclass(frozen=True)
class Threshold:
    """A calibrated alarm threshold and how it was obtained (flag a reading iff ``score > value``)."""

    value: float
    method: str
    target_fpr: float
    n_calibration: int
    details: dict[str, float | int | str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown threshold method {self.method!r}; expected one of {METHODS}")
        if not math.isfinite(self.value):
            raise ValueError(f"threshold value must be finite, got {self.value}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form for the manifest (``json.dumps`` accepts it)."""
        return {
            "value": float(self.value),
            "method": self.method,
            "target_fpr": float(self.target_fpr),
            "n_calibration": int(self.n_calibration),
            "details": {key: _plain(val) for key, val in self.details.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Threshold:
        missing = {"value", "method", "target_fpr", "n_calibration"} - d.keys()
        if missing:
            raise ValueError(f"threshold dict lacks {sorted(missing)}")
        return cls(
            value=float(d["value"]),
            method=str(d["method"]),
            target_fpr=float(d["target_fpr"]),
            n_calibration=int(d["n_calibration"]),
            details={str(key): _plain(val) for key, val in dict(d.get("details", {})).items()},
        )


def _plain(value: Any) -> float | int | str:
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"threshold details hold numbers and strings only, got {type(value).__name__}")


def calibrate(
    normal_scores: np.ndarray,
    target_fpr: float = DEFAULT_TARGET_FPR,
    *,
    min_expected_exceedances: float = MIN_EXPECTED_EXCEEDANCES,
    tail_fraction: float = 0.1,
    min_tail: int = 30,
) -> Threshold:
    """Threshold whose false-alarm rate on normal data is ``target_fpr``, from held-out normal scores.

    ``normal_scores``: 1-D, finite; scores of readings known to be normal and unseen in training.

    Empirical (``n * target_fpr >= min_expected_exceedances``): with ``k = floor(n * target_fpr)``, the
    threshold is the k-th largest score, ``sorted(scores)[n - k]``. At most ``k - 1`` calibration scores
    are strictly above it (exactly ``k - 1`` without ties), and for continuous scores the expected true
    false-alarm rate is ``k / (n + 1) <= target_fpr``: the conservative side of the quantile.

    POT (otherwise): the ``k_tail = max(min_tail, ceil(tail_fraction * n))`` largest scores (at most
    ``n - 1``) exceed ``u``, the (k_tail + 1)-th largest score; a GPD with location 0 is fitted to the
    excesses by maximum likelihood and the threshold is
    ``u + sigma / xi * ((target_fpr * n / k_tail) ** -xi - 1)`` (``u + sigma * log(k_tail / (target_fpr
    * n))`` when ``|xi| < 1e-6``). A fitted shape outside [-0.5, 1] is clamped (``details["xi_clamped"] =
    1``, sigma refitted for that shape). When the unclamped fit has a bounded tail (``xi_mle < 0``) the
    threshold is capped at that tail's end point ``u - sigma_mle / xi_mle`` (``details["endpoint_capped"]
    = 1``): no normal score is expected beyond it. The threshold is always above ``u``.

    Raises ``ValueError`` for invalid input, for fewer than ``min_tail + 10`` rows in the POT case, and
    when the top of the sample is one tied value (no tail to fit).
    """
    scores = _validated_scores(normal_scores)
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must lie strictly between 0 and 1, got {target_fpr}")
    if not min_expected_exceedances >= 1.0:
        raise ValueError(f"min_expected_exceedances must be at least 1, got {min_expected_exceedances}")
    if not 0.0 < tail_fraction < 1.0:
        raise ValueError(f"tail_fraction must lie strictly between 0 and 1, got {tail_fraction}")
    if min_tail < 10:
        raise ValueError(f"min_tail must be at least 10 for a meaningful GPD fit, got {min_tail}")

    n = scores.size
    expected = n * target_fpr
    ordered = np.sort(scores)
    if expected >= min_expected_exceedances:
        k = math.floor(expected)
        value = float(ordered[n - k])
        return Threshold(
            value=value,
            method="empirical_quantile",
            target_fpr=float(target_fpr),
            n_calibration=n,
            details={
                "expected_exceedances": float(expected),
                "calibration_exceedances": int(np.count_nonzero(scores > value)),
                "order_statistic_rank": k,
            },
        )
    return _calibrate_pot(ordered, target_fpr, tail_fraction=tail_fraction, min_tail=min_tail)


def _validated_scores(normal_scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(normal_scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"normal_scores must be 1-D, got shape {scores.shape}")
    if scores.size == 0:
        raise ValueError("normal_scores is empty: calibration needs held-out normal rows")
    bad = np.count_nonzero(~np.isfinite(scores))
    if bad:
        raise ValueError(f"normal_scores holds {bad} non-finite values (NaN or inf)")
    return scores


def _calibrate_pot(
    ordered: np.ndarray, target_fpr: float, *, tail_fraction: float, min_tail: int
) -> Threshold:
    n = ordered.size
    min_rows = min_tail + _MIN_BODY_ROWS
    if n < min_rows:
        raise ValueError(
            f"target_fpr={target_fpr} is too small for an order statistic on {n} rows, and a GPD tail "
            f"calibration needs at least {min_rows} held-out normal rows, got {n}"
        )
    expected = n * target_fpr
    k_tail = min(max(min_tail, math.ceil(tail_fraction * n)), n - 1)
    if k_tail <= expected:
        raise ValueError(
            f"tail of {k_tail} rows does not reach past the target quantile ({expected:.3g} expected "
            "exceedances): raise min_tail or tail_fraction"
        )
    u = float(ordered[n - k_tail - 1])
    excesses = ordered[n - k_tail :] - u
    if not excesses.max() > 0.0:
        raise ValueError(f"the top {k_tail + 1} normal scores are all equal to {u}: no tail to fit a GPD to")

    xi_mle, sigma_mle = fit_gpd(excesses)
    xi, sigma = xi_mle, sigma_mle
    xi_clamped = not _XI_BOUNDS[0] <= xi_mle <= _XI_BOUNDS[1]
    if xi_clamped:
        xi = min(max(xi_mle, _XI_BOUNDS[0]), _XI_BOUNDS[1])
        sigma = _fit_gpd_scale(excesses, xi)

    value = u + sigma * _gpd_excess_quantile_factor(xi, expected / k_tail)
    details: dict[str, float | int | str] = {
        "u": u,
        "xi": xi,
        "sigma": sigma,
        "n_exceedances": k_tail,
        "tail_fraction": k_tail / n,
        "expected_exceedances": float(expected),
        "xi_mle": xi_mle,
        "sigma_mle": sigma_mle,
        "xi_clamped": int(xi_clamped),
        "endpoint_capped": 0,
    }
    if xi_mle < 0.0:
        endpoint = u - sigma_mle / xi_mle
        details["upper_endpoint"] = endpoint
        if value > endpoint:
            value = endpoint
            details["endpoint_capped"] = 1
    if not (math.isfinite(value) and value > u):
        raise ValueError(f"GPD tail fit gave an unusable threshold {value} (u={u}, xi={xi}, sigma={sigma})")
    details["calibration_exceedances"] = int(np.count_nonzero(ordered > value))
    return Threshold(
        value=float(value), method="pot_gpd", target_fpr=float(target_fpr), n_calibration=n, details=details
    )


def _gpd_excess_quantile_factor(xi: float, tail_prob_ratio: float) -> float:
    """``(x - u) / sigma`` at which the GPD survival function equals ``tail_prob_ratio`` (in (0, 1))."""
    log_ratio = math.log(tail_prob_ratio)
    if abs(xi) < _XI_EXPONENTIAL_ATOL:
        return -log_ratio
    return math.expm1(-xi * log_ratio) / xi


def fit_gpd(excesses: np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood GPD ``(xi, sigma)`` with location 0 for non-negative excesses.

    Why not ``scipy.stats.genpareto.fit``: its generic Nelder-Mead search can stall at the support boundary
    for bounded tails. Here the likelihood is profiled over ``theta = xi / sigma``, which makes it a 1-D
    problem (Grimshaw 1993): for fixed theta, ``xi = mean(log(1 + theta * y))`` and ``sigma = xi / theta``.
    The 1-D search covers xi in [-1, 3] on a grid, then refines around the best grid point.
    """
    y = np.asarray(excesses, dtype=np.float64)
    y_max = float(y.max())
    y_mean = float(y.mean())
    k = y.size

    def xi_of(theta: np.ndarray) -> np.ndarray:
        return np.mean(np.log1p(np.multiply.outer(theta, y)), axis=-1)

    def neg_loglik(theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=np.float64)
        xi = xi_of(theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            profile = k * np.log(xi / theta) + k * (1.0 + xi)
        exponential = k * math.log(y_mean) + k
        return np.where(np.abs(theta) * y_max < 1e-12, exponential, profile)

    # xi(theta) increases with theta; find the thetas where it crosses the search bounds.
    theta_floor = -(1.0 - 1e-12) / y_max
    if xi_of(np.array(theta_floor)) < _XI_SEARCH_BOUNDS[0]:
        theta_lo = optimize.brentq(
            lambda t: float(xi_of(np.array(t))) - _XI_SEARCH_BOUNDS[0], theta_floor, 0.0
        )
    else:
        theta_lo = theta_floor
    theta_hi = 1.0 / y_mean
    while xi_of(np.array(theta_hi)) < _XI_SEARCH_BOUNDS[1]:
        theta_hi *= 4.0
    theta_hi = optimize.brentq(lambda t: float(xi_of(np.array(t))) - _XI_SEARCH_BOUNDS[1], 0.0, theta_hi)

    near_pole = -(1.0 - np.geomspace(1.0 + theta_lo * y_max, 1.0, 60, endpoint=False)) / y_max
    grid = np.unique(
        np.concatenate(
            [
                theta_lo * np.geomspace(1.0, 1e-8, 60),
                near_pole[near_pole >= theta_lo],
                [0.0],
                theta_hi * np.geomspace(1e-8, 1.0, 120),
            ]
        )
    )
    theta = _minimise_on_grid(neg_loglik, grid)
    if abs(theta) * y_max < 1e-12:
        return 0.0, y_mean
    xi = float(xi_of(np.array(theta)))
    return xi, xi / theta


def _fit_gpd_scale(excesses: np.ndarray, xi: float) -> float:
    """Maximum-likelihood GPD scale for a fixed shape ``xi`` (used after clamping the shape)."""
    y = np.asarray(excesses, dtype=np.float64)
    y_max = float(y.max())
    k = y.size

    def neg_loglik(log_sigma: np.ndarray) -> np.ndarray:
        sigma = np.exp(np.asarray(log_sigma, dtype=np.float64))
        z = np.multiply.outer(1.0 / sigma, y) * xi
        with np.errstate(divide="ignore", invalid="ignore"):
            value = k * np.log(sigma) + (1.0 + 1.0 / xi) * np.sum(np.log1p(z), axis=-1)
        return np.where(np.isfinite(value), value, np.inf)

    low = max(-xi, 0.0) * y_max * (1.0 + 1e-9) if xi < 0 else 1e-10 * y_max
    grid = np.linspace(math.log(low), math.log(1e3 * y_max), 200)
    return math.exp(_minimise_on_grid(neg_loglik, grid))


def _minimise_on_grid(func: Callable[[np.ndarray], np.ndarray], grid: np.ndarray) -> float:
    """Argmin of a 1-D function: best point of a sorted grid, refined by bounded Brent between neighbours."""
    values = func(grid)
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    if hi <= lo:
        return float(grid[best])
    refined = optimize.minimize_scalar(lambda x: float(func(np.array(x))), bounds=(lo, hi), method="bounded")
    if refined.success and float(refined.fun) <= float(values[best]):
        return float(refined.x)
    return float(grid[best])


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Oracle threshold with the best F1 on labelled data: a ceiling to compare calibrated thresholds with.

    Candidates put the cut between each pair of neighbouring distinct scores (the midpoint, in float64), so
    ``scores > threshold`` reproduces the reported precision and recall; cutting below the smallest score
    flags everything. F1 ties go to the highest threshold (fewest alarms). ``false_alarm_rate`` is false
    positives over normal rows. ``labels``: 0 normal / 1 anomalous; both classes must be present.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores hold non-finite values (NaN or inf)")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    y = y.astype(np.int64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("best_f1_threshold needs both normal and anomalous rows")

    order = np.argsort(-s, kind="stable")
    s_desc, y_desc = s[order], y[order]
    # Cut after the last row of each run of equal scores: the flagged set is "score >= that value".
    last_of_value = np.flatnonzero(np.append(s_desc[1:] != s_desc[:-1], True))
    tp = np.cumsum(y_desc)[last_of_value]
    fp = (last_of_value + 1) - tp
    f1 = 2.0 * tp / (tp + fp + n_pos)
    best = int(np.argmax(f1))

    flagged_min = s_desc[last_of_value[best]]
    if best + 1 < last_of_value.size:
        below = s_desc[last_of_value[best + 1]]
        cut = below / 2.0 + flagged_min / 2.0
        threshold = float(cut if below <= cut < flagged_min else below)
    else:
        threshold = float(np.nextafter(flagged_min, -np.inf))
    tp_b, fp_b = int(tp[best]), int(fp[best])
    return {
        "threshold": threshold,
        "f1": float(f1[best]),
        "precision": tp_b / (tp_b + fp_b),
        "recall": tp_b / n_pos,
        "false_alarm_rate": fp_b / n_neg,
    }


MIN_SUPPORTED_EXCEEDANCES: float = 1.0
"""A target is supported when the held-out normal scores are expected to hold at least this many
exceedances: the threshold then lies inside the observed scores, never extrapolated past the largest."""
LEVEL_TARGETS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
"""The false-alarm rates calibrated beside the chosen target, where the data supports them: what the
quality benchmark checks on held-out rows, and what a drift signal may watch with more counts."""
BOOTSTRAP_RESAMPLES = 100


def tightest_supported_target(n_scores: int) -> float:
    """The smallest false-alarm rate `n_scores` held-out normal scores can calibrate (see above)."""
    return MIN_SUPPORTED_EXCEEDANCES / max(n_scores, 1)


def round_up_target(value: float) -> float:
    """`value` rounded up to one significant digit (6.7e-3 -> 7e-3): the tightest supported target, as a
    target a person can read, never below what the data supports."""
    exponent = math.floor(math.log10(value))
    mantissa = math.ceil(round(value / 10.0**exponent, 9))
    return float(f"{mantissa}e{exponent}")


def calibrate_levels(
    normal_scores: np.ndarray, targets: tuple[float, ...] = LEVEL_TARGETS
) -> list[Threshold]:
    """A threshold at each of `targets` the sample supports (see `tightest_supported_target`)."""
    scores = _validated_scores(normal_scores)
    floor = tightest_supported_target(scores.size)
    return [calibrate(scores, t) for t in targets if t >= floor]


def threshold_interval(
    normal_scores: np.ndarray, target_fpr: float, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES
) -> tuple[float, float]:
    """The 5th and 95th percentile of the threshold over bootstrap resamples of the calibration scores:
    how much the threshold itself would move with another sample of the same size."""
    scores = _validated_scores(normal_scores)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        try:
            values.append(calibrate(rng.choice(scores, scores.size), target_fpr).value)
        except ValueError:  # a resample whose top is one tied value: no tail to fit
            continue
    if not values:
        return (math.nan, math.nan)
    low, high = np.percentile(values, [5.0, 95.0])
    return float(low), float(high)
