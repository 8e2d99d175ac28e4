"""The seed's fully connected autoencoder and its L2-regularised loss.

Default architecture (seed, Part I.I, Task 1): Linear 1000→512, ReLU, 512→32, ReLU, 32→512, ReLU,
512→1000 with a linear output: 1,058,824 trainable parameters. The input width follows the data and the
hidden widths are configurable; the decoder mirrors the encoder. `AnomalyScorer` wraps it from raw
readings to the score, and `score_in_batches` runs that over many rows.

Loss (seed, equation 10): L = MSE + λ·Σ_j ‖W_j‖², the squared Frobenius norms of the weight matrices only
(biases are not penalised). Convention: we implement equation 10 literally, so the penalty's gradient is
2λW. The seed's update rule (equation 11) writes λW, i.e. it folds the 2 into λ: our λ = λ_eq11 / 2.
The penalty is part of the loss (not the optimiser's weight_decay), so it means the same under any optimiser.

Variants (`build_autoencoder`, `MODEL_KINDS`; docs/training.md, "Model variants"): "dae" is the same module
trained on corrupted inputs (`autoencoder.corrupt`), "vae" a `VariationalAutoencoder`. Each maps
standardised readings to a deterministic reconstruction in `forward`, so `AnomalyScorer`, the ONNX export
and serving treat all of them alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import special
from torch import nn

from factory_anomaly.training.forest import TorchIsolationForest
from factory_anomaly.training.latent import LatentGaussian

DEFAULT_HIDDEN: tuple[int, ...] = (512, 32)


def auto_hidden(n_sensors: int) -> tuple[int, ...]:
    """Encoder widths scaled to the input: the seed's (512, 32) at 1000 sensors and above; narrower inputs
    keep the seed's ratios (first layer ~0.512 n, bottleneck n / 4 capped at 32, at least 2) so the
    bottleneck stays well below the input and the autoencoder cannot learn the identity."""
    bottleneck = min(DEFAULT_HIDDEN[-1], max(1, min(2, n_sensors - 1), n_sensors // 4))
    first = min(DEFAULT_HIDDEN[0], max(2 * bottleneck, round(0.512 * n_sensors)))
    return (first, bottleneck)


MODEL_KINDS: tuple[str, ...] = ("ae", "dae", "vae")
"""The autoencoder variants `build_autoencoder` makes: the seed's ("ae"), denoising ("dae": the same module,
trained on corrupted inputs), variational ("vae")."""
DEFAULT_MODEL = "ae"
ENSEMBLES: tuple[str, ...] = ("none", "iforest", "latent")
"""`--ensemble`: what scores beside the autoencoder ("iforest": an IsolationForest on the standardised
readings, `forest.py`; "latent": the distance of the bottleneck code from the normal codes, `latent.py`)."""


class Autoencoder(nn.Module):
    """x [N, n_sensors] (standardised) → reconstruction [N, n_sensors].

    `kind` is the variant it was trained as (`MODEL_KINDS`); the checkpoint records it."""

    kind: str = "ae"

    def __init__(self, n_sensors: int, hidden: Sequence[int] = DEFAULT_HIDDEN) -> None:
        super().__init__()
        if n_sensors < 1 or not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"invalid autoencoder sizes: n_sensors={n_sensors}, hidden={tuple(hidden)}")
        self.n_sensors = n_sensors
        self.hidden = tuple(int(h) for h in hidden)
        widths = [n_sensors, *self.hidden]
        encoder: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            encoder += [nn.Linear(w_in, w_out), nn.ReLU()]  # the seed keeps a ReLU on the bottleneck too
        back = widths[::-1]
        decoder: list[nn.Module] = []
        for w_in, w_out in zip(back[:-1], back[1:], strict=True):
            decoder += [nn.Linear(w_in, w_out), nn.ReLU()]
        decoder.pop()  # linear output: standardised readings are signed and unbounded
        self.encoder = nn.Sequential(*encoder)
        self.decoder = nn.Sequential(*decoder)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The bottleneck code [N, b] that `forward` decodes."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.code(x))


class VariationalAutoencoder(Autoencoder):
    """The autoencoder with a Gaussian bottleneck: x [N, n] → (mean, log-variance) [N, b] → decoder.

    The encoder's last layer (Linear + ReLU into the bottleneck) is replaced by two linear heads, one for
    the posterior mean and one for its log-variance; the decoder is the autoencoder's. `forward` decodes the
    mean, deterministically, in train and eval mode alike: it is what validation, the score and the
    exported graph use. Sampling (the reparameterisation trick) belongs to training only
    (`autoencoder.vae_losses`). The second head adds (h + 1)·b parameters, h the width before the
    bottleneck: 16 416 (1.6 %) on the seed's 1000→512→32.
    """

    kind = "vae"

    def __init__(self, n_sensors: int, hidden: Sequence[int] = DEFAULT_HIDDEN) -> None:
        super().__init__(n_sensors, hidden)
        before = [n_sensors, *self.hidden][-2]
        self.encoder = nn.Sequential(*list(self.encoder)[:-2])  # the trunk; the heads replace the rest
        self.to_mean = nn.Linear(before, self.hidden[-1])
        self.to_log_var = nn.Linear(before, self.hidden[-1])

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(posterior mean, log-variance), each [N, bottleneck]."""
        h = self.encoder(x)
        return self.to_mean(h), self.to_log_var(h)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_mean(self.encoder(x))


