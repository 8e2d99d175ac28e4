"""Model variants (`--model ae|dae|vae`): each trains through `train()`, publishes a version that verifies,
exports with ONNX/torch parity, scores, and comes back from its checkpoint as the same variant; the DAE's
training step sees corrupted inputs, the VAE scores deterministically and records its KL term."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from factory_anomaly.artifact import (
    CARD_FILE,
    CHECKPOINT_FILE,
    SCORER_FILE,
    TRAINING_LOG_FILE,
    hash_files,
    read_manifest,
    verify_artifact,
    write_manifest,
)
from factory_anomaly.training import autoencoder as autoencoder_module
from factory_anomaly.training.autoencoder import corrupt, fit_autoencoder, vae_losses
from factory_anomaly.training.checkpoint import load_trained
from factory_anomaly.training.config import TrainConfig
from factory_anomaly.training.export import PARITY_RTOL, check_parity, export_scorer
from factory_anomaly.training.model import (
    MODEL_KINDS,
    AnomalyScorer,
    Autoencoder,
    VariationalAutoencoder,
    build_autoencoder,
    count_trainable_parameters,
    kl_divergence,
    l2_penalty,
    score_in_batches,
)
from factory_anomaly.training.train import train
from tests.conftest import SMALL_CONFIG, as_dataset
from tests.training.test_cli import cli

ROWS = 3000  # ~2 700 normal rows: enough for the 0.02 target, seconds per variant
VARIANT_CONFIG = replace(SMALL_CONFIG, explainer_epochs=2, explainer_samples_per_epoch=256)
SPIKE_STD = 20.0  # a single-sensor fault every variant must flag, in that sensor's standard deviations


@pytest.fixture(scope="module")
def published(request: pytest.FixtureRequest, small_plant, tmp_path_factory) -> dict[str, Path]:
    """One published version per variant, trained on the same recording of the small plant."""
    data = as_dataset(small_plant, small_plant.simulate(ROWS, seed=1, anomaly_rate=0.1))
    store = tmp_path_factory.mktemp("variants")
    return {
        kind: train(data, store / f"small-{kind}", replace(VARIANT_CONFIG, model=kind))
        for kind in MODEL_KINDS
    }


def _onnx_scores(version: Path, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(version / SCORER_FILE), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["score"], {"readings": rows.astype(np.float32)})[0])


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_each_variant_publishes_a_verified_version_that_records_it(published, kind: str) -> None:
    version = published[kind]
    manifest = verify_artifact(version)
    assert manifest.training["config"]["model"] == kind
    assert manifest.metrics["parity"]["score_max_rel_error"] <= PARITY_RTOL
    assert manifest.metrics["explainer_parity"]["score_max_rel_error"] <= PARITY_RTOL
    card = (version / CARD_FILE).read_text()
    words = {
        "ae": "fully connected autoencoder",
        "dae": "denoising autoencoder",
        "vae": "variational autoencoder",
    }
    assert words[kind] in card
    trained = load_trained(version)
    assert trained.scorer.autoencoder.kind == kind
    assert isinstance(trained.scorer.autoencoder, VariationalAutoencoder) == (kind == "vae")
    parameters = manifest.training["architecture"]["trainable_parameters"]
    assert parameters == count_trainable_parameters(trained.scorer.autoencoder)


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_each_variant_scores_through_onnx_as_its_checkpoint_does_and_flags_a_spike(
    published, small_plant, kind: str
) -> None:
    version = published[kind]
    trained = load_trained(version)
    fresh = small_plant.simulate(400, seed=7).values  # the same plant, a new run, no faults
    spiked = fresh.copy()
    spiked[:, 3] += SPIKE_STD * trained.scorer.scale[3].item()
    rows = np.concatenate([fresh, spiked]).astype(np.float32)
    onnx_scores = _onnx_scores(version, rows)
    torch_scores = score_in_batches(trained.scorer, rows)[0]  # the checkpoint read back
    np.testing.assert_allclose(onnx_scores, torch_scores, rtol=PARITY_RTOL, atol=1e-4)
    threshold = trained.threshold.value
    assert (onnx_scores[len(fresh) :] > threshold).all()
    assert np.mean(onnx_scores[: len(fresh)] > threshold) < 0.2  # a target of 0.02 is not a precise check


def test_vae_scores_deterministically_and_records_its_kl_term(published, small_plant) -> None:
    version = published["vae"]
    scorer = load_trained(version).scorer
    x = torch.from_numpy(small_plant.simulate(64, seed=7).values.astype(np.float32))
    with torch.no_grad():
        eval_mode = scorer(x)
        scorer.train()  # train mode too: `forward` decodes the posterior mean, sampling is training's
        twice = [scorer(x), scorer(x)]
    for score, error in twice:
        assert torch.equal(score, eval_mode[0]) and torch.equal(error, eval_mode[1])
    records = [json.loads(line) for line in (version / TRAINING_LOG_FILE).read_text().splitlines()]
    assert all(r["train_kl"] > 0 for r in records)
    ae_record = json.loads((published["ae"] / TRAINING_LOG_FILE).read_text().splitlines()[0])
    assert "train_kl" not in ae_record


def test_a_checkpoint_from_before_the_variants_loads_as_the_seeds_autoencoder(published, tmp_path) -> None:
    version = tmp_path / "small-ae" / published["ae"].name
    shutil.copytree(published["ae"], version)
    checkpoint = torch.load(version / CHECKPOINT_FILE, weights_only=True)
    del checkpoint["model"]
    torch.save(checkpoint, version / CHECKPOINT_FILE)
    manifest = read_manifest(version)
    write_manifest(replace(manifest, files=hash_files(version)), version)
    trained = load_trained(version)
    assert type(trained.scorer.autoencoder) is Autoencoder and trained.scorer.autoencoder.kind == "ae"


def test_corrupt_adds_gaussian_noise_and_masks_without_touching_the_target() -> None:
    x = torch.randn(20_000, 10)
    before = x.clone()
    noisy = corrupt(x, 0.3, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)
    assert abs(float((noisy - x).std()) - 0.3) < 0.01 and abs(float((noisy - x).mean())) < 0.01
    masked = corrupt(x, 0.0, 0.25, torch.Generator().manual_seed(0))
    zeroed = masked == 0
    assert abs(float(zeroed.float().mean()) - 0.25) < 0.01
    assert torch.equal(masked[~zeroed], x[~zeroed])
    again = corrupt(x, 0.3, 0.25, torch.Generator().manual_seed(1))
    assert torch.equal(again, corrupt(x, 0.3, 0.25, torch.Generator().manual_seed(1)))
    assert torch.equal(corrupt(x, 0.0, 0.0, torch.Generator()), x)


@pytest.mark.parametrize(("kind", "input_std"), [("ae", 0.0), ("dae", 0.5)])
def test_only_the_dae_trains_on_corrupted_inputs(monkeypatch, kind: str, input_std: float) -> None:
    """Rows that are all zero: whatever the model is fed in training beyond zero is the corruption."""
    seen: list[torch.Tensor] = []

    def spying_build(*args, **kwargs) -> Autoencoder:
        model = build_autoencoder(*args, **kwargs)
        model.register_forward_pre_hook(lambda m, inputs: seen.append(inputs[0]) if m.training else None)
        return model

    monkeypatch.setattr(autoencoder_module, "build_autoencoder", spying_build)
    config = replace(SMALL_CONFIG, model=kind, dae_noise_std=0.5, max_epochs=2)
    zeros = np.zeros((256, 8), dtype=np.float32)
    history = fit_autoencoder(zeros, zeros[:64], config)[1]
    fed = torch.cat(seen)
    assert fed.shape[0] == 2 * 256
    assert float(fed.std()) == pytest.approx(input_std, abs=0.02)
    if kind == "dae":  # the loss reconstructs the clean (zero) rows, so it sees the noise the model passes on
        assert history[-1]["train_mse"] > history[-1]["val_mse"]


def test_vae_loss_is_mse_plus_beta_kl_over_sensors_plus_the_penalty() -> None:
    torch.manual_seed(0)
    model = build_autoencoder("vae", 12, (8, 3))
    assert isinstance(model, VariationalAutoencoder)
    x = torch.randn(32, 12)
    losses = vae_losses(model, x, beta=0.5, l2=1e-3, noise=torch.Generator().manual_seed(4))
    mean, log_var = model.encode(x)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(4))
    mse = torch.mean((model.decoder(mean + torch.exp(0.5 * log_var) * eps) - x) ** 2)
    kl = kl_divergence(mean, log_var).mean()
    torch.testing.assert_close(losses["mse"], mse)
    torch.testing.assert_close(losses["kl"], kl)
    torch.testing.assert_close(losses["loss"], mse + 0.5 * kl / 12 + 1e-3 * l2_penalty(model))
    losses["loss"].backward()
    assert model.to_log_var.weight.grad is not None and model.to_log_var.weight.grad.abs().sum() > 0
    # KL is zero exactly at the prior
    assert float(kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max()) == 0.0


def test_vae_parameter_count_stays_close_to_the_autoencoders() -> None:
    ae, vae = build_autoencoder("ae", 1000), build_autoencoder("vae", 1000)
    assert count_trainable_parameters(ae) == 1_058_824
    extra = count_trainable_parameters(vae) - count_trainable_parameters(ae)
    assert extra == (512 + 1) * 32  # the second head
    one_layer = build_autoencoder("vae", 10, (4,))  # no trunk: the heads read the input
    assert one_layer(torch.zeros(3, 10)).shape == (3, 10)


def test_a_scorer_around_a_vae_exports_with_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    n = 12
    scorer = AnomalyScorer(build_autoencoder("vae", n, (8, 3)), torch.randn(n), torch.rand(n) + 0.5)
    scorer.eval()
    path = export_scorer(scorer, tmp_path / SCORER_FILE)
    rows = np.random.default_rng(0).normal(size=(64, n)).astype(np.float32)
    assert check_parity(scorer, path, [rows, rows[:1]])["score_max_rel_error"] <= PARITY_RTOL


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gan"], "unknown model 'gan'; expected one of ae, dae, vae"),
        (["--model", "dae", "--dae-mask", "1.5"], "dae_mask_fraction must be in"),
        (["--model", "vae", "--vae-beta", "-1"], "vae_beta must be >= 0"),
    ],
)
def test_a_bad_model_option_exits_2_with_an_error_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = cli("train", "--data", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "m"), *args)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert not (tmp_path / "m").exists()


def test_the_config_refuses_an_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown model 'gan'"):
        TrainConfig(model="gan")
