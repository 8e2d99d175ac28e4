"""One training run in memory, in data-flow order; it writes nothing (`publish` does, from its result).

  split by time (`splits`) -> standardise on the training rows (`scaling`) -> fit the autoencoder
  (`autoencoder`) -> residual scale on the validation rows -> threshold on the calibration rows
  (`threshold`) -> PCA baseline (`baseline`) -> held-out detection metrics -> attention explainer
  (`explainer`), measured on faults injected into the calibration rows -> `TrainResult`

`refit_explainer` reruns only the last step for a published version, on the recording it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from factory_anomaly.alarms.jitter import JitterSpec
from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.alarms.stuck import stuck_limits
from factory_anomaly.alarms.velocity import VelocitySpec
from factory_anomaly.artifact import TRAINING_LOG_FILE, AlarmSpec, Manifest, sha256_file
from factory_anomaly.training.autoencoder import fit_autoencoder
from factory_anomaly.training.baseline import PCABaseline
from factory_anomaly.training.checkpoint import TrainedModel
from factory_anomaly.training.config import TrainConfig
from factory_anomaly.training.crossfit import MIN_NORMAL_ROWS, Fold, default_folds, final_fit, plan_folds
from factory_anomaly.training.data import CalibrationError, DataError, Dataset
from factory_anomaly.training.ensemble import attach_partner, fit_partner, partner_scores, with_partner_scores
from factory_anomaly.training.episodes import (
    JITTER_SHARE,
    VELOCITY_SHARE,
    calibrate_episode_rule,
    calibrate_jitter,
    calibrate_velocity,
    reading_period,
)
from factory_anomaly.training.explainer import (
    ExplainerConfig,
    FaultInjector,
    SensorAttentionExplainer,
    explain_in_batches,
    explainer_summary,
    fit_explainer,
    residual_unit,
)
from factory_anomaly.training.metrics import binomial_interval, detection_metrics, ranking_by_kind
from factory_anomaly.training.model import (
    AGGREGATES,
    AnomalyScorer,
    aggregate_errors,
    aggregate_normalisers,
    auto_hidden,
    count_trainable_parameters,
    robust_residual_scale,
    score_in_batches,
    tail_exponents,
    tail_level,
    tail_shaped,
)
from factory_anomaly.training.result import TrainResult
from factory_anomaly.training.scaling import Standardiser
from factory_anomaly.training.splits import Splits, split_in_time
from factory_anomaly.training.threshold import (
    Threshold,
    best_f1_threshold,
    calibrate,
    calibrate_levels,
    round_up_target,
    threshold_interval,
    tightest_supported_target,
)

log = logging.getLogger("training.pipeline")

EXPLAINER_HELD_OUT_SAMPLES = 1500
MIN_EXPLAINER_ROWS = 50  # validation rows below which the explainer is measured on its own validation rows


def fit_models(data: Dataset, config: TrainConfig, val_data: Dataset | None = None) -> TrainResult:
    """Standardise, cross-fit the autoencoder for out-of-fold scores, fit the shipped autoencoder, scale
    residuals, calibrate, fit the PCA baseline the same way and (unless `config.explainer` is off) the
    explainer. With `val_data`, the older procedure: train on `data`, stop early and calibrate on halves of
    `val_data` (a separate held-out recording)."""
    if val_data is not None and val_data.sensor_names != data.sensor_names:
        raise DataError(
            f"--val-data sensors differ from --data sensors ({val_data.n_sensors} vs {data.n_sensors})"
        )
    if config.on_constant not in ("warn", "error"):
        raise ValueError(f"on_constant must be 'warn' or 'error', got {config.on_constant!r}")
    if config.aggregate not in AGGREGATES:
        raise ValueError(f"unknown score aggregate {config.aggregate!r}; expected one of {AGGREGATES}")
    started = time.perf_counter()
    config = replace(config, hidden=tuple(config.hidden or auto_hidden(data.n_sensors)))
    fitted = _cross_fit(data, config) if val_data is None else _held_out_fit(data, val_data, config)
    scorer, splits, history = fitted.scorer, fitted.splits, fitted.history
    threshold = calibrate(fitted.normal_scores, fitted.target_fpr)
    calibration = fitted.description | {
        "target_fpr": fitted.target_fpr,
        "threshold_interval_90": list(threshold_interval(fitted.normal_scores, fitted.target_fpr)),
        "levels": [level.to_dict() for level in calibrate_levels(fitted.normal_scores)],
        "held_out_check": _held_out_check(fitted),
        "aggregate": config.aggregate,
        "residual_scale": f"quantile of |r| at {tail_level(fitted.normal_scores.size):.3g}, Gaussian-matched",
        "tail_shape": _tail_shape_facts(scorer),
    }
    log.info("threshold %.5g (%s, target false-alarm rate %g, %d held-out normal scores, %s)",
             threshold.value, threshold.method, threshold.target_fpr, threshold.n_calibration,
             calibration["procedure"])  # fmt: skip

    period, period_source = reading_period(data, config.reading_period_s)
    sensor_low, sensor_high = splits.train.min(axis=0), splits.train.max(axis=0)
    normal = _normal_rows(data)[0]
    jitter: JitterSpec | None = None
    jitter_facts: dict[str, Any] = {"calibrated": False, "why": "off (--alarm-jitter turns it on)"}
    jitter_target = config.alarm_target_per_day * JITTER_SHARE
    if config.alarm_jitter:
        jitter, jitter_facts = calibrate_jitter(normal, sensor_low, period, jitter_target)
    velocity: VelocitySpec | None = None
    velocity_facts: dict[str, Any] = {"calibrated": False, "why": "off (--no-alarm-velocity)"}
    velocity_target = config.alarm_target_per_day * VELOCITY_SHARE
    if config.alarm_velocity:
        velocity, velocity_facts = calibrate_velocity(
            data.values, _normal_mask(data), scorer.mean.numpy(), scorer.scale.numpy(),
            period, velocity_target, config.alarm_velocity_components,
        )  # fmt: skip
    rule_target = config.alarm_target_per_day - sum(
        share
        for channel, share in ((jitter, jitter_target), (velocity, velocity_target))
        if channel is not None
    )
    alarm_rule, alarm_facts = calibrate_episode_rule(
        fitted.normal_scores, period, rule_target, config.alarm_k, config.alarm_n, config.alarm_close_after_s,
    )  # fmt: skip
    alarm_facts["rule_target_episodes_per_day"] = rule_target
    alarm_facts["target_episodes_per_day"] = config.alarm_target_per_day
    alarm_facts["reading_period_source"] = period_source
    limits = stuck_limits(normal, sensor_low, sensor_high) if alarm_rule else None
    if limits is not None:
        alarm_facts["stuck_sensors"] = int(np.count_nonzero(limits))
    if alarm_rule is None:
        jitter = velocity = None
    alarm_facts["jitter"] = jitter_facts
    alarm_facts["velocity"] = velocity_facts

    pca, pca_scores = fitted.pca
    pca_threshold = calibrate(pca_scores, fitted.target_fpr)
    held_out = _held_out_metrics(scorer, threshold, pca, pca_threshold, fitted)

    parameters = count_trainable_parameters(scorer.autoencoder)  # before the explainer freezes it
    explainer = None
    explainer_section: dict[str, Any] = {}
    if config.explainer:
        explainer, explainer_section = _fit_explainer(scorer, splits, config)

    best = min(history, key=lambda r: r["val_mse"])
    summary = {
        "config": asdict(config),
        "architecture": {
            "n_sensors": data.n_sensors,
            "hidden": list(config.hidden or ()),
            "trainable_parameters": parameters,
        },
        "constant_sensors": fitted.constant,
        "splits": splits.description,
        "calibration": calibration,
        "alarms": alarm_facts,
        "data": _fingerprint(data) | ({"val_data": _fingerprint(val_data)} if val_data is not None else {}),
        "epochs_run": len(history),
        "best_epoch": int(best["epoch"]),
        "best_val_mse": best["val_mse"],
        "fit_seconds": fitted.fit_seconds,
        "total_seconds": time.perf_counter() - started,
        "torch_threads": torch.get_num_threads(),
        "held_out": held_out,
        "explainer": explainer_section,
    }
    return TrainResult(
        scorer=scorer,
        sensor_names=tuple(data.sensor_names),
        sensor_low=sensor_low.astype(np.float64),
        sensor_high=sensor_high.astype(np.float64),
        threshold=threshold,
        baseline=pca,
        baseline_threshold=pca_threshold,
        history=history,
        calibration=splits.calibration,
        calibration_scores=fitted.normal_scores.astype(np.float32),
        summary=summary,
        explainer=explainer,
        alarm_rule=alarm_rule,
        stuck_limits=limits,
        jitter=jitter,
        velocity=velocity,
    )


def _jitter(manifest: Manifest) -> JitterSpec | None:
    """The published version's jitter channel, carried into a new version of it."""
    section = None if manifest.alarms is None else manifest.alarms.jitter
    return None if section is None else JitterSpec.of(section, manifest.sensor_low)


