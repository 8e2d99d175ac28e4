"""The velocity channel: the state of a slow process, projected on its principal directions, changes too
little between readings for normal operation to reach the level, while an abrupt excursion of the same
process (every reading of it a plausible state) does; labelled faults in the training data do not teach
it that jumps are normal; the per-reading tracker gives the replay's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from factory_anomaly.alarms.velocity import (
    MIN_ROWS,
    VelocitySpec,
    VelocityTracker,
    clean_windows,
    fit_velocity,
    statistic,
    velocity_over,
)

N_SENSORS = 12


def _process(
    rng: np.random.Generator, rows: int, jump_at: int | None = None, jump: float = 0.0
) -> np.ndarray:
    """Twelve sensors driven by two slow process variables (AR(1), time constant 100 readings) through
    fixed loadings, with white noise; `jump` moves the first variable by that many of its standard
    deviations at `jump_at` (over 3 readings), and it stays there: an excursion."""
    h = np.zeros((rows, 2))
    shocks = rng.normal(scale=0.1, size=(rows, 2))
    for t in range(1, rows):
        h[t] = 0.99 * h[t - 1] + shocks[t]
    if jump_at is not None:
        sd = 0.1 / np.sqrt(1 - 0.99**2)
        ramp = np.clip((np.arange(rows) - jump_at + 1) / 3.0, 0.0, 1.0)
        h[:, 0] += jump * sd * ramp
    loadings = np.random.default_rng(99).normal(size=(2, N_SENSORS))
    return h @ loadings + rng.normal(scale=0.05, size=(rows, N_SENSORS)) + 10.0


@pytest.fixture(scope="module")
def spec() -> VelocitySpec:
    x = _process(np.random.default_rng(0), 20_000)
    v = fit_velocity(x, x.mean(axis=0), x.std(axis=0), components=2)
    values = statistic(x, v)
    return v.with_level(float(values.max()) * 1.5)


def test_normal_changes_stay_low_and_an_abrupt_excursion_crosses(spec: VelocitySpec) -> None:
    assert spec.components == 2 and spec.directions.shape == (2, N_SENSORS)
    normal = statistic(_process(np.random.default_rng(1), 20_000), spec)
    assert normal[spec.lag :].mean() == pytest.approx(2.0, rel=0.1)  # a χ² of 2 degrees of freedom
    assert not velocity_over(_process(np.random.default_rng(1), 20_000), spec).any()
    x = _process(np.random.default_rng(2), 2000, jump_at=1000, jump=3.0)
    over = np.flatnonzero(velocity_over(x, spec))
    assert over.size and over.min() >= 1000 and over.max() < 1000 + 3 + spec.lag
    # the excursion's readings are each a normal state: only the change gives it away
    assert x[1010].min() > _process(np.random.default_rng(1), 20_000).min()


def test_a_slow_move_of_the_same_size_stays_below(spec: VelocitySpec) -> None:
    x = _process(np.random.default_rng(3), 2000)
    sd = 0.1 / np.sqrt(1 - 0.99**2)
    loadings = np.random.default_rng(99).normal(size=(2, N_SENSORS))
    x += np.clip((np.arange(2000) - 1000) / 300.0, 0.0, 1.0)[:, None] * 3.0 * sd * loadings[0]
    assert not velocity_over(x, spec).any()


def test_labelled_faults_in_the_training_data_do_not_widen_the_law() -> None:
    x = _process(np.random.default_rng(4), 10_000)
    normal = np.ones(10_000, dtype=bool)
    jumps = np.arange(500, 10_000, 500)
    x[jumps] += 50.0  # one-reading faults, far off
    normal[jumps] = False
    assert clean_windows(normal, 3)[jumps].sum() == 0 and clean_windows(normal, 3)[jumps + 3].sum() == 0
    assert clean_windows(normal, 3)[:3].sum() == 0 and clean_windows(normal, 3)[jumps + 4].all()
    center, scale = x[normal].mean(axis=0), x[normal].std(axis=0)
    masked = fit_velocity(x, center, scale, components=2, normal=normal)
    blind = fit_velocity(x, center, scale, components=2)
    clean_x = _process(np.random.default_rng(5), 5000)
    assert statistic(clean_x, masked).mean() == pytest.approx(2.0, rel=0.15)
    # unmasked, the jumps take over a direction and inflate its idea of a normal change
    assert statistic(clean_x, blind).mean() < 0.6 * statistic(clean_x, masked).mean()


def test_the_tracker_gives_the_replay_numbers_and_names_the_sensors_that_moved(spec: VelocitySpec) -> None:
    x = _process(np.random.default_rng(6), 300, jump_at=150, jump=4.0)
    replay = statistic(x, spec)
    tracker = VelocityTracker(spec.with_level(1e-9))
    pushed = [tracker.push(row) for row in x]
    assert [p[0] for p in pushed[: spec.lag]] == [0.0] * spec.lag  # nothing to compare with yet
    np.testing.assert_allclose([p[0] * 1e-9 for p in pushed[spec.lag :]], replay[spec.lag :], rtol=1e-9)
    assert VelocityTracker(spec).push(x[0]) == (0.0, [])
    tracker = VelocityTracker(spec)
    answers = [tracker.push(row) for row in x]
    at = next(i for i, (r, _) in enumerate(answers) if r > 0)
    ratio, moved = answers[at]
    assert 150 <= at < 150 + 3 + spec.lag and ratio > 1.0 and len(moved) == 3
    loadings = np.abs(np.random.default_rng(99).normal(size=(2, N_SENSORS))[0]) / x[:150].std(axis=0)
    assert set(moved) <= set(np.argsort(-loadings)[:6].tolist())  # among the sensors the jump moves most


def test_a_spec_comes_back_from_its_manifest_section(spec: VelocitySpec) -> None:
    section = {"lag": spec.lag, "level": spec.level, "target_episodes_per_day": 0.25,
               "center": spec.center.tolist(), "scale": spec.scale.tolist(),
               "directions": spec.directions.tolist(), "change_mean": spec.change_mean.tolist(),
               "change_precision": spec.change_precision.tolist()}  # fmt: skip
    again = VelocitySpec.of(section)
    x = _process(np.random.default_rng(7), 500, jump_at=250, jump=3.0)
    np.testing.assert_array_equal(statistic(x, again), statistic(x, spec))


def test_too_few_readings_or_components_are_refused() -> None:
    x = _process(np.random.default_rng(8), MIN_ROWS - 1)
    with pytest.raises(ValueError, match=f"at least {MIN_ROWS} normal readings"):
        fit_velocity(x, x.mean(axis=0), x.std(axis=0))
    x = _process(np.random.default_rng(8), 1000)
    with pytest.raises(ValueError, match="must be positive"):
        fit_velocity(x, x.mean(axis=0), x.std(axis=0), components=0)
    assert fit_velocity(x, x.mean(axis=0), x.std(axis=0), components=50).components == N_SENSORS // 2
