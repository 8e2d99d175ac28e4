"""`make quality`'s smoke run (one small real set, two epochs) and the pieces its verdicts rest on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from bench.common import ROOT
from bench.quality import (
    CALIBRATION_BAND,
    JUDGED_MIN_EXPECTED,
    SHARED_DATA,
    SPACED_GAP,
    _spaced_row,
    check_levels,
    write_doc,
)
from factory_anomaly.alarms.rule import EpisodeRule
from factory_anomaly.training.episode_quality import judge_episodes

SMOKE_SET = "mvtec-vit-metal_nut"


def test_check_levels_judges_only_what_the_rows_can_measure() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(10_000)
    levels = [(0.1, 0.9), (0.01, 0.99), (1e-3, 0.999), (1e-5, 0.99999)]
    checks = {c["target_fpr"]: c for c in check_levels(scores, levels, judged=True)}
    assert set(checks) == {0.1, 0.01, 1e-3}  # 1e-5 expects 0.1 false alarms: left out
    assert checks[0.1]["judged"] and checks[0.01]["judged"]
    assert not checks[1e-3]["judged"]  # 10 expected < JUDGED_MIN_EXPECTED: reported only
    assert JUDGED_MIN_EXPECTED == 20
    for c in checks.values():
        assert c["ratio_ci95"][0] <= c["ratio"] <= c["ratio_ci95"][1]
        assert c["within_band"] == (CALIBRATION_BAND[0] <= c["ratio"] <= CALIBRATION_BAND[1])
    shifted = check_levels(scores + 0.05, levels[:1], judged=True)[0]
    assert shifted["ratio"] > 1.4 and shifted["ratio_ci95"][0] > 1.3


def test_the_spaced_run_row_gives_each_kind_its_count_and_interval() -> None:
    scores = np.zeros(10_000)
    labels = np.zeros(10_000, dtype=np.int8)
    kinds = np.full(10_000, "none", dtype=object)
    for i, start in enumerate(range(1000, 9000, 1000)):  # 8 drifts, 600+ readings apart; 3 caught
        labels[start : start + 50] = 1
        kinds[start : start + 50] = "drift"
        if i < 3:
            scores[start + 5 : start + 10] = 9.0
    report = judge_episodes(scores, labels, kinds, EpisodeRule(k=3, n=10, level=1.0, close_after=20), 1.0)
    row = _spaced_row("plant", "ours", report)
    assert row[0] == f"plant, faults {SPACED_GAP} apart" and row[3] == "0.38"
    assert row[4].startswith("drift 3/8 [0.09, 0.76] (p90 ")  # Clopper-Pearson for 3 of 8
    assert row[5].startswith("0.00 [0.00, ") and "spaced run" in row[5]


def test_write_doc_replaces_only_the_generated_section(tmp_path) -> None:
    doc = tmp_path / "quality.md"
    doc.write_text("# Q\n\nintro\n<!-- quality:begin -->\nold\n<!-- quality:end -->\n\noutro\n")
    write_doc("new table", doc)
    assert (
        doc.read_text() == "# Q\n\nintro\n<!-- quality:begin -->\nnew table\n<!-- quality:end -->\n\noutro\n"
    )


@pytest.mark.skipif(not (SHARED_DATA / SMOKE_SET).is_dir(), reason=f"{SHARED_DATA / SMOKE_SET} is not here")
def test_smoke_run_on_one_small_real_set(tmp_path) -> None:
    out, doc = tmp_path / "quality.json", tmp_path / "quality.md"
    argv = [
        sys.executable,
        "-m",
        "bench.quality",
        "--sets",
        SMOKE_SET,
        "--epochs",
        "2",
        "--baselines",
        "pca,max_abs_z",
        "--out",
        str(out),
        "--doc",
        str(doc),
        "--work",
        str(tmp_path / "work"),
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    (result,) = results["sets"]
    assert result["set"] == SMOKE_SET and result["kind"] == "mvtec"
    ours = result["detectors"]["ours"]
    assert "error" not in ours, ours
    # ~200 normal rows cannot support 1e-4: trained at the tightest supported target, and it says so
    assert ours["calibration"]["accepted_tightest_target"] is True
    assert ours["target_fpr"] == ours["calibration"]["target_fpr"] > 1e-4
    for name in ("ours", "pca", "max_abs_z"):
        row = result["detectors"][name]
        assert 0.0 <= row["roc_auc"] <= 1.0 and 0.0 <= row["pr_auc"] <= 1.0
        assert row["roc_auc_ci95"][0] <= row["roc_auc"] <= row["roc_auc_ci95"][1]
        assert row["target_fpr"] == ours["target_fpr"]  # the baselines are calibrated at ours' target
    folds = result["calibration_checks"]["ours"]["cross_fitted_folds"]
    assert folds and any(c["judged"] for c in folds)  # 0.1 over ~300 pooled rows: >= 20 expected
    text = doc.read_text()
    assert "<!-- quality:begin -->" in text and SMOKE_SET in text and "Does the calibration hold" in text
