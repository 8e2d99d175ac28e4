"""The episode rule: k of an asset's last n readings scoring above a level opens an episode; an episode
closes after `close_after` readings without one above it (hysteresis, so a fault that flickers is one
episode, not many).

Why k of n rather than each flagged reading: an operator acts on episodes. One noisy reading over a
per-reading threshold is indistinguishable from a fault; k of n asks for persistence, which normal
noise rarely has and most faults do (Merlion's AggregateAlarms, Prometheus's `for:` are the same idea).
The same rule runs over a whole series (`rule_fires`, for calibration and benchmarks) and one reading at
a time (`KOfN`, for serving); tests hold the two to the same answers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EpisodeRule:
    """k of the last n readings with score > level opens an episode; close_after quiet readings close it."""

    k: int
    n: int
    level: float
    close_after: int

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ValueError(f"need 1 <= k <= n, got k={self.k}, n={self.n}")
        if not np.isfinite(self.level):
            raise ValueError(f"level must be finite, got {self.level}")
        if self.close_after < self.n:
            # so that a closed episode leaves no reading over the level in the window behind it
            raise ValueError(f"close_after must be >= n, got close_after={self.close_after}, n={self.n}")

    @classmethod
    def of(cls, spec: Any) -> EpisodeRule:
        """The rule a manifest's `alarms` section (or anything with k, n, level, close_after) holds."""
        fields = spec if isinstance(spec, dict) else vars(spec)
        return cls(int(fields["k"]), int(fields["n"]), float(fields["level"]), int(fields["close_after"]))

    def describe(self) -> str:
        """The evidence in an operator's words."""
        return f"{self.k} of {self.n} readings scored above {self.level:.4g}"


class KOfN:
    """One asset's window: how many of its last n readings were above the level (O(1) per reading)."""

    def __init__(self, n: int) -> None:
        self._window: deque[bool] = deque(maxlen=n)
        self.count = 0

    def push(self, over: bool) -> int:
        """Add the newest reading; returns how many of the last n are over the level."""
        window = self._window
        if len(window) == window.maxlen and window[0]:
            self.count -= 1
        window.append(over)
        self.count += int(over)
        return self.count

    def clear(self) -> None:
        self._window.clear()
        self.count = 0


def window_counts(over: np.ndarray, n: int) -> np.ndarray:
    """For each reading of a series, how many of the last n (itself included) are over the level."""
    cumulative = np.concatenate([[0], np.cumsum(np.asarray(over, dtype=np.int64))])
    index = np.arange(1, cumulative.size)
    return cumulative[index] - cumulative[np.maximum(index - n, 0)]


def kth_largest_in_window(scores: np.ndarray, k: int, n: int) -> np.ndarray:
    """For each reading from the n-th on, the k-th largest score of the last n: the rule fires at a level
    exactly when this exceeds it. float64 [len(scores) - n + 1]."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size < n:
        return np.empty(0)
    windows = np.lib.stride_tricks.sliding_window_view(scores, n)
    return -np.partition(-windows, k - 1, axis=1)[:, k - 1]


def episodes(
    scores: np.ndarray,
    rule: EpisodeRule,
    evidence: np.ndarray | None = None,
    trigger: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """Replay `rule` over one asset's scores in time order: (opening reading, closing reading) of each
    episode, the closing index exclusive (len(scores) for one still open at the end). `evidence`: bool
    [N], readings that count as over the level whatever their score (another channel, e.g. `stuck`);
    `trigger`: bool [N], readings that open an episode on their own and count as over (`velocity`)."""
    over = ~(np.asarray(scores, dtype=np.float64) <= rule.level)
    if evidence is not None:
        over |= np.asarray(evidence, dtype=bool)
    opens = np.zeros(over.size, dtype=bool) if trigger is None else np.asarray(trigger, dtype=bool)
    over |= opens
    counts = window_counts(over, rule.n)
    found: list[tuple[int, int]] = []
    start = -1
    quiet = 0
    for t in range(over.size):
        if start < 0:
            if counts[t] >= rule.k or opens[t]:
                start, quiet = t, 0
            continue
        quiet = 0 if over[t] else quiet + 1
        if quiet >= rule.close_after:
            found.append((start, t + 1))
            start = -1
    if start >= 0:
        found.append((start, int(over.size)))
    return found
