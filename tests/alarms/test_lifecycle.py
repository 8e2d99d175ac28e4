"""One asset's alarm through its lifecycle: pending, open, acknowledged, closing, closed; late and
repeated readings; shelving."""

from __future__ import annotations

import numpy as np
import pytest

from factory_anomaly.alarms.lifecycle import TOP_SENSORS, AssetAlarm, Episode
from factory_anomaly.alarms.rule import EpisodeRule

RULE = EpisodeRule(k=2, n=3, level=1.0, close_after=5)
SHARES = [(4, "st1_pres_04", 0.7), (9, "st1_temp_09", 0.2)]


def _feed(alarm: AssetAlarm, scores: list[float], start: float = 0.0) -> list[str]:
    return [alarm.observe(start + i, s, SHARES).alarm["state"] for i, s in enumerate(scores)]


def test_an_episode_opens_on_k_of_n_and_closes_after_the_quiet_readings() -> None:
    alarm = AssetAlarm("press-7", RULE)
    states = _feed(alarm, [0.1, 2.0, 0.1, 3.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert states == [
        "none",
        "pending",
        "pending",
        "open",
        "open",
        "open",
        "closing",
        "closing",
        "none",
        "none",
    ]


def test_the_alarm_names_the_episode_its_sensors_and_since_when() -> None:
    alarm = AssetAlarm("press-7", RULE)
    _feed(alarm, [0.1, 2.0, 0.1])
    seen = alarm.observe(3.0, 5.0, SHARES)
    assert seen.opened is not None
    view = seen.alarm
    assert view["id"] == seen.opened.id and view["since"] == 1.0 and view["peak_score"] == 5.0
    assert [s["name"] for s in view["top_sensors"]] == ["st1_pres_04", "st1_temp_09"]
    assert view["top_sensors"][0]["share"] == pytest.approx(0.7 / 0.9, abs=1e-4)


def test_acknowledged_until_it_closes() -> None:
    alarm = AssetAlarm("press-7", RULE)
    _feed(alarm, [2.0, 2.0])
    alarm.acknowledge("checking the pump", "operator", now=2.5)
    assert alarm.state(3.0) == "acknowledged"
    closed = [alarm.observe(3.0 + i, 0.1).closed for i in range(5)]
    assert closed[-1] is not None and closed[-1].acknowledgements[0]["note"] == "checking the pump"
    assert alarm.state(9.0) == "none"
    with pytest.raises(LookupError):
        alarm.acknowledge("too late", "operator", now=9.0)


def test_a_late_reading_is_answered_but_moves_nothing() -> None:
    alarm = AssetAlarm("press-7", RULE)
    _feed(alarm, [0.1, 0.1], start=100.0)
    seen = alarm.observe(50.0, 9.0)
    assert seen.late and seen.alarm["state"] == "none" and alarm.window.count == 0
    assert alarm.observe(101.0, 0.1).alarm["state"] == "none"  # an equal timestamp is in order


def test_a_repeated_reading_id_is_answered_again_and_counted_once() -> None:
    alarm = AssetAlarm("press-7", RULE)
    first = alarm.observe(1.0, 2.0, reading_id="r-1")
    again = alarm.observe(2.0, 2.0, reading_id="r-1")
    assert again.repeated and again.alarm == first.alarm
    assert alarm.window.count == 1 and alarm.readings == 1


def test_a_nan_score_counts_as_over_the_level() -> None:
    alarm = AssetAlarm("press-7", RULE)
    _feed(alarm, [float("nan"), float("nan")])
    assert alarm.state(2.0) == "open"


def test_shelving_closes_the_episode_and_holds_alarms_off_until_it_ends() -> None:
    alarm = AssetAlarm("press-7", RULE)
    _feed(alarm, [2.0, 2.0])
    closed = alarm.shelve(until=100.0, note="maintenance", now=2.0)
    assert closed is not None and closed.closed_by == "shelved"
    assert _feed(alarm, [5.0, 5.0, 5.0], start=3.0) == ["shelved"] * 3
    assert alarm.readings == 5  # still scored and counted as readings
    states = [alarm.observe(100.0 + i, 5.0, now=100.0 + i).alarm["state"] for i in range(2)]
    assert states == ["pending", "open"]  # the evidence starts afresh after the shelve
    with pytest.raises(ValueError, match="future"):
        alarm.shelve(until=50.0, note="", now=200.0)


def test_jitter_counts_as_over_the_level_and_the_episode_says_which_channels() -> None:
    alarm = AssetAlarm("press-7", RULE)
    jitter = [(12, "st2_vib_01", 9.5)]
    alarm.observe(0.0, 0.1, (), jitter=jitter)  # a quiet score, but jittering: over the level
    seen = alarm.observe(1.0, 0.1, (), jitter=jitter)
    assert seen.opened is not None and seen.opened.evidence == "reading jitter far above normal: st2_vib_01"
    assert seen.opened.lead_sensor == "st2_vib_01"
    both = AssetAlarm("press-8", RULE)
    both.observe(0.0, 5.0, SHARES)
    opened = both.observe(1.0, 5.0, SHARES, jitter=jitter).opened
    assert opened is not None
    assert opened.evidence == f"reading jitter far above normal: st2_vib_01; {RULE.describe()}"


def test_an_abrupt_change_opens_an_episode_on_its_own_and_names_what_moved() -> None:
    alarm = AssetAlarm("press-7", RULE)
    moved = [(3, "st1_flow_03", 4.2), (8, "st1_pres_08", 4.2), (1, "st1_temp_01", 4.2)]
    seen = alarm.observe(0.0, 0.1, (), velocity=moved)  # one reading, a quiet score: k=2 not met
    assert seen.opened is not None and seen.alarm["state"] == "open"
    assert seen.opened.evidence == ("abrupt change of the process state (4.2× its level), moved most: "
                                    "st1_flow_03, st1_pres_08, st1_temp_01")  # fmt: skip
    assert seen.opened.lead_sensor == "st1_flow_03"
    states = [alarm.observe(1.0 + i, 0.1).alarm["state"] for i in range(RULE.close_after)]
    assert states[-1] == "none" and states[RULE.n - 1] == "closing"  # it closes as any episode does


def test_a_frozen_sensor_is_named_flat() -> None:
    alarm = AssetAlarm("press-7", RULE)
    stuck = [(3, "st1_flow_03", 400)]
    for ts in range(4):
        alarm.observe(float(ts), 0.1, (), stuck=stuck)  # a quiet score, but frozen: over the level
    assert alarm.episode is not None
    # opened by the second frozen reading (k = 2), named by it and the two after
    assert alarm.episode.top_sensors()[0] == {
        "index": 3, "name": "st1_flow_03", "share": 1.0, "readings": 3, "since": 1.0, "direction": "flat"
    }  # fmt: skip
    assert "reading unchanged: st1_flow_03 for 400 readings" in alarm.episode.evidence


def test_the_top_sensors_follow_every_new_reading_over_the_level() -> None:
    from factory_anomaly.alarms.lifecycle import Episode

    episode = Episode(id="e", asset="a", opened=0.0, since=0.0, evidence="x")
    episode.note_sensors([(1, "s1", 0.6), (2, "s2", 0.4)])
    first = episode.top_sensors()
    assert [s["name"] for s in first] == ["s1", "s2"]
    first[0]["name"] = "changed by a caller"  # an answer is the caller's own copy
    episode.note_sensors([(2, "s2", 0.5), (3, "s3", 0.05)])  # s2 now leads
    assert [(s["name"], s["share"]) for s in episode.top_sensors()] == [
        ("s2", round(0.9 / 1.55, 4)), ("s1", round(0.6 / 1.55, 4)), ("s3", round(0.05 / 1.55, 4))
    ]  # fmt: skip
    assert [s["index"] for s in episode.top_sensors(2)] == [entry[0] for entry in episode.sensor_sums()[:2]]


def test_an_episode_says_which_sensors_how_consistently_since_when_and_what_they_did() -> None:
    alarm = AssetAlarm("press-7", RULE)
    lead, other = [(4, "st1_pres_04", 0.7)], [(9, "st1_temp_09", 0.6)]
    alarm.observe(10.0, 2.0, lead)
    alarm.observe(11.0, 2.0, lead, jitter=[(4, "st1_pres_04", 9.0)])  # opens; two channels, one reading
    alarm.observe(12.0, 0.1, other)  # quiet: names nothing
    alarm.observe(13.0, 2.0, other)
    alarm.observe(14.0, 2.0, lead)
    episode = alarm.episode
    assert episode is not None
    top = {s["name"]: (s["readings"], s["since"], s["direction"]) for s in episode.top_sensors()}
    # counted from the opening reading; jitter saw the lead sensor noisy, only the error named the other
    assert top == {"st1_pres_04": (2, 11.0, "noisy"), "st1_temp_09": (1, 13.0, None)}
    again = type(episode)(id="e", asset="a", opened=0.0, since=0.0, evidence="x")
    again.restore_sensors(episode.sensor_sums())  # through the journal
    assert again.top_sensors() == episode.top_sensors()
    again.restore_sensors([[4, "st1_pres_04", 1.0]])  # journalled before the counts: none, no time
    assert again.top_sensors()[0] | {"share": 1.0} == {"index": 4, "name": "st1_pres_04", "share": 1.0,
                                                       "readings": 0, "since": None,
                                                       "direction": None}  # fmt: skip


def _full_ranking(episode: Episode, k: int) -> list[tuple[int, float]]:
    shares = episode._shares
    return sorted(shares.items(), key=lambda item: (-item[1], item[0]))[:k]


@pytest.mark.parametrize("seed", range(5))
def test_the_kept_top_sensors_equal_a_full_ranking_after_every_reading(seed: int) -> None:
    """The top is re-ranked from the last top and the sensors named since (issue 17): the same answer as
    ranking every sensor, with ties (shares on a coarse grid), sensors named again, a restore from the
    journal and a negative share (which forces a full ranking)."""
    rng = np.random.default_rng(seed)
    episode = Episode(id="e", asset="a", opened=0.0, since=0.0, evidence="test")
    for reading in range(300):
        named = rng.choice(40, size=int(rng.integers(0, 8)), replace=False)
        shares = [(int(i), f"s{i}", float(rng.integers(0, 4)) / 4) for i in named]
        if reading == 150:
            shares.append((3, "s3", -5.0))
        episode.note_sensors(shares, float(reading))
        if reading == 200:
            episode.restore_sensors(episode.sensor_sums())
        top = episode.top_sensors()
        total = sum(episode._shares.values())
        expected = [(i, round(v / total, 4)) for i, v in _full_ranking(episode, TOP_SENSORS)]
        assert [(t["index"], t["share"]) for t in top] == expected
