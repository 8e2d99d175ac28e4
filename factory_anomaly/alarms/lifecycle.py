"""One asset's alarm: its episode rule applied reading by reading, and the operator's actions on it.

States (ISA-18.2's lifecycle, reduced to what a reading-driven service can know):
  none          no reading over the level in the window
  pending       some, fewer than k: the rule may open an episode soon
  open          an episode is open: the evidence held within the last n readings
  acknowledged  open, and an operator has acknowledged it
  closing       open, but the last n readings were quiet; it closes after `close_after` quiet ones
  shelved       an operator shelved the asset (maintenance): readings are scored, no episode opens

Readings are counted in the asset's time order. A reading older than the asset's latest is answered
(`late`) but does not move the state; a reading whose id the asset has seen recently is answered with the
alarm as it was then, so a client's retry is never counted twice. Timestamps are seconds since the epoch
(float); `now` is the caller's clock for operator actions.
"""

from __future__ import annotations

import heapq
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from factory_anomaly.alarms.rule import EpisodeRule, KOfN

NONE, PENDING, OPEN, ACKNOWLEDGED, CLOSING, SHELVED = (
    "none", "pending", "open", "acknowledged", "closing", "shelved",
)  # fmt: skip
STATES = (NONE, PENDING, OPEN, ACKNOWLEDGED, CLOSING, SHELVED)
REMEMBERED_IDS = 1024  # reading ids per asset whose answers are kept for retries
TOP_SENSORS = 5  # sensors named per alarm


