"""Fit the autoencoder on normal rows, calibrate its threshold, and fit the PCA baseline beside it.

Splits follow time, never shuffling rows: readings are autocorrelated, so a random split would leak the
neighbours of a held-out row into training and make early stopping and the threshold optimistic. The
recording is cut into `split_blocks` consecutive blocks (default 8), each split in time order:
  each block:  [ train 70 % | gap | validation 15 % | gap | calibration 15 % | gap ]
  - train: normal rows fit the standardisation, the autoencoder and the PCA baseline;
  - validation: normal rows drive early stopping and give each sensor's residual RMS;
  - calibration: normal rows the model has never been selected on set the threshold.
Why blocks and not one tail: a plant changes operating mode every few minutes to hours, and the last
15 % of a recording can miss a mode entirely; a threshold calibrated there then fails in that mode (on
the synthetic plant the tail split gave 32x the target false-alarm rate; see docs/training.md). Blocks
put every part of the recording into every split. The gaps (`gap_fraction` of a block, dropped) keep
autocorrelated neighbours of held-out rows out of training. `split_blocks=1` is the strict
past-trains-future split. With `--val-data`, all of `--data` trains and the held-out file is cut the
same way into validation and calibration halves. Rows labelled 1 never train; those in held-out parts
give the best-F1 threshold and the held-out detection metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from factory_anomaly.artifact import sha256_file
from factory_anomaly.training.baseline import PCABaseline
from factory_anomaly.training.data import DataError, Dataset
from factory_anomaly.training.explainer import (
    ExplainerConfig,
    FaultInjector,
    SensorAttentionExplainer,
    explainer_summary,
    fit_explainer,
    residual_unit,
)
from factory_anomaly.training.metrics import detection_metrics, ranking_by_kind
from factory_anomaly.training.model import (
    DEFAULT_HIDDEN,
    AnomalyScorer,
    Autoencoder,
    count_trainable_parameters,
    regularised_loss,
)
from factory_anomaly.training.scaling import Standardiser
from factory_anomaly.training.threshold import DEFAULT_TARGET_FPR, Threshold, best_f1_threshold, calibrate

if TYPE_CHECKING:
    from factory_anomaly.training.evaluate import TestRecording

log = logging.getLogger("training.train")

TRAIN_FRACTION = 0.70
VALIDATION_FRACTION = 0.15
DEFAULT_SPLIT_BLOCKS = 8
DEFAULT_GAP_FRACTION = 0.02  # of a block, dropped before each held-out part and after the calibration part
MIN_SPLIT_ROWS = 50  # normal rows each of train / validation / calibration must hold at least
TRAIN, VALIDATION, CALIBRATION, GAP = 0, 1, 2, -1


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    l2: float = 1e-6  # λ of the seed's equation 10 (gradient 2λW)
    learning_rate: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 150
    patience: int = 12  # epochs without a validation improvement before stopping
    min_improvement: float = 1e-3  # relative validation-MSE improvement that counts
    target_fpr: float = DEFAULT_TARGET_FPR
    seed: int = 0
    threads: int = 0  # torch intra-op threads; 0 = torch's default for this machine
    on_constant: str = "warn"  # "warn" or "error" for sensors constant in the training split
    split_blocks: int = DEFAULT_SPLIT_BLOCKS  # 1 = train on the past, hold out the future
    gap_fraction: float = DEFAULT_GAP_FRACTION
    explainer: bool = True  # train the attention explainer after the autoencoder
    explainer_epochs: int = 12
    explainer_samples_per_epoch: int = 2048
    progress: bool = True


@dataclass
class Splits:
    train: np.ndarray
    validation: np.ndarray
    calibration: np.ndarray
    held_out_values: np.ndarray  # calibration normals + held-out labelled anomalies, in time order
    held_out_labels: np.ndarray
    description: dict[str, Any] = field(default_factory=dict)


def assign_parts(n_rows: int, blocks: int, gap_fraction: float, fractions: tuple[float, float]) -> np.ndarray:
    """Label each row TRAIN, VALIDATION, CALIBRATION or GAP: `blocks` consecutive blocks, each cut in
    time order by `fractions` (train share, validation share; calibration takes the rest), with
    `gap_fraction` of the block dropped before each held-out part and at the block's end."""
    if blocks < 1:
        raise ValueError(f"split_blocks must be at least 1, got {blocks}")
    if not 0.0 <= gap_fraction < 0.1:
        raise ValueError(f"gap_fraction must be in [0, 0.1), got {gap_fraction}")
    parts = np.full(n_rows, GAP, dtype=np.int8)
    edges = np.linspace(0, n_rows, blocks + 1).round().astype(int)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        size = hi - lo
        gap = int(round(gap_fraction * size))
        cut_train = lo + int(fractions[0] * size)
        cut_val = lo + int((fractions[0] + fractions[1]) * size)
        parts[lo : cut_train - gap] = TRAIN
        parts[cut_train : cut_val - gap] = VALIDATION
        parts[cut_val : hi - gap] = CALIBRATION
        if gap and hi == n_rows:  # nothing follows the last block: keep its tail
            parts[hi - gap : hi] = CALIBRATION
    return parts


