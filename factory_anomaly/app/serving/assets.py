"""Every asset's alarm in this process: the per-asset lifecycles (`factory_anomaly.alarms`), their
episodes, and the operators' actions on them.

Why in the process: each reading moves its asset's state, so the state must sit where the reading is
scored; a proxy hashing on X-Asset sends an asset's readings to one process (deploy/nginx/). Bounded: an
asset idle for `ttl_s` is forgotten (its closed episodes stay in the history until they age out of it),
and beyond `max_assets` the longest-idle one goes first. One lock guards it: an update is a few dictionary
operations, far shorter than the scoring it follows. With a journal (`serving.journal`), every episode
event is written through, and `restore` brings them back after a restart.

More than one process (docs/serving.md, "More than one process"): processes sharing a journal each hold
the assets whose readings reach them. A reading of an asset this process does not hold takes it over from
the journal (its open episode continues here, never a duplicate; a previous holder forgets it); every
`sync` (the app calls it each `JOURNAL_SYNC_S`) renews this process's lease, applies what other processes
changed (an acknowledgement or a shelve made through them, an asset taken over), adopts the alarms of a
process that stopped, and writes the state of the assets held here for the others' listings. What a
process does not hold (an episode by id, listings, an asset by name) is read from the journal, so
operators may reach any process. `assets()` stays this process's own (the metrics read it: an alarm is
counted by its holder only).

Each asset also keeps its own calibration-drift detector (`serving.drift`, the rule of the serving model's
one): "this machine no longer looks like its calibration", which the fleet's flag rate can hide when one
machine of many has changed. Its buckets are a 24th of the window (an hour by default), so an asset holds
25 small counters whatever its traffic.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from factory_anomaly.alarms.jitter import JitterSpec, JitterTracker
from factory_anomaly.alarms.lifecycle import AssetAlarm, Episode, Observed
from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.alarms.stuck import StuckLimits, StuckTracker
from factory_anomaly.alarms.velocity import VelocitySpec, VelocityTracker
from factory_anomaly.app.errors import ErrorCode, InvalidInput, NotFound
from factory_anomaly.app.serving.drift import DriftDetector, DriftSettings
from factory_anomaly.app.serving.journal import AlarmJournal, Held, JournalError, Shelve, Taken
from factory_anomaly.explain.ranking import order_sensors

log = logging.getLogger("app.assets")

SHARES_PER_READING = 10  # sensors of a reading an episode's ranking accumulates
MAX_SHELVE_S = 366 * 86_400.0
ASSET_DRIFT_BUCKETS = 24  # buckets in an asset's calibration-drift window
RETENTION_EVERY_S = 3600.0  # how often a sync cuts the journal's closed episodes to the retention
WRITE_CHUNK = 256  # held assets written per hold of the lock at a sync (docs/serving.md, "Figures")

T = TypeVar("T")
Spec = TypeVar("Spec")


class _Tracks(Protocol):
    spec: Any  # the version's channel the tracker follows


Tracker = TypeVar("Tracker", bound=_Tracks)


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
        lease_s: float = 10.0,
        retention_s: float | None = None,
    ) -> None:
        """`lease_s`: how long this process's hold on its assets outlives its last `sync` (a process that
        stops syncing for longer, crashed or hung, has its alarms adopted by another)."""
        self.ttl_s, self.max_assets, self.lease_s = ttl_s, max_assets, lease_s
        self.retention_s = retention_s  # closed episodes older than this leave the journal (None: kept)
        self._retained_at = float("-inf")  # when the journal was last cut to the retention
        self.clock = clock  # wall time in seconds, for calls that pass no `now`
        self.on_close: Callable[[Episode], None] | None = None  # told of every episode closed here
        self._assets: OrderedDict[str, AssetAlarm] = OrderedDict()  # least recently active first
        self._active: dict[str, float] = {}  # asset -> wall time of its last reading
        self._closed: deque[Episode] = deque(maxlen=history)
        self._stuck: dict[str, StuckTracker] = {}
        self._jitter: dict[str, JitterTracker] = {}
        self._velocity: dict[str, VelocityTracker] = {}
        self._drift: dict[str, tuple[DriftDetector, DriftDetector]] = {}  # asset -> (model's, asset's)
        self._lock = threading.Lock()
        self.journal = journal
        self.journal_error: str | None = None  # the last failed write; /readyz reports it
        self.token = uuid.uuid4().hex  # this process in the journal: the holder of its assets
        self._seen_seq = 0  # the journal's change number this book has applied up to
        self._dirty: set[str] = set()  # held assets changed since the last sync wrote them
        self._stopped = False  # `close` ran: a sync still under way writes nothing more
        # asset -> (time, ids) of its latest counted readings, which a hand-over carries so that a retry
        # of them is not counted again by the next holder; `_inherited` holds those of a previous holder
        self._latest: dict[str, tuple[float, set[str]]] = {}
        self._inherited: dict[str, tuple[float, set[str]]] = {}

    def restore(self, now: float | None = None) -> int:
        """At start-up, before any reading: the journal's recent closed episodes, and the alarms (open
        episodes, running shelves) of assets no live process holds, which this process adopts. The
        assets' evidence windows start empty. Returns the open episodes adopted."""
        if self.journal is None:
            return 0
        now = self.clock() if now is None else now
        with self._lock:
            try:
                self._closed.extend(self.journal.closed_episodes(self._closed.maxlen or 0))
                self._seen_seq = self.journal.last_seq()
                self.journal.changed()
                with self.journal.transaction():
                    self.journal.heartbeat(self.token, now, self.lease_s)
                    return self._adopt_orphans(now)
            except JournalError as exc:
                self._failed(exc)
                return 0

    def sync(self, now: float | None = None) -> None:
        """One round with the other processes sharing the journal (the app calls it each
        `JOURNAL_SYNC_S`): in one write transaction, renew the lease, apply their changes, adopt the alarms
        of a process gone and forget idle assets; then write the state of the assets that had readings,
        `WRITE_CHUNK` at a time, letting readings in between (a few ms each: docs/serving.md, "Figures")."""
        if self.journal is None:
            return
        now = self.clock() if now is None else now
        with self._lock:
            if self._stopped:
                return
            try:
                with self.journal.transaction():
                    self.journal.heartbeat(self.token, now, self.lease_s)
                    self.journal.changed()
                    self._apply_changes(now)
                    self._adopt_orphans(now)
                    self._evict(now)
                    self.journal.prune(now - self.ttl_s, now)
                    if self.retention_s is not None and now - self._retained_at >= RETENTION_EVERY_S:
                        self.journal.forget_before(now - self.retention_s)
                        self._retained_at = now
            except JournalError as exc:
                self._failed(exc)
                return
            pending, self._dirty = list(self._dirty), set()
        for start in range(0, len(pending), WRITE_CHUNK):
            with self._lock:
                if self._stopped:  # `close` wrote every held asset
                    return
                chunk = pending[start : start + WRITE_CHUNK]
                try:
                    self._write_held(now, chunk)
                except JournalError as exc:
                    self._dirty.update(chunk)  # written at the next sync
                    self._failed(exc)
                    return
        with self._lock:
            self.journal_error = None

    def check_journal(self) -> str | None:
        """None while the journal (if any) can be written; else why not (readiness)."""
        if self.journal is None:
            return self.journal_error
        with self._lock:
            self._write(self.journal.check_writable)
            return self.journal_error

    def close(self) -> None:
        """A clean stop: every held asset's state and open episode's counts are written, and the assets are
        released for another process to adopt."""
        if self.journal is None:
            return
        with self._lock:
            try:
                with self.journal.transaction():
                    self._write_held(self.clock(), list(self._assets))
                    self.journal.release(self.token)
            except JournalError as exc:
                log.error("alarm journal: the assets could not be released", extra={"error": str(exc)})
            self._stopped = True
            self.journal.close()

    def _record_close(self, episode: Episode) -> None:
        """An episode this process closed: kept in the history, written to the journal, and told to
        `on_close` (the metrics count closes by reason, whatever closed it)."""
        self._closed.append(episode)
        self._save(episode)
        if self.on_close is not None:
            self.on_close(episode)

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
            self._failed(exc)
        else:
            self.journal_error = None

    def _read(self, read: Callable[..., T], *args: Any) -> T | None:
        """One journal read; None (and the failure recorded) when it fails: the caller answers from
        memory."""
        if self.journal is None:
            return None
        try:
            return read(*args)
        except JournalError as exc:
            self._failed(exc)
            return None

    def _failed(self, exc: JournalError) -> None:
        if self.journal_error is None:
            log.error("alarm journal failed", extra={"error": str(exc)})
        self.journal_error = str(exc)

    # --- sharing the journal with other processes -------------------------------------------------------

    def _take(self, asset: str, now: float) -> AssetAlarm | None:
        """A reading of an asset this process does not hold: take it over from the journal."""
        if self.journal is None:
            return None
        try:
            taken = self.journal.take(asset, self.token, now)
        except JournalError as exc:
            self._failed(exc)
            return None
        return self._install(taken, now)

    def _adopt_orphans(self, now: float) -> int:
        """Adopt the alarms whose holder is gone (inside the caller's transaction); they go to the front of
        the idle order, oldest first. Returns the open episodes adopted."""
        assert self.journal is not None
        opened = 0
        for taken in reversed(self.journal.adopt_orphans(self.token, now)):
            if taken.asset in self._assets:
                continue
            self._install(taken, taken.active)
            self._assets.move_to_end(taken.asset, last=False)
            opened += taken.episode is not None
        return opened

    def _install(self, taken: Taken, active: float) -> AssetAlarm:
        """An asset taken over: its open episode, its shelve, and what its previous holder carried over
        (`_carry`): the latest reading's time (older readings are late) and ids (a retry of them is a
        repeat), the reading count, and how near the open episode is to closing."""
        alarm = self._assets[taken.asset] = AssetAlarm(taken.asset, None)  # the first reading sets the rule
        carry = taken.carry
        alarm.episode, alarm.readings = taken.episode, int(carry.get("readings", 0))
        alarm.latest_ts = carry.get("latest_ts")
        alarm.quiet = int(carry.get("quiet", 0)) if taken.episode is not None else 0
        if alarm.latest_ts is not None and carry.get("latest_ids"):
            self._inherited[taken.asset] = (float(alarm.latest_ts), set(carry["latest_ids"]))
        if taken.shelve is not None:
            alarm.shelved_until, alarm.shelve_note = taken.shelve.until, taken.shelve.note
            alarm.shelved_by = taken.shelve.by
        self._active[taken.asset] = active
        return alarm

    def _catch_up(self, now: float) -> None:
        """Before counting a reading: apply other processes' changes if any were committed since the last
        look (a check of the database's version, no I/O, when none were)."""
        if self.journal is None:
            return
        try:
            if self.journal.changed():
                self._apply_changes(now)
        except JournalError as exc:
            self._failed(exc)

    def _apply_changes(self, now: float) -> None:
        assert self.journal is not None
        for asset, holder, seq in self.journal.changes(self._seen_seq):
            self._seen_seq = max(self._seen_seq, seq)
            if asset not in self._assets:
                continue
            if holder != self.token:  # taken over by another process: its state is there now
                self._drop(asset)
            else:
                self._merge(asset, now)

    def _merge(self, asset: str, now: float) -> None:
        """Apply what another process recorded of an asset held here: acknowledgements, a shelve (which
        closed the open episode), an episode opened there while this process held a stale copy."""
        assert self.journal is not None
        alarm = self._assets[asset]
        episode, shelve = self.journal.alarm_of(asset, now)
        mine = alarm.episode
        if mine is not None:
            row = episode if episode is not None and episode.id == mine.id else self.journal.episode(mine.id)
            if row is not None:
                _join_acks(mine, row)
                if row.closed is not None:
                    ended = alarm.close(row.closed, row.closed_by or "shelved")
                    self._record_close(ended)
        if alarm.episode is None and episode is not None and (mine is None or episode.id != mine.id):
            alarm.episode = episode
        if shelve is not None and shelve.until > now and shelve.until != alarm.shelved_until:
            closed = alarm.shelve(shelve.until, shelve.note, now)
            alarm.shelved_by = shelve.by
            if closed is not None:
                self._record_close(closed)
        self._dirty.add(asset)

    def _drop(self, asset: str) -> None:
        """Forget an asset another process took over (nothing closes: its alarm goes on there)."""
        del self._assets[asset], self._active[asset]
        self._forget(asset)

    def _write_held(self, now: float, assets: Sequence[str]) -> None:
        """Write held assets' state: their listing entry, what a hand-over carries, their open episode."""
        assert self.journal is not None
        held = [
            Held(asset, self._active[asset], self._carry(asset, alarm), self._asset_view(alarm, now),
                 alarm.episode)
            for asset in assets if (alarm := self._assets.get(asset)) is not None
        ]  # fmt: skip
        if held:
            self.journal.write_held(self.token, held)

    def _carry(self, asset: str, alarm: AssetAlarm) -> dict[str, Any]:
        latest = self._latest.get(asset) or self._inherited.get(asset)
        ids = sorted(latest[1]) if latest is not None and latest[0] == alarm.latest_ts else []
        return {"latest_ts": alarm.latest_ts, "latest_ids": ids, "readings": alarm.readings,
                "quiet": alarm.quiet}  # fmt: skip

    def _forget(self, asset: str) -> None:
        """The per-asset state beside its alarm."""
        for held in (self._stuck, self._jitter, self._velocity, self._drift, self._latest, self._inherited):
            held.pop(asset, None)
        self._dirty.discard(asset)

    def _carried_repeat(self, asset: str, alarm: AssetAlarm, ts: float, ident: str | None) -> bool:
        """Whether a reading is a retry of one the asset's previous holder counted last (same time, same
        id): this process's alarm has never seen its id."""
        inherited = self._inherited.get(asset)
        if inherited is None or ident is None:
            return False
        if alarm.latest_ts != inherited[0]:  # readings have moved on since the hand-over
            del self._inherited[asset]
            return False
        return ts == inherited[0] and ident in inherited[1]

    def _note_counted(self, asset: str, ts: float, ident: str | None) -> None:
        latest = self._latest.get(asset)
        if latest is None or latest[0] != ts:
            latest = self._latest[asset] = (ts, set())
        if ident is not None:
            latest[1].add(ident)

    # --- readings -------------------------------------------------------------------------------------

    def observe(
        self,
        readings: AssetReadings,
        rule: EpisodeRule,
        now: float | None = None,
        stuck: StuckLimits | None = None,
        calibration: DriftDetector | None = None,
        jitter: JitterSpec | None = None,
        velocity: VelocitySpec | None = None,
        training_range: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> list[Observed]:
        """Count a request's readings of one asset in order; one `Observed` per reading. `stuck`, `jitter`
        and `velocity`: the version's evidence channels, applied to `readings.x`; `calibration`: the version's
        drift detector, whose promise and rule the asset's own detector takes (afresh when a reload
        changes it); `training_range`: the version's (sensor_low, sensor_high), which puts sensors out of
        range first among each reading's top sensors."""
        now = self.clock() if now is None else now
        shares = _shares(readings, rule.level, training_range)
        with self._lock:
            self._catch_up(now)
            alarm = self._alarm(readings.asset, rule, now)
            tracker = self._channel(self._stuck, readings.asset, stuck, StuckTracker)
            jitters = self._channel(self._jitter, readings.asset, jitter, JitterTracker)
            changes = self._channel(self._velocity, readings.asset, velocity, VelocityTracker)
            drift = self._asset_drift(readings.asset, calibration)
            out = []
            for i, score in enumerate(readings.scores.tolist()):
                ts, ident = readings.ts[i], readings.ids[i]
                ts = now if ts is None else ts
                if self._carried_repeat(readings.asset, alarm, ts, ident):
                    out.append(Observed(alarm.view(now), repeated=True))
                    continue
                frozen: list[tuple[int, str, int]] = []
                jittery: list[tuple[int, str, float]] = []
                abrupt: list[tuple[int, str, float]] = []
                if readings.x is not None and alarm.will_count(ts, ident):
                    names = readings.sensor_names
                    if tracker is not None:
                        frozen = [(j, names[j], run) for j, run in tracker.push(readings.x[i])]
                    if jitters is not None:
                        jittery = [(j, names[j], e) for j, e in jitters.push(readings.x[i])]
                    if changes is not None:
                        ratio, moved = changes.push(readings.x[i])
                        abrupt = [(j, names[j], ratio) for j in moved]
                seen = alarm.observe(ts, score, shares.get(i, ()), ident, now, frozen, jittery, abrupt)
                if not (seen.late or seen.repeated):
                    self._note_counted(readings.asset, ts, ident)
                if seen.opened is not None:
                    self._save(seen.opened)
                if seen.closed is not None:
                    self._record_close(seen.closed)
                out.append(seen)
            if drift is not None and readings.flags is not None:
                self._count_flags(drift, readings.flags, out, readings.ts, now)
            self._dirty.add(readings.asset)
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

    @staticmethod
    def _channel(
        held: dict[str, Tracker], asset: str, spec: Spec | None, make: Callable[[Spec], Tracker]
    ) -> Tracker | None:
        """An asset's tracker of an evidence channel under the version's `spec` (None: the version has no
        such channel): made afresh when a reload brings another spec."""
        if spec is None:
            held.pop(asset, None)
            return None
        tracker = held.get(asset)
        if tracker is None or tracker.spec is not spec:
            tracker = held[asset] = make(spec)
        return tracker

    def _alarm(self, asset: str, rule: EpisodeRule, now: float) -> AssetAlarm:
        alarm = self._assets.get(asset)
        if alarm is None:
            alarm = self._take(asset, now) or AssetAlarm(asset, rule)
            self._assets[asset] = alarm
        if alarm.rule != rule:  # a reload, or a take-over: the evidence starts afresh under the rule
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
            self._forget(oldest)
            if alarm.episode is not None:  # forgotten with its asset: closed so it is not lost
                closed = alarm.close(now, "evicted")
                self._record_close(closed)
            if self.journal is not None:
                self._write(self.journal.forget, oldest, self.token)

    # --- what operators see ---------------------------------------------------------------------------

    def assets(self, now: float | None = None) -> list[dict[str, Any]]:
        """The assets this process holds, most recently active first (the metrics count these)."""
        now = self.clock() if now is None else now
        with self._lock:
            self._evict(now)
            return [self._asset_view(alarm, now) for alarm in reversed(self._assets.values())]

    def listing(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every asset, whichever process holds it (`GET /v1/assets`), most recently active first: this
        process's own as they stand, the others' as their holders last wrote them (at most a sync ago)."""
        now = self.clock() if now is None else now
        with self._lock:
            self._evict(now)
            found = {alarm.asset: (self._active[alarm.asset], self._asset_view(alarm, now))
                     for alarm in reversed(self._assets.values())}  # fmt: skip
            stored = (
                self._read(self.journal.asset_views, now - self.ttl_s, self.max_assets)
                if self.journal
                else None
            )
        for asset, active, view in stored or []:
            if asset not in found or active > found[asset][0]:
                found[asset] = (active, _as_of(view, now))
        ranked = sorted(found.values(), key=lambda item: -item[0])
        return [view for _, view in ranked[: self.max_assets]]

    def asset(self, asset: str, now: float | None = None) -> dict[str, Any]:
        """One asset's state: from memory where it is held here, else as its holder last wrote it."""
        now = self.clock() if now is None else now
        with self._lock:
            alarm = self._assets.get(asset)
            if alarm is not None:
                return self._asset_view(alarm, now)
            stored = self._read(self.journal.asset_view, asset) if self.journal else None
        if stored is None:
            raise _unknown_asset(asset)
        return _as_of(stored[1], now)

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
        """Episodes, newest first: "open" (open, acknowledged or closing), "closed", or "all". With a
        journal, every process's; the open episodes held here as they stand."""
        with self._lock:
            held = [a.episode for a in self._assets.values() if a.episode is not None]
            stored = None
            if self.journal is not None:
                stored = self._read(self.journal.episodes, state, asset, since, self._closed.maxlen or 0)
            if stored is None:  # memory only (or the journal cannot be read)
                found: list[Episode] = []
                if state in ("open", "all"):
                    found += held
                if state in ("closed", "all"):
                    found += list(self._closed)
            else:
                by_id = {e.id: e for e in stored}
                if state in ("open", "all"):
                    for episode in held:
                        row = by_id.get(episode.id)
                        if row is None or row.closed is None:  # else closed elsewhere: the journal's word
                            if row is not None:
                                _join_acks(episode, row)
                            by_id[episode.id] = episode
                found = list(by_id.values())
            chosen = [e for e in found if _matches(e, asset, since)]
            return [e.as_dict() for e in sorted(chosen, key=lambda e: e.opened, reverse=True)]

    def alarm(self, alarm_id: str) -> dict[str, Any]:
        with self._lock:
            held = self._held_episode(alarm_id)
            row = self._read(self.journal.episode, alarm_id) if self.journal else None
            if held is not None and (row is None or row.closed is None):
                if row is not None:
                    _join_acks(held, row)
                return held.as_dict()
            if row is not None:
                return row.as_dict()
            return self._closed_episode(alarm_id).as_dict()

    # --- operators' actions ---------------------------------------------------------------------------

    def acknowledge(self, alarm_id: str, note: str, by: str, now: float | None = None) -> dict[str, Any]:
        """Record an acknowledgement of an episode, open or closed (acknowledging a cleared alarm is part
        of the lifecycle too). An episode this process does not hold is acknowledged in the journal, and
        its holder picks the acknowledgement up at its next sync."""
        now = self.clock() if now is None else now
        with self._lock:
            episode = self._held_episode(alarm_id)
            if episode is not None:
                ack = episode.acknowledge(now, by, note)
                if self.journal is not None:
                    self._write(self.journal.save_acknowledgement, episode, ack)
                self._dirty.add(episode.asset)
                return episode.as_dict()
            if self.journal is not None:
                ack = {"at": now, "by": by, "note": note}
                found = self._read(self.journal.acknowledge, alarm_id, ack)
                if found is not None:
                    for closed in self._closed:
                        if closed.id == alarm_id:
                            closed.acknowledgements.append(dict(ack))
                    return found.as_dict()
            episode = self._closed_episode(alarm_id)
            ack = episode.acknowledge(now, by, note)
            if self.journal is not None:
                self._write(self.journal.save_acknowledgement, episode, ack)
            return episode.as_dict()

    def shelve(
        self, asset: str, duration_s: float, note: str, by: str, now: float | None = None
    ) -> dict[str, Any]:
        """Shelve a known asset for `duration_s`: its open episode closes, none opens until then. An asset
        this process does not hold is shelved in the journal, and its holder follows at its next sync."""
        now = self.clock() if now is None else now
        if not 0 < duration_s <= MAX_SHELVE_S:
            raise InvalidInput(
                f"duration_s must be > 0 and at most {MAX_SHELVE_S:.0f} (a year), got {duration_s}",
                code=ErrorCode.INVALID_SHELVE,
            )
        until = now + duration_s
        with self._lock:
            alarm = self._assets.get(asset)
            if alarm is None:
                view = None
                if self.journal is not None:
                    listed = functools.partial(_shelved_view, asset=asset, until=until, note=note)
                    view = self._read(
                        self.journal.shelve_elsewhere, asset, Shelve(until, note, by), now, listed
                    )
                if view is None:
                    raise _unknown_asset(asset)
                return view
            closed = alarm.shelve(until, note, now)
            alarm.shelved_by = by
            if closed is not None:
                self._record_close(closed)
            if self.journal is not None:
                self._write(self.journal.save_shelve, asset, until, note, by, now)
            self._dirty.add(asset)
            return self._asset_view(alarm, now)

    def _held_episode(self, alarm_id: str) -> Episode | None:
        for alarm in self._assets.values():
            if alarm.episode is not None and alarm.episode.id == alarm_id:
                return alarm.episode
        return None

    def _closed_episode(self, alarm_id: str) -> Episode:
        for episode in self._closed:
            if episode.id == alarm_id:
                return episode
        raise NotFound(f"no alarm episode {alarm_id!r}", code=ErrorCode.ALARM_NOT_FOUND)


def _unknown_asset(asset: str) -> NotFound:
    return NotFound(f"no asset {asset!r} has sent readings (or it was idle too long)",
                    code=ErrorCode.ASSET_NOT_FOUND)  # fmt: skip


def _matches(episode: Episode, asset: str | None, since: float | None) -> bool:
    return (asset is None or episode.asset == asset) and (since is None or episode.opened >= since)


def _join_acks(episode: Episode, row: Episode) -> None:
    """Add to an episode held here the acknowledgements another process recorded of it (the journal's)."""
    known = {(a["at"], a["by"], a["note"]) for a in episode.acknowledgements}
    extra = [a for a in row.acknowledgements if (a["at"], a["by"], a["note"]) not in known]
    if extra:
        episode.acknowledgements = sorted([*episode.acknowledgements, *extra], key=lambda a: float(a["at"]))


def _as_of(view: dict[str, Any], now: float) -> dict[str, Any]:
    """An asset's listing entry as its holder wrote it, with a shelve that has ended since taken off."""
    until = view.get("shelved_until")
    if until is None or until > now:
        return view
    state = "none" if view.get("state") == "shelved" else view.get("state")
    return {**view, "state": state, "shelved_until": None, "shelve_note": None}


def _shelved_view(stored: dict[str, Any] | None, asset: str, until: float, note: str) -> dict[str, Any]:
    """The listing entry of an asset shelved through a process that does not hold it."""
    base = stored or {"asset": asset, "readings": 0, "last_reading_ts": None, "calibration_drift": None}
    return {**base, "state": "shelved", "alarm_id": None, "lead_sensor": None, "shelved_until": until,
            "shelve_note": note}  # fmt: skip


def _shares(
    readings: AssetReadings, level: float, training_range: tuple[np.ndarray, np.ndarray] | None = None
) -> dict[int, list[tuple[int, str, float]]]:
    """For each reading above the level, its top sensors in the operator's order (out of `training_range`
    first, then by error: `factory_anomaly.explain.ranking`, as /v1/explain) as (index, name, share of
    the reading's error)."""
    errors = readings.sensor_error
    if errors is None:
        return {}
    out: dict[int, list[tuple[int, str, float]]] = {}
    scores = readings.scores.astype(np.float64)
    for row in np.flatnonzero(~(scores <= level)).tolist():
        e = np.nan_to_num(errors[row].astype(np.float64), nan=0.0, posinf=np.finfo(np.float64).max)
        total = float(e.sum())
        if readings.x is not None and training_range is not None:
            top = order_sensors(readings.x[row], e, *training_range, SHARES_PER_READING)
        else:
            top = np.argsort(-e, kind="stable")[:SHARES_PER_READING]
        out[row] = [
            (int(j), readings.sensor_names[j], float(e[j] / total) if total > 0 else 0.0) for j in top
        ]
    return out
