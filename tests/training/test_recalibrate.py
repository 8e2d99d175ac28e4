"""`python -m factory_anomaly.training recalibrate`: a real tiny model trained by `train()`, recalibrated on
recent normal readings of the same plant made noisier (a changed machine), then checked as the store, the
artifact contract and the service see the result; and every bad input refused with the store untouched."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from factory_anomaly.app.config import Settings
from factory_anomaly.app.model.loader import load_model
from factory_anomaly.artifact import list_versions, read_current, read_manifest, verify_artifact
from factory_anomaly.plant.synthetic import Plant
from factory_anomaly.training import recalibrate as recalibrate_module
from factory_anomaly.training.__main__ import main
from factory_anomaly.training.config import TrainConfig
from factory_anomaly.training.threshold import round_up_target, tightest_supported_target
from factory_anomaly.training.train import train
from tests.conftest import as_dataset

ROOT = Path(__file__).resolve().parents[2]
TARGET = 0.02  # the tiny model's target: 1 140 check rows expect 22.8 false alarms, so it is judged
TINY = TrainConfig(
    hidden=(16, 4), max_epochs=3, threads=1, progress=False, explainer=False, target_fpr=TARGET,
    alarm_k=2, alarm_n=5,  # an episode rule 2 000 rows can calibrate (the default 3 of 10 needs 2 009)
)  # fmt: skip  # seconds to train: what is checked here is the artifact around the model, not the model


def write_recording(
    path: Path,
    plant: Plant,
    rows: int,
    *,
    seed: int,
    anomaly_rate: float = 0.05,
    noise: float = 0.0,
    timestamps: bool = True,
) -> Path:
    """An NPZ recording of the plant with labelled faults; `noise` (in per-sensor standard deviations)
    makes every score larger, as a machine that runs rougher after a change would."""
    run = plant.simulate(rows, seed=seed, anomaly_rate=anomaly_rate)
    rng = np.random.default_rng(seed)
    values = run.values + noise * run.values.std(axis=0) * rng.normal(size=run.values.shape)
    arrays = {"values": values.astype(np.float32), "sensor_names": np.array(plant.sensor_names)}
    arrays["label"] = run.labels
    if timestamps:
        arrays["timestamp"] = run.timestamps.astype("datetime64[ns]")
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small_plant: Plant) -> Path:
    """A model directory holding one version trained by `train()` on 2 000 normal readings."""
    model_dir = tmp_path_factory.mktemp("store") / "tiny-ae"
    train(as_dataset(small_plant, small_plant.simulate(2000, seed=1)), model_dir, TINY)
    return model_dir


@pytest.fixture
def model_dir(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained model directory (recalibrating moves its CURRENT)."""
    return Path(shutil.copytree(trained, tmp_path / "store" / trained.name))


@pytest.fixture(scope="module")
def recent(tmp_path_factory: pytest.TempPathFactory, small_plant: Plant) -> Path:
    """4 000 recent readings, rougher than the training ones (noise of one standard deviation per sensor)."""
    return write_recording(
        tmp_path_factory.mktemp("recent") / "recent.npz", small_plant, 4000, seed=3, noise=1.0
    )


