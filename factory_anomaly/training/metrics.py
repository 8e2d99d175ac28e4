"""Evaluation metrics for detection (is this row anomalous?) and diagnosis (which sensors are at fault?).

Pure numpy / scikit-learn, so evaluation reports can be recomputed without torch. Every function returns
plain Python values (``json.dumps`` accepts them) and uses the project's rule: anomalous iff
``score > threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

NORMAL_FAULT_KINDS: frozenset[str] = frozenset({"", "none"})
"""Fault-kind values (besides ``None``) that mean "no fault"."""
UNKNOWN_FAULT_KIND = "unknown"
"""Group for anomalous rows whose fault kind is missing."""


def detection_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    fault_kinds: np.ndarray | None = None,
) -> dict[str, Any]:
    """Threshold-free ranking quality (ROC AUC, average precision) and the confusion counts at ``threshold``.

    ``scores``: (n,) finite floats; ``labels``: (n,) 0 normal / 1 anomalous. Degenerate cases return ``None``
    instead of raising, so a report over a one-class slice still renders: ``roc_auc`` and ``pr_auc`` when
    only one class is present, ``recall`` (and ``f1``) without anomalous rows, ``false_alarm_rate`` without
    normal rows. ``precision`` is 0.0 when nothing is flagged.

    ``fault_kinds``: optional (n,) strings. Labels stay the ground truth: kinds only group the anomalous rows
    (kinds on normal rows are ignored; an anomalous row without a kind counts as ``"unknown"``). Each kind
    gets ``recall`` at the threshold, ``n_rows`` and ``roc_auc`` of that kind's rows against all normal
    rows, which compares detectors per fault kind independently of the threshold.
    """
    s, y = _validated_scores_labels(scores, labels)
    flagged = s > threshold
    positive = y == 1
    n_pos = int(positive.sum())
    n_neg = y.size - n_pos
    tp = int(np.count_nonzero(flagged & positive))
    fp = int(np.count_nonzero(flagged & ~positive))
    fn = n_pos - tp

    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_pos if n_pos else None
    if recall is None:
        f1 = None
    else:
        f1 = 2.0 * precision * recall / (precision + recall) if precision + recall else 0.0
    both_classes = 0 < n_pos < y.size
    result: dict[str, Any] = {
        "n_rows": int(y.size),
        "n_anomalous": n_pos,
        "roc_auc": float(roc_auc_score(y, s)) if both_classes else None,
        "pr_auc": float(average_precision_score(y, s)) if both_classes else None,
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarm_rate": fp / n_neg if n_neg else None,
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
    }
    if fault_kinds is not None:
        result["recall_by_fault_kind"] = _by_fault_kind(s, positive, flagged, fault_kinds)
    return result


def _validated_scores_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    if s.size == 0:
        raise ValueError("no rows to evaluate")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores hold non-finite values (NaN or inf)")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    return s, y.astype(np.int64)


def _by_fault_kind(
    s: np.ndarray, positive: np.ndarray, flagged: np.ndarray, fault_kinds: np.ndarray
) -> dict[str, dict[str, Any]]:
    kinds = np.asarray(fault_kinds, dtype=object)
    if kinds.shape != s.shape:
        raise ValueError(f"fault_kinds must have shape {s.shape}, got {kinds.shape}")
    names = np.array([_kind_name(k) for k in kinds], dtype=object)
    normal_scores = s[~positive]
    out: dict[str, dict[str, Any]] = {}
    for kind in sorted(set(names[positive])):
        rows = positive & (names == kind)
        n_rows = int(rows.sum())
        if normal_scores.size:
            kind_scores = s[rows]
            both = np.concatenate([normal_scores, kind_scores])
            truth = np.concatenate([np.zeros(normal_scores.size), np.ones(kind_scores.size)])
            auc: float | None = float(roc_auc_score(truth, both))
        else:
            auc = None
        out[kind] = {
            "recall": int(np.count_nonzero(flagged & rows)) / n_rows,
            "n_rows": n_rows,
            "roc_auc": auc,
        }
    return out


def _kind_name(kind: object) -> str:
    missing = kind is None or (isinstance(kind, float) and math.isnan(kind))
    if missing or str(kind).strip().lower() in NORMAL_FAULT_KINDS:
        return UNKNOWN_FAULT_KIND
    return str(kind)


def ranking_metrics(
    sensor_errors: np.ndarray,
    fault_sensors: Mapping[int, Sequence[int]],
    percentages: Sequence[float] = (1.0, 1.5),
) -> dict[str, Any]:
    """Root-cause ranking quality: HitRate@P% and NDCG@P% of per-sensor errors against the faulty sensors.

    ``sensor_errors``: (n_rows, n_sensors) finite per-sensor contributions to the score; ``fault_sensors``:
    row index -> ground-truth faulty sensor indices G (duplicates ignored). Sensors are ranked by error,
    descending; ties keep the lower sensor index first. With ``k = floor(P * |G|)``:
    ``HitRate@P = |top_k & G| / |G|`` and ``NDCG@P = DCG / IDCG`` with
    ``DCG = sum_{i <= k} rel_i / log2(i + 1)`` and ``IDCG = sum_{i <= min(k, |G|)} 1 / log2(i + 1)``;
    both are 0.0 when ``k == 0`` (P < 1, |G| = 1). ``k`` is computed as ``floor(P * |G| + 1e-9)`` so that
    e.g. P = 2/3, |G| = 3 gives 2 despite float rounding, and is capped at ``n_sensors``.

    Averaged over every listed row with a non-empty G, whether or not the detector flagged it, so a
    detector is not rewarded for flagging only the easy rows. Rows with an empty G are skipped and counted
    in ``n_rows_skipped``; with no ranked rows every metric is ``None``.
    """
    errors = np.asarray(sensor_errors, dtype=np.float64)
    if errors.ndim != 2:
        raise ValueError(f"sensor_errors must be 2-D (rows, sensors), got shape {errors.shape}")
    n_rows, n_sensors = errors.shape
    pcts = [float(p) for p in percentages]
    if not pcts or any(not (p > 0.0 and math.isfinite(p)) for p in pcts):
        raise ValueError(f"percentages must be positive finite fractions (1.0 = 100 %), got {percentages}")

    rows: list[int] = []
    truth: list[np.ndarray] = []
    skipped = 0
    for row, sensors in fault_sensors.items():
        r = int(row)
        if not 0 <= r < n_rows:
            raise ValueError(f"fault_sensors row {row} is outside sensor_errors' {n_rows} rows")
        g = np.unique(np.asarray(list(sensors), dtype=np.int64))
        if g.size == 0:
            skipped += 1
            continue
        if g[0] < 0 or g[-1] >= n_sensors:
            raise ValueError(f"fault_sensors row {row} names sensors outside 0..{n_sensors - 1}")
        rows.append(r)
        truth.append(g)

    result: dict[str, Any] = {}
    if not rows:
        for p in pcts:
            result[f"hitrate@{_pct(p)}"] = None
            result[f"ndcg@{_pct(p)}"] = None
    else:
        ranked = errors[rows]
        if not np.all(np.isfinite(ranked)):
            raise ValueError("sensor_errors hold non-finite values in ranked rows")
        relevant = np.zeros(ranked.shape, dtype=bool)
        relevant[np.repeat(np.arange(len(rows)), [g.size for g in truth]), np.concatenate(truth)] = True
        n_true = relevant.sum(axis=1)
        top_ks = {p: np.minimum(np.floor(p * n_true + 1e-9).astype(np.int64), n_sensors) for p in pcts}
        depth = max(1, max(int(k.max()) for k in top_ks.values()))  # only the ranks any metric looks at
        order = np.argsort(-ranked, axis=1, kind="stable")[:, :depth]
        rel_ranked = np.take_along_axis(relevant, order, axis=1)
        discount = 1.0 / np.log2(np.arange(2, depth + 2))
        ideal = np.concatenate([[0.0], np.cumsum(discount)])  # ideal[j] = IDCG of j relevant items
        position = np.arange(depth)
        for p, k in top_ks.items():
            in_top = rel_ranked & (position[None, :] < k[:, None])
            hits = in_top.sum(axis=1)
            dcg = (in_top * discount[None, :]).sum(axis=1)
            idcg = ideal[np.minimum(k, n_true)]
            ndcg = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
            result[f"hitrate@{_pct(p)}"] = float(np.mean(hits / n_true))
            result[f"ndcg@{_pct(p)}"] = float(np.mean(ndcg))
    result["n_rows_ranked"] = len(rows)
    result["n_rows_skipped"] = skipped
    return result


def _pct(p: float) -> str:
    return f"{p * 100:g}%"


def ranking_by_kind(
    rankings: Mapping[str, np.ndarray],
    fault_sensors: Mapping[int, Sequence[int]],
    fault_kinds: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """`ranking_metrics` of several per-sensor rankings (method -> [n_rows, n_sensors]), overall ("all")
    and per fault kind of the ranked rows; `fault_kinds` [n_rows] names each row's kind."""
    kinds = np.asarray(fault_kinds, dtype=object)
    by_kind: dict[str, dict[int, Sequence[int]]] = {}
    for row, sensors in fault_sensors.items():
        by_kind.setdefault(_kind_name(kinds[int(row)]), {})[int(row)] = sensors
    out: dict[str, dict[str, Any]] = {}
    for method, scores in rankings.items():
        out[method] = {"all": ranking_metrics(scores, fault_sensors)}
        for kind in sorted(by_kind):
            out[method][kind] = ranking_metrics(scores, by_kind[kind])
    return out


def binomial_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) interval of a rate observed as `successes` out of `trials`."""
    from scipy.stats import beta

    if trials <= 0:
        return (math.nan, math.nan)
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def poisson_interval(count: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval of a Poisson mean observed as `count` events."""
    from scipy.stats import chi2

    alpha = 1.0 - confidence
    low = 0.0 if count == 0 else float(chi2.ppf(alpha / 2, 2 * count) / 2)
    return low, float(chi2.ppf(1 - alpha / 2, 2 * count + 2) / 2)


def bootstrap_roc_auc(
    scores: np.ndarray, labels: np.ndarray, resamples: int = 200, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of ROC-AUC over bootstrap resamples of the rows (each keeps both classes)."""
    s, y = _validated_scores_labels(scores, labels)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, y.size, y.size)
        if 0 < y[pick].sum() < y.size:
            values.append(roc_auc_score(y[pick], s[pick]))
    if not values:
        return (math.nan, math.nan)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)
