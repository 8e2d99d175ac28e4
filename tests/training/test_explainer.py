"""The attention explainer: shapes and invariants, fault injection, training signal, export parity, and
adding an explainer to an existing version."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from factory_anomaly.artifact import read_current, verify_artifact
from factory_anomaly.training.checkpoint import load_trained
from factory_anomaly.training.data import DataError
from factory_anomaly.training.explainer import (
    EXPLAINER_KINDS,
    FaultInjector,
    SensorAttentionExplainer,
    residual_unit,
)
from factory_anomaly.training.export import PARITY_RTOL
from factory_anomaly.training.train import add_explainer, train
from tests.conftest import as_dataset


def test_attention_is_a_distribution_and_scores_match_the_scorer(trained_small: Path, small_plant) -> None:
    scorer = load_trained(trained_small).scorer
    explainer = SensorAttentionExplainer(scorer).eval()
    x = torch.from_numpy(small_plant.simulate(50, seed=8, anomaly_rate=0.3).values)
    with torch.no_grad():
        attention, score, sensor_error, expected = explainer(x)
        want_score, want_error = scorer(x)
        z = (x - scorer.mean) / scorer.scale
        reconstruction = scorer.autoencoder(z) * scorer.scale + scorer.mean  # in the sensors' units
    torch.testing.assert_close(expected, reconstruction, rtol=1e-4, atol=1e-3)
    assert attention.shape == x.shape and (attention >= 0).all()
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(len(x)))
    torch.testing.assert_close(score, want_score)
    torch.testing.assert_close(sensor_error, want_error)
    assert not any(p.requires_grad for p in explainer.scorer.parameters())  # the autoencoder stays frozen
    explainer.train()
    assert not explainer.scorer.training


def test_fault_injector_marks_exactly_the_sensors_it_changed(trained_small: Path, small_plant) -> None:
    scorer = load_trained(trained_small).scorer
    rows = small_plant.simulate(3000, seed=9).values
    injector = FaultInjector.from_training_rows(rows, residual_unit(scorer), seed=1)
    out, mask, kinds = injector.sample(2000)
    assert set(kinds) == set(EXPLAINER_KINDS)
    assert mask.any(axis=1).all()  # every sample has at least one faulty sensor
    changed = out != rows[injector.last_sources]
    assert not (changed & ~mask).any()  # nothing outside the mask moved
    additive = np.isin(kinds, ["spike", "drift", "noise_burst"])
    assert (changed[additive] == mask[additive]).all()  # additive faults move every masked sensor


def test_trained_attention_points_at_injected_faults(trained_small: Path) -> None:
    ranking = verify_artifact(trained_small).training["explainer"]["held_out_ranking"]
    attention, error, random = (ranking[m]["all"]["hitrate@150%"] for m in ("attention", "error", "random"))
    assert attention > 2 * random and attention > 0.6
    assert set(ranking["attention"]) == {"all", *EXPLAINER_KINDS}
    # the test recording's real faults are reported too (per kind, three methods)
    test = verify_artifact(trained_small).metrics["explainer_test_ranking"]
    assert {"attention", "error", "random"} == test.keys() and "all" in test["attention"]
    assert error > random


def test_explainer_graph_matches_torch(trained_small: Path, small_plant) -> None:
    manifest = verify_artifact(trained_small)
    assert manifest.graphs["explainer"].file == "explainer.onnx" and "explainer.onnx" in manifest.files
    outputs = ["attention", "score", "sensor_error", "expected"]
    assert [t.name for t in manifest.graphs["explainer"].outputs] == outputs
    assert manifest.metrics["explainer_parity"]["score_max_rel_error"] <= PARITY_RTOL
    session = ort.InferenceSession(str(trained_small / "explainer.onnx"), providers=["CPUExecutionProvider"])
    x = small_plant.simulate(200, seed=12, anomaly_rate=0.3).values
    attention, score, sensor_error, expected = session.run(None, {"readings": x})
    assert manifest.metrics["explainer_parity"]["expected_max_rel_error"] <= 1e-4
    assert expected.shape == x.shape and np.isfinite(expected).all()
    scorer_score, _ = ort.InferenceSession(
        str(trained_small / "model.onnx"), providers=["CPUExecutionProvider"]
    ).run(None, {"readings": x})
    np.testing.assert_allclose(score, scorer_score, rtol=1e-5)
    np.testing.assert_allclose(attention.sum(axis=1), 1.0, rtol=1e-5)
    assert attention.shape == sensor_error.shape == x.shape


def test_add_explainer_to_a_version_trained_without_one(small_plant, tmp_path: Path, small_config) -> None:
    data = as_dataset(small_plant, small_plant.simulate(3000, seed=6, anomaly_rate=0.05))
    config = replace(small_config, max_epochs=3, explainer=False, explainer_epochs=2)
    units = tuple(f"u{j}" for j in range(data.n_sensors))
    plain = train(data, tmp_path / "m", config, sensor_units=units)
    assert "explainer" not in verify_artifact(plain).graphs
    with pytest.raises(DataError, match="is not the recording"):
        other = as_dataset(small_plant, small_plant.simulate(3000, seed=7))
        add_explainer(tmp_path / "m", other, progress=False)
    explained = add_explainer(tmp_path / "m", data, progress=False)
    assert read_current(tmp_path / "m") == explained.name != plain.name
    before, after = verify_artifact(plain), verify_artifact(explained)
    assert "explainer" in after.graphs
    assert after.threshold == before.threshold  # the same autoencoder and threshold, now explained
    assert after.files["model.pt"] == before.files["model.pt"]
    assert after.training["config"]["explainer_epochs"] == 2
    assert after.sensor_units == units  # the version's units carry over, or are replaced when given
    relabelled = add_explainer(tmp_path / "m", data, progress=False, sensor_units=("V",) * data.n_sensors)
    assert verify_artifact(relabelled).sensor_units == ("V",) * data.n_sensors
