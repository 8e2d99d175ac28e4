"""Every asset's alarm in this process: the per-asset lifecycles (`factory_anomaly.alarms`), their
episodes, and the operators' actions on them.

Why in the process: each reading moves its asset's state, so the state must sit where the reading is
scored; a proxy hashing on X-Asset sends an asset's readings to one process (deploy/). Bounded: an asset
idle for `ttl_s` is forgotten (its closed episodes stay in the history until they age out of it), and
beyond `max_assets` the longest-idle one goes first. One lock guards it: an update is a few dictionary
operations, far shorter than the scoring it follows. With a journal (`serving.journal`), every episode
event is written through, and `restore` brings them back after a restart.

Each asset also keeps its own calibration-drift detector (`serving.drift`, the rule of the serving model's
one): "this machine no longer looks like its calibration", which the fleet's flag rate can hide when one
machine of many has changed. Its buckets are a 24th of the window (an hour by default), so an asset holds
25 small counters whatever its traffic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from factory_anomaly.alarms.lifecycle import AssetAlarm, Episode, Observed
from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.alarms.stuck import StuckLimits, StuckTracker
from factory_anomaly.app.errors import ErrorCode, InvalidInput, NotFound
from factory_anomaly.app.serving.drift import DriftDetector, DriftSettings
from factory_anomaly.app.serving.journal import AlarmJournal, JournalError

log = logging.getLogger("app.assets")

SHARES_PER_READING = 10  # sensors of a reading an episode's ranking accumulates
MAX_SHELVE_S = 366 * 86_400.0
ASSET_DRIFT_BUCKETS = 24  # buckets in an asset's calibration-drift window


@dataclass(frozen=True)
class AssetReadings:
    """One request's readings of one asset, scored: timestamps (None: arrival), scores, sensor errors."""

    asset: str
    ts: Sequence[float | None]
    ids: Sequence[str | None]
    scores: np.ndarray  # float32 [N]
    sensor_error: np.ndarray | None  # float32 [N, n_sensors]
    sensor_names: Sequence[str]
    x: np.ndarray | None = None  # float32 [N, n_sensors], the readings (the stuck channel needs them)
    flags: np.ndarray | None = None  # bool [N], above the model's threshold (the asset's drift counts them)