def _velocity(manifest: Manifest) -> VelocitySpec | None:
    """The published version's velocity channel, carried into a new version of it."""
    section = None if manifest.alarms is None else manifest.alarms.velocity
    return None if section is None else VelocitySpec.of(section)


def _stuck_limits(spec: AlarmSpec | None) -> np.ndarray | None:
    """The published version's stuck limits, carried into a new version of it."""
    if spec is None or spec.stuck_limits is None:
        return None
    return np.asarray(spec.stuck_limits, dtype=np.int64)


@dataclass
class _Fitted:
    """The shipped scorer with the held-out normal scores its threshold is calibrated on."""

    scorer: AnomalyScorer
    history: list[dict[str, float]]
    fit_seconds: float
    splits: Splits  # the shipped fit's rows (train, validation) and rows for the explainer's measurement
    normal_scores: np.ndarray  # float64: each normal row scored by a model that never saw it
    target_fpr: float
    description: dict[str, Any]
    constant: list[str]
    pca: tuple[PCABaseline, np.ndarray]  # the baseline, and its held-out normal scores (same procedure)
    anomalies: np.ndarray  # labelled anomalous rows of the training recording (never trained on)
    fold_rows: list[np.ndarray] = field(default_factory=list)  # each fold's held-out rows (cross-fit only)