def build_autoencoder(kind: str, n_sensors: int, hidden: Sequence[int] = DEFAULT_HIDDEN) -> Autoencoder:
    """The module of variant `kind` (`MODEL_KINDS`), freshly initialised from torch's global generator."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model {kind!r}; expected one of {MODEL_KINDS}")
    model = VariationalAutoencoder(n_sensors, hidden) if kind == "vae" else Autoencoder(n_sensors, hidden)
    model.kind = kind
    return model


def kl_divergence(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) ‖ N(0, I)) per row [N], summed over the bottleneck."""
    return 0.5 * torch.sum(mean * mean + log_var.exp() - 1.0 - log_var, dim=1)


def count_trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def weight_matrices(model: nn.Module) -> list[torch.Tensor]:
    """The W_j of equation 10: every Linear layer's weight, no biases."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


def l2_penalty(model: nn.Module) -> torch.Tensor:
    return torch.stack([w.pow(2).sum() for w in weight_matrices(model)]).sum()


def regularised_loss(
    model: nn.Module, x: torch.Tensor, reconstruction: torch.Tensor, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(MSE + λ·Σ‖W‖², MSE): the second is what early stopping and the anomaly score are based on."""
    mse = torch.mean((reconstruction - x) ** 2)
    return mse + l2 * l2_penalty(model), mse


RESIDUAL_SCALE_FLOOR = 1e-2  # in reading standard deviations: no sensor is trusted to 1 % of its spread

AGGREGATES: tuple[str, ...] = ("mean", "max", "mean+max")
"""How the per-sensor errors become one score (`AnomalyScorer`)."""
DEFAULT_AGGREGATE = "mean+max"
TAIL_LEVEL_MAX = 0.99
"""The per-sensor scale and the aggregate normalisers are matched at this quantile of held-out normal rows
(lower on small data: at most `1 - 10 / rows`, so at least ten rows lie beyond it)."""
TAIL_SHAPE_LEVEL_MAX = 0.999
"""Each sensor's tail shape is matched at this deeper quantile (again with ten rows beyond it); where the
rows cannot reach deeper than `tail_level`, every exponent stays 1."""
TAIL_EXPONENT_MIN = 0.05
TAIL_REACH = 100.0
"""The tempering stops this many times beyond each sensor's deep quantile (where no normal row reaches):
further out r² grows linearly again, so a reading far outside everything normal on one sensor still names
that sensor first rather than the ones its residual spills onto."""


