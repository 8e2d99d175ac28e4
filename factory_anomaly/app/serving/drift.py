"""Calibration drift: is the recent flag rate significantly above what calibration promised?

A model's manifest promises a false-alarm rate per reading, `threshold.target_fpr` (p0): on normal
readings, a share p0 scores above the threshold. After training the plant's normal behaviour moves on and
the realised flag rate can end up far from p0, in either direction. No static threshold keeps the promise,
and a threshold that followed the flag rate would follow a developing fault too (it would adapt the fault
away). So the service corrects nothing: it says when the promise no longer holds, and what it knows, so
that a person decides between a fault and a changed machine.

`DriftDetector` counts readings and flags (`observe(flags, readings, now)`) in time buckets of `bucket_s`
seconds held in a ring: the window is the last `window_s / bucket_s` completed buckets, so memory is
bounded whatever the traffic. The state is evaluated once per completed bucket, at its end, on the window
that ends there; `status(now)` reports the latest evaluation. Evaluating completed buckets only makes the
state a function of the readings' times alone (never of when someone asks) and keeps it from flickering
while the open bucket fills. Time is passed in (seconds, e.g. `time.time()`), so tests and the offline
replay (`bench/drift_days.py`, `bench.common.drift_by_day`) run this same code on their own clocks.

The rule, on the window's n readings and k flags (e = n·p0 expected under the promise):

- **Sustained, not a burst.** The busiest stretch of a quarter of the window (the contiguous buckets with
  the most flags) is left out, and the test runs on what remains: k' flags in n' readings. A fault
  episode flags many readings for minutes to hours: that is the anomaly alerts' business and breaks no
  promise about *false* alarms. An excess that holds across the window (changed normal behaviour, or a
  fault that persists) survives the cut. With steady traffic, what remains holds no more flags than the
  same readings anywhere else in the window would, so the test below keeps its false-alarm bound.
- **drift** when both
  1. k' is significant: the one-sided binomial upper tail P(X >= k' | n', p0) is at most
     `alpha / window_buckets`. The state is checked at every bucket's end, so one window length holds
     `window_buckets` checks; dividing by their number (Bonferroni) bounds at `alpha` the chance that
     *any* check within a window length raises the signal while the promise holds. Overlapping windows
     are positively dependent, so the bound is conservative, never optimistic.
  2. the excess is material: k' >= `min_ratio` · n'·p0. With many readings a flag rate 10 % above the
     promise is significant, but calibration itself is only accurate to a factor (a quantile of finite,
     autocorrelated calibration rows), and such an excess is worth nobody's time.
  Drift wins over what follows, so a sustained flood of flags is reported whatever the readings' count.
  The binomial test takes readings to flag independently; real flags cluster, which makes its p-value
  optimistic. The minimum ratio and the cut of the busiest quarter are what keep clustered noise from
  raising the signal; docs/serving.md has how often it is raised on real servers.
- **insufficient_data** otherwise, while fewer than 1/p0 readings remain (less than one false alarm
  expected): the promise cannot be checked at its own scale yet (just loaded: until the readings span
  more than a quarter of the window, the cut takes them all; little traffic; or a window too short for a
  slow plant with a small p0). Said explicitly, so silence is never read as health.
- **ok** otherwise: the flag rate is not significantly and materially above the promise.

A flag rate *below* the promise is never drift: fewer false alarms than promised breaks no promise to the
operators (it may cost sensitivity, which the quality benchmark measures, not this).

The signal never says just "recalibrate": a sustained excess is also what a developing fault looks like.
Its message says how far above the promise the flag rate is, since when, and to inspect before
recalibrating. How well the rule and its defaults meet their goal on real servers: docs/serving.md,
"Calibration drift".

Standard library only: the serving path imports it, and so does the offline replay, without numpy.
Thread-safe: the inference threads observe; the event loop and the metrics scrape ask for the status.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Literal, get_args

State = Literal["ok", "insufficient_data", "drift"]
OK: State = "ok"
INSUFFICIENT_DATA: State = "insufficient_data"
DRIFT: State = "drift"
STATES: tuple[State, ...] = get_args(State)

BURST_SHARE = 0.25
"""The share of the window, its busiest contiguous stretch, left out of the test (see the module
docstring): bursts up to this long are fault episodes, not a broken promise. Rounded down to whole
buckets, so a window of fewer than 4 buckets has no cut."""
MAX_WINDOW_BUCKETS = 10_000
"""Most buckets one window may hold: bounds the ring's memory and the work of one evaluation."""
_RELATIVE_EPS = 1e-17  # a tail sum stops once its next term is this small relative to the sum