def _target_for(n_scores: int, config: TrainConfig) -> tuple[float, dict[str, Any]]:
    """The target the threshold is calibrated for: the requested one if `n_scores` supports it; else the
    tightest supported one when the user accepted that, else a `CalibrationError` naming it."""
    tightest = tightest_supported_target(n_scores)
    facts: dict[str, Any] = {
        "requested_target_fpr": config.target_fpr,
        "tightest_supported_target_fpr": tightest,
        "accepted_tightest_target": False,
    }
    if config.target_fpr >= tightest:
        return config.target_fpr, facts
    nice = round_up_target(tightest)
    if not config.accept_tightest_target:
        raise CalibrationError(
            f"--target-fpr {config.target_fpr:g} needs at least {math.ceil(1 / config.target_fpr)} held-out "
            f"normal rows to calibrate; this data gives {n_scores}: the tightest target it supports is "
            f"{nice:g} (pass --accept-tightest-target to train at it, or bring more normal rows)"
        )
    log.warning("target false-alarm rate %g is not supported by %d rows: calibrating for %g",
                config.target_fpr, n_scores, nice)  # fmt: skip
    return nice, facts | {"accepted_tightest_target": True}


def _held_out_check(fitted: _Fitted) -> dict[str, Any] | None:
    """The calibration procedure checked on rows it did not use: each fold's out-of-fold scores against a
    threshold calibrated on the other folds' scores, pooled. Not the shipped threshold itself, but the
    same estimator on as much data minus one fold, so its realised rate says whether the procedure keeps
    its promise on unseen normal rows (and the binomial interval how precisely that is known)."""
    folds = fitted.fold_rows
    if not folds:
        return None
    scores, flagged = fitted.normal_scores, 0
    for held in folds:
        others = np.ones(scores.size, dtype=bool)
        others[held] = False
        try:
            threshold = calibrate(scores[others], fitted.target_fpr).value
        except ValueError:
            return None
        flagged += int(np.count_nonzero(scores[held] > threshold))
    low, high = binomial_interval(flagged, scores.size)
    return {
        "rows": int(scores.size),
        "expected_false_alarms": scores.size * fitted.target_fpr,
        "false_alarms": flagged,
        "false_alarm_rate": flagged / scores.size,
        "false_alarm_rate_ci95": [low, high],
    }


