"""Stuck-sensor evidence: repeats away from a sensor's floor and ceiling, per-sensor limits from normal
data, the streaming tracker agreeing with the series replay, and an episode it opens naming the sensor."""

from __future__ import annotations

import numpy as np

from factory_anomaly.alarms.lifecycle import AssetAlarm
from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.alarms.stuck import (
    MAX_USEFUL_RUN,
    STUCK_MARGIN,
    StuckLimits,
    StuckTracker,
    repeat_runs,
    stuck_limits,
    stuck_over,
)

LOW, HIGH = np.array([0.0, 0.0]), np.array([10.0, 10.0])


def test_repeats_at_the_floor_or_ceiling_do_not_count() -> None:
    x = np.array([[5.0, 0.0], [5.0, 0.0], [5.0, 0.0], [6.0, 10.0], [6.0, 10.0]])
    assert repeat_runs(x, LOW, HIGH).tolist() == [[0, 0], [1, 0], [2, 0], [0, 0], [1, 0]]


def test_limits_come_from_the_longest_normal_run() -> None:
    rng = np.random.default_rng(0)
    noisy = rng.normal(5.0, 1.0, size=(2000, 1))
    coarse = np.round(rng.normal(5.0, 0.2, size=(2000, 1)))  # repeats all the time
    idle = np.full((MAX_USEFUL_RUN + 5, 1), 5.0)
    limits = stuck_limits(np.hstack([noisy, coarse]), LOW, HIGH)
    assert limits[0] == STUCK_MARGIN  # never repeats: 2 x 0 + margin
    assert limits[1] > 2 * repeat_runs(coarse, LOW[:1], HIGH[:1]).max()
    assert stuck_limits(idle, LOW[:1], HIGH[:1]).tolist() == [0]  # cannot tell frozen from idle: off


def test_the_tracker_agrees_with_the_series_replay() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 1.0, size=(300, 2))
    x[100:160, 1] = x[100, 1]  # frozen
    limits = np.array([3, 3])
    tracker = StuckTracker(StuckLimits(LOW, HIGH, limits))
    streamed = [bool(tracker.push(row)) for row in x]
    assert streamed == stuck_over(x, LOW, HIGH, limits).tolist()
    assert streamed[104] and not streamed[103] and not streamed[160]


def test_a_frozen_sensor_opens_an_episode_that_names_it() -> None:
    alarm = AssetAlarm("press-7", EpisodeRule(k=3, n=10, level=100.0, close_after=20))
    states = [
        alarm.observe(float(t), 0.5, stuck=[(4, "st1_pres_04", 5 + t)] if t >= 2 else []).alarm["state"]
        for t in range(5)
    ]
    assert states == ["none", "none", "pending", "pending", "open"]
    assert (
        alarm.episode is not None
        and alarm.episode.evidence == "reading unchanged: st1_pres_04 for 9 readings"
    )
    assert alarm.episode.top_sensors()[0]["name"] == "st1_pres_04"
