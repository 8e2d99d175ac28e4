"""The ensembles (`--ensemble iforest|latent`): the torch forest computes scikit-learn's score, the latent
Gaussian the Mahalanobis distance, and a trained ensemble publishes one ONNX graph whose score is the
larger of the two calibrated scores, calibrated on cross-fitted ensemble scores, and comes back from its
checkpoint with its partner."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.ensemble import IsolationForest

from factory_anomaly.artifact import SCORER_FILE, verify_artifact
from factory_anomaly.training.checkpoint import load_trained
from factory_anomaly.training.config import TrainConfig
from factory_anomaly.training.export import PARITY_RTOL
from factory_anomaly.training.forest import TorchIsolationForest, _float32_at_most, average_path_length
from factory_anomaly.training.latent import LatentGaussian
from factory_anomaly.training.model import aggregate_errors
from factory_anomaly.training.train import train
from tests.conftest import SMALL_CONFIG, as_dataset
from tests.training.test_cli import cli


def _sklearn_score(forest: IsolationForest, rows: np.ndarray) -> np.ndarray:
    return -forest.score_samples(rows)


@pytest.mark.parametrize("max_features", [1.0, 0.5])  # all columns, and a column subset per tree
def test_torch_forest_computes_scikit_learns_score(max_features: float) -> None:
    rng = np.random.default_rng(0)
    train_rows = rng.normal(size=(3000, 12)).astype(np.float32)
    forest = IsolationForest(n_estimators=40, max_features=max_features, random_state=0).fit(train_rows)
    module = TorchIsolationForest.from_sklearn(forest)
    rows = np.concatenate([rng.normal(size=(400, 12)), 5 * rng.normal(size=(100, 12))]).astype(np.float32)
    with torch.no_grad():
        got = module(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(got, _sklearn_score(forest, rows), rtol=1e-5)
    # outliers isolate sooner: the wide rows score higher
    assert got[400:].mean() > got[:400].mean() + 0.05


def test_thresholds_round_down_so_ties_go_left_as_in_scikit_learn() -> None:
    thresholds = np.array([0.1, 1.0 / 3.0, -2.7, 5.0])
    rounded = _float32_at_most(thresholds)
    assert rounded.dtype == np.float32 and np.all(rounded.astype(np.float64) <= thresholds)
    assert np.all(np.nextafter(rounded, np.float32(np.inf)).astype(np.float64) > thresholds)
    assert rounded[3] == 5.0  # exactly representable: unchanged


def test_average_path_length_follows_the_paper() -> None:
    np.testing.assert_allclose(average_path_length(np.array([0, 1, 2])), [0.0, 0.0, 1.0])
    n = 256.0
    assert average_path_length(np.array([n]))[0] == pytest.approx(
        2 * (np.log(n - 1) + 0.5772156649) - 2 * (n - 1) / n
    )


def test_latent_gaussian_scores_the_squared_mahalanobis_distance() -> None:
    rng = np.random.default_rng(1)
    rotation = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    mixing = np.diag([0.7, 1.0, 1.5, 2.0, 3.0, 4.0]) @ rotation  # correlated, well conditioned
    codes = rng.normal(size=(5000, 6)) @ mixing + 3.0
    module = LatentGaussian.fit(codes)
    rows = rng.normal(size=(50, 6)) @ mixing + 3.0 + rng.normal(size=(50, 6))
    with torch.no_grad():
        got = module(torch.from_numpy(rows.astype(np.float32))).numpy()
    # 5 000 well-conditioned rows in 6 dimensions: the shrinkage is negligible
    centred = rows - codes.mean(axis=0)
    want = np.einsum("ij,jk,ik->i", centred, np.linalg.inv(np.cov(codes.T, bias=True)), centred)
    np.testing.assert_allclose(got, want, rtol=2e-2)


def test_latent_gaussian_copes_with_a_code_that_never_fires() -> None:
    rng = np.random.default_rng(2)
    codes = np.maximum(rng.normal(size=(300, 4)), 0.0)
    codes[:, 2] = 0.0  # a ReLU unit dead on every normal row
    module = LatentGaussian.fit(codes)
    awake = codes[:5].copy()
    awake[:, 2] = 1.0
    with torch.no_grad():
        normal = module(torch.from_numpy(codes[:5].astype(np.float32)))
        woken = module(torch.from_numpy(awake.astype(np.float32)))
    assert torch.isfinite(normal).all() and torch.isfinite(woken).all()
    assert (woken > normal + 1.0).all()  # the dead unit firing is evidence, not noise


def test_latent_gaussian_needs_two_codes() -> None:
    with pytest.raises(ValueError, match="at least 2 codes"):
        LatentGaussian.fit(np.zeros((1, 3)))


@pytest.fixture(scope="module", params=["iforest", "latent"])
def ensemble(request, small_plant, tmp_path_factory) -> Path:
    data = as_dataset(small_plant, small_plant.simulate(3000, seed=1, anomaly_rate=0.1))
    config = replace(
        SMALL_CONFIG, ensemble=request.param, explainer_epochs=2, explainer_samples_per_epoch=256
    )
    return train(data, tmp_path_factory.mktemp("ensemble") / f"small-{request.param}", config)


def test_ensemble_publishes_one_graph_scoring_the_larger_calibrated_score(
    ensemble: Path, small_plant
) -> None:
    manifest = verify_artifact(ensemble)
    kind = manifest.training["config"]["ensemble"]
    assert kind in ("iforest", "latent")
    assert manifest.metrics["parity"]["score_max_rel_error"] <= PARITY_RTOL
    assert manifest.metrics["explainer_parity"]["score_max_rel_error"] <= PARITY_RTOL
    facts = manifest.training["calibration"]["ensemble"]
    assert facts["kind"] == kind and 0.0 <= facts["partner_sets_score_share"] <= 1.0

    trained = load_trained(ensemble)
    scorer = trained.scorer
    # the checkpoint brings the partner back, and only that one
    assert (scorer.forest is not None, scorer.latent is not None) == (kind == "iforest", kind == "latent")
    rows = small_plant.simulate(500, seed=7, anomaly_rate=0.2).values
    session = ort.InferenceSession(str(ensemble / SCORER_FILE), providers=["CPUExecutionProvider"])
    score, sensor_error = session.run(None, {"readings": rows})
    with torch.no_grad():
        raw = torch.from_numpy(rows)
        z = (raw - scorer.mean) / scorer.scale
        autoencoder = aggregate_errors(
            torch.from_numpy(sensor_error), scorer.aggregate, scorer.aggregate_scale
        )
        partner = scorer.forest(z) if kind == "iforest" else scorer.latent(scorer.autoencoder.code(z))
    c = scorer.ensemble_scale
    want = torch.maximum(autoencoder / c[0], partner / c[1]).numpy()
    np.testing.assert_allclose(score, want, rtol=1e-4)
    # both parts decide some rows: neither normaliser silences the other
    assert (partner / c[1] > autoencoder / c[0]).any() and (partner / c[1] < autoencoder / c[0]).any()


def test_ensemble_threshold_keeps_its_promise_on_fresh_normal_rows(ensemble: Path, small_plant) -> None:
    manifest = verify_artifact(ensemble)
    fresh = small_plant.simulate(20_000, seed=9, anomaly_rate=0.0).values
    session = ort.InferenceSession(str(ensemble / SCORER_FILE), providers=["CPUExecutionProvider"])
    score = session.run(["score"], {"readings": fresh})[0]
    realised = float(np.mean(score > manifest.threshold.value))
    assert 0.25 * manifest.threshold.target_fpr <= realised <= 4 * manifest.threshold.target_fpr


def test_unknown_ensemble_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown ensemble 'svm'"):
        TrainConfig(ensemble="svm")


def test_cli_refuses_an_unknown_ensemble_with_exit_2(tmp_path: Path, small_plant) -> None:
    from factory_anomaly.plant.synthetic import write_run

    paths = write_run(small_plant, small_plant.simulate(300, seed=1), tmp_path / "data", formats=("npz",))
    result = cli("train", "--data", str(paths["npz"]), "--out", str(tmp_path / "m"), "--ensemble", "svm")
    assert result.returncode == 2
    assert "unknown ensemble 'svm'" in result.stderr