@dataclass
class Episode:
    """One alarm episode: from the reading that met the rule to the one that closed it."""

    id: str
    asset: str
    opened: float  # timestamp of the reading that met the rule
    since: float  # timestamp of the first reading over the level in that window
    evidence: str  # the rule that opened it, in words
    readings: int = 0  # readings of the asset while it was open
    peak_score: float = 0.0
    closed: float | None = None
    closed_by: str | None = None  # "quiet" or "shelved"
    lead_sensor: str | None = None  # the top sensor when it opened, fixed (alert labels must not flap)
    acknowledgements: list[dict[str, Any]] = field(default_factory=list)
    _shares: dict[int, float] = field(default_factory=dict)  # sensor index -> summed error share
    _names: dict[int, str] = field(default_factory=dict)
    _named: dict[int, int] = field(default_factory=dict)  # sensor index -> readings that named it
    _first: dict[int, float] = field(default_factory=dict)  # sensor index -> when a reading first named it
    _how: dict[int, str] = field(default_factory=dict)  # sensor index -> "flat" / "noisy" (first channel)
    _counted_at: dict[int, int] = field(default_factory=dict, repr=False, compare=False)  # its last reading
    # the answer of top_sensors() until the sums change: every reading's answer shows it, and ranking a
    # long episode's sums for each one was most of the alarm path's cost (docs/benchmarks.md)
    _top: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    # the sensors of the last ranking and those named since: sums only grow, so the next top can only come
    # from them (no sensor left out of a ranking overtakes one that grew at least as much as it did)
    _ranked: list[int] | None = field(default=None, repr=False, compare=False)
    _grown: set[int] = field(default_factory=set, repr=False, compare=False)

    def note_sensors(
        self, shares: Sequence[tuple[int, str, float]], ts: float | None = None, how: str | None = None
    ) -> None:
        """Add one reading's named sensors (index, name, share). With `ts`, the reading's time: each sensor
        counts once per reading (the episode's reading count tells readings apart, however many channels
        name the sensor) and its first mention is dated. `how`: what the channel that named them saw
        ("flat" from the stuck channel, "noisy" from jitter), kept from the first such channel."""
        for index, name, share in shares:
            self._shares[index] = self._shares.get(index, 0.0) + share
            if share >= 0.0:
                self._grown.add(index)
            else:  # a sum that shrinks (or NaN) breaks the rule `_ranked` relies on: rank them all again
                self._ranked = None
            self._names[index] = name
            if how is not None:
                self._how.setdefault(index, how)
            if ts is not None and self._counted_at.get(index) != self.readings:
                self._named[index] = self._named.get(index, 0) + 1
                self._counted_at[index] = self.readings
                self._first.setdefault(index, ts)
            self._top = None

    def sensor_sums(self) -> list[tuple[int, str, float, int, float | None, str | None]]:
        """Every sensor's summed share, the readings that named it, when first and how ("flat", "noisy"
        or None; for the journal), largest share first."""
        ranked = sorted(self._shares.items(), key=lambda item: (-item[1], item[0]))
        return [(i, self._names[i], v, self._named.get(i, 0), self._first.get(i), self._how.get(i))
                for i, v in ranked]  # fmt: skip

    def restore_sensors(self, sums: Sequence[Sequence[Any]]) -> None:
        """Back from `sensor_sums` (the journal; entries written before the counts and times have neither)."""
        self._shares = {int(entry[0]): float(entry[2]) for entry in sums}
        self._names = {int(entry[0]): str(entry[1]) for entry in sums}
        self._named = {int(entry[0]): int(entry[3]) for entry in sums if len(entry) > 3}
        self._first = {int(e[0]): float(e[4]) for e in sums if len(e) > 4 and e[4] is not None}
        self._how = {int(e[0]): str(e[5]) for e in sums if len(e) > 5 and e[5] is not None}
        self._top = self._ranked = None

    def top_sensors(self, k: int = TOP_SENSORS) -> list[dict[str, Any]]:
        """The sensors that carried most of the error over the episode's readings above the level, each
        with its share of the total (the same order as `sensor_sums`), how many of those readings named it,
        when the first did and, where a channel saw it, its direction ("flat": frozen, "noisy": jitter):
        which sensors, how consistently, since when, what they did."""
        if k == TOP_SENSORS and self._top is not None:
            return [dict(entry) for entry in self._top]
        total = sum(self._shares.values())
        shares = self._shares
        if k == TOP_SENSORS and self._ranked is not None:  # only these can be in the top now
            candidates: Iterable[tuple[int, float]] = [(i, shares[i]) for i in {*self._ranked, *self._grown}]
        else:
            candidates = shares.items()
        ranked = heapq.nsmallest(k, candidates, key=lambda item: (-item[1], item[0]))
        if k == TOP_SENSORS:
            self._ranked, self._grown = [i for i, _ in ranked], set()
        top = [
            {"index": i, "name": self._names[i], "share": round(v / total, 4) if total > 0 else 0.0,
             "readings": self._named.get(i, 0), "since": self._first.get(i), "direction": self._how.get(i)}
            for i, v in ranked
        ]  # fmt: skip
        if k == TOP_SENSORS:
            self._top = top
            return [dict(entry) for entry in top]
        return top

    def acknowledge(self, at: float, by: str, note: str) -> dict[str, Any]:
        """Record an acknowledgement (open or closed: acknowledging a cleared alarm is part of the
        lifecycle too) and return it."""
        ack = {"at": at, "by": by, "note": note}
        self.acknowledgements.append(ack)
        return ack

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "asset": self.asset,
            "opened": self.opened,
            "since": self.since,
            "closed": self.closed,
            "closed_by": self.closed_by,
            "readings": self.readings,
            "peak_score": self.peak_score,
            "evidence": self.evidence,
            "lead_sensor": self.lead_sensor,
            "top_sensors": self.top_sensors(),
            "acknowledgements": list(self.acknowledgements),
        }


@dataclass(frozen=True)
class Observed:
    """What one reading's answer says of the asset's alarm."""

    alarm: dict[str, Any]
    late: bool = False
    repeated: bool = False
    opened: Episode | None = None  # the episode this reading opened
    closed: Episode | None = None  # the episode this reading closed


