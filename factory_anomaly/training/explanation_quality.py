"""Do the sensors an explanation names first carry the anomaly? Issue 16 §1-§2, measured on a published
version with numpy and onnxruntime only (`make quality` runs it per set and prints the tables).

Methods, each a full order of a reading's sensors (first = blamed most):
  endpoint   what /v1/explain answers with (`explain.ranking.order_rows`): out of the training range
             [sensor_low, sensor_high] first, then by the scorer graph's sensor_error
  attention  the explainer graph's attention alone (only versions trained with an explainer)
  error      sensor_error alone, largest first
  pca        the version's PCA baseline's per-sensor squared residual (baseline_pca.npz)
  deviation  no model: how far each value lies from its median over the normal training rows, in robust
             spreads (1.4826·MAD, floored at a tenth of the spread its central 98 % implies, so a sensor
             that sits still on most training rows does not own every reading), squared. What an
             operator's trend screen shows: a reference that a model's ranking has to beat to earn its cost
  random     a fixed-seed shuffle: the floor every method must clear

Measures:
  rankings        HitRate and NDCG at 100 % and 150 % (TranAD's definitions,
                  `training.metrics.ranking_metrics`) against each labelled row's fault sensors, per fault
                  kind where the set has kinds. Matching labels is not enough: a label names what broke,
                  not what the model's score rests on.
  deletion        faithfulness: each anomalous row's top-k sensors set to their median over the normal
                  training rows and the row rescored through the scorer graph; the mean relative fall of
                  the score, 1 − new/old. A ranking whose first sensors carry the anomaly takes the score
                  down; one that names bystanders does not. Caveat: where the plant has operating modes,
                  the global median can itself be abnormal for the mode at hand, and the fall negative.
  gross outliers  normal test rows with 3 sensors pushed 5 training ranges (+1) outside their range: the
                  share of rows whose first 3 named sensors are exactly the pushed ones. Whatever the
                  model makes of such a reading, those sensors are what a technician must check first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from factory_anomaly.artifact import BASELINE_FILE, EXPLAINER, SCORER, read_manifest
from factory_anomaly.explain.ranking import order_rows, out_of_range
from factory_anomaly.training.baseline import PCABaseline
from factory_anomaly.training.data import load_fault_sensors
from factory_anomaly.training.metrics import ranking_by_kind, ranking_metrics

METHODS = ("endpoint", "attention", "error", "pca", "deviation", "random")
METRICS = ("hitrate@100%", "hitrate@150%", "ndcg@100%", "ndcg@150%")
DELETION_KS = (1, 3, 5)
MAX_DELETION_ROWS = 2000
MAX_GROSS_ROWS = 500
GROSS_SENSORS = 3
GROSS_RANGES = 5.0
GROSS_GOAL = 0.9
SEED = 0
SPREAD_FLOOR = 0.1
NORMAL_98_WIDTH = 4.6527  # the standard normal's 1 % to 99 % quantile distance
BATCH_ROWS = 4096


@dataclass(frozen=True)
class Version:
    """A published version's graphs, PCA baseline and training range: what every measure needs."""

    scorer: ort.InferenceSession
    explainer: ort.InferenceSession | None
    pca: PCABaseline
    low: np.ndarray  # float64 [n]: per-sensor min of the training rows (manifest sensor_low)
    high: np.ndarray  # float64 [n]


def open_version(directory: Path) -> Version:
    manifest = read_manifest(directory)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3

    def session(file: str) -> ort.InferenceSession:
        return ort.InferenceSession(str(directory / file), options, providers=["CPUExecutionProvider"])

    explainer = session(manifest.graphs[EXPLAINER].file) if EXPLAINER in manifest.graphs else None
    return Version(
        scorer=session(manifest.graphs[SCORER].file),
        explainer=explainer,
        pca=PCABaseline.load(directory / BASELINE_FILE),
        low=np.asarray(manifest.sensor_low, dtype=np.float64),
        high=np.asarray(manifest.sensor_high, dtype=np.float64),
    )


def read_fault_sensors(path: Path, n_rows: int, n_sensors: int) -> dict[int, list[int]]:
    """Row -> fault sensor indices (0-based), rows with none left out: the plant's fault_sensors.json and
    SMD's test_fault_sensors.json share the format `training.data.load_fault_sensors` reads
    ({"row": [sensors]})."""
    return {row: sensors for row, sensors in load_fault_sensors(path, n_rows, n_sensors).items() if sensors}


def run_graph(session: ort.InferenceSession, output: str, rows: np.ndarray) -> np.ndarray:
    """float64: one output of a graph over raw rows [N, n], in batches."""
    name = session.get_inputs()[0].name
    parts = [
        session.run([output], {name: np.ascontiguousarray(rows[i : i + BATCH_ROWS], dtype=np.float32)})[0]
        for i in range(0, rows.shape[0], BATCH_ROWS)
    ]
    return np.concatenate(parts).astype(np.float64)


