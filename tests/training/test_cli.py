"""`python -m factory_anomaly.training` end to end on a small generated dataset, and its error exits."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env_args = [sys.executable, "-m", "factory_anomaly.training", *args]
    return subprocess.run(env_args, cwd=ROOT, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_synth_train_evaluate_end_to_end(tmp_path: Path) -> None:
    small = ["--sensors", "48", "--plant-seed", "5", "-q"]
    assert cli("synth", "--out", str(tmp_path / "train"), "--rows", "3000", *small).returncode == 0
    done = cli(
        "synth",
        "--out",
        str(tmp_path / "test"),
        "--rows",
        "1500",
        "--seed",
        "9",
        "--formats",
        "parquet",
        *small,
    )
    assert done.returncode == 0, done.stderr
    trained = cli(
        "train", "--data", str(tmp_path / "train" / "readings.csv"), "--out", str(tmp_path / "model"),
        "--epochs", "5", "--hidden", "32,6", "--target-fpr", "0.01", "--threads", "1", "--no-progress", "-q",
        "--sensor-units", str(tmp_path / "train" / "sensors.json"),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["threshold"]["target_fpr"] == 0.01
    assert (tmp_path / "model" / "CURRENT").is_file()
    version = Path(json.loads(trained.stdout)["version"])
    records = json.loads((tmp_path / "train" / "sensors.json").read_text())
    units = json.loads((version / "manifest.json").read_text())["sensor_units"]
    assert units == [r["unit"] for r in records] and "bar" in units
    test = tmp_path / "test"
    evaluated = cli(
        "evaluate", "--model", str(tmp_path / "model"), "--data", str(test / "readings.parquet"),
        "--labels", str(test / "labels.csv"), "--fault-sensors", str(test / "fault_sensors.json"),
        "--out", str(tmp_path / "report.json"), "-q",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    for model in ("autoencoder", "baseline_pca"):
        section = report[model]
        assert section["n_rows"] == 1500
        assert 0.0 <= section["roc_auc"] <= 1.0 and 0.0 <= section["pr_auc"] <= 1.0
        assert {"precision", "recall", "f1", "false_alarm_rate"} <= section.keys()
        assert set(section["recall_by_fault_kind"]) <= {
            "spike", "stuck", "drift", "correlation_break", "noise_burst", "excursion",
        }  # fmt: skip
        assert {"hitrate@100%", "ndcg@100%", "hitrate@150%", "ndcg@150%"} <= section["ranking"].keys()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--data", "nope.csv", "--out", "x"], "not found"),
        (["train", "--data", "pyproject.toml", "--out", "x"], "unsupported|unknown"),
        (
            ["evaluate", "--model", "nowhere", "--data", "pyproject.toml", "--out", "r.json"],
            "model not found",
        ),
        (["synth", "--out", "x", "--formats", "xlsx"], "unknown"),
        (["synth", "--out", "x", "--anomaly-rate", "0.9"], "anomaly-rate"),
    ],
)
def test_bad_input_exits_2_with_a_message(tmp_path: Path, args: list[str], message: str) -> None:
    args = [str(tmp_path / a) if a in ("x", "r.json") else a for a in args]
    done = cli(*args)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and re.search(message, done.stderr), done.stderr


def test_train_names_the_bad_entry_of_a_units_file(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    units = tmp_path / "units.json"
    units.write_text('{"a": "bar", "c": "V"}')
    done = cli("train", "--data", str(data), "--out", str(tmp_path / "m"), "--sensor-units", str(units))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {units}: key 'c': sensor 'c' is not one of"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_train_reports_the_bad_cell(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,oops\n")
    done = cli("train", "--data", str(bad), "--out", str(tmp_path / "m"))
    assert done.returncode == 2
    assert "'oops'" in done.stderr and "row 1" in done.stderr and "'b'" in done.stderr
    assert not (tmp_path / "m").exists()
