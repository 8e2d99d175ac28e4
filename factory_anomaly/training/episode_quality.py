"""Alarm episodes judged on a labelled recording, one asset in time order: what `make quality` and the
model card report per fault kind (issue 15 §3).

  caught     a labelled fault episode during which an alarm episode opens (one already open when the
             fault starts does not count, so a fault-dense test run or an alarm that never closes cannot
             inflate it)
  delay      readings from the fault's first reading to the one that opened the alarm
  false      an alarm episode that overlaps no labelled fault, per asset-day at the reading period
  alarm time the share of normal readings during which an alarm is open (an episode that never closes
             has no false episodes and an alarm time near 1)

The version's rule (`manifest.alarms`) is replayed by `factory_anomaly.alarms.rule.episodes`, with the
readings its evidence channels (stuck sensors, jitter) count as over the level and those its velocity
channel opens an episode at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from factory_anomaly.alarms.jitter import JitterSpec, jitter_over
from factory_anomaly.alarms.rule import EpisodeRule, episodes
from factory_anomaly.alarms.stuck import stuck_over
from factory_anomaly.alarms.velocity import VelocitySpec, velocity_over
from factory_anomaly.training.metrics import poisson_interval

DAY_S = 86_400.0


@dataclass(frozen=True)
class Channels:
    """A series's readings by what the version's evidence channels make of them: bool [N] each, None for
    a channel the version lacks."""

    over: np.ndarray | None  # count as over the level (stuck sensors, jitter)
    opens: np.ndarray | None  # open an episode on their own (an abrupt change of state)


def channel_evidence(manifest: dict[str, Any], x: np.ndarray) -> Channels | None:
    """What the version's evidence channels make of a series's readings (None: the version has none)."""
    alarms = manifest.get("alarms") or {}
    found: list[np.ndarray] = []
    low, high = np.asarray(manifest["sensor_low"]), np.asarray(manifest["sensor_high"])
    if alarms.get("stuck_limits") is not None:
        found.append(stuck_over(x, low, high, np.asarray(alarms["stuck_limits"])))
    if alarms.get("jitter") is not None:
        found.append(jitter_over(x, JitterSpec.of(alarms["jitter"], low)))
    velocity = alarms.get("velocity")
    opens = None if velocity is None else velocity_over(x, VelocitySpec.of(velocity))
    if not found and opens is None:
        return None
    return Channels(np.logical_or.reduce(found) if found else None, opens)


def fault_episodes(labels: np.ndarray, kinds: np.ndarray | None) -> list[tuple[int, int, str]]:
    """Contiguous runs of labelled rows: (start, stop, kind); a change of kind starts a new one."""
    labels = np.asarray(labels).astype(bool)
    kinds = np.where(labels, "fault", "none") if kinds is None else np.asarray(kinds).astype(str)
    found: list[tuple[int, int, str]] = []
    start = None
    for t in range(labels.size + 1):
        inside = t < labels.size and labels[t]
        if start is not None and (not inside or kinds[t] != kinds[start]):
            found.append((start, t, str(kinds[start])))
            start = None
        if inside and start is None:
            start = t
    return found


def judge_episodes(
    scores: np.ndarray,
    labels: np.ndarray,
    kinds: np.ndarray | None,
    rule: EpisodeRule,
    period_s: float,
    fresh: list[np.ndarray] | None = None,
    evidence: Channels | None = None,
    fresh_evidence: list[Channels | None] | None = None,
) -> dict[str, Any]:
    """Episode recall and delay per fault kind on a labelled run; false episodes per asset-day on it (those
    touching no fault) and, when given, on fresh normal runs (each an asset of its own). `evidence` (and
    one per fresh run): what the version's other channels make of the readings (`channel_evidence`)."""
    alarms = _replay(scores, rule, evidence)
    open_at = np.zeros(scores.size, dtype=bool)
    for a, b in alarms:
        open_at[a:b] = True
    openings = np.array([a for a, _ in alarms], dtype=np.int64)
    faults = fault_episodes(labels, kinds)
    by_kind: dict[str, dict[str, list[float]]] = {}
    for start, stop, kind in faults:
        hit = openings[(openings >= start) & (openings < stop)]
        entry = by_kind.setdefault(kind, {"caught": [], "delay": []})
        entry["caught"].append(float(hit.size > 0))
        if hit.size:
            entry["delay"].append(float(hit[0] - start))
    labelled = np.asarray(labels).astype(bool)
    false_on_test = sum(1 for a, b in alarms if not labelled[a:b].any())
    report: dict[str, Any] = {
        "rule": {
            "k": rule.k,
            "n": rule.n,
            "level": rule.level,
            "close_after": rule.close_after,
            "reading_period_s": period_s,
        },  # fmt: skip
        "alarm_episodes": len(alarms),
        "fault_episodes": len(faults),
        "recall": float(np.mean([c for e in by_kind.values() for c in e["caught"]])) if faults else None,
        "by_kind": {kind: _kind_row(e) for kind, e in sorted(by_kind.items())},
        "false_on_test": _per_day(false_on_test, scores.size, period_s),
        "alarm_time_on_normal": float(open_at[~labelled].mean()) if (~labelled).any() else None,
    }
    if fresh:
        extra = fresh_evidence or [None] * len(fresh)
        found = [_replay(run, rule, more) for run, more in zip(fresh, extra, strict=True)]
        rows = sum(run.size for run in fresh)
        report["false_on_fresh"] = _per_day(sum(len(f) for f in found), rows, period_s)
        report["alarm_time_on_fresh"] = sum(b - a for f in found for a, b in f) / rows
    return report


def _replay(scores: np.ndarray, rule: EpisodeRule, channels: Channels | None) -> list[tuple[int, int]]:
    if channels is None:
        return episodes(scores, rule)
    return episodes(scores, rule, channels.over, channels.opens)


def _kind_row(entry: dict[str, list[float]]) -> dict[str, Any]:
    delays = entry["delay"]
    return {
        "episodes": len(entry["caught"]),
        "recall": float(np.mean(entry["caught"])),
        "delay_median": float(np.median(delays)) if delays else None,
        "delay_p90": float(np.percentile(delays, 90)) if delays else None,
    }


def _per_day(count: int, rows: int, period_s: float) -> dict[str, Any]:
    days = rows * period_s / DAY_S
    low, high = poisson_interval(count)
    return {
        "episodes": count,
        "days": days,
        "per_day": count / days,
        "per_day_ci95": [low / days, high / days],
    }