def descending(values: np.ndarray) -> np.ndarray:
    """int [N, n]: each row's sensors by value, largest first, ties by index (as `ranking_metrics` ranks);
    NaN counts as the largest, as the endpoint counts a non-finite error."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=np.inf)
    return np.argsort(-v, axis=1, kind="stable")


@dataclass(frozen=True)
class Normal:
    """Each sensor's median [n] and robust spread [n] over the normal training rows (`deviation`)."""

    median: np.ndarray
    spread: np.ndarray

    @classmethod
    def of(cls, train: np.ndarray) -> Normal:
        rows = np.asarray(train, dtype=np.float64)
        median = np.median(rows, axis=0)
        mad = 1.4826 * np.median(np.abs(rows - median), axis=0)
        # a sensor that sits still on most rows has MAD 0; its central 98 % still says how far it moves
        low, high = np.quantile(rows, [0.01, 0.99], axis=0)
        spread = np.maximum(mad, SPREAD_FLOOR * (high - low) / NORMAL_98_WIDTH)
        return cls(median, np.where(spread > 0, spread, 1.0))

    def deviation(self, rows: np.ndarray) -> np.ndarray:
        return ((np.asarray(rows, dtype=np.float64) - self.median) / self.spread) ** 2


def method_orders(
    version: Version, rows: np.ndarray, seed: int = SEED, normal: Normal | None = None
) -> dict[str, np.ndarray]:
    """Method -> int [N, n]: every method's full order of each row's sensors (attention only where the
    version has an explainer, deviation only given the `normal` rows' statistics)."""
    error = run_graph(version.scorer, "sensor_error", rows)
    orders = {"endpoint": order_rows(rows, error, version.low, version.high, rows.shape[1])}
    if version.explainer is not None:
        orders["attention"] = descending(run_graph(version.explainer, "attention", rows))
    orders["error"] = descending(error)
    orders["pca"] = descending(version.pca.score(rows.astype(np.float64))[1])
    if normal is not None:
        orders["deviation"] = descending(normal.deviation(rows))
    orders["random"] = descending(np.random.default_rng(seed).random(rows.shape))
    return orders


def rank_scores(order: np.ndarray) -> np.ndarray:
    """float64 [N, n]: an order as scores that `ranking_metrics` ranks the same way (n − position), so
    the endpoint's order, which is not a sort by one score, is judged by the same code."""
    n = order.shape[1]
    scores = np.empty(order.shape, dtype=np.float64)
    np.put_along_axis(scores, order, np.broadcast_to(np.arange(n, 0, -1, dtype=np.float64), order.shape), 1)
    return scores