def _normal_rows(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    normal = _normal_mask(data)
    return data.values[normal], data.values[~normal]


def _normal_mask(data: Dataset) -> np.ndarray:
    """bool [rows]: the rows not labelled anomalous, in the data's time order."""
    if data.labels is None:
        return np.ones(data.n_rows, dtype=bool)
    return np.asarray(data.labels) == 0


def _cross_fit(data: Dataset, config: TrainConfig) -> _Fitted:
    """K out-of-fold autoencoders score every normal row; the shipped one is fitted on all of them."""
    normal, anomalies = _normal_rows(data)
    if normal.shape[0] < MIN_NORMAL_ROWS:
        raise DataError(
            f"too few rows: {data.source} holds {normal.shape[0]} normal rows; training needs at least "
            f"{MIN_NORMAL_ROWS}"
        )
    target, facts = _target_for(normal.shape[0], config)
    k = config.folds or default_folds(normal.shape[0])
    folds = plan_folds(normal.shape[0], k, config.crossfit_gap_fraction, config.split_blocks)
    standardiser = Standardiser.fit(normal)
    constant = _constant_sensors(standardiser, data.sensor_names, config.on_constant)
    z = standardiser.transform(normal)
    log.info("cross-fitting %d folds on %d normal rows x %d sensors, hidden %s",
             len(folds), z.shape[0], z.shape[1], config.hidden)  # fmt: skip
    started = time.perf_counter()
    oof = np.empty_like(z)
    partner_oof = np.empty(z.shape[0], dtype=np.float64)
    fold_epochs = []
    for fold in folds:
        autoencoder, fold_history = fit_autoencoder(z[fold.train], z[fold.validation], config)
        fold_epochs.append(int(min(fold_history, key=lambda r: r["val_mse"])["epoch"]))
        with torch.no_grad():
            held = torch.from_numpy(z[fold.held_out])
            oof[fold.held_out] = (autoencoder(held) - held).numpy()
        if config.ensemble != "none":
            partner = fit_partner(config.ensemble, autoencoder, z[fold.train], config.seed)
            partner_oof[fold.held_out] = partner_scores(partner, autoencoder, z[fold.held_out])
    final = final_fit(normal.shape[0], config.split_blocks)
    autoencoder, history = fit_autoencoder(z[final.train], z[final.validation], config)
    seconds = time.perf_counter() - started
    scorer = AnomalyScorer(
        autoencoder, torch.from_numpy(standardiser.mean), torch.from_numpy(standardiser.scale),
        aggregate=config.aggregate,
    )  # fmt: skip
    scorer.eval()
    scorer.fit_normal_scales(torch.from_numpy(oof))
    normal_scores = _cross_fitted_scores(oof, folds, config.aggregate)
    shipped = score_in_batches(scorer, normal[final.validation])[0].astype(np.float64)
    normal_scores, anchor = _to_shipped_scale(normal_scores, shipped)
    ensemble: dict[str, Any] = {}
    if config.ensemble != "none":
        attach_partner(scorer, config.ensemble, z[final.train], z[final.validation], shipped, config.seed)
        normal_scores, ensemble = with_partner_scores(scorer, config.ensemble, normal_scores, partner_oof)
    pca = _cross_fit_pca(
        normal, standardiser, folds, final, (config.hidden or auto_hidden(data.n_sensors))[-1]
    )
    splits = _final_splits(normal, final)
    splits.description |= {"folds": len(folds), "fold_best_epochs": fold_epochs,
                           "held_out_anomalies": int(anomalies.shape[0])}  # fmt: skip
    return _Fitted(
        scorer=scorer,
        history=history,
        fit_seconds=seconds,
        splits=splits,
        normal_scores=normal_scores,
        target_fpr=target,
        description=facts
        | {"procedure": "cross_fit", "folds": len(folds), "rows": int(normal.shape[0])}
        | {"shipped_scale": anchor}
        | ensemble,
        constant=constant,
        pca=pca,
        anomalies=anomalies,
        fold_rows=[fold.held_out for fold in folds],
    )


def _tail_shape_facts(scorer: AnomalyScorer) -> dict[str, float]:
    """How much the per-sensor tail shape tempers r² (exponent 1: not at all), for the manifest."""
    exponent = scorer.tail_exponent.numpy().astype(np.float64)
    return {
        "anchor": float(scorer.tail_anchor[0]),
        "exponent_median": float(np.median(exponent)),
        "exponent_min": float(exponent.min()),
        "sensors_tempered": int((exponent < 1.0).sum()),
    }


def _final_splits(normal: np.ndarray, final: Fold) -> Splits:
    """The shipped fit's rows; its validation rows, halved when there are enough, also give the explainer
    rows to be measured on that it did not stop early on."""
    half = final.validation.size // 2 if final.validation.size >= 2 * MIN_EXPLAINER_ROWS else 0
    return Splits(
        train=normal[final.train],
        validation=normal[final.validation[:half]] if half else normal[final.validation],
        calibration=normal[final.validation[half:]],
        held_out_values=normal[:0],
        held_out_labels=np.zeros(0, dtype=np.int8),
        description={
            "procedure": "cross_fit",
            "normal_rows": int(normal.shape[0]),
            "train_rows": int(final.train.size),
            "validation_rows": int(final.validation.size),
        },
    )


ANCHOR_MIN_BEYOND = 10
"""Validation rows that must lie beyond the deepest quantile the shipped model's own scores set."""


def _to_shipped_scale(oof: np.ndarray, shipped: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """The out-of-fold scores mapped onto the shipped model's score scale, before calibrating.

    Why: the threshold is estimated on the fold models' scores, but the shipped model, trained on all
    rows, scores new normal rows lower, and by a different amount at each quantile; uncorrected, the
    realised false-alarm rate on fresh runs of the plant fell far below the target (docs/quality.md).
    `shipped` are the shipped model's scores of its validation rows (which only stopped
    it early: new to it). Up to the deepest quantile they can set (`ANCHOR_MIN_BEYOND` rows beyond it), a
    score is mapped to the shipped scores' quantile at the level it holds among the out-of-fold scores
    (quantile mapping: monotone, so the ranking is untouched); beyond it, where only the out-of-fold
    scores reach, by the ratio of the two quantiles at that deepest level, so the out-of-fold tail keeps
    its shape."""
    top = float(min(0.999, max(0.5, 1.0 - ANCHOR_MIN_BEYOND / max(shipped.size, 1))))
    levels = np.linspace(0.0, top, 201)
    q_oof = np.maximum.accumulate(np.quantile(oof, levels))
    q_shipped = np.maximum.accumulate(np.quantile(shipped, levels))
    keep = np.concatenate([[True], np.diff(q_oof) > 0])
    q_oof, q_shipped = q_oof[keep], q_shipped[keep]
    ratio = float(q_shipped[-1] / max(q_oof[-1], 1e-12))
    mapped = np.where(oof <= q_oof[-1], np.interp(oof, q_oof, q_shipped), oof * ratio)
    return mapped, {"tail_ratio": ratio, "mapped_up_to_level": top, "rows": int(shipped.size)}


def _cross_fitted_scores(oof: np.ndarray, folds: list[Fold], aggregate: str) -> np.ndarray:
    """Each fold's out-of-fold scores with the residual and aggregate scales fitted on the *other* folds'
    residuals: the scales are cross-fitted like the model, so a sensor whose spread was underestimated on
    its own rows cannot make the calibration sample look calmer than new data will be."""
    scores = np.empty(oof.shape[0], dtype=np.float64)
    for fold in folds:
        others = np.ones(oof.shape[0], dtype=bool)
        others[fold.held_out] = False
        spread = robust_residual_scale(oof[others])
        shape = tail_exponents((oof[others] / spread) ** 2)
        normalisers = torch.from_numpy(aggregate_normalisers(tail_shaped(oof[others] / spread, *shape)))
        error = torch.from_numpy(tail_shaped(oof[fold.held_out] / spread, *shape))
        scores[fold.held_out] = aggregate_errors(error, aggregate, normalisers).double().numpy()
    return scores


def _cross_fit_pca(
    normal: np.ndarray, standardiser: Standardiser, folds: list[Fold], final: Fold, k: int
) -> tuple[PCABaseline, np.ndarray]:
    """The PCA baseline through the same procedure: out-of-fold scores, then a fit on all rows."""
    scores = np.empty(normal.shape[0], dtype=np.float64)
    for fold in folds:
        fold_pca = PCABaseline.fit(normal[fold.train], normal[fold.validation], standardiser, k)
        scores[fold.held_out] = fold_pca.score(normal[fold.held_out])[0]
    return PCABaseline.fit(normal[final.train], normal[final.validation], standardiser, k), scores


def _held_out_fit(data: Dataset, val_data: Dataset, config: TrainConfig) -> _Fitted:
    """Train on all of `data`; `val_data`'s halves stop early and calibrate (no cross-fitting)."""
    splits = split_in_time(data, val_data, config.split_blocks, config.gap_fraction)
    target, facts = _target_for(splits.calibration.shape[0], config)
    standardiser = Standardiser.fit(splits.train)
    constant = _constant_sensors(standardiser, data.sensor_names, config.on_constant)
    train_z, val_z = standardiser.transform(splits.train), standardiser.transform(splits.validation)
    started = time.perf_counter()
    autoencoder, history = fit_autoencoder(train_z, val_z, config)
    seconds = time.perf_counter() - started
    scorer = AnomalyScorer(
        autoencoder, torch.from_numpy(standardiser.mean), torch.from_numpy(standardiser.scale),
        aggregate=config.aggregate,
    )  # fmt: skip
    scorer.eval()
    with torch.no_grad():
        validation_residuals = scorer.residuals(torch.from_numpy(splits.validation))
    scorer.fit_normal_scales(validation_residuals)
    if config.ensemble != "none":
        validation_scores = score_in_batches(scorer, splits.validation)[0]
        attach_partner(scorer, config.ensemble, train_z, val_z, validation_scores, config.seed)
    normal_scores = score_in_batches(scorer, splits.calibration)[0].astype(np.float64)
    pca = PCABaseline.fit(
        splits.train, splits.validation, standardiser, (config.hidden or auto_hidden(data.n_sensors))[-1]
    )
    labels = splits.held_out_labels
    return _Fitted(
        scorer=scorer,
        history=history,
        fit_seconds=seconds,
        splits=splits,
        normal_scores=normal_scores,
        target_fpr=target,
        description=facts | {"procedure": "held_out_file", "rows": int(normal_scores.size)},
        constant=constant,
        pca=(pca, pca.score(splits.calibration)[0]),
        anomalies=splits.held_out_values[labels == 1],
    )


def _constant_sensors(standardiser: Standardiser, names: tuple[str, ...], on_constant: str) -> list[str]:
    """Names of the sensors constant in the training split: warned about, or refused with "error"."""
    constant = [names[j] for j in np.flatnonzero(standardiser.constant)]
    if constant:
        message = (
            f"{len(constant)} sensor(s) constant in the training split: {constant[:10]}"
            f"{' …' if len(constant) > 10 else ''}; they keep scale 1.0 in their own unit"
        )
        if on_constant == "error":
            raise DataError(message + " (refused: --on-constant error)")
        log.warning(message)
    return constant


def _held_out_metrics(
    scorer: AnomalyScorer, threshold: Threshold, pca: PCABaseline, pca_threshold: Threshold, fitted: _Fitted
) -> dict[str, Any]:
    """Detection metrics of both detectors when the training recording holds labelled anomalies: its
    normal rows by their held-out scores, its anomalous rows (never trained on) by the shipped models."""
    if fitted.anomalies.shape[0] == 0:
        return {}
    y = np.concatenate(
        [np.zeros(fitted.normal_scores.size, np.int8), np.ones(fitted.anomalies.shape[0], np.int8)]
    )
    ae = np.concatenate(
        [fitted.normal_scores, score_in_batches(scorer, fitted.anomalies)[0].astype(np.float64)]
    )
    pc = np.concatenate([fitted.pca[1], pca.score(fitted.anomalies)[0]])
    return {
        "autoencoder": detection_metrics(ae, y, threshold.value) | {"best_f1": best_f1_threshold(ae, y)},
        "baseline_pca": detection_metrics(pc, y, pca_threshold.value) | {"best_f1": best_f1_threshold(pc, y)},
    }


def refit_explainer(
    trained: TrainedModel,
    data: Dataset,
    val_data: Dataset | None = None,
    *,
    epochs: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """The published version `trained` with a newly trained explainer, as a new `TrainResult`.

    `data` (and `val_data`) must be the recording the version was trained on (its sha256 is checked), so
    the splits, and with them the explainer, are those `fit_models` would have produced."""
    summary = dict(trained.manifest.training)
    if _fingerprint(data)["sha256"] != summary["data"]["sha256"]:
        raise DataError(f"{data.source} is not the recording {trained.directory.name} was trained on")
    if data.sensor_names != trained.sensor_names:
        raise DataError(f"{data.source}: sensors differ from the model's")
    recorded_config: dict[str, Any] = dict(summary["config"])
    recorded_config["hidden"] = tuple(summary["architecture"]["hidden"])  # a JSON list back to the tuple
    config = replace(TrainConfig(**recorded_config), explainer=True, progress=progress)
    if epochs is not None:
        config = replace(config, explainer_epochs=epochs)
    if val_data is None:
        normal = _normal_rows(data)[0]
        splits = _final_splits(normal, final_fit(normal.shape[0], config.split_blocks))
    else:
        splits = split_in_time(data, val_data, config.split_blocks, config.gap_fraction)
    scorer = trained.scorer
    explainer, section = _fit_explainer(scorer, splits, config)
    summary["config"] = asdict(config)
    summary["explainer"] = section
    log_lines = (trained.directory / TRAINING_LOG_FILE).read_text().splitlines()
    calibration_scores, _ = score_in_batches(scorer, splits.calibration)
    return TrainResult(
        scorer=scorer,
        sensor_names=trained.sensor_names,
        sensor_low=np.asarray(trained.manifest.sensor_low),
        sensor_high=np.asarray(trained.manifest.sensor_high),
        threshold=trained.threshold,
        baseline=trained.baseline,
        baseline_threshold=trained.baseline_threshold,
        history=[json.loads(line) for line in log_lines],
        calibration=splits.calibration,
        calibration_scores=calibration_scores,
        summary=summary,
        explainer=explainer,
        alarm_rule=None if trained.manifest.alarms is None else EpisodeRule.of(trained.manifest.alarms),
        stuck_limits=_stuck_limits(trained.manifest.alarms),
        jitter=_jitter(trained.manifest),
        velocity=_velocity(trained.manifest),
        sensor_units=trained.manifest.sensor_units,
    )


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