class AnomalyScorer(nn.Module):
    """Raw readings float32 [N, n_sensors] → (score [N], sensor_error [N, n_sensors]).

    One module from raw readings to score, so that the exported graph, the calibrated threshold and the
    evaluation all use the same definition:
      z = (x − mean) / scale                       per-sensor standardisation from the training rows
      r = (autoencoder(z) − z) / residual_scale    residual in units of that sensor's normal residual spread
      e = r² · max(r² / c, 1)^(a − 1)              per-sensor tail shape: r² up to c, the χ²(1)
                                                   quantile r² is matched at; c · (r² / c)^a beyond it,
                                                   a ≤ 1 per sensor (`tail_exponents`)
      sensor_error = e
      score = mean(e)                              "mean": dense evidence, the seed's reconstruction error
            = max(e)                               "max": sparse evidence, one sensor far off
            = max(mean(e) / c_mean, max(e) / c_max)   "mean+max" (default): both, each divided by its
                                                   own held-out normal quantile, so either can raise it
    The residual spread is measured per sensor on out-of-fold normal residuals by a quantile (robust to the
    anomalies an unlabelled recording holds, and matched where the tail matters rather than at the RMS):
    under normal operation r is about unit-scale on every sensor, so no sensor's habitual misfit dominates.
    The scale alone matches one quantile; the exponent matches a deeper one too, so a sensor whose normal
    residuals are heavy-tailed (a rare regime the autoencoder fits badly) no longer owns the maximum, and a
    fault on a well-behaved sensor can reach it. It is monotone per sensor, leaves the bulk below c alone
    (where float32 noise of tiny residuals would otherwise be magnified), and a = 1 is plain r².
    Why both aggregates: a fault on many sensors moves the mean and barely the max; a spike on one of a
    thousand sensors moves the max and is diluted a thousandfold in the mean (docs/quality.md).
    """

    mean: torch.Tensor
    scale: torch.Tensor
    residual_scale: torch.Tensor
    aggregate_scale: torch.Tensor
    tail_anchor: torch.Tensor
    tail_exponent: torch.Tensor
    tail_limit: torch.Tensor
    ensemble_scale: torch.Tensor

    def __init__(
        self,
        autoencoder: Autoencoder,
        mean: torch.Tensor,
        scale: torch.Tensor,
        residual_scale: torch.Tensor | None = None,
        aggregate: str = "mean",
    ) -> None:
        super().__init__()
        if aggregate not in AGGREGATES:
            raise ValueError(f"unknown score aggregate {aggregate!r}; expected one of {AGGREGATES}")
        n = autoencoder.n_sensors
        self.autoencoder = autoencoder
        self.aggregate = aggregate
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(n))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).reshape(n))
        rs = torch.ones(n) if residual_scale is None else torch.as_tensor(residual_scale, dtype=torch.float32)
        self.register_buffer("residual_scale", rs.reshape(n))
        self.register_buffer("aggregate_scale", torch.ones(2))  # c_mean, c_max of "mean+max"
        self.register_buffer("tail_anchor", torch.ones(1))  # c of the tail shape
        self.register_buffer("tail_exponent", torch.ones(n))  # a per sensor
        self.register_buffer("tail_limit", torch.full((n,), float("inf")))  # where tempering stops, in c
        self.register_buffer("ensemble_scale", torch.ones(2))  # c_autoencoder, c_partner (`with_partner`)
        # the optional ensemble partner (`--ensemble`): at most one of the two is set
        self.forest: TorchIsolationForest | None = None
        self.latent: LatentGaussian | None = None

    def residuals(self, raw: torch.Tensor) -> torch.Tensor:
        """Standardised reconstruction residual [N, n_sensors] before residual scaling."""
        z = (raw - self.mean) / self.scale
        return self.autoencoder(z) - z

    def forward(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = (raw - self.mean) / self.scale
        code = self.autoencoder.code(z)
        sensor_error = self.sensor_error((self.autoencoder.decoder(code) - z) / self.residual_scale)
        score = aggregate_errors(sensor_error, self.aggregate, self.aggregate_scale)
        return self.with_partner(z, score, code), sensor_error

    def with_partner(
        self, z: torch.Tensor, score: torch.Tensor, code: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The autoencoder's score, or with an ensemble partner (`--ensemble`) the larger of the two, each
        divided by its own held-out normal tail quantile (`ensemble_scale`), as "mean+max" combines its
        aggregates. `code`: the autoencoder's code of z, where the caller has it already."""
        partner = self.partner_score(z, code)
        if partner is None:
            return score
        return torch.maximum(score / self.ensemble_scale[0], partner / self.ensemble_scale[1])

    def partner_score(self, z: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor | None:
        """The ensemble partner's raw score [N] of standardised rows z, or None without one."""
        if self.forest is not None:
            return self.forest(z)
        if self.latent is not None:
            return self.latent(self.autoencoder.code(z) if code is None else code)
        return None

    def set_forest(self, forest: TorchIsolationForest | None, scale: Sequence[float] = (1.0, 1.0)) -> None:
        """Make an IsolationForest the ensemble partner (None: no partner), with the two scores'
        normalisers."""
        self.forest, self.latent = forest, None
        self.ensemble_scale.copy_(torch.tensor([float(scale[0]), float(scale[1])]))

    def set_latent(self, latent: LatentGaussian | None, scale: Sequence[float] = (1.0, 1.0)) -> None:
        """Make a Gaussian of the normal codes the ensemble partner (None: no partner), with the two
        scores' normalisers."""
        self.forest, self.latent = None, latent
        self.ensemble_scale.copy_(torch.tensor([float(scale[0]), float(scale[1])]))

    def sensor_error(self, r: torch.Tensor) -> torch.Tensor:
        """Per-sensor evidence [N, n] from scaled residuals r: r² with each sensor's tail shape applied."""
        squared = r * r
        relative = torch.minimum(torch.clamp(squared / self.tail_anchor, min=1.0), self.tail_limit)
        return squared * torch.pow(relative, self.tail_exponent - 1.0)

    def fit_normal_scales(self, residuals: torch.Tensor) -> None:
        """Fit every per-sensor and aggregate scale, in order, from held-out normal residuals
        [N, n_sensors] before scaling: the residual spread, then the tail shape on the scaled residuals,
        then the aggregates' normalisers on the shaped errors."""
        self.set_residual_scale(residuals)
        scaled = residuals / self.residual_scale
        self.set_tail_shape(scaled * scaled)
        with torch.no_grad():
            self.set_aggregate_scale(self.sensor_error(scaled))

    def set_residual_scale(self, residuals: torch.Tensor) -> None:
        """Fit the residual spread per sensor from held-out normal residuals [N, n_sensors]: the tail
        quantile of |r| divided by the standard normal's, so a Gaussian residual keeps its RMS."""
        self.residual_scale.copy_(torch.from_numpy(robust_residual_scale(residuals.numpy())))

    def set_tail_shape(self, squared: torch.Tensor) -> None:
        """Fit the per-sensor tail exponents from held-out normal squared scaled residuals r² [N, n]."""
        anchor, exponent, limit = tail_exponents(squared.numpy())
        self.tail_anchor.fill_(anchor)
        self.tail_exponent.copy_(torch.from_numpy(exponent))
        self.tail_limit.copy_(torch.from_numpy(limit))

    def set_aggregate_scale(self, sensor_error: torch.Tensor) -> None:
        """Normalise the two aggregates of "mean+max" by their tail quantile on held-out normal errors."""
        self.aggregate_scale.copy_(torch.from_numpy(aggregate_normalisers(sensor_error.numpy())))


def aggregate_errors(sensor_error: torch.Tensor, aggregate: str, scale: torch.Tensor) -> torch.Tensor:
    """The score of `AnomalyScorer` from its per-sensor errors [N, n]."""
    if aggregate == "mean":
        return sensor_error.mean(dim=1)
    if aggregate == "max":
        return sensor_error.amax(dim=1)
    return torch.maximum(sensor_error.mean(dim=1) / scale[0], sensor_error.amax(dim=1) / scale[1])


def aggregate_normalisers(sensor_error: np.ndarray) -> np.ndarray:
    """c_mean, c_max of "mean+max" (float32 [2]): each aggregate's tail quantile on held-out normal errors."""
    level = tail_level(sensor_error.shape[0])
    e = sensor_error.astype(np.float64)
    c = np.array([np.quantile(e.mean(axis=1), level), np.quantile(e.max(axis=1), level)])
    return np.maximum(c, 1e-12).astype(np.float32)


def tail_level(rows: int) -> float:
    """The quantile level the scales are matched at: `TAIL_LEVEL_MAX`, or lower so ten rows lie beyond."""
    return float(min(TAIL_LEVEL_MAX, max(0.5, 1.0 - 10.0 / max(rows, 1))))


def robust_residual_scale(residuals: np.ndarray) -> np.ndarray:
    """Per-sensor residual spread from held-out normal residuals [N, n] (float32 [n], floored)."""
    level = tail_level(residuals.shape[0])
    gaussian = float(np.sqrt(2.0) * special.erfinv(level))  # the standard normal's two-sided quantile
    spread = np.quantile(np.abs(residuals.astype(np.float64)), level, axis=0) / gaussian
    return np.maximum(spread, RESIDUAL_SCALE_FLOOR).astype(np.float32)


def tail_exponents(squared: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(c, a [n], limit [n]) of the per-sensor tail shape from held-out normal r² [N, n] (`AnomalyScorer`).

    r² is scaled so that its `tail_level` quantile is c, the χ²(1) quantile there; a is chosen so that its
    quantile at the deeper level (`TAIL_SHAPE_LEVEL_MAX`, ten rows beyond) lands on χ²(1)'s too. Only heavy
    tails are tempered (a ≤ 1): a lighter-than-Gaussian sensor keeps its r², since sharpening would amplify
    the noise of a deep quantile estimated from a few rows. The limit, in units of c, is `TAIL_REACH` times
    the point where the fitted power meets the deep quantile.
    """
    rows = squared.shape[0]
    level = tail_level(rows)
    deep = float(min(TAIL_SHAPE_LEVEL_MAX, 1.0 - 10.0 / max(rows, 1)))
    anchor = float(special.erfinv(level) ** 2 * 2.0)  # χ²(1) quantile at `level`
    exponent = np.ones(squared.shape[1], dtype=np.float32)
    if deep <= level:
        return anchor, exponent, np.full(squared.shape[1], np.inf, dtype=np.float32)
    e = squared.astype(np.float64)
    q_level = np.maximum(np.quantile(e, level, axis=0), 1e-12)
    q_deep = np.quantile(e, deep, axis=0)
    gaussian_ratio = special.erfinv(deep) ** 2 / special.erfinv(level) ** 2
    observed_ratio = q_deep / q_level
    heavy = observed_ratio > gaussian_ratio
    exponent[heavy] = np.log(gaussian_ratio) / np.log(observed_ratio[heavy])
    exponent = np.clip(exponent, TAIL_EXPONENT_MIN, 1.0).astype(np.float32)
    limit = TAIL_REACH * gaussian_ratio ** (1.0 / exponent.astype(np.float64))
    return anchor, exponent, limit.astype(np.float32)


def tail_shaped(r: np.ndarray, anchor: float, exponent: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """`AnomalyScorer.sensor_error` in numpy, for scales fitted outside the module (cross-fitting)."""
    squared = r.astype(np.float64) ** 2
    relative = np.minimum(np.maximum(squared / anchor, 1.0), limit.astype(np.float64))
    return squared * relative ** (exponent.astype(np.float64) - 1.0)


def score_in_batches(
    scorer: AnomalyScorer, raw: np.ndarray, batch_size: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """(score [N], sensor_error [N, n]) as float32 numpy, without building one huge graph."""
    scores, errors = [], []
    with torch.no_grad():
        for i in range(0, len(raw), batch_size):
            s, e = scorer(torch.from_numpy(np.ascontiguousarray(raw[i : i + batch_size], dtype=np.float32)))
            scores.append(s.numpy())
            errors.append(e.numpy())
    return np.concatenate(scores), np.concatenate(errors)
