"""The operator's order of sensors: out of the training range first (furthest first, above or below),
then by error, ties by index; the batch form gives the same order row by row."""

from __future__ import annotations

import numpy as np
import pytest

from factory_anomaly.explain import ranking
from factory_anomaly.explain.ranking import largest, order_rows, order_sensors, out_of_range, range_widths

LOW = np.array([0.0, 0.0, 10.0, 5.0, -1.0])
HIGH = np.array([1.0, 2.0, 20.0, 5.0, 1.0])  # sensor 3 read one value in training


def test_out_of_range_is_in_training_ranges_on_either_side() -> None:
    x = np.array([0.5, 5.0, 5.0, 5.0, 1.5])
    np.testing.assert_allclose(out_of_range(x, LOW, HIGH), [0.0, 1.5, 0.5, 0.0, 0.25])
    # a constant sensor: any move off its value is far out
    assert range_widths(LOW, HIGH)[3] == pytest.approx(5e-6)
    assert out_of_range(np.array([0.5, 1.0, 15.0, 5.001, 0.0]), LOW, HIGH)[3] > 100


def test_out_of_range_sensors_come_first_then_the_largest_errors() -> None:
    x = np.array([0.5, 5.0, 5.0, 5.0, 1.5])  # sensors 1, 2 and 4 out of range: 1.5, 0.5, 0.25 ranges
    error = np.array([9.0, 0.1, 0.2, 3.0, 0.3])
    assert order_sensors(x, error, LOW, HIGH).tolist() == [1, 2, 4, 0, 3]
    assert order_sensors(x, error, LOW, HIGH, 2).tolist() == [1, 2]
    inside = np.array([0.5, 1.0, 15.0, 5.0, 0.0])
    assert order_sensors(inside, error, LOW, HIGH).tolist() == [0, 3, 4, 2, 1]  # by error alone
    tied = np.array([1.0, 1.0, np.nan, 0.5, 1.0])
    assert order_sensors(inside, tied, LOW, HIGH).tolist() == [2, 0, 1, 4, 3]  # NaN largest, ties by index


def test_the_batch_form_matches_row_by_row() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2.0, 22.0, size=(200, 5))
    x[::3] = np.clip(x[::3], LOW, HIGH)  # some rows entirely in range
    error = rng.exponential(size=(200, 5))
    ranked = order_rows(x, error, LOW, HIGH, 3)
    assert ranked.shape == (200, 3)
    for i in range(200):
        assert ranked[i].tolist() == order_sensors(x[i], error[i], LOW, HIGH, 3).tolist()


@pytest.mark.parametrize("partial_from", [0, ranking.PARTIAL_SORT_FROM])  # the partial sort, and the full
def test_largest_is_the_head_of_a_stable_descending_sort(
    partial_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ranking, "PARTIAL_SORT_FROM", partial_from)
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 60))
        values = rng.integers(0, 6, size=n).astype(np.float32)  # many ties
        values[rng.random(n) < 0.1] = np.nan
        values[rng.random(n) < 0.05] = np.inf
        for k in (1, 3, 5, n, n + 2):
            expected = np.argsort(-np.nan_to_num(values, nan=np.inf), kind="stable")[:k]
            np.testing.assert_array_equal(largest(values, k), expected, err_msg=f"{trial} {k} {values}")
