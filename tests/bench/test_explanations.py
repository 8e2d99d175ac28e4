"""Issue 16's explanation measures: each piece on hand-made arrays, then on the small trained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.quality import SHARED_DATA, explanation_tables
from factory_anomaly.plant.synthetic import Plant, Run
from factory_anomaly.training.explanation_quality import (
    METHODS,
    NORMAL_98_WIDTH,
    SPREAD_FLOOR,
    Normal,
    Version,
    descending,
    explain_set,
    gross_outliers,
    named_first,
    open_version,
    push_out_of_range,
    rank_scores,
    ranking_quality,
    read_fault_sensors,
    score_fall,
    with_reference,
)
from factory_anomaly.training.metrics import ranking_metrics

SMD_SET = "smd-machine-1-7"


# --- on hand-made arrays ----------------------------------------------------------------------------------


def test_an_order_is_judged_as_ranking_metrics_judges_its_scores() -> None:
    errors = np.array([[0.3, 0.2, 0.9, 0.1], [0.5, 0.5, 0.0, 0.7], [0.1, 0.2, 0.3, 0.4]])
    truth = [[0, 2], [1], [0, 1, 3]]
    ours = ranking_quality({"error": descending(errors)}, truth)["error"]["all"]
    assert ours == ranking_metrics(errors, dict(enumerate(truth)))
    # by hand, row 0 alone: order 2, 0, 1, 3 names both fault sensors first
    first = ranking_quality({"m": descending(errors[:1])}, truth[:1])["m"]["all"]
    assert first["hitrate@100%"] == 1.0 and first["ndcg@150%"] == pytest.approx(1.0)
    # an order that is no sort by one score: 2, 1, 0, 3 against {0, 2}
    order = np.array([[2, 1, 0, 3]])
    np.testing.assert_array_equal(rank_scores(order), [[2.0, 3.0, 4.0, 1.0]])
    m = ranking_quality({"m": order}, [[0, 2]])["m"]["all"]
    assert m["hitrate@100%"] == 0.5 and m["hitrate@150%"] == 1.0  # k = 2, then 3
    assert m["ndcg@100%"] == pytest.approx(1.0 / (1.0 + 1.0 / np.log2(3)))


def test_deviation_counts_robust_spreads_from_the_training_median() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(4000, 3)) * [1.0, 10.0, 1.0] + [0.0, 100.0, 5.0]
    train[:, 2] = 5.0  # a sensor that never moved: no spread at all, so one unit, never zero
    train[:20, 0] = 1e6  # a few wild training rows move neither the median nor the spread
    normal = Normal.of(train)
    np.testing.assert_allclose(normal.median, [0.0, 100.0, 5.0], atol=0.3)
    np.testing.assert_allclose(normal.spread[:2], [1.0, 10.0], rtol=0.06)
    assert normal.spread[2] == 1.0
    # 4 spreads off on the first sensor outranks 3 on the second, whatever their units
    row = np.array([[4.0, 130.0, 5.0]])
    np.testing.assert_array_equal(descending(normal.deviation(row)), [[0, 1, 2]])


def test_a_sensor_still_on_most_rows_gets_a_spread_from_its_central_98_percent() -> None:
    """Its MAD is 0 (70 % of rows on one value), so the floor decides: SPREAD_FLOOR of its 1-99 % range in
    standard deviations of a normal."""
    rng = np.random.default_rng(1)
    train = np.full((4000, 1), 3.0)
    train[:1200, 0] += rng.normal(size=1200) * 2.0
    normal = Normal.of(train)
    low, high = np.quantile(train[:, 0], [0.01, 0.99])
    assert high - low > 1.0
    assert normal.spread[0] == pytest.approx(SPREAD_FLOOR * (high - low) / NORMAL_98_WIDTH)


def test_ranking_quality_splits_by_fault_kind() -> None:
    order = np.array([[0, 1, 2], [2, 1, 0], [1, 0, 2]])
    by_kind = ranking_quality({"m": order}, [[0], [0], [1]], np.array(["spike", "drift", "spike"], object))
    assert set(by_kind["m"]) == {"all", "spike", "drift"}
    assert by_kind["m"]["spike"]["hitrate@100%"] == 1.0 and by_kind["m"]["drift"]["hitrate@100%"] == 0.0
    assert by_kind["m"]["all"]["n_rows_ranked"] == 3


def test_a_non_finite_value_ranks_first_as_the_endpoint_counts_it() -> None:
    assert descending(np.array([[0.1, np.nan, 0.5, 0.5]])).tolist() == [[1, 2, 3, 0]]


def test_with_reference_sets_only_each_rows_first_k_sensors() -> None:
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    order = np.array([[3, 0, 1, 2], [1, 2, 3, 0], [0, 1, 2, 3]])
    median = np.array([-1.0, -2.0, -3.0, -4.0])
    out = with_reference(rows, order, 2, median)
    np.testing.assert_array_equal(out, [[-1, 1, 2, -4], [4, -2, -3, 7], [-1, -2, 10, 11]])
    np.testing.assert_array_equal(rows[0], [0, 1, 2, 3])  # the input is left alone
    expected = -rows  # a value per row and sensor: what the model expected there
    out = with_reference(rows, order, 1, expected)
    np.testing.assert_array_equal(out, [[0, 1, 2, -3], [4, -5, 6, 7], [-8, 9, 10, 11]])


def test_pushed_sensors_land_far_outside_their_training_range() -> None:
    low, high = np.array([0.0, 10.0, -5.0, 2.0, 0.0]), np.array([1.0, 20.0, 5.0, 2.0, 100.0])
    rows = np.tile(((low + high) / 2).astype(np.float32), (400, 1))
    out, pushed = push_out_of_range(rows, low, high, np.random.default_rng(0), 3)
    assert pushed.shape == (400, 3) and all(len(set(p)) == 3 for p in pushed.tolist())
    width = high - low
    far = np.maximum(low - out, out - high) >= 5 * width + 1 - 1e-4
    for i in range(400):
        assert set(np.flatnonzero(far[i]).tolist()) == set(pushed[i].tolist())
    above = (np.take_along_axis(out, pushed, 1) > high[pushed]).mean()
    assert 0.4 < above < 0.6  # about half pushed below
    assert named_first(np.array([[2, 0, 1, 3], [2, 3, 0, 1]]), np.array([[0, 1, 2], [0, 1, 2]])) == 0.5


def test_the_fault_sensor_reader_parses_the_shared_data_readme_format(tmp_path: Path) -> None:
    """README: `test_fault_sensors.json` = which metrics a labelled anomaly involves, 0-based, by row."""
    path = tmp_path / "test_fault_sensors.json"
    path.write_text(json.dumps({"837": [0, 5, 8], "838": [8, 5, 0, 5], "900": [], "2": [37]}))
    assert read_fault_sensors(path, n_rows=1000, n_sensors=38) == {2: [37], 837: [0, 5, 8], 838: [0, 5, 8]}


@pytest.mark.skipif(not (SHARED_DATA / SMD_SET).is_dir(), reason=f"{SHARED_DATA / SMD_SET} is not here")
def test_the_fault_sensor_reader_reads_a_published_smd_file() -> None:
    import pandas as pd

    n_rows = len(pd.read_parquet(SHARED_DATA / SMD_SET / "test.parquet", columns=["label"]))
    labels = read_fault_sensors(SHARED_DATA / SMD_SET / "test_fault_sensors.json", n_rows, 38)
    assert len(labels) > 100 and all(0 <= s < 38 for sensors in labels.values() for s in sensors)


# --- on the small trained model ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def version(trained_small: Path) -> Version:
    return open_version(trained_small)


@pytest.fixture(scope="module")
def test_run(small_plant: Plant) -> Run:
    return small_plant.simulate(3000, seed=2, anomaly_rate=0.1)


@pytest.fixture(scope="module")
def train_rows(small_plant: Plant) -> np.ndarray:
    return small_plant.simulate(4000, seed=1, anomaly_rate=0.0).values


def test_setting_the_fault_sensors_to_median_takes_more_score_away_than_random_ones(
    version: Version, test_run: Run, train_rows: np.ndarray
) -> None:
    """Faults injected into normal rows: 3 sensors each moved 8 training standard deviations."""
    rng = np.random.default_rng(1)
    x = test_run.values[test_run.labels == 0][:500].copy()
    faulty = np.argsort(rng.random(x.shape), axis=1)[:, :3]
    moved = 8.0 * version.pca.standardiser.scale[faulty] * rng.choice([-1.0, 1.0], faulty.shape)
    np.put_along_axis(x, faulty, np.take_along_axis(x, faulty, axis=1) + moved, axis=1)
    rest = np.argsort(rng.random(x.shape), axis=1)
    truth = np.array([np.concatenate([f, r[~np.isin(r, f)]]) for f, r in zip(faulty, rest, strict=True)])
    random = np.argsort(rng.random(x.shape), axis=1)
    fall = score_fall(version, x, {"truth": truth, "random": random}, np.median(train_rows, axis=0))
    for k in ("1", "3", "5"):
        assert fall["truth"][k] > fall["random"][k] + 0.1, (k, fall)
    assert fall["truth"]["3"] > 0.5, fall  # all three set back: most of the score is gone


def test_gross_outliers_are_named_first_by_the_endpoint(version: Version, test_run: Run) -> None:
    named = gross_outliers(version, test_run.values, test_run.labels)
    assert named is not None and named["rows"] == 500 and named["pushed"] == 3
    assert named["named_first"]["endpoint"] == 1.0
    assert named["named_first"]["random"] < 0.05


def test_explain_set_measures_every_method_and_renders_the_goals(
    trained_small: Path, test_run: Run, train_rows: np.ndarray
) -> None:
    e = explain_set(trained_small, train_rows, test_run.values, test_run.labels, test_run.fault_sensors,
                    test_run.fault_kinds)  # fmt: skip
    assert set(e["rankings"]) == set(METHODS)  # trained_small has an explainer: attention too
    assert e["ranked_rows"] == len(test_run.fault_sensors)
    assert "all" in e["rankings"]["endpoint"] and len(e["rankings"]["endpoint"]) > 2  # per fault kind
    assert e["deletion"]["replacement"] == "expected"  # the small model's explainer outputs it
    assert set(e["deletion"]["fall"]) == set(METHODS)
    assert set(e["deletion"]["fall"]["error"]) == {"1", "3", "5"}
    assert e["deletion"]["rows"] == int(test_run.labels.sum())
    assert e["gross_outliers"]["named_first"]["endpoint"] == 1.0
    lines = explanation_tables([{"set": "plant", "explanations": e}, {"set": "mvtec", "explanations": None}])
    text = "\n".join(lines)
    assert "endpoint ≥ best of error, PCA" in text and "| plant | all |" in text
    # one row per fault kind and "all", one deletion row, one gross-outlier row
    assert text.count("\n| plant |") == len(e["rankings"]["endpoint"]) + 2
