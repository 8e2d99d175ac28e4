"""The jitter channel: its noise model follows a convex sensor's level, so a normal high-load stretch stays
quiet while a noise burst stands out; the per-reading tracker gives the replay's numbers exactly."""

from __future__ import annotations

import numpy as np
import pytest

from factory_anomaly.alarms.jitter import MIN_ROWS, JitterSpec, JitterTracker, evidence, fit_jitter

SIGMA = 0.05


def _plant(rng: np.random.Generator, rows: int, load_shift: float = 0.0) -> np.ndarray:
    """Three sensors of one slow process h (AR(1)): a convex one (vibration-like, 5·exp(h)), a linear one
    and a constant one; white noise SIGMA on the first two. `load_shift` raises h (a high-load stretch)."""
    h = np.empty(rows)
    h[0] = 0.0
    shocks = rng.normal(scale=0.02, size=rows)
    for t in range(1, rows):
        h[t] = 0.995 * h[t - 1] + shocks[t]
    h += load_shift
    noise = rng.normal(scale=SIGMA, size=(rows, 2))
    return np.column_stack([5.0 * np.exp(h) + noise[:, 0], 2.0 * h + noise[:, 1], np.full(rows, 3.0)])


@pytest.fixture(scope="module")
def spec() -> JitterSpec:
    normal = _plant(np.random.default_rng(0), 20_000)
    return fit_jitter(normal, normal.min(axis=0))


def test_the_noise_model_follows_the_level_of_a_convex_sensor_only(spec: JitterSpec) -> None:
    assert spec.noise_slope[0] > 0  # the convex sensor jitters more where it reads high
    # white noise gives Var d = 6σ²; the process adds 2²·Var(Δ²h) ≈ 4·2·0.02²
    assert spec.noise_floor[1] == pytest.approx(6 * SIGMA**2 + 8 * 0.02**2, rel=0.1)
    assert (
        spec.noise_slope[1] * np.ptp(_plant(np.random.default_rng(0), 20_000)[:, 1]) ** 2
        < spec.noise_floor[1]
    )
    assert spec.active.tolist() == [True, True, False]  # a constant sensor is not judged


def test_a_normal_high_load_stretch_stays_quiet_and_a_burst_stands_out(spec: JitterSpec) -> None:
    normal_max = evidence(_plant(np.random.default_rng(1), 20_000), spec).max()
    high_load = _plant(np.random.default_rng(2), 3_000, load_shift=1.0)  # the convex sensor reads ~2.7x
    flat = JitterSpec(spec.low, spec.noise_floor + spec.noise_slope * 0, spec.noise_slope * 0,
                      spec.tail_start, spec.tail_excess, spec.lam)  # fmt: skip
    assert evidence(high_load, spec).max() < 2 * normal_max < evidence(high_load, flat).max()
    burst = _plant(np.random.default_rng(3), 3_000)
    burst[1000:1040, 1] += np.random.default_rng(4).normal(scale=4 * SIGMA, size=40)  # 4x its noise
    e = evidence(burst, spec)
    assert e[1000:1050].max() > 3 * normal_max and e[:1000].max() < 2 * normal_max


def test_the_tracker_gives_the_replay_numbers_and_names_the_sensor(spec: JitterSpec) -> None:
    x = _plant(np.random.default_rng(5), 400)
    x[200:240, 0] += np.random.default_rng(6).normal(scale=6 * SIGMA, size=40)
    replay = evidence(x, spec)
    tracker = JitterTracker(spec.with_level(0.0))
    streamed = [max((e for _, e in tracker.push(row)), default=0.0) for row in x]
    np.testing.assert_allclose(streamed, replay, rtol=1e-9, atol=1e-12)
    level = float(np.quantile(replay[:200], 1.0)) + 1.0
    tracker = JitterTracker(spec.with_level(level))
    found = [tracker.push(row) for row in x]
    assert not any(found[:200]) and any(found[200:260])
    assert {j for hits in found for j, _ in hits} == {0}


def test_a_spec_comes_back_from_its_manifest_section(spec: JitterSpec) -> None:
    section = {"lam": spec.lam, "level": 7.5, "target_episodes_per_day": 0.5,
               **{name: getattr(spec, name).tolist()
                  for name in ("noise_floor", "noise_slope", "tail_start", "tail_excess")}}  # fmt: skip
    back = JitterSpec.of(section, spec.low)
    assert back.level == 7.5 and back.lam == spec.lam
    np.testing.assert_array_equal(back.noise_slope, spec.noise_slope)
    np.testing.assert_array_equal(back.low, spec.low)


def test_too_few_readings_are_refused() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_ROWS}"):
        fit_jitter(np.zeros((MIN_ROWS - 1, 2)), np.zeros(2))
