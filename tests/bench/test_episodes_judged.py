"""The episode judging of `make quality`: faults found, caught, delayed and false episodes counted as
docs/quality.md says."""

from __future__ import annotations

import numpy as np
import pytest

from bench.common import rule_of
from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.training.episode_quality import fault_episodes, judge_episodes


def test_fault_episodes_split_on_kind_and_gaps() -> None:
    labels = np.array([0, 1, 1, 0, 1, 1, 1, 0])
    kinds = np.array(["none", "spike", "spike", "none", "drift", "stuck", "stuck", "none"])
    assert fault_episodes(labels, kinds) == [(1, 3, "spike"), (4, 5, "drift"), (5, 7, "stuck")]
    assert fault_episodes(labels, None) == [(1, 3, "fault"), (4, 7, "fault")]


def test_recall_delay_and_false_episodes() -> None:
    rule = EpisodeRule(k=2, n=3, level=1.0, close_after=3)
    scores = np.zeros(200)
    labels = np.zeros(200, dtype=np.int8)
    labels[50:60] = 1  # caught: scores over the level from its 3rd reading on
    scores[52:60] = 5.0
    labels[100:110] = 1  # missed
    scores[150:152] = 5.0  # a false episode
    kinds = np.where(labels == 1, "drift", "none")
    kinds[100:110] = "stuck"
    report = judge_episodes(scores, labels, kinds, rule, 1.0, fresh=[np.zeros(86_400)])
    assert report["by_kind"]["drift"] == {"episodes": 1, "recall": 1.0, "delay_median": 3.0, "delay_p90": 3.0}
    assert report["by_kind"]["stuck"]["recall"] == 0.0 and report["by_kind"]["stuck"]["delay_p90"] is None
    assert report["recall"] == 0.5 and report["alarm_episodes"] == 2
    assert report["false_on_test"]["episodes"] == 1
    # normal rows with an alarm open: 60-62 (the drift one closing) and 151-154 (the false one)
    assert report["alarm_time_on_normal"] == pytest.approx(7 / 180)
    fresh = report["false_on_fresh"]
    assert fresh["episodes"] == 0 and fresh["days"] == pytest.approx(1.0) and fresh["per_day_ci95"][1] > 3


def test_a_fault_inside_an_alarm_already_open_is_not_caught() -> None:
    rule = EpisodeRule(k=1, n=1, level=1.0, close_after=50)
    scores = np.zeros(100)
    scores[10] = 5.0  # opens an alarm that stays open to reading 60
    labels = np.zeros(100, dtype=np.int8)
    labels[30:35] = 1
    scores[30:35] = 5.0
    report = judge_episodes(scores, labels, None, rule, 1.0)
    assert report["recall"] == 0.0 and report["alarm_time_on_normal"] > 0.4
    assert rule_of({"alarms": None}) is None
    spec = {"k": 3, "n": 10, "level": 2.0, "close_after": 60, "reading_period_s": 60.0}
    rule, period = rule_of({"alarms": spec})  # type: ignore[misc]
    assert rule == EpisodeRule(3, 10, 2.0, 60) and period == 60.0
