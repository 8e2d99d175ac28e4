"""GET /v1/model: what is serving, its threshold and its headline evaluation metrics."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends

from factory_anomaly.app.routes.deps import ModelDep, require_api_key
from factory_anomaly.app.serving.drift import DriftStatus
from factory_anomaly.app.wire.schemas import (
    AlarmRule,
    CalibrationDrift,
    HeadlineMetrics,
    ModelInfo,
    ThresholdInfo,
    error_responses,
)
from factory_anomaly.artifact import Manifest, iso_utc

router = APIRouter(prefix="/v1", tags=["model"], dependencies=[Depends(require_api_key)])

_HEADLINE = ("roc_auc", "pr_auc", "precision", "recall", "f1", "false_alarm_rate")


def headline_metrics(manifest: Manifest) -> HeadlineMetrics | None:
    """The autoencoder's metrics on the separate test recording when the manifest has them, else on the
    held-out split of the training data; None when it has neither."""
    for source in ("test", "held_out"):
        section: Any = manifest.metrics.get(source)
        numbers = section.get("autoencoder") if isinstance(section, dict) else None
        if isinstance(numbers, dict):
            picked = {
                key: float(value)
                for key in _HEADLINE
                if isinstance(value := numbers.get(key), int | float) and not isinstance(value, bool)
            }
            return HeadlineMetrics(source=source, **picked)
    return None


_CALIBRATION_FACTS = (
    "procedure",
    "requested_target_fpr",
    "tightest_supported_target_fpr",
    "threshold_interval_90",
    "held_out_check",
)


def calibration_facts(manifest: Manifest) -> dict[str, Any]:
    """What training recorded about the calibration (`training.calibration`); a version from before those
    facts existed, or one whose record does not parse, shows none of them rather than failing."""
    recorded: Any = manifest.training.get("calibration")
    if not isinstance(recorded, dict):
        return {}
    facts = {key: recorded[key] for key in _CALIBRATION_FACTS if recorded.get(key) is not None}
    try:
        ThresholdInfo(value=0.0, method="", target_fpr=0.5, n_calibration=1, **facts)
    except ValueError:
        return {}
    return facts


def calibration_drift(status: DriftStatus) -> CalibrationDrift:
    """The detector's status as the API writes it (times as ISO 8601 UTC)."""

    def iso(seconds: float | None) -> str | None:
        return None if seconds is None else iso_utc(datetime.fromtimestamp(seconds, UTC))

    return CalibrationDrift(
        state=status.state,
        window_s=status.window_s,
        readings=status.readings,
        flags=status.flags,
        expected_flags=status.expected_flags,
        ratio=status.ratio,
        sustained_ratio=status.sustained_ratio,
        p_value=status.p_value,
        since=iso(status.since),
        as_of=iso(status.as_of),
        message=status.message,
    )


@router.get(
    "/model",
    response_model=ModelInfo,
    responses=error_responses({401: "missing or unknown API key", 503: "no model is loaded"}),
    summary="The model serving now",
)
async def model_info(model: ModelDep) -> ModelInfo:
    manifest = model.manifest
    threshold = manifest.threshold
    return ModelInfo(
        name=manifest.name,
        version=manifest.version,
        n_sensors=manifest.n_sensors,
        sensor_names=list(manifest.sensor_names),
        sensor_units=None if manifest.sensor_units is None else list(manifest.sensor_units),
        threshold=ThresholdInfo(
            value=threshold.value,
            method=threshold.method,
            target_fpr=threshold.target_fpr,
            n_calibration=threshold.n_calibration,
            **calibration_facts(manifest),
        ),
        provider=model.provider,
        created_at=manifest.created_at,
        loaded_at=model.loaded_at,
        metrics=headline_metrics(manifest),
        explainer=model.has_explainer,
        calibration_drift=calibration_drift(model.calibration.status(time.time())),
        alarms=alarm_rule(manifest),
    )


def alarm_rule(manifest: Manifest) -> AlarmRule | None:
    """The version's episode rule with what training measured of it."""
    if manifest.alarms is None:
        return None
    facts = manifest.training.get("alarms", {})
    keys = ("episodes_per_day_on_normal_scores", "episodes_per_day_ci95", "days_covered")
    measured = {k: facts[k] for k in keys if k in facts}
    return AlarmRule(**manifest.alarms.to_dict(), **measured)
