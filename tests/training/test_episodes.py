"""Calibrating the episode rule: the level keeps its false-episode promise per asset-day on fresh normal
scores, is refused (with the reason) where the data is too short, and reaches the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from factory_anomaly.alarms.jitter import jitter_over
from factory_anomaly.alarms.rule import episodes
from factory_anomaly.alarms.velocity import velocity_over
from factory_anomaly.artifact import CARD_FILE, read_manifest
from factory_anomaly.training.data import Dataset
from factory_anomaly.training.episodes import (
    JITTER_SHARE,
    VELOCITY_SHARE,
    calibrate_episode_rule,
    calibrate_jitter,
    calibrate_velocity,
    reading_period,
)
from tests.training.test_cli import cli

DAY = 86_400


def _autocorrelated_scores(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Positive scores with persistence (an AR(1) in log space), like a model's scores of normal data."""
    noise = rng.normal(size=rows)
    log_score = np.empty(rows)
    log_score[0] = noise[0]
    for t in range(1, rows):
        log_score[t] = 0.7 * log_score[t - 1] + np.sqrt(1 - 0.7**2) * noise[t]
    return np.exp(0.5 * log_score)


@pytest.mark.parametrize(("k", "n"), [(1, 1), (3, 10)])
def test_the_level_keeps_its_promise_per_day_on_fresh_scores(k: int, n: int) -> None:
    rng = np.random.default_rng(k)
    rule, facts = calibrate_episode_rule(_autocorrelated_scores(rng, DAY), 1.0, 4.0, k, n, 60.0)
    assert rule is not None and facts["calibrated"] and facts["days_covered"] == pytest.approx(1.0)
    fresh_days = 15
    found = len(episodes(_autocorrelated_scores(rng, fresh_days * DAY), rule))
    # 60 expected; Gumbel extrapolation from one day is approximate: within a factor of two
    assert 0.5 * 4.0 * fresh_days <= found <= 2.0 * 4.0 * fresh_days