class AssetAlarm:
    """The alarm state of one asset under `rule`."""

    def __init__(self, asset: str, rule: EpisodeRule | None) -> None:
        """`rule` None: restored from a journal before any model is known; the first reading sets it."""
        self.asset = asset
        self.rule = rule
        self.window = KOfN(rule.n if rule else 1)
        self.episode: Episode | None = None
        self.quiet = 0  # readings since the last one over the level, while an episode is open
        self.first_over: list[float] = []  # timestamps of the window's readings over the level
        self.latest_ts: float | None = None
        self.shelved_until: float | None = None
        self.shelve_note: str | None = None
        self.shelved_by: str | None = None
        self.readings = 0
        self._answers: OrderedDict[str, Observed] = OrderedDict()

    # --- readings -------------------------------------------------------------------------------------

    def observe(
        self,
        ts: float,
        score: float,
        shares: Sequence[tuple[int, str, float]] = (),
        reading_id: str | None = None,
        now: float | None = None,
        stuck: Sequence[tuple[int, str, int]] = (),
        jitter: Sequence[tuple[int, str, float]] = (),
        velocity: Sequence[tuple[int, str, float]] = (),
    ) -> Observed:
        """Count one scored reading (score: the model's score, NaN counts as over the level; shares: the
        reading's top sensors as (index, name, share of its error); stuck: (index, name, run) of sensors
        frozen beyond their limit, `stuck.py`; jitter: (index, name, evidence) of sensors jittering beyond
        the level, `jitter.py`; velocity: (index, name, statistic over its level) of the sensors that moved
        most in an abrupt change of the process state, `velocity.py`; each makes the reading count as over
        the level too, and velocity opens an episode on its own) and say where the alarm stands."""
        if reading_id is not None and reading_id in self._answers:
            self._answers.move_to_end(reading_id)
            return _repeat(self._answers[reading_id])
        if not self.will_count(ts, None):
            result = Observed(self.view(now if now is not None else ts), late=True)
        else:
            result = self._count(ts, score, shares, now if now is not None else ts, stuck, jitter, velocity)
        if reading_id is not None:
            self._answers[reading_id] = result
            if len(self._answers) > REMEMBERED_IDS:
                self._answers.popitem(last=False)
        return result

    def _count(
        self,
        ts: float,
        score: float,
        shares: Sequence[tuple[int, str, float]],
        now: float,
        stuck: Sequence[tuple[int, str, int]] = (),
        jitter: Sequence[tuple[int, str, float]] = (),
        velocity: Sequence[tuple[int, str, float]] = (),
    ) -> Observed:
        self.latest_ts = ts
        self.readings += 1
        self._expire_shelve(now)
        if self.shelved_until is not None:
            return Observed(self.view(now))
        rule = self.rule
        if rule is None:
            raise RuntimeError(f"asset {self.asset!r} has no episode rule yet")
        over = not score <= rule.level or bool(stuck) or bool(jitter) or bool(velocity)  # NaN counts
        count = self.window.push(over)
        if over:
            self.first_over.append(ts)
        self.first_over = self.first_over[-count:] if count else []
        opened = closed = None
        episode = self.episode
        if episode is None and (count >= rule.k or velocity):
            episode = self.episode = Episode(
                id=uuid.uuid4().hex, asset=self.asset, opened=ts, since=self.first_over[0],
                evidence=_evidence_words(rule, score, stuck, jitter, velocity),
            )  # fmt: skip
            opened, self.quiet = episode, 0
        if episode is not None:
            episode.readings += 1
            if over:
                episode.peak_score = max(episode.peak_score, score) if score == score else float("nan")
                episode.note_sensors(shares, ts)
                episode.note_sensors([(i, name, 1.0 / len(stuck)) for i, name, _ in stuck], ts, "flat")
                episode.note_sensors([(i, name, 1.0 / len(jitter)) for i, name, _ in jitter], ts, "noisy")
                ranks = len(velocity) * (len(velocity) + 1) / 2  # moved most first: shares by rank
                episode.note_sensors([(i, name, (len(velocity) - r) / ranks)
                                      for r, (i, name, _) in enumerate(velocity)], ts)  # fmt: skip
                if episode.lead_sensor is None:
                    top = episode.top_sensors(1)
                    episode.lead_sensor = top[0]["name"] if top else None
                self.quiet = 0
            else:
                self.quiet += 1
                if self.quiet >= rule.close_after:
                    closed = self.close(ts, "quiet")
        return Observed(self.view(now), opened=opened, closed=closed)

    def close(self, ts: float, by: str) -> Episode:
        """Close the open episode at `ts` ("quiet", "shelved", or the caller's reason) and return it."""
        episode = self.episode
        if episode is None:
            raise LookupError(f"asset {self.asset!r} has no open episode")
        episode.closed, episode.closed_by = ts, by
        self.episode, self.quiet = None, 0
        return episode

    def set_rule(self, rule: EpisodeRule) -> None:
        """Apply a new rule (a new model version): the window starts afresh; an open episode stays open
        and closes by the new rule's quiet count."""
        self.rule = rule
        self.window = KOfN(rule.n)
        self.first_over = []

    def will_count(self, ts: float, reading_id: str | None) -> bool:
        """Whether `observe` would count this reading: not a retry of one it answered recently, and not
        older than the asset's latest (other per-reading state, e.g. repeat runs, follows the same rule)."""
        if reading_id is not None and reading_id in self._answers:
            return False
        return self.latest_ts is None or ts >= self.latest_ts

    # --- operators ------------------------------------------------------------------------------------

    def acknowledge(self, note: str, by: str, now: float) -> None:
        """Record an acknowledgement of the open episode (the caller finds closed ones in the journal)."""
        if self.episode is None:
            raise LookupError(f"asset {self.asset!r} has no open episode")
        self.episode.acknowledge(now, by, note)

    def shelve(self, until: float, note: str, now: float) -> Episode | None:
        """Shelve the asset until `until`: its open episode closes (by "shelved"), the window empties and
        no episode opens until then. Returns the episode it closed, if any."""
        if not until > now:
            raise ValueError("a shelve must end in the future")
        closed = self.close(now, "shelved") if self.episode is not None else None
        self.shelved_until, self.shelve_note = until, note
        self.window.clear()
        self.first_over = []
        return closed

    def unshelve(self) -> None:
        self.shelved_until = self.shelve_note = self.shelved_by = None

    def _expire_shelve(self, now: float) -> None:
        if self.shelved_until is not None and now >= self.shelved_until:
            self.unshelve()

    # --- state ----------------------------------------------------------------------------------------

    def state(self, now: float) -> str:
        self._expire_shelve(now)
        if self.shelved_until is not None:
            return SHELVED
        if self.episode is not None:
            if self.rule is not None and self.quiet >= self.rule.n:
                return CLOSING
            return ACKNOWLEDGED if self.episode.acknowledgements else OPEN
        return PENDING if self.window.count else NONE

    def view(self, now: float) -> dict[str, Any]:
        """The `alarm` object of a reading's answer."""
        episode = self.episode
        return {
            "id": episode.id if episode else None,
            "state": self.state(now),
            "since": episode.since if episode else (self.first_over[0] if self.first_over else None),
            "readings": episode.readings if episode else self.window.count,
            "peak_score": episode.peak_score if episode else None,
            "top_sensors": episode.top_sensors() if episode else [],
        }