class AssetBook:
    def __init__(
        self,
        ttl_s: float,
        max_assets: int,
        history: int = 10_000,
        journal: AlarmJournal | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_s, self.max_assets = ttl_s, max_assets
        self.clock = clock  # wall time in seconds, for calls that pass no `now`
        self._assets: OrderedDict[str, AssetAlarm] = OrderedDict()  # least recently active first
        self._active: dict[str, float] = {}  # asset -> wall time of its last reading
        self._closed: deque[Episode] = deque(maxlen=history)
        self._stuck: dict[str, StuckTracker] = {}
        self._drift: dict[str, tuple[DriftDetector, DriftDetector]] = {}  # asset -> (model's, asset's)
        self._lock = threading.Lock()
        self.journal = journal
        self.journal_error: str | None = None  # the last failed write; /readyz reports it

    def restore(self, now: float | None = None) -> int:
        """Load the journal's open episodes, running shelves and recent closed episodes (at start-up,
        before any reading). The assets' evidence windows start empty. Returns the open episodes."""
        if self.journal is None:
            return 0
        now = self.clock() if now is None else now
        with self._lock:
            self._closed.extend(self.journal.closed_episodes(self._closed.maxlen or 0))
            opened = self.journal.open_episodes()
            for episode in opened:
                self._restored(episode.asset, now).episode = episode
            for asset, until, note, by in self.journal.shelves(now):
                alarm = self._restored(asset, now)
                alarm.shelved_until, alarm.shelve_note, alarm.shelved_by = until, note, by
        return len(opened)

    def _restored(self, asset: str, now: float) -> AssetAlarm:
        alarm = self._assets.get(asset)
        if alarm is None:
            alarm = self._assets[asset] = AssetAlarm(asset, None)
            self._active[asset] = now
        return alarm

    def check_journal(self) -> str | None:
        """None while the journal (if any) can be written; else why not (readiness)."""
        if self.journal is None:
            return self.journal_error
        with self._lock:
            self._write(self.journal.check_writable)
            return self.journal_error

    def close(self) -> None:
        if self.journal is not None:
            with self._lock:
                self.journal.close()

    def _save(self, episode: Episode) -> None:
        """Write an episode's row (as it stands) to the journal, if there is one."""
        if self.journal is not None:
            self._write(self.journal.save_episode, episode)

    def _write(self, save: Callable[..., None], *args: Any) -> None:
        """One journal write; a failure is recorded (readiness turns 503) and logged, never raised into
        the scoring of a reading: the reading is answered, the alarm state is kept in memory."""
        if self.journal is None:
            return
        try:
            save(*args)
        except JournalError as exc:
            if self.journal_error is None:
                log.error("alarm journal write failed", extra={"error": str(exc)})
            self.journal_error = str(exc)
        else:
            self.journal_error = None

    # --- readings -------------------------------------------------------------------------------------

    def observe(
        self,
        readings: AssetReadings,
        rule: EpisodeRule,
        now: float | None = None,
        stuck: StuckLimits | None = None,
        calibration: DriftDetector | None = None,
    ) -> list[Observed]:
        """Count a request's readings of one asset in order; one `Observed` per reading. `stuck`: the
        version's stuck channel, applied to `readings.x`; `calibration`: the version's drift detector,
        whose promise and rule the asset's own detector takes (afresh when a reload changes it)."""
        now = self.clock() if now is None else now
        shares = _shares(readings, rule.level)
        with self._lock:
            alarm = self._alarm(readings.asset, rule, now)
            tracker = self._tracker(readings.asset, stuck)
            drift = self._asset_drift(readings.asset, calibration)
            out = []
            for i, score in enumerate(readings.scores.tolist()):
                ts, ident = readings.ts[i], readings.ids[i]
                ts = now if ts is None else ts
                frozen: list[tuple[int, str, int]] = []
                if tracker is not None and readings.x is not None and alarm.will_count(ts, ident):
                    frozen = [(j, readings.sensor_names[j], run) for j, run in tracker.push(readings.x[i])]
                seen = alarm.observe(ts, score, shares.get(i, ()), ident, now, frozen)
                if seen.opened is not None:
                    self._save(seen.opened)
                if seen.closed is not None:
                    self._closed.append(seen.closed)
                    self._save(seen.closed)
                out.append(seen)
            if drift is not None and readings.flags is not None:
                self._count_flags(drift, readings.flags, out, readings.ts, now)
            self._evict(now)
        return out

    @staticmethod
    def _count_flags(
        drift: DriftDetector, flags: np.ndarray, seen: list[Observed], ts: Sequence[float | None], now: float
    ) -> None:
        """The request's counted readings (neither late nor repeated) and their flags, at the time of the
        last of them."""
        counted = [i for i, s in enumerate(seen) if not (s.late or s.repeated)]
        if counted:
            at = ts[counted[-1]]
            drift.observe(int(flags[counted].sum()), len(counted), now if at is None else at)

    def _asset_drift(self, asset: str, calibration: DriftDetector | None) -> DriftDetector | None:
        if calibration is None:
            self._drift.pop(asset, None)
            return None
        held = self._drift.get(asset)
        if held is None or held[0] is not calibration:
            window = calibration.settings.window_s
            settings = DriftSettings(window_s=window, bucket_s=window / ASSET_DRIFT_BUCKETS,
                                     alpha=calibration.settings.alpha,
                                     min_ratio=calibration.settings.min_ratio)  # fmt: skip
            held = self._drift[asset] = (calibration, DriftDetector(calibration.target_fpr, settings))
        return held[1]

    def _tracker(self, asset: str, stuck: StuckLimits | None) -> StuckTracker | None:
        """The asset's repeat runs under the version's limits (afresh when a reload changes them)."""
        if stuck is None:
            self._stuck.pop(asset, None)
            return None
        tracker = self._stuck.get(asset)
        if tracker is None or tracker.spec is not stuck:
            tracker = self._stuck[asset] = StuckTracker(stuck)
        return tracker

    def _alarm(self, asset: str, rule: EpisodeRule, now: float) -> AssetAlarm:
        alarm = self._assets.get(asset)
        if alarm is None:
            alarm = self._assets[asset] = AssetAlarm(asset, rule)
        elif alarm.rule != rule:  # a reload brought a new rule: the evidence starts afresh under it
            alarm.set_rule(rule)
        self._assets.move_to_end(asset)
        self._active[asset] = now
        return alarm

    def _evict(self, now: float) -> None:
        while self._assets:
            oldest = next(iter(self._assets))
            if len(self._assets) <= self.max_assets and now - self._active[oldest] < self.ttl_s:
                break
            alarm = self._assets.pop(oldest)
            del self._active[oldest]
            self._stuck.pop(oldest, None)
            self._drift.pop(oldest, None)
            if alarm.episode is not None:  # forgotten with its asset: closed so it is not lost
                closed = alarm.close(now, "evicted")
                self._closed.append(closed)
                self._save(closed)

    # --- what operators see ---------------------------------------------------------------------------

    def assets(self, now: float | None = None) -> list[dict[str, Any]]:
        now = self.clock() if now is None else now
        with self._lock:
            self._evict(now)
            return [self._asset_view(alarm, now) for alarm in reversed(self._assets.values())]

    def asset(self, asset: str, now: float | None = None) -> dict[str, Any]:
        now = self.clock() if now is None else now
        with self._lock:
            return self._asset_view(self._find_asset(asset), now)

    def _asset_view(self, alarm: AssetAlarm, now: float) -> dict[str, Any]:
        return {
            "asset": alarm.asset,
            "state": alarm.state(now),
            "alarm_id": alarm.episode.id if alarm.episode else None,
            "lead_sensor": alarm.episode.lead_sensor if alarm.episode else None,
            "readings": alarm.readings,
            "last_reading_ts": alarm.latest_ts,
            "shelved_until": alarm.shelved_until,
            "shelve_note": alarm.shelve_note,
            "calibration_drift": self._drift_view(alarm.asset, now),
        }

    def _drift_view(self, asset: str, now: float) -> dict[str, Any] | None:
        """The asset's calibration-drift status (None before it has sent a reading under a model)."""
        held = self._drift.get(asset)
        if held is None:
            return None
        status = held[1].status(now)
        return {
            "state": status.state,
            "ratio": status.ratio,
            "sustained_ratio": status.sustained_ratio,
            "readings": status.readings,
            "flags": status.flags,
            "expected_flags": status.expected_flags,
            "since": status.since,
            "as_of": status.as_of,
            "message": status.message,
        }

    def alarms(
        self, state: str = "open", asset: str | None = None, since: float | None = None
    ) -> list[dict[str, Any]]:
        """Episodes, newest first: "open" (open, acknowledged or closing), "closed", or "all"."""
        with self._lock:
            found: list[Episode] = []
            if state in ("open", "all"):
                found += [a.episode for a in self._assets.values() if a.episode is not None]
            if state in ("closed", "all"):
                found += list(self._closed)
        chosen = [
            e for e in found if (asset is None or e.asset == asset) and (since is None or e.opened >= since)
        ]
        return [e.as_dict() for e in sorted(chosen, key=lambda e: e.opened, reverse=True)]

    def alarm(self, alarm_id: str) -> dict[str, Any]:
        with self._lock:
            return self._find_episode(alarm_id).as_dict()

    # --- operators' actions ---------------------------------------------------------------------------

    def acknowledge(self, alarm_id: str, note: str, by: str, now: float | None = None) -> dict[str, Any]:
        """Record an acknowledgement of an episode, open or closed (acknowledging a cleared alarm is part
        of the lifecycle too)."""
        now = self.clock() if now is None else now
        with self._lock:
            episode = self._find_episode(alarm_id)
            ack = episode.acknowledge(now, by, note)
            if self.journal is not None:
                self._write(self.journal.save_acknowledgement, episode, ack)
            return episode.as_dict()

    def shelve(
        self, asset: str, duration_s: float, note: str, by: str, now: float | None = None
    ) -> dict[str, Any]:
        """Shelve a known asset for `duration_s`: its open episode closes, none opens until then."""
        now = self.clock() if now is None else now
        if not 0 < duration_s <= MAX_SHELVE_S:
            raise InvalidInput(
                f"duration_s must be > 0 and at most {MAX_SHELVE_S:.0f} (a year), got {duration_s}",
                code=ErrorCode.INVALID_SHELVE,
            )
        with self._lock:
            alarm = self._find_asset(asset)
            closed = alarm.shelve(now + duration_s, note, now)
            alarm.shelved_by = by
            if closed is not None:
                self._closed.append(closed)
                self._save(closed)
            if self.journal is not None:
                self._write(self.journal.save_shelve, asset, now + duration_s, note, by, now)
            return self._asset_view(alarm, now)

    def _find_asset(self, asset: str) -> AssetAlarm:
        alarm = self._assets.get(asset)
        if alarm is None:
            raise NotFound(f"no asset {asset!r} has sent readings here (or it was idle too long)",
                           code=ErrorCode.ASSET_NOT_FOUND)  # fmt: skip
        return alarm

    def _find_episode(self, alarm_id: str) -> Episode:
        for alarm in self._assets.values():
            if alarm.episode is not None and alarm.episode.id == alarm_id:
                return alarm.episode
        for episode in self._closed:
            if episode.id == alarm_id:
                return episode
        raise NotFound(f"no alarm episode {alarm_id!r}", code=ErrorCode.ALARM_NOT_FOUND)


def _shares(readings: AssetReadings, level: float) -> dict[int, list[tuple[int, str, float]]]:
    """For each reading above the level, its top sensors as (index, name, share of the reading's error)."""
    errors = readings.sensor_error
    if errors is None:
        return {}
    out: dict[int, list[tuple[int, str, float]]] = {}
    scores = readings.scores.astype(np.float64)
    for row in np.flatnonzero(~(scores <= level)).tolist():
        e = np.nan_to_num(errors[row].astype(np.float64), nan=0.0, posinf=np.finfo(np.float64).max)
        total = float(e.sum())
        top = np.argsort(-e, kind="stable")[:SHARES_PER_READING]
        out[row] = [
            (int(j), readings.sensor_names[j], float(e[j] / total) if total > 0 else 0.0) for j in top
        ]
    return out
