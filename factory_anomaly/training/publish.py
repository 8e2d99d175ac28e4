"""Turn a training result into a verified model version, atomically.

  <store>/<name>/.build-XXXX/   everything is written here first (same filesystem as the target)
  <store>/<name>/<version>/     then renamed into place in one step, verified,
  <store>/<name>/CURRENT        and only then pointed at by an atomic replace.

A failure or an interrupt at any step removes the build directory and leaves `CURRENT` where it was, so
the service never sees a partial version. `publish_built` is that sequence alone; `recalibrate` publishes
through it too, so every version reaches the store the one way. The files of a version are named once, in
`factory_anomaly.artifact.layout`; who writes each:
  SCORER_FILE, EXPLAINER_FILE   `export` (the explainer only when the run trained one)
  MANIFEST_FILE                 `factory_anomaly.artifact.write_manifest`: threshold, sensors, checksums
  CARD_FILE and its *.png       `card`
  CHECKPOINT_FILE               `checkpoint` (torch weights; retraining and the explainer, never served)
  BASELINE_FILE                 `baseline` (the PCA baseline the card compares against)
  TRAINING_LOG_FILE             here: the autoencoder's epoch records (`fit`)
  EVALUATION_FILE               here: the test-recording report, when one was given
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from factory_anomaly.alarms.jitter import JitterSpec
from factory_anomaly.alarms.velocity import VelocitySpec
from factory_anomaly.artifact import (
    BASELINE_FILE,
    EVALUATION_FILE,
    EXPLAINER,
    EXPLAINER_FILE,
    FORMAT_VERSION,
    SCORER,
    SCORER_FILE,
    TRAINING_LOG_FILE,
    AlarmSpec,
    JitterSection,
    Manifest,
    ThresholdSpec,
    VelocitySection,
    check_consistency,
    hash_files,
    iso_utc,
    new_build_dir,
    publish_version,
    sha256_file,
    verify_artifact,
    version_id,
    write_current,
    write_manifest,
)
from factory_anomaly.training.card import write_card
from factory_anomaly.training.checkpoint import save_checkpoint
from factory_anomaly.training.evaluate import TestRecording, evaluate_recording, open_model
from factory_anomaly.training.export import (
    EXPLAINER_OUTPUT_NAMES,
    check_parity,
    explainer_graph_spec,
    export_explainer,
    export_scorer,
    scorer_graph_spec,
)
from factory_anomaly.training.result import TrainResult

log = logging.getLogger("training.publish")

EXPLAINER_PARITY_ROWS = 128  # per batch: the n x n attention makes torch slow on big batches
PARITY_RANDOM_ROWS = 256
PARITY_REAL_ROWS = 1024


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("torch", "numpy", "scikit-learn", "scipy", "onnx", "onnxscript", "onnxruntime"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def publish(result: TrainResult, model_dir: Path, test: TestRecording | None = None) -> Path:
    """Build, verify and publish a version of `result` under `model_dir`; point CURRENT at it; return it."""
    model_dir = Path(model_dir)
    return publish_built(model_dir, lambda build: _build(result, model_dir.name, build, test))


def publish_built(model_dir: Path, build_version: Callable[[Path], Manifest]) -> Path:
    """Publish the version `build_version` writes into a fresh build directory under `model_dir` (every
    file, the final manifest last; it returns that manifest): rename it into place, verify it, point
    CURRENT at it, return its path. Any failure removes what was written and leaves CURRENT as it was."""
    model_dir = Path(model_dir)
    build = new_build_dir(model_dir)
    published: Path | None = None
    try:
        manifest = build_version(build)
        published = publish_version(build, model_dir, manifest.version)
        verify_artifact(published)
        write_current(model_dir, manifest.version)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        if published is not None:
            shutil.rmtree(published, ignore_errors=True)
        raise
    log.info("published %s/%s and pointed CURRENT at it", model_dir, manifest.version)
    return published


def _build(result: TrainResult, name: str, build: Path, test: TestRecording | None) -> Manifest:
    scorer = result.scorer
    n = len(result.sensor_names)
    save_checkpoint(scorer, result.summary["architecture"]["hidden"], build)
    result.baseline.save(build / BASELINE_FILE)
    with (build / TRAINING_LOG_FILE).open("w") as f:
        f.writelines(json.dumps(record) + "\n" for record in result.history)
    export_scorer(scorer, build / SCORER_FILE)
    parity = check_parity(scorer, build / SCORER_FILE, _parity_batches(result))
    graphs = {SCORER: scorer_graph_spec(n)}
    metrics: dict[str, Any] = {"parity": parity, "held_out": result.summary["held_out"]}
    if result.explainer is not None:
        export_explainer(result.explainer, build / EXPLAINER_FILE)
        batches = [b[:EXPLAINER_PARITY_ROWS] for b in _parity_batches(result)]
        metrics["explainer_parity"] = check_parity(
            result.explainer, build / EXPLAINER_FILE, batches, EXPLAINER_OUTPUT_NAMES
        )
        graphs[EXPLAINER] = explainer_graph_spec(n)
        metrics["explainer"] = {"held_out_ranking": result.summary["explainer"]["held_out_ranking"]}

    created = datetime.now(UTC).replace(microsecond=0)
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        name=name,
        version=version_id(created, sha256_file(build / SCORER_FILE)),
        created_at=iso_utc(created),
        n_sensors=n,
        sensor_names=tuple(result.sensor_names),
        sensor_low=tuple(float(v) for v in result.sensor_low),
        sensor_high=tuple(float(v) for v in result.sensor_high),
        graphs=graphs,
        threshold=ThresholdSpec(
            value=float(result.threshold.value),
            method=result.threshold.method,
            target_fpr=float(result.threshold.target_fpr),
            n_calibration=int(result.threshold.n_calibration),
        ),
        files={},
        training=result.summary
        | {
            "threshold_details": result.threshold.to_dict()["details"],
            "baseline_pca": {"file": BASELINE_FILE, "threshold": result.baseline_threshold.to_dict()},
        },
        library_versions=library_versions(),
        metrics=metrics,
        alarms=_alarm_spec(result),
        sensor_units=result.sensor_units,
    )
    write_manifest(manifest, build)  # provisional: lets the evaluation read the version being built

    evaluation = None
    if test is not None:
        evaluation = evaluate_recording(open_model(build, verify=False), test)
        (build / EVALUATION_FILE).write_text(json.dumps(evaluation.report, indent=1))
        test_metrics = {"test": _headline(evaluation.report)}
        if "explainer_ranking" in evaluation.report:
            test_metrics["explainer_test_ranking"] = evaluation.report["explainer_ranking"]
        manifest = replace(manifest, metrics=manifest.metrics | test_metrics)
    write_card(build, manifest, result, evaluation)

    manifest = replace(manifest, files=hash_files(build))
    check_consistency(manifest)
    write_manifest(manifest, build)
    return manifest


def _parity_batches(result: TrainResult) -> list[np.ndarray]:
    """Real calibration rows, one single row, and random readings spread over each sensor's training range."""
    rng = np.random.default_rng(0)
    low, high = result.sensor_low, result.sensor_high
    span = np.maximum(high - low, 1e-6)
    random_rows = low + span * rng.uniform(-0.25, 1.25, size=(PARITY_RANDOM_ROWS, len(low)))
    real = result.calibration[:PARITY_REAL_ROWS]
    return [real, real[:1], random_rows.astype(np.float32)]


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    """The test metrics the manifest carries (the full report stays in EVALUATION_FILE)."""
    out: dict[str, Any] = {"rows": report["data"]["rows"], "file": Path(report["data"]["file"]).name}
    for model in ("autoencoder", "baseline_pca"):
        section = report[model]
        out[model] = {
            k: section[k] for k in ("roc_auc", "pr_auc", "precision", "recall", "f1", "false_alarm_rate")
        } | {"recall_by_fault_kind": section.get("recall_by_fault_kind", {})}
        if "ranking" in section:
            out[model]["ranking"] = section["ranking"]
    return out


