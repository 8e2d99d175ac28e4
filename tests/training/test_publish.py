"""Publishing a version: layout, atomicity under failure and interruption, and the model card."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from factory_anomaly.artifact import BUILD_PREFIX, list_versions, read_current, verify_artifact
from factory_anomaly.training import publish
from factory_anomaly.training.train import TrainConfig, train
from tests.conftest import as_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_version_id_sorts_by_time_and_names_the_content(trained_small: Path) -> None:
    manifest = verify_artifact(trained_small)
    stamp, digest = manifest.version.split("-")
    assert stamp == manifest.created_at.replace("-", "").replace(":", "")
    assert len(digest) == 8 and int(digest, 16) >= 0
    assert manifest.files["model.onnx"].startswith(digest)  # short hash of the graph


def test_second_training_publishes_beside_the_first(small_plant, tmp_path: Path, small_config) -> None:
    data = as_dataset(small_plant, small_plant.simulate(1200, seed=6))
    config = replace(small_config, max_epochs=2)
    first = train(data, tmp_path / "m", config)
    time.sleep(1.1)  # version ids have one-second resolution
    second = train(data, tmp_path / "m", replace(config, seed=1))
    assert list_versions(tmp_path / "m") == [first.name, second.name]  # sorted by time
    assert read_current(tmp_path / "m") == second.name
    verify_artifact(first)  # the older version stays intact and servable
    # no test recording: the card says so and plots the calibration scores only
    assert "No labelled test recording was given" in (second / "model_card.md").read_text()
    assert (second / "scores.png").is_file() and not (second / "roc.png").exists()
    assert "test" not in verify_artifact(second).metrics


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failing_build_leaves_no_version_and_current_unmoved(
    small_plant, tmp_path: Path, small_config, monkeypatch, failure: BaseException
) -> None:
    data = as_dataset(small_plant, small_plant.simulate(1200, seed=6))
    config = replace(small_config, max_epochs=2)
    good = train(data, tmp_path / "m", config)

    def broken_card(*args: object, **kwargs: object) -> None:  # fault injection: a writer that fails
        raise failure

    monkeypatch.setattr(publish, "write_card", broken_card)
    with pytest.raises(type(failure)):
        train(data, tmp_path / "m", replace(config, seed=2))
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"CURRENT", good.name}
    assert read_current(tmp_path / "m") == good.name


def test_killed_training_leaves_no_version_and_current_unmoved(small_plant, tmp_path: Path) -> None:
    """SIGKILL while the version is being written (no cleanup can run): readers still see only the old
    version; the abandoned `.build-` directory is ignored by them."""
    data = as_dataset(small_plant, small_plant.simulate(1200, seed=6))
    config = TrainConfig(
        hidden=(32, 6), max_epochs=2, threads=1, progress=False, explainer=False, target_fpr=0.01
    )
    model_dir = tmp_path / "m"
    good = train(data, model_dir, config)
    np.save(tmp_path / "rows.npy", data.values)
    script = f"""
import numpy as np, time
from pathlib import Path
from dataclasses import replace
from factory_anomaly.training import publish
from factory_anomaly.training.data import Dataset
from factory_anomaly.training.train import TrainConfig, train
real_export = publish.export_scorer
def slow_export(*args, **kwargs):
    path = real_export(*args, **kwargs)
    time.sleep(60)  # hold the build half-written until killed
    return path
publish.export_scorer = slow_export
values = np.load({str(tmp_path / "rows.npy")!r})
data = Dataset(values, tuple("{"s%d"}" % j for j in range(values.shape[1])), source=Path("<memory>"))
config = TrainConfig(
    hidden=(32, 6), max_epochs=2, threads=1, progress=False, seed=3, explainer=False, target_fpr=0.01
)
train(data, Path({str(model_dir)!r}), config)
"""
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            builds = [p for p in model_dir.iterdir() if p.name.startswith(BUILD_PREFIX)]
            if builds and (builds[0] / "model.onnx").exists():
                break
            assert child.poll() is None, "the training child exited early"
            time.sleep(0.05)
        else:
            pytest.fail("the child never started writing a version")
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    assert list_versions(model_dir) == [good.name]
    assert read_current(model_dir) == good.name
    verify_artifact(model_dir / read_current(model_dir))


def test_model_card_reports_the_evaluation(trained_small: Path) -> None:
    card = (trained_small / "model_card.md").read_text()
    report = json.loads((trained_small / "evaluation.json").read_text())
    manifest = verify_artifact(trained_small)
    ae, pca = report["autoencoder"], report["baseline_pca"]
    assert f"| ROC-AUC | {ae['roc_auc']:.3f} | {pca['roc_auc']:.3f} |" in card
    assert f"| PR-AUC | {ae['pr_auc']:.3f} | {pca['pr_auc']:.3f} |" in card
    assert f"{manifest.threshold.value:.6g}" in card and manifest.version in card
    # the quality benchmark's columns for the card's own test set: false alarms against the promise, best F1
    normal = ae["n_rows"] - ae["n_anomalous"]
    assert ae["expected_false_alarms"] == pytest.approx(normal * manifest.threshold.target_fpr)
    low, high = ae["false_alarm_ratio_ci95"]
    assert low <= ae["false_alarm_ratio"] <= high
    assert f"| false alarms / expected at target {manifest.threshold.target_fpr:g}" in card
    assert (
        f"{ae['false_positives']} / {ae['expected_false_alarms']:.3g} ({ae['false_alarm_ratio']:.2f}×" in card
    )
    assert f"| best F1 over all thresholds (reference only) | {ae['best_f1']:.3f} |" in card
    assert "Held-out check" in card and "Requested target 0.02" in card
    for kind, section in ae["recall_by_fault_kind"].items():
        assert f"| {kind} | {section['n_rows']} | {section['recall']:.3f} |" in card
    for plot in ("loss.png", "scores.png", "roc.png", "recall_by_kind.png"):
        assert f"]({plot})" in card
        head = (trained_small / plot).read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n"
