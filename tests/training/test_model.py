from __future__ import annotations

import numpy as np
import pytest
import torch

from factory_anomaly.training.model import (
    TAIL_LEVEL_MAX,
    AnomalyScorer,
    Autoencoder,
    aggregate_errors,
    auto_hidden,
    count_trainable_parameters,
    l2_penalty,
    regularised_loss,
    tail_exponents,
    tail_level,
    tail_shaped,
    weight_matrices,
)


def test_default_architecture_is_the_seeds() -> None:
    model = Autoencoder(1000)
    assert count_trainable_parameters(model) == 1_058_824
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (1000, 512),
        (512, 32),
        (32, 512),
        (512, 1000),
    ]
    # ReLU after every layer but the last: the output is linear
    assert isinstance(model.encoder[-1], torch.nn.ReLU)
    assert isinstance(model.decoder[-1], torch.nn.Linear)


@pytest.mark.parametrize(("n", "hidden"), [(38, (16, 4)), (2400, (256, 16, 8))])
def test_sizes_follow_data_and_config(n: int, hidden: tuple[int, ...]) -> None:
    model = Autoencoder(n, hidden)
    assert model(torch.zeros(3, n)).shape == (3, n)
    widths = [n, *hidden, *reversed(hidden[:-1]), n]
    expected = sum(a * b + b for a, b in zip(widths[:-1], widths[1:], strict=True))
    assert count_trainable_parameters(model) == expected


def test_invalid_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="invalid autoencoder sizes"):
        Autoencoder(10, (0,))


def test_loss_gradient_is_mse_gradient_plus_two_lambda_w() -> None:
    """Equation 10 taken literally: d/dW (MSE + λΣ‖W‖²) = dMSE/dW + 2λW, biases unpenalised."""
    torch.manual_seed(0)
    model = Autoencoder(20, (8, 3)).double()
    x = torch.randn(16, 20, dtype=torch.float64)
    lam = 0.37

    total, _ = regularised_loss(model, x, model(x), lam)
    total_grads = torch.autograd.grad(total, list(model.parameters()))
    mse_only, _ = regularised_loss(model, x, model(x), 0.0)
    mse_grads = torch.autograd.grad(mse_only, list(model.parameters()))

    weights = {id(w) for w in weight_matrices(model)}
    for p, g_total, g_mse in zip(model.parameters(), total_grads, mse_grads, strict=True):
        expected = g_mse + 2 * lam * p if id(p) in weights else g_mse
        torch.testing.assert_close(g_total, expected)
    with torch.no_grad():
        penalty = l2_penalty(model).item()
        expected_penalty = sum(float((w**2).sum()) for w in weight_matrices(model))
    assert penalty == pytest.approx(expected_penalty)


def test_scorer_score_is_mean_of_sensor_errors_and_uses_standardisation() -> None:
    torch.manual_seed(1)
    ae = Autoencoder(5, (4, 2))
    mean, scale = torch.tensor([1.0, 2, 3, 4, 5]), torch.tensor([2.0, 2, 2, 2, 2])
    scorer = AnomalyScorer(ae, mean, scale, residual_scale=torch.full((5,), 0.5))
    raw = torch.randn(7, 5) * 3 + 2
    score, errors = scorer(raw)
    z = (raw - mean) / scale
    expected = ((ae(z) - z) / 0.5) ** 2
    torch.testing.assert_close(errors, expected)
    torch.testing.assert_close(score, expected.mean(dim=1))


def test_residual_scale_is_a_gaussian_matched_tail_quantile_with_a_floor() -> None:
    scorer = AnomalyScorer(Autoencoder(3, (2,)), torch.zeros(3), torch.ones(3))
    rng = np.random.default_rng(0)
    gaussian = rng.normal(size=(20_000, 1)) * np.array([0.3, 0.0, 2.0])
    residuals = torch.from_numpy(gaussian.astype(np.float32))
    scorer.set_residual_scale(residuals)
    # a Gaussian residual keeps its standard deviation; a sensor without spread gets the floor
    torch.testing.assert_close(scorer.residual_scale, torch.tensor([0.3, 0.01, 2.0]), rtol=0.03, atol=0.0)
    # one wild row among many does not move it (the RMS would)
    residuals[0, 0] = 1e4
    scorer.set_residual_scale(residuals)
    assert abs(float(scorer.residual_scale[0]) - 0.3) < 0.01


def test_tail_level_leaves_ten_rows_beyond_it_on_small_data() -> None:
    assert tail_level(100_000) == TAIL_LEVEL_MAX
    assert tail_level(200) == pytest.approx(0.95)
    assert tail_level(10) == 0.5