@dataclass(frozen=True)
class DriftSettings:
    """The rule's settings (see the module docstring); an invalid value raises ValueError naming it.

    The defaults hold a day: one reading a minute at a target of 1e-2 is 1 440 readings and 14.4 expected
    false alarms, one reading a second at 1e-4 is 86 400 and 8.6; a day also spans a plant's shift cycle,
    which a shorter window would mistake for drift. docs/serving.md ("Calibration drift") says when to
    change them.
    """

    window_s: float = 86_400.0
    """The trailing window the flag rate is measured over, in seconds: a whole number of buckets."""
    bucket_s: float = 300.0
    """How often the state is evaluated, and the resolution of the window's edges, in seconds."""
    alpha: float = 0.01
    """The chance, per window length, that the signal is raised while the promise holds."""
    min_ratio: float = 2.0
    """The smallest realised / promised flag rate reported as drift, however significant a smaller one."""

    def __post_init__(self) -> None:
        for name in ("window_s", "bucket_s", "alpha", "min_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.bucket_s <= 0 or self.window_s <= 0:
            raise ValueError(
                f"window_s and bucket_s must be positive, got window_s={self.window_s:g}, "
                f"bucket_s={self.bucket_s:g}"
            )
        buckets = self.window_s / self.bucket_s
        if buckets < 1 or abs(buckets - round(buckets)) > 1e-9 * buckets:
            raise ValueError(
                f"window_s ({self.window_s:g}) must be a whole number of bucket_s ({self.bucket_s:g}), "
                f"at least one; it is {buckets:.4g} buckets"
            )
        if round(buckets) > MAX_WINDOW_BUCKETS:
            raise ValueError(
                f"window_s / bucket_s is {round(buckets)} buckets, more than {MAX_WINDOW_BUCKETS}: "
                "use longer buckets"
            )
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie strictly between 0 and 1, got {self.alpha:g}")
        if self.min_ratio < 1:
            raise ValueError(
                f"min_ratio must be at least 1 (a flag rate below the promise is never drift), got "
                f"{self.min_ratio:g}"
            )

    @property
    def window_buckets(self) -> int:
        return round(self.window_s / self.bucket_s)

    @property
    def burst_buckets(self) -> int:
        """Buckets in the busiest stretch left out of the test (a quarter of the window, rounded down)."""
        return math.floor(self.window_buckets * BURST_SHARE)

    @property
    def check_alpha(self) -> float:
        """The significance each check must reach: `alpha` shared by the checks of one window length."""
        return self.alpha / self.window_buckets


@dataclass(frozen=True)
class DriftStatus:
    """The state at the end of the last completed bucket, `as_of` (seconds; None before the first one).

    The window's `readings` and `flags`; `expected_flags` = readings · target_fpr; `ratio` = flags /
    expected_flags (None without readings); `sustained_ratio` the same without the window's busiest
    quarter, and `p_value` = P(X >= its flags) for X ~ Binomial(its readings, target_fpr): the test that
    decides; `since` = when the state became `drift` (the end of the first bucket of the current run of
    drift), None unless the state is `drift`.
    """

    state: State
    target_fpr: float
    window_s: float
    readings: int
    flags: int
    expected_flags: float
    ratio: float | None
    sustained_ratio: float | None
    p_value: float
    since: float | None
    as_of: float | None
    message: str


def binomial_upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed term by term away from the mode (no cancellation for a
    small tail; one below about 1e-308 is 0.0)."""
    if k <= 0 or p >= 1:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    odds = p / (1 - p)

    def pmf(i: int) -> float:
        return math.exp(
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
        )

    mode = math.floor((n + 1) * p)  # the pmf rises up to here and falls after
    if k > mode:  # the tail itself, its terms falling
        term = total = pmf(k)
        i = k
        while i < n and term > total * _RELATIVE_EPS:
            term *= (n - i) / (i + 1) * odds
            i += 1
            total += term
        return min(1.0, total)
    # k at or below the mode: one minus the lower tail P(X <= k - 1), its terms falling from k - 1 down
    term = total = pmf(k - 1)
    i = k - 1
    while i > 0 and term > total * _RELATIVE_EPS:
        term *= i / (n - i + 1) / odds
        i -= 1
        total += term
    return max(0.0, 1.0 - total)


@dataclass
class _Evaluation:
    """The rule's inputs and outcome at one bucket's end."""

    at: float | None = None
    readings: int = 0
    flags: int = 0
    sustained_readings: int = 0
    sustained_flags: int = 0
    state: State = INSUFFICIENT_DATA
    p_value: float | None = 1.0  # None: not needed to decide, computed when asked for


class DriftDetector:
    """Counts readings and flags over a trailing window and says whether the flag rate has drifted above
    `target_fpr`; the rule is in the module docstring. One per model version: a new version makes a new
    promise."""

    def __init__(self, target_fpr: float, settings: DriftSettings | None = None) -> None:
        if isinstance(target_fpr, bool) or not (isinstance(target_fpr, int | float) and 0 < target_fpr < 1):
            raise ValueError(f"target_fpr must lie strictly between 0 and 1, got {target_fpr!r}")
        self.target_fpr = float(target_fpr)
        self.settings = settings = settings or DriftSettings()
        self.min_readings = math.ceil(1 / self.target_fpr - 1e-9)
        """Readings the window needs before it can say `ok`: one expected false alarm."""
        self._n = settings.window_buckets
        size = self._n + 1  # the window's buckets and the open one
        self._index = [-1] * size  # the bucket number each slot holds, -1 = none
        self._readings = [0] * size
        self._flags = [0] * size
        self._current: int | None = None  # the open bucket's number
        self._window_readings = self._window_flags = 0  # over the window's completed buckets
        self._last = _Evaluation()
        self._since: float | None = None
        self._lock = threading.Lock()

    @property
    def ring_buckets(self) -> int:
        """Buckets held in memory: the window's and the open one, whatever the traffic."""
        return len(self._index)

    def observe(self, flags: int, readings: int, now: float) -> None:
        """`readings` more readings scored at `now` (seconds), `flags` of them flagged. A `now` before the
        open bucket (a clock stepped back) counts in the open bucket."""
        if not 0 <= flags <= readings:
            raise ValueError(f"need 0 <= flags <= readings, got flags={flags}, readings={readings}")
        with self._lock:
            slot = self._advance(now)
            self._readings[slot] += readings
            self._flags[slot] += flags

    def status(self, now: float) -> DriftStatus:
        """The state evaluated at the end of the last bucket completed by `now`."""
        with self._lock:
            self._advance(now)
            last, since = self._last, self._since
            if last.p_value is None:
                last.p_value = binomial_upper_tail(
                    last.sustained_flags, last.sustained_readings, self.target_fpr
                )
            p_value = last.p_value
        n, k = last.readings, last.flags
        expected = n * self.target_fpr
        ratio = k / expected if n else None
        n2, k2 = last.sustained_readings, last.sustained_flags
        sustained_ratio = k2 / (n2 * self.target_fpr) if n2 else None
        return DriftStatus(
            state=last.state,
            target_fpr=self.target_fpr,
            window_s=self.settings.window_s,
            readings=n,
            flags=k,
            expected_flags=expected,
            ratio=ratio,
            sustained_ratio=sustained_ratio,
            p_value=p_value,
            since=since,
            as_of=last.at,
            message=self._message(last, ratio, sustained_ratio, p_value, since, now),
        )

    # --- the ring ---------------------------------------------------------------------------------------

    def _advance(self, now: float) -> int:
        """Close every bucket that ended by `now`, evaluating the rule at each one's end; the open
        bucket's slot."""
        bucket = math.floor(now / self.settings.bucket_s)
        size = len(self._index)
        if self._current is None:
            self._restart(bucket)
        while self._current is not None and self._current < bucket:
            closing = self._current % size
            if self._window_readings == 0 and self._readings[closing] == 0:
                # nothing in the window nor the open bucket: every bucket up to `bucket` closes empty
                self._restart(bucket)
                self._evaluate(bucket * self.settings.bucket_s)
                break
            self._window_readings += self._readings[closing]
            self._window_flags += self._flags[closing]
            self._current += 1
            leaving = self._current % size  # the slot of the bucket that leaves the window
            if self._index[leaving] == self._current - size:
                self._window_readings -= self._readings[leaving]
                self._window_flags -= self._flags[leaving]
            self._index[leaving], self._readings[leaving], self._flags[leaving] = self._current, 0, 0
            self._evaluate(self._current * self.settings.bucket_s)
        assert self._current is not None
        return self._current % size

    def _restart(self, bucket: int) -> None:
        """An empty window, `bucket` open."""
        size = len(self._index)
        self._index, self._readings, self._flags = [-1] * size, [0] * size, [0] * size
        self._window_readings = self._window_flags = 0
        self._current = bucket
        self._index[bucket % size] = bucket

    def _busiest_stretch(self) -> tuple[int, int]:
        """(readings, flags) of the window's `burst_buckets` contiguous buckets with the most flags (the
        earliest of equals)."""
        length = self.settings.burst_buckets
        if length == 0:
            return 0, 0
        assert self._current is not None
        size = len(self._index)
        readings, flags = [], []
        for bucket in range(self._current - self._n, self._current):  # the window, oldest first
            slot = bucket % size
            held = self._index[slot] == bucket
            readings.append(self._readings[slot] if held else 0)
            flags.append(self._flags[slot] if held else 0)
        run_readings, run_flags = sum(readings[:length]), sum(flags[:length])
        best = (run_readings, run_flags)
        for i in range(length, self._n):
            run_readings += readings[i] - readings[i - length]
            run_flags += flags[i] - flags[i - length]
            if run_flags > best[1]:
                best = (run_readings, run_flags)
        return best

    def _evaluate(self, at: float) -> None:
        """The rule on the window ending at `at` (the end of the bucket just completed)."""
        n, k = self._window_readings, self._window_flags
        burst_readings, burst_flags = self._busiest_stretch()
        n2, k2 = n - burst_readings, k - burst_flags
        state = OK if n2 >= self.min_readings else INSUFFICIENT_DATA
        p_value = None  # only computed here when the ratio leaves it to decide
        if k2 > 0 and k2 >= self.settings.min_ratio * n2 * self.target_fpr:
            p_value = binomial_upper_tail(k2, n2, self.target_fpr)
            if p_value <= self.settings.check_alpha:
                state = DRIFT
        if state != DRIFT:
            self._since = None
        elif self._last.state != DRIFT or self._since is None:
            self._since = at
        self._last = _Evaluation(at, n, k, n2, k2, state, p_value)

    # --- words ------------------------------------------------------------------------------------------

    def _message(
        self,
        last: _Evaluation,
        ratio: float | None,
        sustained_ratio: float | None,
        p_value: float,
        since: float | None,
        now: float,
    ) -> str:
        promise = f"the promise ({self.target_fpr:g} per reading)"
        window = duration(self.settings.window_s)
        burst = duration(self.settings.burst_buckets * self.settings.bucket_s)
        counts = (
            f"{last.flags} flags in {last.readings} readings over the last {window}, "
            f"{last.readings * self.target_fpr:.3g} expected"
        )
        if last.state == DRIFT:
            assert ratio is not None and sustained_ratio is not None and since is not None
            return (
                f"the flag rate has been {ratio:.1f}x {promise} for {duration(max(0.0, now - since))} "
                f"({counts}; {sustained_ratio:.1f}x without its busiest {burst}, p = {p_value:.1e}): "
                "a persistent fault or a changed machine; inspect before recalibrating"
            )
        if last.state == INSUFFICIENT_DATA:
            return (
                f"{last.sustained_readings} readings over the last {window} outside its busiest {burst} "
                f"({last.readings} in all): checking {promise} needs at least {self.min_readings} (one "
                "expected false alarm); the window fills with traffic after a load, or needs to be longer "
                "(ANOMALY_CALIBRATION_WINDOW_S) for a plant this slow"
            )
        assert ratio is not None and sustained_ratio is not None
        min_ratio = self.settings.min_ratio
        if ratio <= 1:
            return f"the flag rate is {ratio:.2f}x {promise}: within it ({counts})"
        without = f"{sustained_ratio:.2f}x without its busiest {burst}"
        if sustained_ratio >= min_ratio:
            return (
                f"the flag rate is {ratio:.2f}x {promise} ({counts}), {without}: not significantly above "
                f"it yet (p = {p_value:.2g}; drift needs p <= {self.settings.check_alpha:.1e})"
            )
        if ratio >= min_ratio:
            return (
                f"the flag rate is {ratio:.2f}x {promise} ({counts}), {without}: a burst of flags, not a "
                f"sustained excess of {min_ratio:g}x (bursts are a matter for the anomaly alerts)"
            )
        return (
            f"the flag rate is {ratio:.2f}x {promise} ({counts}), {without}: above it, but by less than "
            f"the {min_ratio:g}x that counts as drift"
        )


def duration(seconds: float) -> str:
    """'45 s', '25 min', '5.0 h', '3.2 days'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
