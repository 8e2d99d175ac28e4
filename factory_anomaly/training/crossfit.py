"""Cross-fitting: every normal row gets a score from a model that never saw it, and the threshold is
calibrated on all of them.

Why: a threshold is only as good as the held-out normal scores it is estimated on. Holding out one slice
(the former train / validation / calibration blocks) leaves a small calibration sample (15 % of the rows)
and refuses small data sets outright; rare operating states that fall outside the slice are never seen,
and their false alarms surface only in production. Cross-fitting (K-fold out-of-fold scores, the
"cross-conformal" construction) scores *every* normal row with a model trained without it, so the
calibration sample is the whole recording, and a data set of 100 rows can still be calibrated.

The rows (time order kept) are cut into K × `CHUNKS_PER_FOLD` contiguous chunks, dealt round-robin to the
K folds. Fold k's model trains on the other folds' chunks, minus a gap on each side of each of its own
(autocorrelated neighbours would make its scores optimistic), and scores its own chunks. Interleaving
matters: with one contiguous block per fold, a block that holds most of an operating mode is scored by a
model that barely saw that mode, and the threshold comes out far too high for new data of the same plant
(docs/quality.md). Each model's own rows are cut again by `inner_split` into training rows
and validation rows for early stopping. The model that is shipped is fitted the same way on all rows; its
scores on new data are, if anything, lower than the out-of-fold ones (it saw more data), so a threshold
from out-of-fold scores errs on the side of fewer false alarms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SMALL_DATA_ROWS = 5000
"""Up to this many normal rows, 5 folds (each model sees 80 % of scarce rows); above, 3 (each sees 2/3 of
plenty, and training costs 3 + 1 fits instead of 5 + 1)."""


def default_folds(n_rows: int) -> int:
    return 5 if n_rows <= SMALL_DATA_ROWS else 3


MIN_NORMAL_ROWS = 100
"""Fewer normal rows than this cannot train a model and calibrate it: refused, naming this minimum."""
INNER_VALIDATION_FRACTION = 0.15
DEFAULT_GAP_FRACTION = 0.05  # of a held-out chunk, dropped from training on each side of it
CHUNKS_PER_FOLD = 4
"""Each fold holds out this many contiguous chunks spread over the recording (chunk i goes to fold i mod K),
so every fold's model still sees every part of the recording, its operating modes included."""


@dataclass(frozen=True)
class Fold:
    """Row indices (into the normal rows) of one fit: what it trains on, validates on, and scores."""

    index: int
    train: np.ndarray
    validation: np.ndarray
    held_out: np.ndarray


def inner_split(rows: np.ndarray, blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut the index array `rows` (time order) into `blocks` consecutive blocks and keep the last
    `INNER_VALIDATION_FRACTION` of each block for validation: every part of the recording is in both."""
    blocks = max(1, min(blocks, rows.size // 20 or 1))
    train, validation = [], []
    for block in np.array_split(rows, blocks):
        cut = block.size - max(1, round(INNER_VALIDATION_FRACTION * block.size))
        train.append(block[:cut])
        validation.append(block[cut:])
    return np.concatenate(train), np.concatenate(validation)


def plan_folds(
    n_rows: int, folds: int, gap_fraction: float, inner_blocks: int, chunks_per_fold: int = CHUNKS_PER_FOLD
) -> list[Fold]:
    """The K out-of-fold fits over `n_rows` normal rows (see the module docstring)."""
    if n_rows < MIN_NORMAL_ROWS:
        raise ValueError(f"cross-fitting needs at least {MIN_NORMAL_ROWS} normal rows, got {n_rows}")
    if not 2 <= folds <= n_rows // 10:
        raise ValueError(f"folds must be between 2 and rows/10 ({n_rows // 10}), got {folds}")
    if not 0.0 <= gap_fraction < 0.5:
        raise ValueError(f"gap_fraction must be in [0, 0.5), got {gap_fraction}")
    every = np.arange(n_rows)
    chunks = np.array_split(every, folds * max(1, min(chunks_per_fold, n_rows // (10 * folds))))
    plan = []
    for k in range(folds):
        mine = chunks[k::folds]
        keep = np.ones(n_rows, dtype=bool)
        for chunk in mine:
            gap = int(round(gap_fraction * chunk.size))
            keep[max(0, chunk[0] - gap) : chunk[-1] + gap + 1] = False
        train, validation = inner_split(every[keep], inner_blocks)
        plan.append(Fold(k, train, validation, np.concatenate(mine)))
    return plan


def final_fit(n_rows: int, inner_blocks: int) -> Fold:
    """The shipped model's fit: all rows, cut into training and validation the same way (it holds out
    nothing for scoring: `held_out` is empty)."""
    train, validation = inner_split(np.arange(n_rows), inner_blocks)
    return Fold(-1, train, validation, np.empty(0, dtype=np.int64))