def _evidence_words(
    rule: EpisodeRule,
    score: float,
    stuck: Sequence[tuple[int, str, int]],
    jitter: Sequence[tuple[int, str, float]],
    velocity: Sequence[tuple[int, str, float]] = (),
) -> str:
    """What opened an episode, in an operator's words: every channel over the level at the reading that
    met the rule (an abrupt change, frozen sensors, jitter, then the score), or the rule itself when the
    score alone."""
    parts = []
    if velocity:
        names = ", ".join(name for _, name, _ in velocity)
        parts.append(f"abrupt change of the process state ({velocity[0][2]:.1f}× its level), "
                     f"moved most: {names}")  # fmt: skip
    if stuck:
        parts.append(_stuck_words(stuck))
    if jitter:
        names = ", ".join(name for _, name, _ in jitter[:3])
        more = f" and {len(jitter) - 3} more" if len(jitter) > 3 else ""
        parts.append(f"reading jitter far above normal: {names}{more}")
    if not score <= rule.level or not parts:
        parts.append(rule.describe())
    return "; ".join(parts)


def _stuck_words(stuck: Sequence[tuple[int, str, int]]) -> str:
    names = ", ".join(f"{name} for {run} readings" for _, name, run in stuck[:3])
    more = f" and {len(stuck) - 3} more" if len(stuck) > 3 else ""
    return f"reading unchanged: {names}{more}"


def _repeat(first: Observed) -> Observed:
    return Observed(first.alarm, late=first.late, repeated=True)