def _describe(parts: np.ndarray, part: int) -> str:
    rows = np.flatnonzero(parts == part)
    if rows.size == 0:
        return "no rows"
    runs = [f"[{r[0]}, {r[-1] + 1})" for r in np.split(rows, np.flatnonzero(np.diff(rows) > 1) + 1)]
    return runs[0] if len(runs) == 1 else f"{len(runs)} ranges: {', '.join(runs)}"


def split_in_time(
    data: Dataset,
    val_data: Dataset | None = None,
    blocks: int = DEFAULT_SPLIT_BLOCKS,
    gap_fraction: float = DEFAULT_GAP_FRACTION,
) -> Splits:
    """Cut the rows into train / validation / calibration by time blocks (see the module docstring)."""
    labels = data.labels if data.labels is not None else np.zeros(data.n_rows, dtype=np.int8)
    if val_data is None:
        values, held_labels = data.values, labels
        parts = assign_parts(data.n_rows, blocks, gap_fraction, (TRAIN_FRACTION, VALIDATION_FRACTION))
        train = data.values[(parts == TRAIN) & (labels == 0)]
        where = "rows "
        source = {"train": where + _describe(parts, TRAIN)}
    else:
        values = val_data.values
        held_labels = val_data.labels if val_data.labels is not None else np.zeros(values.shape[0], np.int8)
        parts = assign_parts(values.shape[0], blocks, gap_fraction, (0.0, 0.5))
        train = data.values[labels == 0]
        where = f"{val_data.source.name} rows "
        source = {"train": f"all {data.n_rows} rows of {data.source.name}"}
    source["validation"] = where + _describe(parts, VALIDATION)
    source["calibration"] = where + _describe(parts, CALIBRATION)
    validation = values[(parts == VALIDATION) & (held_labels == 0)]
    calibration = values[(parts == CALIBRATION) & (held_labels == 0)]
    for name, part in (("train", train), ("validation", validation), ("calibration", calibration)):
        if part.shape[0] < MIN_SPLIT_ROWS:
            raise DataError(
                f"too few rows: the {name} split ({source[name]}) holds {part.shape[0]} normal rows; "
                f"each split needs at least {MIN_SPLIT_ROWS} (so at least "
                f"{int(np.ceil(MIN_SPLIT_ROWS / VALIDATION_FRACTION))} normal rows without --val-data)"
            )
    # held-out evaluation, in time order: calibration normals plus every labelled anomaly outside training
    held = ((parts == CALIBRATION) & (held_labels == 0)) | ((parts != TRAIN) & (held_labels == 1))
    counts = {
        "split_blocks": blocks,
        "gap_fraction": gap_fraction,
        "train_rows": len(train),
        "validation_rows": len(validation),
        "calibration_rows": len(calibration),
        "held_out_anomalies": int(held_labels[held].sum()),
    }
    return Splits(train, validation, calibration, values[held], held_labels[held], source | counts)