def snapshot(model_dir: Path) -> dict[str, str]:
    """Every file under the model directory (CURRENT and build directories included) with its sha256."""
    return {
        p.relative_to(model_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(model_dir.rglob("*"))
        if p.is_file()
    } | {p.name + "/": "dir" for p in model_dir.iterdir() if p.is_dir()}


def run(*args: str | Path) -> int:
    return main(["recalibrate", *(str(a) for a in args), "-q"])


@pytest.mark.slow
def test_recalibrating_on_shifted_data_moves_the_threshold_and_publishes_a_new_version(
    model_dir: Path, recent: Path
) -> None:
    previous = model_dir / read_current(model_dir)
    before = verify_artifact(previous)
    previous_files = snapshot(previous)
    command = [sys.executable, "-m", "factory_anomaly.training", "recalibrate", "--model", str(model_dir),
               "--data", str(recent), "--reason", "bearing replaced on line 3", "-q"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)

    # the store: a new version beside the old one, CURRENT moved, the old version untouched
    new = Path(summary["version"])
    assert list_versions(model_dir) == sorted([previous.name, new.name])
    assert read_current(model_dir) == new.name
    assert snapshot(previous) == previous_files
    verify_artifact(previous)
    after = verify_artifact(new)

    # only the calibration changed: every file but the card and the manifest is the previous one's bytes
    assert set(after.files) == set(before.files)
    for rel in before.files:
        if rel != "model_card.md":
            assert (new / rel).read_bytes() == (previous / rel).read_bytes(), rel
    assert after.graphs == before.graphs and after.sensor_names == before.sensor_names
    assert after.metrics == before.metrics and after.library_versions == before.library_versions

    # the rougher machine scores higher: the threshold rises, and the old one would flag far too much
    assert after.threshold.target_fpr == before.threshold.target_fpr == TARGET
    assert after.threshold.value > 1.5 * before.threshold.value
    assert summary["threshold"] == after.threshold.to_dict()
    check = summary["check"]
    assert (
        check["previous_threshold"]["false_alarms"] > 5 * check["previous_threshold"]["expected_false_alarms"]
    )
    at_target = next(level for level in check["levels"] if level["target_fpr"] == TARGET)
    assert at_target["threshold"] == after.threshold.value
    assert at_target["status"] == "judged" and at_target["expected_false_alarms"] >= 20
    low, high = at_target["false_alarm_rate_ci95"]
    assert low <= at_target["false_alarm_rate"] <= high
    assert at_target["false_alarm_rate"] == at_target["false_alarms"] / at_target["rows"]
    assert {level["status"] for level in check["levels"]} <= {"judged", "reported"}
    assert any(level["status"] == "reported" for level in check["levels"])  # 1e-3: 1.1 expected

    # the manifest's record, and the previous training entries kept
    training = after.training
    calibration, record = training["calibration"], training["recalibration"]
    assert calibration["procedure"] == "recalibrated"
    assert calibration["target_fpr"] == TARGET and calibration["requested_target_fpr"] == TARGET
    assert calibration["rows"] == after.threshold.n_calibration == record["calibration"]["rows"]
    assert calibration["rows"] + check["rows"] == record["data"]["normal_rows"]
    assert calibration["rows"] == record["data"]["normal_rows"] * 70 // 100
    assert calibration["aggregate"] == before.training["calibration"]["aggregate"]
    assert [level["target_fpr"] for level in calibration["levels"]] == [0.1, 0.01, 0.001]
    assert (
        calibration["threshold_interval_90"][0]
        <= after.threshold.value
        <= calibration["threshold_interval_90"][1]
    )
    assert training["threshold_details"]["expected_exceedances"] == calibration["rows"] * TARGET
    labels = np.load(recent)["label"]
    expected = {
        "file": str(recent.resolve()),
        "sha256": hashlib.sha256(recent.read_bytes()).hexdigest(),
        "rows": 4000,
        "normal_rows": int((labels == 0).sum()),
        "labelled_anomalous_rows_dropped": int(labels.sum()),
    }
    assert {k: record["data"][k] for k in expected} == expected
    assert record["data"]["time_range"]["from"].endswith("Z")
    assert record["calibration"]["time_range"]["to"] < record["check"]["time_range"]["from"]
    assert record["reason"] == "bearing replaced on line 3"
    assert record["previous_version"] == previous.name
    assert record["previous_threshold"] == before.threshold.to_dict() == summary["previous_threshold"]
    assert record["at"] == after.created_at
    for key in ("config", "architecture", "data", "splits", "epochs_run", "baseline_pca"):
        assert training[key] == before.training[key], key

    # the episode rule rests on the same scores: its level is re-estimated too, the rest of it kept
    assert before.alarms is not None and after.alarms is not None
    assert after.alarms.level > before.alarms.level
    assert after.alarms == replace(before.alarms, level=after.alarms.level)
    alarms = record["alarms"]
    assert alarms["re_estimated"] and alarms["previous_level"] == before.alarms.level
    assert alarms["level"] == after.alarms.level and alarms["fit"]["calibrated"]
    assert alarms["check"]["days"] == pytest.approx(check["rows"] * before.alarms.reading_period_s / 86_400)
    assert alarms["check"]["previous"]["episodes"] >= alarms["check"]["new"]["episodes"]

    card = (new / "model_card.md").read_text()
    assert f"level {before.alarms.level:.4g} → **{after.alarms.level:.4g}**" in card
    assert card.startswith((previous / "model_card.md").read_text().rstrip("\n"))
    section = card.split("## Recalibration", 1)[1]
    assert "bearing replaced on line 3" in section and previous.name in section
    assert f"**{after.threshold.value:.4g}**" in section and "| judged: " in section


def test_the_service_loads_the_recalibrated_version_and_the_previous_one(
    model_dir: Path, recent: Path
) -> None:
    previous = model_dir / read_current(model_dir)
    assert run("--model", model_dir, "--data", recent, "--reason", "new product") == 0
    new = model_dir / read_current(model_dir)
    served = load_model(new, Settings(provider="cpu"))
    rolled_back = load_model(previous, Settings(provider="cpu"))  # rolling back is a reload of it
    assert served.threshold == read_manifest(new).threshold.value != rolled_back.threshold
    rows = np.load(recent)["values"][:64]
    np.testing.assert_array_equal(served.score(rows)[0], rolled_back.score(rows)[0])  # the same model


def test_rows_without_timestamps_are_placed_by_index_and_labelled_rows_are_dropped(
    model_dir: Path, tmp_path: Path, small_plant: Plant
) -> None:
    data = write_recording(tmp_path / "plain.npz", small_plant, 600, seed=4, timestamps=False)
    assert run("--model", model_dir, "--data", data, "--reason", "sensor swap") == 0
    record = read_manifest(model_dir / read_current(model_dir)).training["recalibration"]
    normal = np.flatnonzero(np.load(data)["label"] == 0)
    cut = normal.size * 70 // 100
    assert record["data"]["time_range"] == {"first_row": int(normal[0]), "last_row": int(normal[-1])}
    assert record["calibration"]["time_range"] == {
        "first_row": int(normal[0]),
        "last_row": int(normal[cut - 1]),
    }
    assert record["check"]["time_range"] == {"first_row": int(normal[cut]), "last_row": int(normal[-1])}


def test_accept_tightest_target_calibrates_for_what_the_rows_support(
    model_dir: Path, tmp_path: Path, small_plant: Plant
) -> None:
    data = write_recording(tmp_path / "short.npz", small_plant, 500, seed=5, anomaly_rate=0.0)
    args = ["--model", model_dir, "--data", data, "--reason", "r", "--target-fpr", "0.001"]
    assert run(*args, "--accept-tightest-target") == 0
    manifest = read_manifest(model_dir / read_current(model_dir))
    calibration = manifest.training["calibration"]
    assert calibration["accepted_tightest_target"] is True
    assert calibration["requested_target_fpr"] == 0.001
    assert calibration["tightest_supported_target_fpr"] == tightest_supported_target(350) == 1 / 350
    assert manifest.threshold.target_fpr == 0.003  # 1 / 350 rounded up to one digit, as `train` does
    # 350 rows are too few to fit the episode rule's level: the previous one is kept, and the card says so
    previous = read_manifest(model_dir / manifest.training["recalibration"]["previous_version"])
    assert manifest.alarms == previous.alarms is not None
    assert manifest.training["recalibration"]["alarms"]["re_estimated"] is False
    card = (model_dir / manifest.version / "model_card.md").read_text()
    assert "kept from the previous version: 350 normal readings; the fit needs at least 1004" in card


def test_recalibrating_twice_keeps_the_chain(
    model_dir: Path, recent: Path, tmp_path: Path, small_plant
) -> None:
    first = read_current(model_dir)
    assert run("--model", model_dir, "--data", recent, "--reason", "first") == 0
    second = read_current(model_dir)
    other = write_recording(tmp_path / "other.npz", small_plant, 1000, seed=6)
    assert run("--model", model_dir, "--data", other, "--reason", "second") == 0
    manifest = read_manifest(model_dir / read_current(model_dir))
    record = manifest.training["recalibration"]
    assert record["previous_version"] == second and record["reason"] == "second"
    assert [(r["previous_version"], r["reason"]) for r in record["earlier"]] == [(first, "first")]
    card = (model_dir / manifest.version / "model_card.md").read_text()
    assert card.count("## Recalibration") == 2


def test_the_accepted_target_is_rounded_up_to_one_digit() -> None:
    """train and recalibrate both round the tightest supported target with `round_up_target`."""
    for n, want in ((70, 2e-2), (137, 8e-3), (350, 3e-3), (12_345, 9e-5), (20_000, 5e-5)):
        assert round_up_target(tightest_supported_target(n)) == want, n
        assert round_up_target(tightest_supported_target(n)) >= tightest_supported_target(n)


def _bad_sensors(path: Path, plant: Plant) -> Path:
    write_recording(path, plant, 400, seed=7)
    arrays = dict(np.load(path))
    arrays["sensor_names"] = np.array([*plant.sensor_names[:-1], "st99_mystery_01"])
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing model", r"nowhere: model not found"),
        ("version directory", r"is a version directory; --model takes the model directory"),
        ("no CURRENT", r"no version to recalibrate \(current_missing\)"),
        ("unverifiable", r"does not verify \(checksum_mismatch\): model\.onnx: checksum mismatch"),
        ("missing data", r"not found"),
        (
            "sensors differ",
            r"bad\.npz: data has 40 sensors, model expects 40: missing .*; unexpected .*mystery",
        ),
        ("too few rows", r"few\.npz holds 99 normal rows; recalibrating needs at least 100"),
        (
            "unsupported target",
            r"short\.npz: target false-alarm rate 0\.001 .*tightest target they support is 0\.003",
        ),
        ("empty reason", r"--reason is empty"),
    ],
)
def test_bad_input_exits_2_with_one_error_line_and_leaves_the_store_unchanged(
    model_dir: Path, recent: Path, tmp_path: Path, small_plant: Plant, capsys, case: str, message: str
) -> None:
    version = model_dir / read_current(model_dir)
    model, data, extra = model_dir, recent, ["--reason", "drift after service"]
    if case == "missing model":
        model = tmp_path / "nowhere"
    elif case == "version directory":
        model = version
    elif case == "no CURRENT":
        (model_dir / "CURRENT").unlink()
    elif case == "unverifiable":
        with (version / "model.onnx").open("ab") as f:
            f.write(b"\0")
    elif case == "missing data":
        data = tmp_path / "absent.npz"
    elif case == "sensors differ":
        data = _bad_sensors(tmp_path / "bad.npz", small_plant)
    elif case == "too few rows":
        arrays = dict(np.load(recent))
        normal = np.flatnonzero(arrays["label"] == 0)[:99]
        np.savez(
            tmp_path / "few.npz", **{k: v[normal] if k != "sensor_names" else v for k, v in arrays.items()}
        )
        data = tmp_path / "few.npz"
    elif case == "unsupported target":
        data = write_recording(tmp_path / "short.npz", small_plant, 500, seed=5, anomaly_rate=0.0)
        extra += ["--target-fpr", "0.001"]
    elif case == "empty reason":
        extra = ["--reason", "  "]
    store_before = snapshot(model_dir)
    code = main(["recalibrate", "--model", str(model), "--data", str(data), *extra, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
    assert snapshot(model_dir) == store_before


def test_a_failing_build_leaves_no_version_and_current_unmoved(
    model_dir: Path, recent: Path, monkeypatch
) -> None:
    store_before = snapshot(model_dir)

    def broken_card(*args: object) -> str:  # fault injection: the card's writer fails mid-build
        raise RuntimeError("disk full")

    monkeypatch.setattr(recalibrate_module, "card_section", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        recalibrate_module.recalibrate(model_dir, recent, "r")
    assert snapshot(model_dir) == store_before
