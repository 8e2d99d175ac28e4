"""Small real plants and a small real trained, published model artifact, built once per session (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from factory_anomaly.artifact import Manifest, read_manifest
from factory_anomaly.plant.synthetic import Plant, PlantConfig
from factory_anomaly.training.data import Dataset
from factory_anomaly.training.train import TrainConfig

torch.set_num_threads(1)  # tiny models: threads only add contention on a 2-core machine

TRAINED_ROWS = 20_000
SMALL_CONFIG = TrainConfig(
    hidden=(32, 6),
    max_epochs=30,
    patience=6,
    batch_size=128,
    threads=1,
    progress=False,
    explainer_epochs=6,
    explainer_samples_per_epoch=1024,
    folds=3,
    target_fpr=0.02,  # what a few thousand rows support (the default 1e-4 needs 10 000 normal rows)
)


@pytest.fixture(scope="session")
def small_plant() -> Plant:
    # Fast process dynamics, so that 3 000 calibration rows hold many independent plant states: a quantile
    # from a few hundred autocorrelated rows varies by a factor of 2-3 between stretches of the same run.
    return Plant(
        PlantConfig(n_sensors=40, n_latent=4, n_stations=5, mean_dwell_rows=60, ar_coefficient=0.9),
        plant_seed=11,
    )


def as_dataset(plant: Plant, run, source: Path | None = None) -> Dataset:
    return Dataset(run.values, plant.sensor_names, labels=run.labels, source=source or Path("<memory>"))


@pytest.fixture(scope="session")
def small_config() -> TrainConfig:
    return SMALL_CONFIG


@pytest.fixture(scope="session")
def trained_small(tmp_path_factory: pytest.TempPathFactory, small_plant: Plant) -> Path:
    """A real training run on 20 000 readings of the small plant (10 % labelled faults), published as a
    version of `<store>/small-ae` with a model card evaluated on a separate labelled test recording, and
    the units its sensors.json names for every sensor but the first (so both cases are served)."""
    directory = tmp_path_factory.mktemp("data")
    from factory_anomaly.plant.synthetic import write_run
    from factory_anomaly.training.data import load_sensor_units
    from factory_anomaly.training.evaluate import TestRecording
    from factory_anomaly.training.train import train

    run = small_plant.simulate(TRAINED_ROWS, seed=1, anomaly_rate=0.1)
    paths = write_run(small_plant, run, directory / "train", formats=("npz",))
    records = json.loads(paths["sensors"].read_text())[1:]
    (directory / "units.json").write_text(json.dumps({r["name"]: r["unit"] for r in records}))
    data = Dataset(run.values, small_plant.sensor_names, labels=run.labels, source=paths["npz"])
    test_paths = write_run(
        small_plant,
        small_plant.simulate(3000, seed=2, anomaly_rate=0.1),
        directory / "test",
        formats=("npz",),
    )
    test = TestRecording(test_paths["npz"], test_paths["labels"], test_paths["fault_sensors"])
    store = tmp_path_factory.mktemp("store")
    units = load_sensor_units(directory / "units.json", small_plant.sensor_names)
    return train(data, store / "small-ae", SMALL_CONFIG, test=test, sensor_units=units)


@pytest.fixture(scope="session")
def trained_jittery(tmp_path_factory: pytest.TempPathFactory, small_plant: Plant) -> Path:
    """A version with the jitter channel on (`--alarm-jitter`; off by default) and the velocity channel
    off (on by default): the small plant, 6 000 normal readings, a few epochs and no explainer (what is
    checked is the channel, not the model)."""
    from dataclasses import replace

    from factory_anomaly.training.train import train

    run = small_plant.simulate(6000, seed=4, anomaly_rate=0.0)
    config = replace(SMALL_CONFIG, alarm_jitter=True, alarm_velocity=False, max_epochs=4, explainer=False)
    return train(as_dataset(small_plant, run), tmp_path_factory.mktemp("jitter-store") / "small-ae", config)


@pytest.fixture(scope="session")
def store(trained_small: Path) -> Path:
    """The model store holding `trained_small` (`<store>/small-ae/<version>`)."""
    return trained_small.parent.parent


@pytest.fixture(scope="session")
def manifest(trained_small: Path) -> Manifest:
    return read_manifest(trained_small)
