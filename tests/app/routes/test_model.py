"""GET /v1/model: the serving model's identity, sensors, threshold, provider and headline metrics."""

from __future__ import annotations

from dataclasses import replace

import httpx
import onnxruntime as ort

from factory_anomaly.app.routes.model import calibration_facts, headline_metrics
from factory_anomaly.artifact import Manifest


def test_model_describes_the_artifact(client: httpx.Client, manifest: Manifest) -> None:
    response = client.get("/v1/model")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == manifest.name
    assert body["version"] == manifest.version
    assert body["n_sensors"] == manifest.n_sensors == 40
    assert body["sensor_names"] == list(manifest.sensor_names)
    threshold = body["threshold"]
    assert {k: threshold[k] for k in manifest.threshold.to_dict()} == manifest.threshold.to_dict()
    calibration = manifest.training["calibration"]
    assert threshold["procedure"] == "cross_fit"
    assert threshold["requested_target_fpr"] == calibration["requested_target_fpr"] == 0.02
    assert threshold["threshold_interval_90"] == calibration["threshold_interval_90"]
    check = threshold["held_out_check"]
    assert check == calibration["held_out_check"] and check["rows"] == manifest.threshold.n_calibration
    assert check["false_alarm_rate_ci95"][0] <= check["false_alarm_rate"] <= check["false_alarm_rate_ci95"][1]
    assert body["created_at"] == manifest.created_at
    assert body["provider"] in ort.get_available_providers()
    test_metrics = manifest.metrics["test"]["autoencoder"]
    assert body["metrics"]["source"] == "test"
    for key in ("roc_auc", "pr_auc", "precision", "recall", "f1", "false_alarm_rate"):
        assert body["metrics"][key] == test_metrics[key]


def test_headline_metrics_fall_back_to_held_out(manifest: Manifest) -> None:
    held_out_only = replace(manifest, metrics={"held_out": manifest.metrics["held_out"]})
    metrics = headline_metrics(held_out_only)
    assert metrics is not None and metrics.source == "held_out"
    assert metrics.roc_auc == manifest.metrics["held_out"]["autoencoder"]["roc_auc"]
    assert headline_metrics(replace(manifest, metrics={})) is None
    assert headline_metrics(replace(manifest, metrics={"test": "odd"})) is None


def test_calibration_facts_are_optional(manifest: Manifest) -> None:
    """A version from before the calibration facts, or with an odd record, shows the threshold alone."""
    assert calibration_facts(replace(manifest, training={})) == {}
    odd = dict(manifest.training, calibration={"held_out_check": "odd"})
    assert calibration_facts(replace(manifest, training=odd)) == {}
    assert calibration_facts(manifest)["procedure"] == "cross_fit"