def _set_determinism(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    if threads > 0:
        torch.set_num_threads(threads)


def _mean_mse(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 4096) -> float:
    with torch.no_grad():
        total = sum(
            float(((model(x[i : i + batch_size]) - x[i : i + batch_size]) ** 2).sum())
            for i in range(0, len(x), batch_size)
        )
    return total / x.numel()


def fit_autoencoder(
    train_z: np.ndarray, val_z: np.ndarray, config: TrainConfig
) -> tuple[Autoencoder, list[dict[str, float]]]:
    """Adam on MSE + λΣ‖W‖², learning rate halved on plateaus, early stopping on validation MSE.

    Returns the weights of the best validation epoch and one log record per epoch.
    """
    _set_determinism(config.seed, config.threads)
    model = Autoencoder(train_z.shape[1], config.hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimiser, factor=0.5, patience=max(1, config.patience // 3)
    )
    x_train, x_val = torch.from_numpy(train_z), torch.from_numpy(val_z)
    order = torch.Generator().manual_seed(config.seed)
    best_val, best_epoch, best_state = float("inf"), -1, None
    history: list[dict[str, float]] = []
    bar = tqdm(range(config.max_epochs), desc="training", unit="epoch", disable=not config.progress)
    try:
        for epoch in bar:
            started = time.perf_counter()
            model.train()
            perm = torch.randperm(len(x_train), generator=order)
            loss_sum = mse_sum = 0.0
            for i in range(0, len(x_train), config.batch_size):
                xb = x_train[perm[i : i + config.batch_size]]
                loss, mse = regularised_loss(model, xb, model(xb), config.l2)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                loss_sum += loss.detach().item() * len(xb)
                mse_sum += mse.detach().item() * len(xb)
            model.eval()
            val_mse = _mean_mse(model, x_val)
            plateau.step(val_mse)
            improved = val_mse < best_val * (1.0 - config.min_improvement)
            if improved:
                best_val, best_epoch = val_mse, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / len(x_train),
                "train_mse": mse_sum / len(x_train),
                "val_mse": val_mse,
                "learning_rate": optimiser.param_groups[0]["lr"],
                "improved": float(improved),  # counted as an improvement for early stopping
                "seconds": time.perf_counter() - started,
            }
            history.append(record)
            mark = " *" if improved else ""
            log.info(
                "epoch %d: train loss %.5f, train mse %.5f, val mse %.5f%s, lr %.2g",
                epoch, record["train_loss"], record["train_mse"], val_mse, mark, record["learning_rate"],
            )  # fmt: skip
            bar.set_postfix(val_mse=f"{val_mse:.4f}", best=f"{best_val:.4f}@{best_epoch}")
            if epoch - best_epoch >= config.patience:
                log.info(
                    "early stop: no validation improvement for %d epochs (best epoch %d)",
                    config.patience,
                    best_epoch,
                )
                break
    finally:
        bar.close()
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return model, history


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


@dataclass
class TrainResult:
    """Everything a training run produced, in memory; `publish.publish` turns it into an artifact."""

    scorer: AnomalyScorer  # eval mode
    sensor_names: tuple[str, ...]
    sensor_low: np.ndarray  # float64 [n]: smallest training reading per sensor (input-drift reference)
    sensor_high: np.ndarray  # float64 [n]: largest
    threshold: Threshold
    baseline: PCABaseline
    baseline_threshold: Threshold
    history: list[dict[str, float]]  # one record per epoch
    calibration: np.ndarray  # raw calibration rows (parity checks on real data)
    calibration_scores: np.ndarray  # their scores
    summary: dict[str, Any]  # config, splits, data fingerprint, timings, held-out metrics
    explainer: SensorAttentionExplainer | None = None  # eval mode; scorer frozen inside


def fit(data: Dataset, config: TrainConfig, val_data: Dataset | None = None) -> TrainResult:
    """Split, standardise, fit the autoencoder, scale residuals, calibrate, and fit the PCA baseline."""
    if val_data is not None and val_data.sensor_names != data.sensor_names:
        raise DataError(
            f"--val-data sensors differ from --data sensors ({val_data.n_sensors} vs {data.n_sensors})"
        )
    if config.on_constant not in ("warn", "error"):
        raise ValueError(f"on_constant must be 'warn' or 'error', got {config.on_constant!r}")
    started = time.perf_counter()
    splits = split_in_time(data, val_data, config.split_blocks, config.gap_fraction)
    standardiser = Standardiser.fit(splits.train)
    constant = [data.sensor_names[j] for j in np.flatnonzero(standardiser.constant)]
    if constant:
        message = (
            f"{len(constant)} sensor(s) constant in the training split: {constant[:10]}"
            f"{' …' if len(constant) > 10 else ''}; they keep scale 1.0 in their own unit"
        )
        if config.on_constant == "error":
            raise DataError(message + " (refused: --on-constant error)")
        log.warning(message)
    train_z, val_z = standardiser.transform(splits.train), standardiser.transform(splits.validation)
    log.info("training on %d rows x %d sensors (%s)", len(train_z), data.n_sensors, splits.description)
    fit_started = time.perf_counter()
    autoencoder, history = fit_autoencoder(train_z, val_z, config)
    fit_seconds = time.perf_counter() - fit_started

    scorer = AnomalyScorer(
        autoencoder, torch.from_numpy(standardiser.mean), torch.from_numpy(standardiser.scale)
    )
    scorer.eval()
    with torch.no_grad():
        scorer.set_residual_scale(scorer.residuals(torch.from_numpy(splits.validation)))
    calibration_scores, _ = score_in_batches(scorer, splits.calibration)
    threshold = calibrate(calibration_scores.astype(np.float64), config.target_fpr)
    log.info("threshold %.5g (%s, target false-alarm rate %g, %d calibration rows)",
             threshold.value, threshold.method, threshold.target_fpr, threshold.n_calibration)  # fmt: skip

    bottleneck = config.hidden[-1]
    pca = PCABaseline.fit(splits.train, splits.validation, standardiser, bottleneck)
    pca_threshold = calibrate(pca.score(splits.calibration)[0], config.target_fpr)

    held_out: dict[str, Any] = {}
    if splits.held_out_labels.any():
        ae_scores, _ = score_in_batches(scorer, splits.held_out_values)
        pca_scores, _ = pca.score(splits.held_out_values)
        y = splits.held_out_labels
        held_out = {
            "autoencoder": detection_metrics(ae_scores.astype(np.float64), y, threshold.value)
            | {"best_f1": best_f1_threshold(ae_scores.astype(np.float64), y)},
            "baseline_pca": detection_metrics(pca_scores, y, pca_threshold.value)
            | {"best_f1": best_f1_threshold(pca_scores, y)},
        }

    parameters = count_trainable_parameters(autoencoder)  # before the explainer freezes it
    explainer = None
    explainer_section: dict[str, Any] = {}
    if config.explainer:
        explainer, explainer_section = _fit_explainer(scorer, splits, config)

    best = min(history, key=lambda r: r["val_mse"])
    summary = {
        "config": asdict(config),
        "architecture": {
            "n_sensors": data.n_sensors,
            "hidden": list(config.hidden),
            "trainable_parameters": parameters,
        },
        "constant_sensors": constant,
        "splits": splits.description,
        "data": _fingerprint(data) | ({"val_data": _fingerprint(val_data)} if val_data is not None else {}),
        "epochs_run": len(history),
        "best_epoch": int(best["epoch"]),
        "best_val_mse": best["val_mse"],
        "fit_seconds": fit_seconds,
        "total_seconds": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
        "held_out": held_out,
        "explainer": explainer_section,
    }
    return TrainResult(
        scorer=scorer,
        sensor_names=tuple(data.sensor_names),
        sensor_low=splits.train.min(axis=0).astype(np.float64),
        sensor_high=splits.train.max(axis=0).astype(np.float64),
        threshold=threshold,
        baseline=pca,
        baseline_threshold=pca_threshold,
        history=history,
        calibration=splits.calibration,
        calibration_scores=calibration_scores,
        summary=summary,
        explainer=explainer,
    )


EXPLAINER_HELD_OUT_SAMPLES = 1500


def add_explainer(
    model_dir: Path,
    data: Dataset,
    val_data: Dataset | None = None,
    test: TestRecording | None = None,
    *,
    epochs: int | None = None,
    progress: bool = True,
) -> Path:
    """Train the explainer for the version `model_dir/CURRENT` names, keeping its autoencoder, and publish
    the pair as a new version. `data` (and `val_data`) must be the recording the version was trained on
    (its sha256 is checked), so the splits — and the result — are those `train` would have produced."""
    from factory_anomaly.training.checkpoint import load_trained
    from factory_anomaly.training.publish import publish

    trained = load_trained(model_dir)
    summary = dict(trained.manifest.training)
    recorded = summary["data"]
    if _fingerprint(data)["sha256"] != recorded["sha256"]:
        raise DataError(f"{data.source} is not the recording {trained.directory.name} was trained on")
    if data.sensor_names != trained.sensor_names:
        raise DataError(f"{data.source}: sensors differ from the model's")
    recorded_config: dict[str, Any] = dict(summary["config"])
    recorded_config["hidden"] = tuple(recorded_config["hidden"])  # a JSON list back to the tuple
    config = TrainConfig(**recorded_config)
    config = replace(config, explainer=True, progress=progress)
    if epochs is not None:
        config = replace(config, explainer_epochs=epochs)
    splits = split_in_time(data, val_data, config.split_blocks, config.gap_fraction)
    scorer = trained.scorer
    explainer, section = _fit_explainer(scorer, splits, config)
    summary["config"] = asdict(config)
    summary["explainer"] = section
    history = [
        json.loads(line) for line in (trained.directory / "training_log.jsonl").read_text().splitlines()
    ]
    calibration_scores, _ = score_in_batches(scorer, splits.calibration)
    result = TrainResult(
        scorer=scorer,
        sensor_names=trained.sensor_names,
        sensor_low=np.asarray(trained.manifest.sensor_low),
        sensor_high=np.asarray(trained.manifest.sensor_high),
        threshold=trained.threshold,
        baseline=trained.baseline,
        baseline_threshold=trained.baseline_threshold,
        history=history,
        calibration=splits.calibration,
        calibration_scores=calibration_scores,
        summary=summary,
        explainer=explainer,
    )
    return publish(result, model_dir, test)


def _fit_explainer(
    scorer: AnomalyScorer, splits: Splits, config: TrainConfig
) -> tuple[SensorAttentionExplainer, dict[str, Any]]:
    """Train the attention on faults injected into training rows (validation rows for early stopping) and
    measure it, the error ranking and a random ranking on faults injected into the calibration rows."""
    explainer_config = ExplainerConfig(
        epochs=config.explainer_epochs,
        samples_per_epoch=config.explainer_samples_per_epoch,
        seed=config.seed,
        progress=config.progress,
    )
    started = time.perf_counter()
    explainer, history = fit_explainer(scorer, splits.train, splits.validation, explainer_config)
    seconds = time.perf_counter() - started
    neighbours = FaultInjector.from_training_rows(splits.train, residual_unit(scorer), config.seed).neighbours
    injector = FaultInjector(splits.calibration, residual_unit(scorer), neighbours, config.seed + 2)
    rows, mask, kinds = injector.sample(EXPLAINER_HELD_OUT_SAMPLES)
    attention, errors = explain_in_batches(explainer, rows)
    rankings = {
        "attention": attention,
        "error": errors,
        "random": np.random.default_rng(config.seed).random(errors.shape),
    }
    fault_sensors = {i: np.flatnonzero(m).tolist() for i, m in enumerate(mask)}
    section = explainer_summary(explainer_config, history, seconds)
    section["held_out_ranking"] = ranking_by_kind(rankings, fault_sensors, kinds)
    section["held_out_ranking_rows"] = EXPLAINER_HELD_OUT_SAMPLES
    hit = {m: section["held_out_ranking"][m]["all"]["hitrate@150%"] for m in rankings}
    log.info("explainer held-out HitRate@150%%: %s", hit)
    return explainer, section


def explain_in_batches(
    explainer: SensorAttentionExplainer, raw: np.ndarray, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """(attention [N, n], sensor_error [N, n]) as float32 numpy."""
    attention, errors = [], []
    with torch.no_grad():
        for i in range(0, len(raw), batch_size):
            a, _, e = explainer(
                torch.from_numpy(np.ascontiguousarray(raw[i : i + batch_size], dtype=np.float32))
            )
            attention.append(a.numpy())
            errors.append(e.numpy())
    return np.concatenate(attention), np.concatenate(errors)


def train(
    data: Dataset,
    model_dir: Path,
    config: TrainConfig,
    val_data: Dataset | None = None,
    test: TestRecording | None = None,
) -> Path:
    """Train and publish a new version under `model_dir` (= <store>/<name>); return the version's path.

    The version is built beside its final place and renamed into it, and `CURRENT` moves to it only once
    it verifies: a failing or interrupted run leaves neither a partial version nor a moved `CURRENT`.
    """
    from factory_anomaly.training.publish import publish

    result = fit(data, config, val_data)
    return publish(result, model_dir, test)


def _fingerprint(data: Dataset) -> dict[str, Any]:
    """Rows, sensors and the sha256 of the source file (of the float32 values for in-memory data)."""
    if data.source.is_file():
        digest, what = sha256_file(data.source), "file"
    else:
        digest, what = hashlib.sha256(np.ascontiguousarray(data.values).tobytes()).hexdigest(), "values"
    return {
        "file": str(data.source),
        "rows": data.n_rows,
        "sensors": data.n_sensors,
        "sha256": digest,
        "sha256_of": what,
    }
