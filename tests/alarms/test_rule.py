"""The episode rule: the series replay (calibration, benchmarks) and the reading-by-reading window
(serving) give the same episodes, and the k-th largest score in a window is the rule's statistic."""

from __future__ import annotations

import numpy as np
import pytest

from factory_anomaly.alarms.lifecycle import AssetAlarm
from factory_anomaly.alarms.rule import EpisodeRule, KOfN, episodes, kth_largest_in_window, window_counts


def test_window_counts_match_the_running_window() -> None:
    over = np.random.default_rng(0).random(500) < 0.2
    window = KOfN(7)
    assert [window.push(bool(o)) for o in over] == window_counts(over, 7).tolist()


def test_the_rule_fires_where_the_kth_largest_score_in_the_window_exceeds_the_level() -> None:
    scores = np.random.default_rng(1).exponential(size=400)
    k, n, level = 3, 10, 2.0
    fires = window_counts(scores > level, n) >= k
    np.testing.assert_array_equal(kth_largest_in_window(scores, k, n) > level, fires[n - 1 :])


def test_series_replay_and_reading_by_reading_agree() -> None:
    rng = np.random.default_rng(2)
    scores = rng.exponential(size=3000)
    scores[500:540] += 4.0  # a fault
    scores[1500:1503] += 6.0  # a short burst
    rule = EpisodeRule(k=3, n=10, level=3.0, close_after=20)
    alarm = AssetAlarm("press-7", rule)
    opened, closed = [], []
    for t, s in enumerate(scores):
        seen = alarm.observe(float(t), float(s))
        if seen.opened:
            opened.append(t)
        if seen.closed:
            closed.append(t + 1)
    replay = episodes(scores, rule)
    assert [a for a, _ in replay] == opened
    assert [b for _, b in replay if b < scores.size] == closed
    assert any(a <= 540 and b > 500 for a, b in replay)  # the fault is one of them


def test_a_trigger_opens_on_one_reading_in_the_replay_as_reading_by_reading() -> None:
    rng = np.random.default_rng(3)
    scores = rng.exponential(size=2000) * 0.1
    trigger = np.zeros(2000, dtype=bool)
    trigger[[300, 301, 1200]] = True
    rule = EpisodeRule(k=3, n=10, level=3.0, close_after=20)
    assert episodes(scores, rule) == []
    replay = episodes(scores, rule, trigger=trigger)
    assert replay == [(300, 322), (1200, 1221)]  # the second trigger reading keeps the first open
    alarm = AssetAlarm("press-7", rule)
    moved = [(0, "s0", 2.0)]
    opened = [t for t, s in enumerate(scores)
              if alarm.observe(float(t), float(s), velocity=moved if trigger[t] else ()).opened]  # fmt: skip
    assert opened == [300, 1200]


@pytest.mark.parametrize(
    ("k", "n", "level", "close_after", "message"),
    [(0, 5, 1.0, 5, "1 <= k <= n"), (6, 5, 1.0, 5, "1 <= k <= n"), (2, 5, float("nan"), 5, "finite"),
     (2, 5, 1.0, 4, "close_after must be >= n")],
)  # fmt: skip
def test_a_rule_that_cannot_work_is_refused(
    k: int, n: int, level: float, close_after: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        EpisodeRule(k, n, level, close_after)


def test_a_rule_comes_from_a_manifest_section_or_its_json() -> None:
    from factory_anomaly.artifact import AlarmSpec

    spec = AlarmSpec(k=3, n=10, level=2.5, close_after=20, reading_period_s=1.0, target_episodes_per_day=1.0,
                     method="gumbel_block_maxima")  # fmt: skip
    assert EpisodeRule.of(spec) == EpisodeRule.of(spec.to_dict()) == EpisodeRule(3, 10, 2.5, 20)