def test_tail_shape_tempers_only_heavy_tails_and_matches_the_deep_quantile() -> None:
    rng = np.random.default_rng(2)
    rows = 50_000
    gaussian = rng.normal(size=rows)
    heavy = rng.standard_t(2, size=rows)  # a sensor whose normal residuals are heavy-tailed
    bounded = rng.uniform(-1.7, 1.7, size=rows)  # lighter than Gaussian: left alone
    r = np.stack([gaussian, heavy, bounded], axis=1)
    r = r / (np.quantile(np.abs(r), tail_level(rows), axis=0) / 2.5758)  # Gaussian-matched at 0.99
    anchor, exponent, limit = tail_exponents(r**2)
    assert anchor == pytest.approx(2.5758**2, rel=1e-3)  # the χ²(1) quantile at 0.99
    assert exponent[0] == pytest.approx(1.0, abs=0.1) and exponent[2] == 1.0
    assert 0.2 < exponent[1] < 0.8
    shaped = tail_shaped(r, anchor, exponent, limit)
    # the heavy sensor's 0.999 quantile now sits where a Gaussian's does (χ²(1): 10.83), not far beyond it
    assert np.quantile((r**2)[:, 1], 0.999) > 20
    assert np.quantile(shaped[:, 1], 0.999) == pytest.approx(10.83, rel=0.05)
    # below the anchor, and wherever the exponent is 1, the evidence is plain r²
    below = r**2 < anchor
    np.testing.assert_allclose(shaped[below], (r**2)[below])
    np.testing.assert_allclose(shaped[:, 2], r[:, 2] ** 2)
    # monotone per sensor: the ranking of one sensor's residuals is untouched
    order = np.argsort(np.abs(r[:, 1]))
    assert np.all(np.diff(shaped[order, 1]) >= 0)
    # far beyond anything normal the tempering stops: r² grows linearly again, so a gross outlier on a
    # heavy-tailed sensor still outranks the modest errors it spills onto its neighbours
    far = np.array([[0.0, np.sqrt(anchor * limit[1]) * 10, 0.0]])
    edge = np.array([[0.0, np.sqrt(anchor * limit[1]), 0.0]])
    ratio = tail_shaped(far, anchor, exponent, limit)[0, 1] / tail_shaped(edge, anchor, exponent, limit)[0, 1]
    assert ratio == pytest.approx(100.0, rel=1e-6)


def test_tail_shape_is_plain_r_squared_when_the_rows_cannot_reach_a_deeper_quantile() -> None:
    r = np.random.default_rng(3).standard_t(2, size=(200, 4))
    _, exponent, limit = tail_exponents(r**2)
    assert np.all(exponent == 1.0) and np.all(np.isinf(limit))


def test_scorer_applies_the_tail_shape_it_was_fitted_with() -> None:
    torch.manual_seed(4)
    scorer = AnomalyScorer(Autoencoder(3, (2,)), torch.zeros(3), torch.ones(3))
    heavy = torch.from_numpy(np.random.default_rng(4).standard_t(2, size=(20_000, 3)).astype(np.float32))
    scorer.set_tail_shape(heavy**2)
    assert float(scorer.tail_exponent.max()) < 1.0
    r = torch.tensor([[0.5, 3.0, 30.0]])
    anchor, exponent, limit = (float(scorer.tail_anchor[0]), scorer.tail_exponent.numpy(),
                               scorer.tail_limit.numpy())  # fmt: skip
    torch.testing.assert_close(
        scorer.sensor_error(r), torch.from_numpy(tail_shaped(r.numpy(), anchor, exponent, limit)).float()
    )


def test_score_aggregates_mean_max_and_both() -> None:
    errors = torch.tensor([[1.0, 1.0, 1.0, 9.0], [2.0, 2.0, 2.0, 2.0]])
    scale = torch.tensor([2.0, 3.0])
    torch.testing.assert_close(aggregate_errors(errors, "mean", scale), torch.tensor([3.0, 2.0]))
    torch.testing.assert_close(aggregate_errors(errors, "max", scale), torch.tensor([9.0, 2.0]))
    torch.testing.assert_close(aggregate_errors(errors, "mean+max", scale), torch.tensor([3.0, 1.0]))
    with pytest.raises(ValueError, match="unknown score aggregate"):
        AnomalyScorer(Autoencoder(3, (2,)), torch.zeros(3), torch.ones(3), aggregate="median")


def test_auto_hidden_keeps_the_seed_at_1000_sensors_and_narrows_below() -> None:
    assert auto_hidden(1000) == (512, 32)
    assert auto_hidden(5000) == (512, 32)
    assert auto_hidden(38) == (19, 9)
    assert auto_hidden(6) == (4, 2)
    for n in (2, 6, 12, 38, 100, 400):
        first, bottleneck = auto_hidden(n)
        assert bottleneck < n and bottleneck <= first
