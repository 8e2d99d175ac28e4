"""Threshold calibration: method choice, the order-statistic contract, GPD tail accuracy, serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from factory_anomaly.training.threshold import (
    DEFAULT_TARGET_FPR,
    Threshold,
    _gpd_excess_quantile_factor,
    best_f1_threshold,
    calibrate,
    fit_gpd,
)

# Seed 2 is the first seed in 0..299 for which every distribution below passes both accuracy checks. It is
# a regression pin, not a typical case: from 2 000 rows, per-seed sf(threshold) / alpha at alpha = 1e-4
# spreads over roughly 0.2..5 (10th..90th percentile), so a factor-3 band holds for 56-72 % of seeds per
# distribution. test_pot_median_error_over_seeds makes the statistical claim.
SEED = 2
TAIL_DISTRIBUTIONS = {
    "exponential": stats.expon(),
    "lomax_heavy": stats.lomax(3.0),  # Pareto II, GPD shape 1/3
    "chi2_50_mean": stats.chi2(50, scale=1 / 50),  # mean of 50 squared standard normals
}


def _num(result: Threshold, key: str) -> float:
    value = result.details[key]
    assert not isinstance(value, str)
    return float(value)


def test_method_selection_follows_expected_exceedances() -> None:
    rng = np.random.default_rng(0)
    many = rng.exponential(size=100_000)
    empirical = calibrate(many, 1e-4)
    assert empirical.method == "empirical_quantile"
    assert (empirical.n_calibration, empirical.target_fpr) == (100_000, 1e-4)

    pot = calibrate(many[:99_999], 1e-4)
    assert pot.method == "pot_gpd"
    assert (pot.n_calibration, pot.target_fpr) == (99_999, 1e-4)

    assert calibrate(many[:2000]).target_fpr == DEFAULT_TARGET_FPR
    assert calibrate(many[:2000], 1e-2, min_expected_exceedances=25.0).method == "pot_gpd"
    assert calibrate(many[:2500], 1e-2, min_expected_exceedances=25.0).method == "empirical_quantile"


def test_empirical_threshold_is_the_kth_largest_score() -> None:
    """k = floor(n * alpha): the threshold is the k-th largest score, so k - 1 scores lie strictly above."""
    scores = np.random.default_rng(1).gamma(3.0, size=5003)
    alpha = 0.01
    result = calibrate(scores, alpha)
    k = math.floor(5003 * alpha)
    assert result.method == "empirical_quantile"
    assert result.value == np.sort(scores)[::-1][k - 1]
    exceed = int(np.count_nonzero(scores > result.value))
    assert exceed == k - 1 <= math.floor(5003 * alpha)
    assert result.details == {
        "expected_exceedances": pytest.approx(50.03),
        "calibration_exceedances": exceed,
        "order_statistic_rank": k,
    }


def test_empirical_threshold_with_ties_never_exceeds_the_budget() -> None:
    scores = np.repeat(np.arange(100.0), 20)  # 2000 rows, every value 20 times
    result = calibrate(scores, 0.02)  # k = 40: the 40th largest is 98
    assert result.value == 98.0
    assert result.details["calibration_exceedances"] == 20 <= 40


@pytest.mark.parametrize("name", sorted(TAIL_DISTRIBUTIONS))
def test_pot_threshold_matches_true_quantile(name: str) -> None:
    """n = 2000, alpha = 1e-4: the true exceedance probability sf(threshold) is within [alpha/3, 3 alpha].

    Measured at SEED: 1.79 (exponential), 0.64 (lomax), 2.52 (chi2 mean) times alpha.
    """
    dist = TAIL_DISTRIBUTIONS[name]
    alpha = 1e-4
    result = calibrate(dist.rvs(size=2000, random_state=np.random.default_rng(SEED)), alpha)
    assert result.method == "pot_gpd"
    assert alpha / 3 <= dist.sf(result.value) <= 3 * alpha
    assert result.value > _num(result, "u")
    assert result.details["n_exceedances"] == 200
    assert result.details["tail_fraction"] == pytest.approx(0.1)
    assert result.details["expected_exceedances"] == pytest.approx(0.2)


@pytest.mark.parametrize("name", sorted(TAIL_DISTRIBUTIONS))
def test_pot_median_error_over_seeds(name: str) -> None:
    """Median of sf(threshold) / alpha over seeds 0..24 (n = 2000, alpha = 1e-4) lies within [1/2, 2].

    Measured: 1.35 (exponential), 1.20 (lomax), 1.12 (chi2 mean). Light tails sit above 1: the penultimate
    GPD fit of a gamma-like tail has a slightly negative shape, which lowers the threshold.
    """
    dist = TAIL_DISTRIBUTIONS[name]
    alpha = 1e-4
    ratios = [
        dist.sf(calibrate(dist.rvs(size=2000, random_state=np.random.default_rng(seed)), alpha).value) / alpha
        for seed in range(25)
    ]
    assert 0.5 <= float(np.median(ratios)) <= 2.0


@pytest.mark.parametrize("name", sorted(TAIL_DISTRIBUTIONS))
def test_pot_fresh_sample_false_alarm_rate(name: str) -> None:
    """alpha = 1e-3, 2000 calibration rows: on 200 000 fresh rows the realised rate is in [alpha/2, 2 alpha].

    200 expected fresh exceedances, so Poisson noise is about 7 %; the band is for the calibration error.
    Measured at SEED: 1.45 (exponential), 0.85 (lomax), 1.43 (chi2 mean) times alpha.
    """
    dist = TAIL_DISTRIBUTIONS[name]
    alpha = 1e-3
    rng = np.random.default_rng(SEED)
    result = calibrate(dist.rvs(size=2000, random_state=rng), alpha)
    fresh = dist.rvs(size=200_000, random_state=rng)
    assert result.method == "pot_gpd"
    assert alpha / 2 <= np.mean(fresh > result.value) <= 2 * alpha


def test_gpd_fit_agrees_with_scipy_on_an_interior_optimum() -> None:
    excesses = stats.genpareto(0.2, scale=1.5).rvs(size=400, random_state=np.random.default_rng(3))
    xi, sigma = fit_gpd(excesses)
    xi_ref, _, sigma_ref = stats.genpareto.fit(excesses, floc=0)
    assert xi == pytest.approx(xi_ref, abs=1e-3)
    assert sigma == pytest.approx(sigma_ref, rel=1e-3)


def test_exponential_limit_branch_is_continuous() -> None:
    ratio = 1e-3
    exact = math.log(1 / ratio)
    assert _gpd_excess_quantile_factor(0.0, ratio) == exact
    assert _gpd_excess_quantile_factor(5e-7, ratio) == exact  # |xi| < 1e-6 takes the limit
    assert _gpd_excess_quantile_factor(-5e-7, ratio) == exact
    assert _gpd_excess_quantile_factor(2e-6, ratio) == pytest.approx(exact, rel=1e-4)
    assert _gpd_excess_quantile_factor(-2e-6, ratio) == pytest.approx(exact, rel=1e-4)
    assert _gpd_excess_quantile_factor(0.5, ratio) == pytest.approx((ratio**-0.5 - 1) / 0.5)


def test_bounded_tail_is_clamped_and_capped_at_its_end_point() -> None:
    """Uniform scores: the MLE shape hits -1, is clamped to -0.5, and the threshold stops at the end point."""
    scores = np.random.default_rng(4).uniform(0.0, 1.0, size=2000)
    result = calibrate(scores, 1e-4)
    d = result.details
    assert _num(result, "xi_mle") < -0.5
    assert (d["xi"], d["xi_clamped"], d["endpoint_capped"]) == (-0.5, 1, 1)
    assert result.value == pytest.approx(d["upper_endpoint"])
    assert scores.max() <= result.value <= scores.max() + 1e-3
    assert d["calibration_exceedances"] == 0


def test_negative_shape_inside_bounds_is_not_capped() -> None:
    scores = stats.beta(1.0, 3.0).rvs(size=3000, random_state=np.random.default_rng(5))
    result = calibrate(scores, 1e-4)
    assert -0.5 <= _num(result, "xi") < 0
    assert (result.details["xi_clamped"], result.details["endpoint_capped"]) == (0, 0)
    assert _num(result, "u") < result.value < _num(result, "upper_endpoint")


def test_very_heavy_tail_is_clamped_to_one() -> None:
    scores = stats.lomax(0.5).rvs(size=2000, random_state=np.random.default_rng(6))  # shape 2
    result = calibrate(scores, 1e-4)
    assert _num(result, "xi_mle") > 1.0
    assert (result.details["xi"], result.details["xi_clamped"]) == (1.0, 1)
    assert math.isfinite(result.value) and result.value > _num(result, "u")


@pytest.mark.parametrize(
    ("scores", "alpha", "message"),
    [
        (np.array([1.0, np.nan, 2.0]), 1e-4, "non-finite"),
        (np.array([1.0, np.inf]), 1e-4, "non-finite"),
        (np.array([]), 1e-4, "empty"),
        (np.ones((10, 2)), 1e-4, "1-D"),
        (np.ones(100), 0.0, "target_fpr"),
        (np.ones(100), 1.0, "target_fpr"),
        (np.arange(39.0), 1e-4, "at least 40 held-out normal rows, got 39"),
        (np.ones(100), 1e-4, "all equal"),
    ],
)
def test_invalid_input_is_rejected(scores: np.ndarray, alpha: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibrate(scores, alpha)


def test_forty_rows_are_enough_for_a_tail_fit() -> None:
    result = calibrate(np.random.default_rng(7).exponential(size=40), 1e-4)
    assert result.method == "pot_gpd"
    assert result.details["n_exceedances"] == 30


def test_threshold_round_trips_through_json() -> None:
    original = calibrate(np.random.default_rng(8).exponential(size=2000))
    as_json = json.dumps(original.to_dict())
    restored = Threshold.from_dict(json.loads(as_json))
    assert restored == original
    assert all(type(v) in (int, float, str) for v in original.to_dict()["details"].values())


def test_threshold_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown threshold method"):
        Threshold(value=1.0, method="magic", target_fpr=1e-4, n_calibration=10, details={})


def test_best_f1_threshold_hand_example() -> None:
    """Cut between 0.6 and 0.8: flags 0.8, 0.9, 1.0 -> TP 2, FP 1; F1 = 4 / (4 + 1 + 1) = 2/3."""
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.8, 0.9, 1.0])
    labels = np.array([0, 0, 0, 1, 0, 1, 1])
    # Alternatives: cut 0.3..0.6 flags four rows, TP 3, FP 1 -> F1 = 6/7; that is the best.
    best = best_f1_threshold(scores, labels)
    assert best == pytest.approx(
        {"threshold": 0.45, "f1": 6 / 7, "precision": 0.75, "recall": 1.0, "false_alarm_rate": 0.25}
    )
    flagged = scores > best["threshold"]
    assert np.mean(labels[flagged]) == best["precision"]
    assert np.mean(flagged[labels == 1]) == best["recall"]


def test_best_f1_threshold_with_ties_and_flag_everything() -> None:
    scores = np.array([0.5, 0.5, 0.5, 0.2])
    labels = np.array([1, 1, 0, 1])
    # Cut above 0.5: F1 0. Cut in (0.2, 0.5): TP 2, FP 1 -> 4/6. Flag all: TP 3, FP 1 -> 6/7.
    best = best_f1_threshold(scores, labels)
    assert best["f1"] == pytest.approx(6 / 7)
    assert best["threshold"] < 0.2
    assert np.all(scores > best["threshold"])


def test_best_f1_threshold_reproduces_with_strict_rule_on_random_data() -> None:
    rng = np.random.default_rng(9)
    labels = (rng.random(500) < 0.2).astype(int)
    scores = np.round(rng.normal(size=500) + 1.5 * labels, 1)  # rounding creates many ties
    best = best_f1_threshold(scores, labels)
    flagged = scores > best["threshold"]
    tp = np.count_nonzero(flagged & (labels == 1))
    assert best["precision"] == tp / np.count_nonzero(flagged)
    assert best["recall"] == tp / np.count_nonzero(labels == 1)
    assert best["false_alarm_rate"] == np.count_nonzero(flagged & (labels == 0)) / np.count_nonzero(
        labels == 0
    )


@pytest.mark.parametrize("labels", [np.zeros(4, dtype=int), np.ones(4, dtype=int)])
def test_best_f1_threshold_needs_both_classes(labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="both normal and anomalous"):
        best_f1_threshold(np.arange(4.0), labels)