def _alarm_spec(result: TrainResult) -> AlarmSpec | None:
    """The manifest's `alarms` section: the calibrated episode rule, or None where there was none."""
    rule, facts = result.alarm_rule, result.summary.get("alarms", {})
    if rule is None:
        return None
    return AlarmSpec(
        k=rule.k,
        n=rule.n,
        level=float(rule.level),
        close_after=rule.close_after,
        reading_period_s=float(facts["reading_period_s"]),
        target_episodes_per_day=float(facts["target_episodes_per_day"]),
        method=str(facts["method"]),
        stuck_limits=None if result.stuck_limits is None else tuple(int(v) for v in result.stuck_limits),
        jitter=_jitter_section(result.jitter, facts.get("jitter", {})),
        velocity=_velocity_section(result.velocity, facts.get("velocity", {})),
    )


def _jitter_section(spec: JitterSpec | None, facts: dict[str, Any]) -> JitterSection | None:
    if spec is None or spec.level is None:
        return None
    return JitterSection(
        lam=float(spec.lam),
        level=float(spec.level),
        target_episodes_per_day=float(facts["target_episodes_per_day"]),
        noise_floor=tuple(float(v) for v in spec.noise_floor),
        noise_slope=tuple(float(v) for v in spec.noise_slope),
        tail_start=tuple(float(v) for v in spec.tail_start),
        tail_excess=tuple(float(v) for v in spec.tail_excess),
    )


def _velocity_section(spec: VelocitySpec | None, facts: dict[str, Any]) -> VelocitySection | None:
    if spec is None or spec.level is None:
        return None

    def rows(a: np.ndarray) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(float(v) for v in row) for row in a)

    return VelocitySection(
        lag=int(spec.lag),
        level=float(spec.level),
        target_episodes_per_day=float(facts["target_episodes_per_day"]),
        center=tuple(float(v) for v in spec.center),
        scale=tuple(float(v) for v in spec.scale),
        directions=rows(spec.directions),
        change_mean=tuple(float(v) for v in spec.change_mean),
        change_precision=rows(spec.change_precision),
    )