def ranking_quality(
    orders: Mapping[str, np.ndarray],
    fault_sensors: Sequence[Sequence[int]],
    kinds: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """Method -> {"all": metrics, kind: metrics, ...}: `ranking_metrics` of each order [N, n] against
    the N rows' fault sensors; per kind where `kinds` [N] names each row's."""
    scores = {method: rank_scores(order) for method, order in orders.items()}
    local = dict(enumerate(fault_sensors))
    if kinds is None:
        return {method: {"all": ranking_metrics(s, local)} for method, s in scores.items()}
    return ranking_by_kind(scores, local, kinds)


def with_reference(rows: np.ndarray, order: np.ndarray, k: int, reference: np.ndarray) -> np.ndarray:
    """Rows [N, n] with each row's first k sensors of `order` set to their `reference`: one value per
    sensor [n] (the training median) or per row and sensor [N, n] (the value the model expected)."""
    out = np.array(rows, dtype=np.float32)
    top = order[:, :k]
    ref = np.asarray(reference, dtype=np.float32)
    values = ref[top] if ref.ndim == 1 else np.take_along_axis(ref, top, axis=1)
    np.put_along_axis(out, top, values, axis=1)
    return out


def score_fall(
    version: Version,
    rows: np.ndarray,
    orders: Mapping[str, np.ndarray],
    reference: np.ndarray,
    ks: Sequence[int] = DELETION_KS,
) -> dict[str, dict[str, float | None]]:
    """Method -> {k: mean over rows of 1 − score(first k sensors set to their reference) / score(row)},
    k capped at n; rows whose own score is not finite and positive are left out (no fall to measure)."""
    before = run_graph(version.scorer, "score", rows)
    usable = np.isfinite(before) & (before > 0)
    capped = sorted({min(k, rows.shape[1]) for k in ks})
    out: dict[str, dict[str, float | None]] = {}
    for method, order in orders.items():
        out[method] = {str(k): None for k in capped}
        for k in capped if usable.any() else ():
            replaced = with_reference(rows[usable], order[usable], k, _usable_rows(reference, usable))
            after = run_graph(version.scorer, "score", replaced)
            out[method][str(k)] = float(np.mean(1.0 - after / before[usable]))
    return out


def push_out_of_range(
    rows: np.ndarray, low: np.ndarray, high: np.ndarray, rng: np.random.Generator, n_pushed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 rows [N, n], int pushed sensors [N, n_pushed]): each row's n_pushed random sensors set to
    high + 5·(high − low) + 1, or low − 5·(high − low) − 1 on a random half of them: far outside anything
    seen in training, on any sensor's scale."""
    sensors = np.argsort(rng.random(rows.shape), axis=1)[:, :n_pushed]
    width = (high - low)[sensors]
    up = rng.random(sensors.shape) < 0.5
    values = np.where(
        up, high[sensors] + GROSS_RANGES * width + 1.0, low[sensors] - GROSS_RANGES * width - 1.0
    )
    out = np.array(rows, dtype=np.float32)
    np.put_along_axis(out, sensors, values.astype(np.float32), axis=1)
    return out, sensors


def named_first(order: np.ndarray, pushed: np.ndarray) -> float:
    """Share of rows whose first len(pushed) sensors in `order` are exactly the pushed ones."""
    k = pushed.shape[1]
    return float(np.mean(np.all(np.sort(order[:, :k], axis=1) == np.sort(pushed, axis=1), axis=1)))


def subsample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices: all of `rows`, or `limit` of them drawn without replacement, in order."""
    return rows if rows.size <= limit else np.sort(rng.choice(rows, size=limit, replace=False))


def deletion(
    version: Version, test: np.ndarray, labels: np.ndarray, normal: Normal, seed: int = SEED
) -> dict[str, Any] | None:
    """§1 on up to MAX_DELETION_ROWS anomalous test rows; None when the set has none."""
    rows = subsample(np.flatnonzero(labels == 1), MAX_DELETION_ROWS, np.random.default_rng(seed))
    if rows.size == 0:
        return None
    x = test[rows]
    # the value the model expected, where the explainer graph outputs it: the normal value for the row's
    # own operating state; else the training median, which can itself be abnormal in a mode
    expected = _expected(version, x)
    reference, replacement = (
        (normal.median, "training median") if expected is None else (expected, "expected")
    )
    fall = score_fall(version, x, method_orders(version, x, seed, normal), reference)
    # the endpoint's order differs from the error ranking's only on these rows
    outside = int(np.count_nonzero(out_of_range(x, version.low, version.high).any(axis=1)))
    return {"rows": int(rows.size), "out_of_range_rows": outside, "replacement": replacement, "fall": fall}


def _expected(version: Version, rows: np.ndarray) -> np.ndarray | None:
    """float64 [N, n]: the explainer graph's `expected` output, or None without one."""
    explainer = version.explainer
    if explainer is None or "expected" not in {o.name for o in explainer.get_outputs()}:
        return None
    return run_graph(explainer, "expected", rows)


def _usable_rows(reference: np.ndarray, usable: np.ndarray) -> np.ndarray:
    return reference if np.ndim(reference) == 1 else reference[usable]


def gross_outliers(
    version: Version, test: np.ndarray, labels: np.ndarray, seed: int = SEED, normal: Normal | None = None
) -> dict[str, Any] | None:
    """§2's gross outliers from up to MAX_GROSS_ROWS normal test rows; None when the set has none."""
    rng = np.random.default_rng(seed)
    rows = subsample(np.flatnonzero(labels == 0), MAX_GROSS_ROWS, rng)
    if rows.size == 0:
        return None
    n_pushed = min(GROSS_SENSORS, test.shape[1])
    x, pushed = push_out_of_range(test[rows], version.low, version.high, rng, n_pushed)
    orders = method_orders(version, x, seed, normal)
    return {
        "rows": int(rows.size),
        "pushed": n_pushed,
        "named_first": {method: named_first(order, pushed) for method, order in orders.items()},
    }


def explain_set(
    version_dir: Path,
    train: np.ndarray,
    test: np.ndarray,
    labels: np.ndarray,
    fault_sensors: Mapping[int, Sequence[int]] | None = None,
    kinds: np.ndarray | None = None,
    seed: int = SEED,
) -> dict[str, Any]:
    """Every measure for one set: rankings where the set labels fault sensors (`fault_sensors`, row ->
    sensors; `kinds` [N test rows] for per-kind figures), deletion and gross outliers everywhere; `train`
    (the normal training rows) gives the deviation method its medians and spreads, and deletion its
    median where the version has no expected value."""
    version = open_version(version_dir)
    normal = Normal.of(train)
    out: dict[str, Any] = {"rankings": None}
    if fault_sensors:
        rows = sorted(fault_sensors)
        out["rankings"] = ranking_quality(
            method_orders(version, test[rows], seed, normal),
            [fault_sensors[r] for r in rows],
            None if kinds is None else np.asarray(kinds, dtype=object)[rows],
        )
        out["ranked_rows"] = len(rows)
    out["deletion"] = deletion(version, test, labels, normal, seed)
    out["gross_outliers"] = gross_outliers(version, test, labels, seed, normal)
    return out
