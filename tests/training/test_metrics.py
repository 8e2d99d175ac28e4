"""Detection and sensor-ranking metrics against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from factory_anomaly.training.metrics import detection_metrics, ranking_metrics

# Positives 0.35, 0.8, 0.9; negatives 0.1, 0.4, 0.2.
SCORES = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.2])
LABELS = np.array([0, 0, 1, 1, 1, 0])
KINDS = np.array(["", "none", "drift", "spike", "drift", None], dtype=object)


def test_detection_metrics_hand_example() -> None:
    """Threshold 0.5 flags 0.8 and 0.9: TP 2, FP 0, FN 1.

    ROC AUC: positive-over-negative pairs 2 + 3 + 3 of 9. Average precision: ranked 1, 1, 0, 1, 0, 0 gives
    (1 + 1 + 3/4) / 3.
    """
    m = detection_metrics(SCORES, LABELS, 0.5)
    assert m == pytest.approx(
        {
            "n_rows": 6,
            "n_anomalous": 3,
            "roc_auc": 8 / 9,
            "pr_auc": 2.75 / 3,
            "threshold": 0.5,
            "precision": 1.0,
            "recall": 2 / 3,
            "f1": 0.8,
            "false_alarm_rate": 0.0,
            "true_positives": 2,
            "false_positives": 0,
            "false_negatives": 1,
        }
    )
    json.dumps(m)


def test_threshold_uses_strict_rule() -> None:
    m = detection_metrics(SCORES, LABELS, 0.4)  # 0.4 itself is not flagged
    assert (m["true_positives"], m["false_positives"]) == (2, 0)
    m = detection_metrics(SCORES, LABELS, 0.3)  # flags 0.35, 0.4, 0.8, 0.9
    assert (m["true_positives"], m["false_positives"], m["false_alarm_rate"]) == (3, 1, pytest.approx(1 / 3))
    assert m["precision"] == pytest.approx(0.75)


def test_detection_metrics_by_fault_kind() -> None:
    """drift rows 0.35 and 0.9: one flagged, AUC vs normals (2 + 3) / 6; spike row 0.8: flagged, AUC 1."""
    m = detection_metrics(SCORES, LABELS, 0.5, fault_kinds=KINDS)
    assert m["recall_by_fault_kind"] == {
        "drift": {"recall": 0.5, "n_rows": 2, "roc_auc": pytest.approx(5 / 6)},
        "spike": {"recall": 1.0, "n_rows": 1, "roc_auc": 1.0},
    }
    json.dumps(m)


def test_fault_kind_follows_labels() -> None:
    """A kind on a normal row is ignored; an anomalous row without a kind is grouped as "unknown"."""
    kinds = np.array(["drift", "", "", "spike", "drift", "drift"], dtype=object)
    m = detection_metrics(SCORES, LABELS, 0.5, fault_kinds=kinds)
    assert m["recall_by_fault_kind"] == {
        "drift": {"recall": 1.0, "n_rows": 1, "roc_auc": 1.0},
        "spike": {"recall": 1.0, "n_rows": 1, "roc_auc": 1.0},
        "unknown": {"recall": 0.0, "n_rows": 1, "roc_auc": pytest.approx(2 / 3)},
    }


def test_detection_metrics_degenerate_cases() -> None:
    only_normal = detection_metrics(
        np.array([0.1, 0.7]), np.array([0, 0]), 0.5, fault_kinds=np.array(["", ""])
    )
    assert only_normal["roc_auc"] is None and only_normal["pr_auc"] is None
    assert only_normal["recall"] is None and only_normal["f1"] is None
    assert only_normal["precision"] == 0.0  # one flag, and it is false
    assert only_normal["false_alarm_rate"] == 0.5
    assert only_normal["recall_by_fault_kind"] == {}

    only_anomalous = detection_metrics(
        np.array([0.1, 0.7]), np.array([1, 1]), 0.5, fault_kinds=np.array(["drift", "drift"])
    )
    assert only_anomalous["roc_auc"] is None and only_anomalous["false_alarm_rate"] is None
    assert only_anomalous["recall"] == 0.5
    assert only_anomalous["recall_by_fault_kind"]["drift"]["roc_auc"] is None

    nothing_flagged = detection_metrics(SCORES, LABELS, 10.0)
    assert (nothing_flagged["precision"], nothing_flagged["recall"], nothing_flagged["f1"]) == (0.0, 0.0, 0.0)
    json.dumps([only_normal, only_anomalous, nothing_flagged])


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.array([0.1, np.nan]), np.array([0, 1]), "non-finite"),
        (np.array([0.1, 0.2]), np.array([0, 2]), "labels must be 0"),
        (np.array([0.1, 0.2]), np.array([0, 1, 1]), "equal length"),
        (np.array([]), np.array([]), "no rows"),
    ],
)
def test_detection_metrics_rejects_bad_input(scores: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        detection_metrics(scores, labels, 0.5)


def _dcg(*ranks: int) -> float:
    """Sum of 1 / log2(rank + 1) over the 1-based ranks of relevant sensors."""
    return sum(1 / math.log2(r + 1) for r in ranks)


# Row 0 ranks (tie 0.9 / 0.9 -> sensor 1 before 3): [1, 3, 2, 0, 4]; G = {3, 4}.
# Row 1 ranks [4, 0, 1, 2, 3]; G = {0, 1, 2}. Row 2 has an empty G; row 3 is not listed.
ERRORS = np.array(
    [
        [0.1, 0.9, 0.5, 0.9, 0.0],
        [0.3, 0.2, 0.1, 0.05, 0.4],
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [5.0, 4.0, 3.0, 2.0, 1.0],
    ]
)
FAULTS = {0: [3, 4], 1: [0, 1, 2, 2], 2: []}


def test_ranking_metrics_hand_example() -> None:
    """P = 100 %: row 0 k = 2 hits sensor 3 at rank 2; row 1 k = 3 hits ranks 2, 3.

    P = 150 %: row 0 k = 3, same single hit; row 1 k = floor(4.5) = 4 hits ranks 2, 3, 4 (IDCG stops at
    |G| = 3).
    """
    m = ranking_metrics(ERRORS, FAULTS)
    row0_ndcg = _dcg(2) / _dcg(1, 2)
    assert m == pytest.approx(
        {
            "hitrate@100%": (1 / 2 + 2 / 3) / 2,
            "ndcg@100%": (row0_ndcg + _dcg(2, 3) / _dcg(1, 2, 3)) / 2,
            "hitrate@150%": (1 / 2 + 1) / 2,
            "ndcg@150%": (row0_ndcg + _dcg(2, 3, 4) / _dcg(1, 2, 3)) / 2,
            "n_rows_ranked": 2,
            "n_rows_skipped": 1,
        }
    )
    json.dumps(m)


def test_ranking_with_k_below_ground_truth_size() -> None:
    """|G| = 3, ranking [0, 2, 3, 1]: P = 1/3 -> k = 1, P = 2/3 -> k = 2 (float rounding guarded)."""
    errors = np.array([[0.9, 0.1, 0.8, 0.2]])
    m = ranking_metrics(errors, {0: [0, 2, 3]}, percentages=(1 / 3, 2 / 3, 0.2))
    assert m["hitrate@33.3333%"] == pytest.approx(1 / 3)
    assert m["ndcg@33.3333%"] == pytest.approx(1.0)
    assert m["hitrate@66.6667%"] == pytest.approx(2 / 3)
    assert m["ndcg@66.6667%"] == pytest.approx(1.0)
    assert (m["hitrate@20%"], m["ndcg@20%"]) == (0.0, 0.0)  # k = floor(0.6) = 0


def test_ranking_ties_keep_lower_sensor_first() -> None:
    errors = np.zeros((1, 4))
    assert ranking_metrics(errors, {0: [0]}, percentages=(1.0,))["hitrate@100%"] == 1.0
    assert ranking_metrics(errors, {0: [3]}, percentages=(1.0,))["hitrate@100%"] == 0.0


def test_ranking_without_rows_reports_none() -> None:
    m = ranking_metrics(ERRORS, {2: []})
    assert m == {
        "hitrate@100%": None,
        "ndcg@100%": None,
        "hitrate@150%": None,
        "ndcg@150%": None,
        "n_rows_ranked": 0,
        "n_rows_skipped": 1,
    }


@pytest.mark.parametrize(
    ("faults", "percentages", "message"),
    [
        ({7: [0]}, (1.0,), "outside sensor_errors"),
        ({0: [5]}, (1.0,), "sensors outside"),
        ({0: [-1]}, (1.0,), "sensors outside"),
        ({0: [0]}, (0.0,), "percentages"),
        ({0: [0]}, (), "percentages"),
    ],
)
def test_ranking_rejects_bad_input(
    faults: dict[int, list[int]], percentages: tuple[float, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ranking_metrics(ERRORS, faults, percentages)


def test_ranking_rejects_non_2d_errors() -> None:
    with pytest.raises(ValueError, match="2-D"):
        ranking_metrics(np.zeros(5), {0: [0]})