def _jittery(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Four sensors of a slow process, two of them convex (they jitter more where they read high)."""
    h = np.empty(rows)
    h[0] = 0.0
    shocks = rng.normal(scale=0.02, size=rows)
    for t in range(1, rows):
        h[t] = 0.995 * h[t - 1] + shocks[t]
    clean = np.column_stack([np.exp(h), 3 * np.exp(0.5 * h), h, -2 * h])
    return clean + rng.normal(scale=0.05, size=clean.shape)


def _episodes_of(over: np.ndarray, gap: int = 300) -> int:
    at = np.flatnonzero(over)
    return 0 if at.size == 0 else 1 + int((np.diff(at) > gap).sum())


def test_the_jitter_level_keeps_its_promise_per_day_on_fresh_readings() -> None:
    rng = np.random.default_rng(11)
    normal = _jittery(rng, DAY)
    spec, facts = calibrate_jitter(normal, normal.min(axis=0), 1.0, 2.0)
    assert spec is not None and facts["calibrated"] and facts["level"] == spec.level
    assert facts["active_sensors"] == 4 and facts["days_covered"] == pytest.approx(1.0)
    fresh_days = 6
    found = sum(_episodes_of(jitter_over(_jittery(rng, DAY), spec)) for _ in range(fresh_days))
    # 12 expected; extrapolated from one day: within a factor of three
    assert 2.0 * fresh_days / 3 <= found <= 3 * 2.0 * fresh_days


def test_too_few_readings_give_no_jitter_channel_and_say_why() -> None:
    spec, facts = calibrate_jitter(np.zeros((1999, 2)), np.zeros(2), 1.0, 0.5)
    assert spec is None and not facts["calibrated"] and "needs at least 2000" in facts["why"]


def _slow_process(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Eight sensors of two slow process variables (AR(1)) through fixed loadings, with white noise."""
    h = np.zeros((rows, 2))
    shocks = rng.normal(scale=0.1, size=(rows, 2))
    for t in range(1, rows):
        h[t] = 0.99 * h[t - 1] + shocks[t]
    loadings = np.random.default_rng(7).normal(size=(2, 8))
    return h @ loadings + rng.normal(scale=0.05, size=(rows, 8))


def test_the_velocity_level_keeps_its_promise_per_day_on_fresh_readings() -> None:
    rng = np.random.default_rng(12)
    x = _slow_process(rng, DAY)
    normal = np.ones(DAY, dtype=bool)
    spec, facts = calibrate_velocity(x, normal, x.mean(axis=0), x.std(axis=0), 1.0, 2.0, components=2)
    assert spec is not None and facts["calibrated"] and facts["level"] == spec.level
    assert facts["components"] == 2 and facts["days_covered"] == pytest.approx(1.0, rel=1e-3)
    fresh_days = 6
    found = sum(_episodes_of(velocity_over(_slow_process(rng, DAY), spec)) for _ in range(fresh_days))
    # 12 expected; extrapolated from one day: within a factor of three
    assert 2.0 * fresh_days / 3 <= found <= 3 * 2.0 * fresh_days


def test_too_few_normal_changes_give_no_velocity_channel_and_say_why() -> None:
    x = _slow_process(np.random.default_rng(13), 4000)
    normal = np.ones(4000, dtype=bool)
    normal[::2] = False  # no two neighbouring readings are normal: no change within a normal stretch
    spec, facts = calibrate_velocity(x, normal, np.zeros(8), np.ones(8), 1.0, 0.25, components=2)
    assert spec is None and not facts["calibrated"] and "0 changes within normal stretches" in facts["why"]


def test_too_few_readings_give_no_rule_and_say_why() -> None:
    rule, facts = calibrate_episode_rule(np.ones(500) + np.arange(500) * 1e-3, 1.0, 1.0, 3, 10, 300.0)
    assert rule is None and not facts["calibrated"] and "needs at least 2009" in facts["why"]


def test_close_after_is_in_readings_and_at_least_the_window() -> None:
    scores = _autocorrelated_scores(np.random.default_rng(5), 5000)
    assert calibrate_episode_rule(scores, 60.0, 1.0, 3, 10, 300.0)[0].close_after == 10  # type: ignore[union-attr]
    assert calibrate_episode_rule(scores, 1.0, 1.0, 3, 10, 300.0)[0].close_after == 300  # type: ignore[union-attr]


def test_the_reading_period_comes_from_the_timestamps_unless_declared() -> None:
    values = np.zeros((5, 2), dtype=np.float32)
    stamps = np.datetime64("2026-01-01T00:00:00") + np.arange(5) * np.timedelta64(60, "s")
    timed = Dataset(values, ("a", "b"), timestamps=stamps)
    assert reading_period(timed, None) == (60.0, "timestamps")
    assert reading_period(timed, 2.5) == (2.5, "declared")
    assert reading_period(Dataset(values, ("a", "b")), None) == (1.0, "assumed")


def test_the_manifest_carries_the_rule_and_the_summary_its_facts(trained_small: Path) -> None:
    manifest = read_manifest(trained_small)
    alarms = manifest.alarms
    assert alarms is not None and alarms.reading_period_s == 1.0 and alarms.target_episodes_per_day == 1.0
    assert alarms.jitter is None  # the jitter channel is opt-in
    # the velocity channel is on by default, with a quarter of the target
    assert alarms.velocity is not None and alarms.velocity.target_episodes_per_day == VELOCITY_SHARE
    assert alarms.rule_target_per_day == 1.0 - VELOCITY_SHARE
    assert len(alarms.velocity.directions) == min(8, manifest.n_sensors // 2)
    assert (alarms.k, alarms.n, alarms.close_after) == (3, 10, 300)
    assert alarms.level > 0 and alarms.method == "gumbel_block_maxima"
    assert alarms.stuck_limits is not None and len(alarms.stuck_limits) == manifest.n_sensors
    assert 0 < manifest.training["alarms"]["stuck_sensors"] == sum(1 for v in alarms.stuck_limits if v > 0)
    facts = manifest.training["alarms"]
    assert (
        facts["calibrated"] and facts["reading_period_source"] == "assumed"
    )  # the fixture has no timestamps
    assert facts["episodes_per_day_ci95"][0] <= facts["episodes_per_day_on_normal_scores"]
    card = (trained_small / CARD_FILE).read_text()
    assert "## Alarm episodes (per asset)" in card and "3 of an asset's last 10 readings" in card
    assert "assumed: the data has no timestamps" in card
    assert "- No jitter channel: off (--alarm-jitter turns it on)." in card
    assert "- Velocity (the process state, on its 8 principal directions, changing over 3 readings" in card
    assert "`python -m factory_anomaly.training.graph_figures --model-dir" in card  # the seed's figures
    # the test recording replayed as one asset: episodes caught per fault kind, false episodes a day
    section = card.split("### Alarm episodes on the test recording (one asset, in time order)", 1)[1]
    assert "| fault kind | episodes | caught | delay median | delay p90 |" in section
    assert "| correlation_break |" in section and "false episodes (touching no fault)" in section


def test_with_the_jitter_channel_the_target_is_shared(trained_jittery: Path) -> None:
    manifest = read_manifest(trained_jittery)
    alarms = manifest.alarms
    assert alarms is not None and alarms.jitter is not None
    assert alarms.jitter.target_episodes_per_day == JITTER_SHARE and alarms.rule_target_per_day == 0.5
    assert manifest.training["alarms"]["rule_target_episodes_per_day"] == 0.5
    assert len(alarms.jitter.noise_floor) == len(alarms.jitter.tail_excess) == manifest.n_sensors
    assert manifest.training["alarms"]["jitter"]["level"] == alarms.jitter.level > 0
    assert alarms.velocity is None
    card = (trained_jittery / CARD_FILE).read_text()
    assert "- Jitter (a sensor's reading-to-reading jitter" in card and "for 0.5 of the false" in card
    assert "- No velocity channel: off (--no-alarm-velocity)." in card


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [("--alarm-target-per-day", "0", "alarm target must be > 0"), ("--alarm-k", "0", "--alarm-k"),
     ("--reading-period-s", "-1", "reading period must be > 0"),
     ("--alarm-velocity-components", "0", "--alarm-velocity-components")],
)  # fmt: skip
def test_the_cli_refuses_a_bad_alarm_option(
    tmp_path: Path, small_plant, flag: str, value: str, message: str
) -> None:
    from factory_anomaly.plant.synthetic import write_run

    paths = write_run(small_plant, small_plant.simulate(300, seed=1), tmp_path / "data", formats=("npz",))
    result = cli("train", "--data", str(paths["npz"]), "--out", str(tmp_path / "m"), flag, value)
    assert result.returncode == 2 and message in result.stderr
