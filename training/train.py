"""Fit the autoencoder on normal rows, calibrate its threshold, and fit the PCA baseline beside it.

Splits are in time order, never shuffled across time: readings are autocorrelated, so a random split
would leak the future into validation and make early stopping and the threshold optimistic.
  data rows:  [ train 70 % | validation 15 % | calibration 15 % ]
  - train: normal rows fit the standardisation, the autoencoder and the PCA baseline;
  - validation: normal rows drive early stopping and give each sensor's residual RMS;
  - calibration: normal rows the model has never been selected on set the threshold.
With `--val-data`, all of `--data` trains and the held-out file is split in time into validation (first
half) and calibration (second half). Rows labelled 1 never train; those in the held-out part give the
best-F1 threshold and the held-out detection metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from training.baseline import PCABaseline
from training.data import DataError, Dataset
from training.metrics import detection_metrics
from training.model import (
    DEFAULT_HIDDEN,
    AnomalyScorer,
    Autoencoder,
    count_trainable_parameters,
    regularised_loss,
)
from training.scaling import Standardiser
from training.threshold import DEFAULT_TARGET_FPR, best_f1_threshold, calibrate

log = logging.getLogger("training.train")

TRAIN_FRACTION = 0.70
VALIDATION_FRACTION = 0.15
MIN_SPLIT_ROWS = 50  # normal rows each of train / validation / calibration must hold at least


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
    progress: bool = True


@dataclass
class Splits:
    train: np.ndarray
    validation: np.ndarray
    calibration: np.ndarray
    held_out_values: np.ndarray  # calibration normals + held-out labelled anomalies, in time order
    held_out_labels: np.ndarray
    description: dict[str, Any] = field(default_factory=dict)


def split_in_time(data: Dataset, val_data: Dataset | None = None) -> Splits:
    """Cut the rows into train / validation / calibration in time order (see the module docstring)."""
    if val_data is None:
        n = data.n_rows
        cut_train, cut_val = int(TRAIN_FRACTION * n), int((TRAIN_FRACTION + VALIDATION_FRACTION) * n)
        labels = data.labels if data.labels is not None else np.zeros(n, dtype=np.int8)
        train_part, val_part, cal_part = (slice(0, cut_train), slice(cut_train, cut_val), slice(cut_val, n))
        values, held_labels = data.values, labels
        held_from = cut_train
        source = {"train": f"rows [0, {cut_train})", "validation": f"rows [{cut_train}, {cut_val})"}
        source["calibration"] = f"rows [{cut_val}, {n})"
        train_values, train_labels = data.values[train_part], labels[train_part]
    else:
        n = val_data.n_rows
        half = n // 2
        labels = val_data.labels if val_data.labels is not None else np.zeros(n, dtype=np.int8)
        train_values = data.values
        train_labels = data.labels if data.labels is not None else np.zeros(data.n_rows, dtype=np.int8)
        val_part, cal_part = slice(0, half), slice(half, n)
        values, held_labels, held_from = val_data.values, labels, 0
        source = {"train": f"all {data.n_rows} rows of {data.source.name}"}
        source["validation"] = f"{val_data.source.name} rows [0, {half})"
        source["calibration"] = f"{val_data.source.name} rows [{half}, {n})"
    train = train_values[train_labels == 0]
    validation = values[val_part][held_labels[val_part] == 0]
    calibration = values[cal_part][held_labels[cal_part] == 0]
    # held-out evaluation: calibration normals plus every labelled anomaly after the training part
    held = np.arange(held_from, values.shape[0])
    in_cal = (held >= cal_part.start) & (held_labels[held] == 0)
    keep = held[in_cal | (held_labels[held] == 1)]
    for name, part in (("train", train), ("validation", validation), ("calibration", calibration)):
        if part.shape[0] < MIN_SPLIT_ROWS:
            raise DataError(
                f"too few rows: the {name} split ({source[name]}) holds {part.shape[0]} normal rows; "
                f"each split needs at least {MIN_SPLIT_ROWS} (so at least "
                f"{int(np.ceil(MIN_SPLIT_ROWS / VALIDATION_FRACTION))} normal rows without --val-data)"
            )
    counts = {
        "train_rows": len(train),
        "validation_rows": len(validation),
        "calibration_rows": len(calibration),
    }
    counts["held_out_anomalies"] = int(held_labels[keep].sum())
    return Splits(train, validation, calibration, values[keep], held_labels[keep], source | counts)


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
    train_z: np.ndarray, val_z: np.ndarray, config: TrainConfig, log_path: Path | None = None
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
    log_file = log_path.open("w") if log_path else None
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
            if log_file:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
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
        if log_file:
            log_file.close()
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "numpy", "scikit-learn", "scipy", "onnx", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def train(data: Dataset, out_dir: Path, config: TrainConfig, val_data: Dataset | None = None) -> Path:
    """Train, calibrate and write the training output to `out_dir`; return `out_dir`.

    Files: model.pt (scorer state: standardisation, autoencoder, residual scale), training.json (sensor
    names, threshold, config, data fingerprint, metrics, timings), threshold.json, baseline_pca.npz,
    training_log.jsonl (one record per epoch).
    """
    if val_data is not None and val_data.sensor_names != data.sensor_names:
        raise DataError(
            f"--val-data sensors differ from --data sensors ({val_data.n_sensors} vs {data.n_sensors})"
        )
    if config.on_constant not in ("warn", "error"):
        raise ValueError(f"on_constant must be 'warn' or 'error', got {config.on_constant!r}")
    started = time.perf_counter()
    splits = split_in_time(data, val_data)
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
    out_dir.mkdir(parents=True, exist_ok=True)
    train_z, val_z = standardiser.transform(splits.train), standardiser.transform(splits.validation)
    log.info("training on %d rows x %d sensors (%s)", len(train_z), data.n_sensors, splits.description)
    fit_started = time.perf_counter()
    autoencoder, history = fit_autoencoder(train_z, val_z, config, out_dir / "training_log.jsonl")
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

    torch.save(
        {"state_dict": scorer.state_dict(), "n_sensors": data.n_sensors, "hidden": list(config.hidden)},
        out_dir / "model.pt",
    )
    (out_dir / "threshold.json").write_text(json.dumps(threshold.to_dict(), indent=1))
    pca.save(out_dir / "baseline_pca.npz")
    best = min(history, key=lambda r: r["val_mse"])
    summary = {
        "sensor_names": list(data.sensor_names),
        "threshold": threshold.to_dict(),
        "baseline_pca_threshold": pca_threshold.to_dict(),
        "config": asdict(config),
        "architecture": {
            "n_sensors": data.n_sensors,
            "hidden": list(config.hidden),
            "trainable_parameters": count_trainable_parameters(autoencoder),
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
        "library_versions": _library_versions(),
        "held_out": held_out,
    }
    (out_dir / "training.json").write_text(json.dumps(summary, indent=1))
    return out_dir


def _fingerprint(data: Dataset) -> dict[str, Any]:
    """Rows, sensors and the sha256 of the source file (of the float32 values for in-memory data)."""
    if data.source.is_file():
        digest, what = file_sha256(data.source), "file"
    else:
        digest, what = hashlib.sha256(np.ascontiguousarray(data.values).tobytes()).hexdigest(), "values"
    return {
        "file": str(data.source),
        "rows": data.n_rows,
        "sensors": data.n_sensors,
        "sha256": digest,
        "sha256_of": what,
    }
