"""The synthetic plant: structure, determinism, exact ground truth, and faults that range checks miss."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from factory_anomaly.plant.synthetic import FAULT_KINDS, NORMAL, Plant, PlantConfig, write_run
from factory_anomaly.training.data import load_dataset, load_fault_sensors, load_labels


@pytest.fixture(scope="module")
def plant() -> Plant:
    return Plant(PlantConfig(n_sensors=300, n_stations=10, mean_dwell_rows=300), plant_seed=3)


@pytest.fixture(scope="module")
def faulty(plant: Plant):
    return plant.simulate(12_000, seed=1, anomaly_rate=0.1)


def test_layout_groups_units_quantisation_and_near_constant(plant: Plant, faulty) -> None:
    kinds = set(plant.kinds)
    assert {
        "temperature",
        "pressure",
        "vibration",
        "current",
        "flow",
        "speed",
        "valve",
        "power",
        "voltage",
    } <= kinds
    assert len(set(plant.sensor_names)) == 300
    records = plant.describe_sensors()
    assert {r["unit"] for r in records} >= {"degC", "bar", "mm/s", "A", "rpm", "V"}
    quantised = plant.quantum > 0
    assert 0.1 < quantised.mean() < 0.3
    values = faulty.values
    for j in np.flatnonzero(quantised):  # readings sit on the sensor's grid
        steps = values[:, j] / plant.quantum[j]
        np.testing.assert_allclose(
            steps, np.round(steps), atol=1e-3 * max(1.0, float(np.abs(steps).max())) * 1e-2
        )
    volts = np.flatnonzero(plant.kinds == "voltage")
    assert volts.size >= 1
    assert all(len(np.unique(values[:, j])) <= 5 for j in volts)  # nearly constant


def test_process_has_modes_and_temporal_dynamics(plant: Plant) -> None:
    run = plant.simulate(6000, seed=4)
    assert len(np.unique(run.modes)) >= 3
    z = run.latent[:, 0]
    lag1 = np.corrcoef(z[:-1], z[1:])[0, 1]
    assert lag1 > 0.9  # autoregressive, not white noise
    assert np.all(np.diff(run.timestamps.astype(np.int64)) == 1000)  # 1 s apart, ordered


def test_same_seeds_same_run_other_seed_other_run_same_plant(plant: Plant) -> None:
    a = plant.simulate(500, seed=7, anomaly_rate=0.1)
    b = Plant(plant.config, plant_seed=3).simulate(500, seed=7, anomaly_rate=0.1)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.fault_sensors == b.fault_sensors
    c = plant.simulate(500, seed=8)
    assert not np.array_equal(a.values, c.values)


def test_every_fault_kind_with_exact_ground_truth(plant: Plant, faulty) -> None:
    assert abs(faulty.labels.mean() - 0.1) < 0.02
    for kind in FAULT_KINDS:
        assert (faulty.fault_kinds == kind).sum() > 0, kind
    anomalous = np.flatnonzero(faulty.labels)
    assert sorted(faulty.fault_sensors) == anomalous.tolist()
    assert set(faulty.fault_kinds[faulty.labels == 0]) == {NORMAL}
    # ground truth is exact: against the same run without faults, only the listed sensors changed
    clean = plant.simulate(12_000, seed=1, anomaly_rate=0.0).values
    for kind in ("spike", "stuck", "drift", "noise_burst", "correlation_break"):
        for r in np.flatnonzero(faulty.fault_kinds == kind)[:50]:
            changed = set(np.flatnonzero(faulty.values[r] != clean[r]).tolist())
            assert changed <= set(faulty.fault_sensors[r]), (kind, r)
    normal = faulty.labels == 0
    np.testing.assert_array_equal(faulty.values[normal], clean[normal])


def test_stuck_sensors_hold_one_value(faulty) -> None:
    rows = np.flatnonzero(faulty.fault_kinds == "stuck")
    first = rows[0]
    sensors = faulty.fault_sensors[first]
    run_end = first
    while run_end + 1 in faulty.fault_sensors and faulty.fault_kinds[run_end + 1] == "stuck":
        run_end += 1
    held = faulty.values[first : run_end + 1, sensors]
    assert (held == held[0]).all()


def test_most_faults_stay_inside_each_sensors_normal_range(plant: Plant, faulty) -> None:
    """Range checks alone must not find most faults: at-fault sensors stay within the training range."""
    normal = plant.simulate(12_000, seed=2).values
    low, high = normal.min(axis=0), normal.max(axis=0)
    inside = {}
    for kind in FAULT_KINDS:
        rows = np.flatnonzero(faulty.fault_kinds == kind)
        inside[kind] = np.mean(
            [np.all((faulty.values[r, s] >= low[s]) & (faulty.values[r, s] <= high[s])) for r in rows
             for s in [faulty.fault_sensors[r]]]
        )  # fmt: skip
    plausible = [k for k, share in inside.items() if share > 0.7]
    assert len(plausible) >= 4, inside  # all but the whole-process excursion, by design
    assert inside["correlation_break"] > 0.8 and inside["stuck"] > 0.9


def test_write_run_files_agree_and_load(plant: Plant, tmp_path) -> None:
    run = plant.simulate(400, seed=5, anomaly_rate=0.1)
    paths = write_run(plant, run, tmp_path)
    csv, parquet, npz = (load_dataset(paths[k]) for k in ("csv", "parquet", "npz"))
    for data in (csv, parquet, npz):
        assert data.sensor_names == plant.sensor_names
        np.testing.assert_array_equal(data.labels, run.labels)
        np.testing.assert_allclose(data.values, run.values, rtol=1e-6)
    np.testing.assert_array_equal(csv.timestamps, parquet.timestamps)
    header = pd.read_csv(paths["csv"], nrows=0).columns.tolist()
    assert header[0] == "timestamp" and header[-1] == "label" and header[1:-1] == list(plant.sensor_names)
    labels, kinds = load_labels(paths["labels"], run.values.shape[0])
    np.testing.assert_array_equal(labels, run.labels)
    assert kinds is not None and list(kinds) == list(run.fault_kinds)
    assert load_fault_sensors(paths["fault_sensors"], 400, 300) == run.fault_sensors
    meta = json.loads(paths["plant"].read_text())
    assert meta["plant_seed"] == 3 and meta["anomalous_rows"] == int(run.labels.sum())


def test_a_spaced_run_keeps_its_faults_apart_and_spreads_them_over_the_kinds(plant: Plant) -> None:
    from factory_anomaly.training.episode_quality import fault_episodes

    run = plant.simulate(30_000, seed=5, anomaly_rate=0.1, episode_gap=600)
    found = fault_episodes(run.labels, run.fault_kinds)
    starts = np.array([a for a, _, _ in found])
    stops = np.array([b for _, b, _ in found])
    assert (starts[1:] - stops[:-1] >= 600).all()  # every fault is judged on its own
    counts = pd.Series([k for _, _, k in found]).value_counts()
    assert set(counts.index) == set(FAULT_KINDS) and counts.max() - counts.min() <= 1  # by count, not rows
    default = plant.simulate(30_000, seed=5, anomaly_rate=0.1)  # by rows: spikes are most of the faults
    kinds = pd.Series([k for _, _, k in fault_episodes(default.labels, default.fault_kinds)])
    assert kinds.value_counts().idxmax() == "spike"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="at least 2 sensors"):
        PlantConfig(n_sensors=1)
    with pytest.raises(ValueError, match="anomaly_rate"):
        Plant(PlantConfig(n_sensors=20)).simulate(100, anomaly_rate=0.7)
    with pytest.raises(ValueError, match="episode_gap must be at least 10"):
        Plant(PlantConfig(n_sensors=20)).simulate(100, anomaly_rate=0.1, episode_gap=5)
