"""Cut a recording into train / validation / calibration rows by time, never by shuffling.

Readings are autocorrelated, so a random split would leak the neighbours of a held-out row into training
and make early stopping and the threshold optimistic. The recording is cut into `split_blocks`
consecutive blocks (default 8), each split in time order:
  each block:  [ train 70 % | gap | validation 15 % | gap | calibration 15 % | gap ]
  - train: normal rows fit the standardisation, the autoencoder and the PCA baseline;
  - validation: normal rows drive early stopping and give each sensor's residual RMS;
  - calibration: normal rows the model has never been selected on set the threshold.
Why blocks and not one tail: a plant changes operating mode every few minutes to hours, and the last
15 % of a recording can miss a mode entirely; a threshold calibrated there then fails in that mode (what
that cost on the synthetic plant: docs/training.md, "Why time blocks"). Blocks put every part of the
recording into every split. The gaps (`gap_fraction` of a block, dropped) keep autocorrelated neighbours
of held-out rows out of training. `split_blocks=1` is the strict past-trains-future split. With
`--val-data`, all of `--data` trains and the held-out file is cut the same way into validation and
calibration halves. Rows labelled 1 never train; those in held-out parts give the best-F1 threshold and
the held-out detection metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from factory_anomaly.training.data import DataError, Dataset

TRAIN_FRACTION = 0.70
VALIDATION_FRACTION = 0.15
DEFAULT_SPLIT_BLOCKS = 8
DEFAULT_GAP_FRACTION = 0.02  # of a block, dropped before each held-out part and after the calibration part
MIN_SPLIT_ROWS = 50  # normal rows each of train / validation / calibration must hold at least
TRAIN, VALIDATION, CALIBRATION, GAP = 0, 1, 2, -1


@dataclass
class Splits:
    """Raw float32 rows [rows, n_sensors] of each part, and where they came from (`description`)."""

    train: np.ndarray
    validation: np.ndarray
    calibration: np.ndarray
    held_out_values: np.ndarray  # calibration normals + held-out labelled anomalies, in time order
    held_out_labels: np.ndarray
    description: dict[str, Any] = field(default_factory=dict)


def assign_parts(n_rows: int, blocks: int, gap_fraction: float, fractions: tuple[float, float]) -> np.ndarray:
    """Label each row TRAIN, VALIDATION, CALIBRATION or GAP: `blocks` consecutive blocks, each cut in
    time order by `fractions` (train share, validation share; calibration takes the rest), with
    `gap_fraction` of the block dropped before each held-out part and at the block's end."""
    if blocks < 1:
        raise ValueError(f"split_blocks must be at least 1, got {blocks}")
    if not 0.0 <= gap_fraction < 0.1:
        raise ValueError(f"gap_fraction must be in [0, 0.1), got {gap_fraction}")
    parts = np.full(n_rows, GAP, dtype=np.int8)
    edges = np.linspace(0, n_rows, blocks + 1).round().astype(int)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        size = hi - lo
        gap = int(round(gap_fraction * size))
        cut_train = lo + int(fractions[0] * size)
        cut_val = lo + int((fractions[0] + fractions[1]) * size)
        parts[lo : cut_train - gap] = TRAIN
        parts[cut_train : cut_val - gap] = VALIDATION
        parts[cut_val : hi - gap] = CALIBRATION
        if gap and hi == n_rows:  # nothing follows the last block: keep its tail
            parts[hi - gap : hi] = CALIBRATION
    return parts


def _describe(parts: np.ndarray, part: int) -> str:
    rows = np.flatnonzero(parts == part)
    if rows.size == 0:
        return "no rows"
    runs = [f"[{r[0]}, {r[-1] + 1})" for r in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)]
    return runs[0] if len(runs) == 1 else f"{len(runs)} ranges: {', '.join(runs)}"


def split_in_time(
    data: Dataset,
    val_data: Dataset | None = None,
    blocks: int = DEFAULT_SPLIT_BLOCKS,
    gap_fraction: float = DEFAULT_GAP_FRACTION,
) -> Splits:
    """Cut the rows into train / validation / calibration by time blocks (see the module docstring)."""
    labels = data.labels if data.labels is not None else np.zeros(data.n_rows, dtype=np.int8)
    if val_data is None:
        values, held_labels = data.values, labels
        parts = assign_parts(data.n_rows, blocks, gap_fraction, (TRAIN_FRACTION, VALIDATION_FRACTION))
        train = data.values[(parts == TRAIN) & (labels == 0)]
        where = "rows "
        source = {"train": where + _describe(parts, TRAIN)}
    else:
        values = val_data.values
        held_labels = val_data.labels if val_data.labels is not None else np.zeros(values.shape[0], np.int8)
        parts = assign_parts(values.shape[0], blocks, gap_fraction, (0.0, 0.5))
        train = data.values[labels == 0]
        where = f"{val_data.source.name} rows "
        source = {"train": f"all {data.n_rows} rows of {data.source.name}"}
    source["validation"] = where + _describe(parts, VALIDATION)
    source["calibration"] = where + _describe(parts, CALIBRATION)
    validation = values[(parts == VALIDATION) & (held_labels == 0)]
    calibration = values[(parts == CALIBRATION) & (held_labels == 0)]
    for name, part in (("train", train), ("validation", validation), ("calibration", calibration)):
        if part.shape[0] < MIN_SPLIT_ROWS:
            raise DataError(
                f"too few rows: the {name} split ({source[name]}) holds {part.shape[0]} normal rows; "
                f"each split needs at least {MIN_SPLIT_ROWS} (so at least "
                f"{int(np.ceil(MIN_SPLIT_ROWS / VALIDATION_FRACTION))} normal rows without --val-data)"
            )
    # held-out evaluation, in time order: calibration normals plus every labelled anomaly outside training
    held = ((parts == CALIBRATION) & (held_labels == 0)) | ((parts != TRAIN) & (held_labels == 1))
    counts = {
        "split_blocks": blocks,
        "gap_fraction": gap_fraction,
        "train_rows": len(train),
        "validation_rows": len(validation),
        "calibration_rows": len(calibration),
        "held_out_anomalies": int(held_labels[held].sum()),
    }
    return Splits(train, validation, calibration, values[held], held_labels[held], source | counts)
