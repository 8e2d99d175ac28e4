"""The artifact contract: a valid version passes, and each way of breaking it fails with its own code."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from factory_anomaly.artifact import (
    BUILD_PREFIX,
    CURRENT_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    SCORER,
    AlarmSpec,
    ArtifactError,
    GraphSpec,
    Manifest,
    TensorSpec,
    ThresholdSpec,
    VelocitySection,
    check_consistency,
    hash_files,
    iso_utc,
    list_versions,
    new_build_dir,
    publish_version,
    read_current,
    read_manifest,
    resolve_current,
    sha256_file,
    verify_artifact,
    version_id,
    write_current,
    write_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
VERSION = "20261126T053541Z-1a2b3c4d"
FILES = {"model.onnx": b"onnx-bytes", "model_card.md": b"# press-line\n", "plots/loss.png": b"\x89PNG-fake"}
SHA_ZERO = "0" * 64
DELETE = object()  # edit_manifest: remove the key instead of setting it


def valid_manifest(files: dict[str, str], version: str = VERSION) -> Manifest:
    return Manifest(
        format_version=FORMAT_VERSION,
        name="press-line",
        version=version,
        created_at="2026-11-26T05:35:41Z",
        n_sensors=3,
        sensor_names=("temp", "pressure", "vibration"),
        sensor_low=(10.0, -1.5, 0.0),
        sensor_high=(80.0, 2.5, 0.0),  # a constant sensor: low == high is fine
        graphs={
            SCORER: GraphSpec(
                file="model.onnx",
                inputs=(TensorSpec("readings", "float32", ("N", 3)),),
                outputs=(
                    TensorSpec("score", "float32", ("N",)),
                    TensorSpec("sensor_error", "float32", ("N", 3)),
                ),
                opset=17,
            )
        },
        threshold=ThresholdSpec(value=4.2, method="empirical_quantile", target_fpr=1e-4, n_calibration=3000),
        files=files,
        training={"seed": 7, "hidden": [32, 6], "timings": {"fit_s": 1.5}},
        library_versions={"torch": "2.13.0", "onnx": "1.17.0"},
        metrics={"roc_auc": 0.97, "per_kind": {"spike": 1.0}},
    )


def make_version(parent: Path, version: str = VERSION, dirname: str | None = None) -> Path:
    """A valid version directory: a few small files and a manifest listing them, for 3 sensors."""
    directory = parent / (dirname or version)
    for rel, content in FILES.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(content)
    write_manifest(valid_manifest(hash_files(directory), version), directory)
    return directory


def edit_manifest(directory: Path, keys: tuple[Any, ...], value: Any) -> None:
    """Set (or with DELETE remove) one field of the raw manifest.json, bypassing every check."""
    path = directory / MANIFEST_FILE
    data = json.loads(path.read_text())
    target = data
    for key in keys[:-1]:
        target = target[key]
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    path.write_text(json.dumps(data))


def expect(code: str, fragment: str, call: Any, *args: Any) -> ArtifactError:
    with pytest.raises(ArtifactError) as info:
        call(*args)
    assert info.value.code == code, info.value.message
    assert fragment in info.value.message
    return info.value


# --- the manifest -------------------------------------------------------------------------------------------


def test_to_dict_from_dict_round_trip_through_json() -> None:
    manifest = valid_manifest({"model.onnx": SHA_ZERO})
    data = manifest.to_dict()
    assert data["sensor_names"] == ["temp", "pressure", "vibration"]
    assert data["graphs"][SCORER]["inputs"][0]["shape"] == ["N", 3]
    assert Manifest.from_dict(data) == manifest
    assert Manifest.from_dict(json.loads(json.dumps(data))) == manifest


def test_to_dict_makes_free_form_fields_json_ready_copies() -> None:
    manifest = valid_manifest({"model.onnx": SHA_ZERO})
    manifest = replace(manifest, training={"hidden": (32, 6)})
    data = manifest.to_dict()
    assert data["training"] == {"hidden": [32, 6]}
    data["training"]["hidden"].append(1)
    assert manifest.training == {"hidden": (32, 6)}


def test_sensor_units_round_trip_and_a_version_without_them_leaves_the_field_out() -> None:
    """Left out rather than null: a server from before the field (which refuses unknown fields) still
    reads a new version trained without units, so a rollback keeps working."""
    plain = valid_manifest({"model.onnx": SHA_ZERO})
    assert "sensor_units" not in plain.to_dict() and Manifest.from_dict(plain.to_dict()) == plain
    with_units = replace(plain, sensor_units=("degC", "bar", ""))
    check_consistency(with_units)
    assert with_units.to_dict()["sensor_units"] == ["degC", "bar", ""]
    assert Manifest.from_dict(json.loads(json.dumps(with_units.to_dict()))) == with_units


ALARMS = AlarmSpec(k=3, n=10, level=2.5, close_after=300, reading_period_s=1.0, target_episodes_per_day=1.0,
                   method="gumbel_block_maxima")  # fmt: skip


def test_every_unset_optional_field_is_left_out_sections_included() -> None:
    """The rule the units follow holds for every optional field: the alarm section and its channels too."""
    plain = valid_manifest({"model.onnx": SHA_ZERO})
    assert "alarms" not in plain.to_dict()
    with_alarms = replace(plain, alarms=ALARMS)
    section = with_alarms.to_dict()["alarms"]
    assert not {"stuck_limits", "jitter", "velocity"} & set(section) and section == ALARMS.to_dict()
    assert section["k"] == 3 and Manifest.from_dict(with_alarms.to_dict()) == with_alarms


def test_the_alarm_rule_round_trips_and_is_optional() -> None:
    manifest = replace(valid_manifest({"model.onnx": SHA_ZERO}), alarms=ALARMS)
    check_consistency(manifest)
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    without = valid_manifest({"model.onnx": SHA_ZERO}).to_dict()
    without.pop("alarms", None)  # a version from before alarm episodes (to_dict leaves it out now)
    assert Manifest.from_dict(without).alarms is None


@pytest.mark.parametrize(
    ("change", "fragment"),
    [({"k": 11}, "1 <= k <= n"), ({"k": 0}, "1 <= k <= n"), ({"close_after": 9}, "close_after must be >= n"),
     ({"level": 0.0}, "alarms.level must be finite and > 0"),
     ({"reading_period_s": float("inf")}, "alarms.reading_period_s must be finite"),
     ({"target_episodes_per_day": -1.0}, "alarms.target_episodes_per_day")],
)  # fmt: skip
def test_an_alarm_rule_that_cannot_work_is_inconsistent(change: dict[str, Any], fragment: str) -> None:
    manifest = replace(valid_manifest({"model.onnx": SHA_ZERO}), alarms=replace(ALARMS, **change))
    expect("inconsistent", fragment, check_consistency, manifest)


def _velocity(n: int, **change: Any) -> VelocitySection:
    fields: dict[str, Any] = {
        "lag": 3, "level": 40.0, "target_episodes_per_day": 0.25, "center": (0.0,) * n, "scale": (1.0,) * n,
        "directions": ((1.0,) + (0.0,) * (n - 1),), "change_mean": (0.0,), "change_precision": ((2.0,),),
    }  # fmt: skip
    return VelocitySection(**(fields | change))


def test_a_velocity_channel_round_trips_and_shares_the_target() -> None:
    base = valid_manifest({"model.onnx": SHA_ZERO})
    manifest = replace(base, alarms=replace(ALARMS, velocity=_velocity(base.n_sensors)))
    check_consistency(manifest)
    assert Manifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    assert manifest.alarms is not None and manifest.alarms.rule_target_per_day == 0.75


@pytest.mark.parametrize(
    ("change", "fragment"),
    [({"lag": 0}, "alarms.velocity.lag must be >= 1"), ({"level": float("nan")}, "alarms.velocity.level"),
     ({"target_episodes_per_day": 1.0}, "leave the score's rule nothing"),
     ({"scale": None}, "alarms.velocity.scale must be finite"),
     ({"directions": ((1.0, 0.0),)}, "alarms.velocity.directions must be finite"),
     ({"change_precision": ((1.0, 0.0),)}, "alarms.velocity.change_precision"),
     ({"change_mean": (float("inf"),)}, "alarms.velocity.change_mean")],
)  # fmt: skip
def test_a_velocity_channel_that_cannot_work_is_inconsistent(change: dict[str, Any], fragment: str) -> None:
    base = valid_manifest({"model.onnx": SHA_ZERO})
    n = base.n_sensors
    if change.get("scale", 1) is None:
        change = {"scale": (0.0,) * n}  # a zero scale would divide by zero
    manifest = replace(base, alarms=replace(ALARMS, velocity=_velocity(n, **change)))
    expect("inconsistent", fragment, check_consistency, manifest)


def test_write_manifest_writes_indented_json_and_returns_its_path(tmp_path: Path) -> None:
    path = write_manifest(valid_manifest({"model.onnx": SHA_ZERO}), tmp_path)
    assert path == tmp_path / MANIFEST_FILE
    assert path.read_text().startswith('{\n "format_version": 1,\n "name": "press-line"')
    assert read_manifest(tmp_path) == valid_manifest({"model.onnx": SHA_ZERO})


def test_verify_artifact_passes_on_a_valid_version(tmp_path: Path) -> None:
    directory = make_version(tmp_path)
    manifest = verify_artifact(directory)
    assert manifest == valid_manifest(hash_files(directory))
    assert sorted(manifest.files) == ["model.onnx", "model_card.md", "plots/loss.png"]
    check_consistency(manifest)


def test_extra_files_not_in_the_manifest_are_allowed(tmp_path: Path) -> None:
    directory = make_version(tmp_path)
    (directory / "notes.txt").write_text("not listed")
    verify_artifact(directory)


def test_format_version_is_checked_before_anything_else() -> None:
    error = expect("format_version", "format_version 2", Manifest.from_dict, {"format_version": 2, "x": 1})
    assert "supported: 1" in error.message


def test_from_dict_refuses_a_non_object() -> None:
    expect("manifest_invalid", "the top level must be an object, got [1]", Manifest.from_dict, [1])


@pytest.mark.parametrize(
    ("keys", "value", "code", "fragment"),
    [
        # wrong type: the message names the field path
        (("threshold", "value"), "x", "manifest_invalid", "threshold.value must be a number, got 'x'"),
        (("n_sensors",), True, "manifest_invalid", "n_sensors must be an integer, got True"),
        (("n_sensors",), 3.0, "manifest_invalid", "n_sensors must be an integer, got 3.0"),
        (("sensor_names", 1), 5, "manifest_invalid", "sensor_names[1] must be a string, got 5"),
        (("sensor_low",), "low", "manifest_invalid", "sensor_low must be a list"),
        (
            ("graphs", SCORER, "inputs", 0, "shape", 0),
            1.5,
            "manifest_invalid",
            "graphs['scorer'].inputs[0].shape[0] must be an integer or a symbolic name, got 1.5",
        ),
        (("graphs", SCORER, "opset"), "17", "manifest_invalid", "graphs['scorer'].opset must be an integer"),
        (("files", "model.onnx"), "abc", "manifest_invalid", "files['model.onnx'] must be a sha256"),
        (("library_versions", "torch"), 2, "manifest_invalid", "library_versions['torch'] must be a string"),
        (("training",), [], "manifest_invalid", "training must be an object"),
        (("created_at",), "2026-11-26T05:35:41", "manifest_invalid", "created_at must be an ISO 8601 UTC"),
        (("created_at",), "2026-11-26T07:35:41+02:00", "manifest_invalid", "created_at must be an ISO 8601"),
        (("created_at",), "yesterday", "manifest_invalid", "created_at must be an ISO 8601 UTC"),
        # missing and unknown fields
        (("threshold",), DELETE, "manifest_invalid", "threshold is missing"),
        (("threshold", "method"), DELETE, "manifest_invalid", "threshold.method is missing"),
        (
            ("graphs", SCORER, "inputs", 0, "dtype"),
            DELETE,
            "manifest_invalid",
            "graphs['scorer'].inputs[0].dtype is missing",
        ),
        (("format_version",), DELETE, "manifest_invalid", "format_version is missing"),
        (("colour",), "red", "manifest_invalid", "unknown field colour"),
        (("threshold", "unit"), "s", "manifest_invalid", "unknown field threshold.unit"),
        # format version
        (("format_version",), 2, "format_version", "format_version 2 is not supported (supported: 1)"),
        (("format_version",), "1", "manifest_invalid", "format_version must be an integer, got '1'"),
        # listed paths must stay inside the version directory; the manifest cannot list itself
        (("files", "../escape.bin"), SHA_ZERO, "manifest_invalid", "'../escape.bin' must be a normalised"),
        (("files", "/etc/passwd"), SHA_ZERO, "manifest_invalid", "it is absolute"),
        (("files", "C:/model.onnx"), SHA_ZERO, "manifest_invalid", "it is absolute"),
        (("files", "plots/../../x"), SHA_ZERO, "manifest_invalid", "it contains '..'"),
        (("files", "plots/./loss.png"), SHA_ZERO, "manifest_invalid", "not normalised"),
        (("files", "plots//loss.png"), SHA_ZERO, "manifest_invalid", "not normalised"),
        (("files", "plots\\loss.png"), SHA_ZERO, "manifest_invalid", "backslash"),
        (("files", MANIFEST_FILE), SHA_ZERO, "manifest_invalid", "the manifest cannot list itself"),
        # contradictions between fields
        (("n_sensors",), 4, "inconsistent", "n_sensors is 4 but sensor_names has 3 entries"),
        (("n_sensors",), 0, "inconsistent", "n_sensors must be > 0, got 0"),
        (("sensor_high",), [1.0, 2.0], "inconsistent", "n_sensors is 3 but sensor_high has 2 entries"),
        (("sensor_units",), ["bar", "V"], "inconsistent", "n_sensors is 3 but sensor_units has 2 entries"),
        (("sensor_units",), ["bar", 5, "V"], "manifest_invalid", "sensor_units[1] must be a string, got 5"),
        (("sensor_names", 2), "temp", "inconsistent", "sensor name 'temp' is not unique"),
        (("sensor_names", 1), "", "inconsistent", "sensor_names[1] is empty"),
        (("sensor_low", 1), 3.0, "inconsistent", "sensor_low[1] = 3.0 > sensor_high[1] = 2.5"),
        (
            ("sensor_low", 0),
            float("-inf"),
            "inconsistent",
            "sensor_low[0], sensor_high[0] must be finite, got [-inf, 80.0]",
        ),
        (
            ("sensor_high", 2),
            float("nan"),
            "inconsistent",
            "sensor_low[2], sensor_high[2] must be finite, got [0.0, nan]",
        ),
        (("graphs", SCORER), DELETE, "inconsistent", "no 'scorer' graph"),
        (("graphs", SCORER, "file"), "other.onnx", "inconsistent", "'other.onnx' is not listed in files"),
        (("graphs", SCORER, "inputs", 0, "shape"), ["N", 4], "inconsistent", "expected [batch, 3]"),
        (("graphs", SCORER, "inputs", 0, "shape"), ["N", "S"], "inconsistent", "expected [batch, 3]"),
        (("graphs", SCORER, "inputs", 0, "shape"), [3], "inconsistent", "expected [batch, 3]"),
        (("graphs", SCORER, "inputs", 0, "shape"), ["N", 3, 1], "inconsistent", "expected [batch, 3]"),
        (
            ("graphs", SCORER, "inputs", 0, "dtype"),
            "float64",
            "inconsistent",
            "has dtype 'float64', expected 'float32'",
        ),
        (("graphs", SCORER, "inputs"), [], "inconsistent", "graphs['scorer'] has no inputs"),
        (("graphs", SCORER, "outputs"), [], "inconsistent", "graphs['scorer'] has no outputs"),
        (
            ("graphs", "explainer"),
            {
                "file": "model.onnx",
                "inputs": [{"name": "x", "dtype": "float32", "shape": ["N", 2]}],
                "outputs": [{"name": "a", "dtype": "float32", "shape": ["N", 3]}],
                "opset": 17,
            },
            "inconsistent",
            "graphs['explainer'].inputs[0] ('x') has shape ['N', 2]",
        ),
        (("threshold", "value"), 0, "inconsistent", "threshold.value must be finite and > 0, got 0.0"),
        (("threshold", "value"), -1.0, "inconsistent", "threshold.value must be finite and > 0"),
        (("threshold", "value"), float("nan"), "inconsistent", "threshold.value must be finite and > 0"),
        (("threshold", "value"), float("inf"), "inconsistent", "threshold.value must be finite and > 0"),
        (("threshold", "target_fpr"), 0, "inconsistent", "threshold.target_fpr must be in (0, 1)"),
        (("threshold", "target_fpr"), 1, "inconsistent", "threshold.target_fpr must be in (0, 1)"),
        (("threshold", "target_fpr"), 1.5, "inconsistent", "threshold.target_fpr must be in (0, 1)"),
        (("threshold", "target_fpr"), float("nan"), "inconsistent", "threshold.target_fpr must be in (0, 1)"),
        (("threshold", "n_calibration"), 0, "inconsistent", "threshold.n_calibration must be > 0, got 0"),
    ],
)
def test_verify_artifact_refuses_a_bad_manifest(
    tmp_path: Path, keys: tuple[Any, ...], value: Any, code: str, fragment: str
) -> None:
    directory = make_version(tmp_path)
    edit_manifest(directory, keys, value)
    expect(code, fragment, verify_artifact, directory)


def test_manifest_missing(tmp_path: Path) -> None:
    directory = make_version(tmp_path)
    (directory / MANIFEST_FILE).unlink()
    expect("manifest_missing", "no manifest.json in", verify_artifact, directory)
    expect("manifest_missing", "no manifest.json in", verify_artifact, tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b'{"format_version": 1,', "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2]", "the top level must be an object"),
    ],
)
def test_unparsable_manifest(tmp_path: Path, content: bytes, fragment: str) -> None:
    directory = make_version(tmp_path)
    (directory / MANIFEST_FILE).write_bytes(content)
    expect("manifest_invalid", fragment, verify_artifact, directory)


def test_listed_file_missing(tmp_path: Path) -> None:
    directory = make_version(tmp_path)
    (directory / "plots" / "loss.png").unlink()
    expect("file_missing", "plots/loss.png: listed in manifest.json but missing", verify_artifact, directory)


def test_listed_file_that_is_a_directory_is_missing(tmp_path: Path) -> None:
    directory = make_version(tmp_path)
    (directory / "model_card.md").unlink()
    (directory / "model_card.md").mkdir()
    expect("file_missing", "model_card.md", verify_artifact, directory)


def test_checksum_mismatch_names_file_and_both_digests(tmp_path: Path) -> None:
    directory = make_version(tmp_path)
    model = directory / "model.onnx"
    expected = sha256_file(model)
    content = bytearray(model.read_bytes())
    content[3] ^= 0x01
    model.write_bytes(bytes(content))
    error = expect("checksum_mismatch", "model.onnx: checksum mismatch", verify_artifact, directory)
    assert expected[:12] in error.message
    assert hashlib.sha256(bytes(content)).hexdigest()[:12] in error.message


def test_listed_symlink_leaving_the_directory_is_refused(tmp_path: Path) -> None:
    directory = make_version(tmp_path)
    (tmp_path / "outside.bin").write_bytes(b"secret")
    (directory / "link.bin").symlink_to(tmp_path / "outside.bin")
    write_manifest(valid_manifest(hash_files(directory)), directory)
    expect("manifest_invalid", "resolves outside the version directory", verify_artifact, directory)


def test_directory_name_must_be_the_version(tmp_path: Path) -> None:
    directory = make_version(tmp_path, dirname="renamed")
    expect(
        "inconsistent",
        f"version is {VERSION!r} but the directory is named 'renamed'",
        verify_artifact,
        directory,
    )


def test_artifact_error_carries_a_stable_code_and_pickles() -> None:
    error = ArtifactError("file_missing", "model.onnx: gone")
    assert (error.code, error.message, str(error)) == ("file_missing", "model.onnx: gone", "model.onnx: gone")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.message) == (error.code, error.message)


# --- hashing and version ids --------------------------------------------------------------------------------


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    content = os.urandom((5 << 20) // 2)  # 2.5 MiB: several chunks
    (tmp_path / "big.bin").write_bytes(content)
    assert sha256_file(tmp_path / "big.bin") == hashlib.sha256(content).hexdigest()


def test_hash_files_lists_every_file_but_the_manifest(tmp_path: Path) -> None:
    directory = make_version(tmp_path)
    digests = hash_files(directory)
    assert digests == {rel: hashlib.sha256(content).hexdigest() for rel, content in FILES.items()}


def test_version_id_format() -> None:
    moment = datetime(2026, 11, 26, 5, 35, 41, 900_000, tzinfo=UTC)
    assert version_id(moment, "1A2B3C4D" + "0" * 56) == "20261126T053541Z-1a2b3c4d"
    plus_two = datetime(2026, 11, 26, 7, 35, 41, tzinfo=timezone(timedelta(hours=2)))
    assert version_id(plus_two, "1a2b3c4d") == "20261126T053541Z-1a2b3c4d"


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        (datetime(2026, 11, 26, 5, 35, 41, tzinfo=UTC), datetime(2026, 11, 26, 5, 35, 42, tzinfo=UTC)),
        (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2026, 9, 30, 12, tzinfo=UTC), datetime(2026, 10, 1, 1, tzinfo=UTC)),
    ],
)
def test_version_ids_sort_by_time_whatever_the_hash(earlier: datetime, later: datetime) -> None:
    assert version_id(earlier, "f" * 64) < version_id(later, "0" * 64)


def test_version_id_refuses_a_naive_datetime_or_a_non_hex_hash() -> None:
    with pytest.raises(ValueError, match="naive"):
        version_id(datetime(2026, 11, 26, 5, 35, 41), "1a2b3c4d")
    with pytest.raises(ValueError, match="hex"):
        version_id(datetime(2026, 11, 26, tzinfo=UTC), "xyz")


def test_iso_utc_matches_the_manifest_format() -> None:
    moment = datetime(2026, 11, 26, 6, 35, 41, 5, tzinfo=timezone(timedelta(hours=1)))
    assert iso_utc(moment) == "2026-11-26T05:35:41Z"
    with pytest.raises(ValueError, match="naive"):
        iso_utc(datetime(2026, 11, 26))


# --- CURRENT ------------------------------------------------------------------------------------------------


def test_current_missing(tmp_path: Path) -> None:
    expect("current_missing", "no CURRENT in", read_current, tmp_path)
    expect("current_missing", "no CURRENT in", resolve_current, tmp_path)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "is empty"),
        ("  \n\n", "is empty"),
        ("v1\nv2\n", "2 non-empty lines"),
        ("../x\n", "contains a path separator"),
        ("..\n", "contains '..'"),
        ("v1..v2\n", "contains '..'"),
        (".hidden\n", "starts with '.'"),
        (BUILD_PREFIX + "abc\n", "starts with '.'"),
        ("a/b\n", "contains a path separator"),
        ("a\\b\n", "contains a path separator"),
        ("a b\n", "contains whitespace"),
        ("v\x011\n", "control character"),
    ],
)
def test_current_invalid(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / CURRENT_FILE).write_text(content)
    expect("current_invalid", fragment, read_current, tmp_path)


@pytest.mark.parametrize("content", ["v1\n", "v1", "  v1 \r\n\n"])
def test_current_tolerates_surrounding_whitespace(tmp_path: Path, content: str) -> None:
    (tmp_path / CURRENT_FILE).write_text(content)
    assert read_current(tmp_path) == "v1"


def test_current_must_be_a_plain_file(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "target").write_text("v1\n")
    (tmp_path / CURRENT_FILE).symlink_to(tmp_path / "target")
    expect("current_invalid", "is a symlink", read_current, tmp_path)
    (tmp_path / CURRENT_FILE).unlink()
    (tmp_path / CURRENT_FILE).mkdir()
    expect("current_invalid", "cannot be read", read_current, tmp_path)


def test_resolve_current(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / CURRENT_FILE).write_text("v1\n")
    assert resolve_current(tmp_path) == tmp_path / "v1"
    (tmp_path / CURRENT_FILE).write_text("v2\n")
    expect("version_missing", "CURRENT names 'v2'", resolve_current, tmp_path)
    (tmp_path / "v2").write_text("a file, not a version")
    expect("version_missing", "is not a directory", resolve_current, tmp_path)


def test_write_current_refuses_a_missing_version_and_keeps_the_old_one(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    write_current(tmp_path, "v1")
    expect("version_missing", "no such directory", write_current, tmp_path, "v2")
    expect("current_invalid", "contains '..'", write_current, tmp_path, "..")  # tmp_path/.. is a directory
    assert (tmp_path / CURRENT_FILE).read_text() == "v1\n"
    assert sorted(os.listdir(tmp_path)) == [CURRENT_FILE, "v1"]


def test_write_current_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    assert write_current(tmp_path, "v1") == tmp_path / CURRENT_FILE
    assert write_current(tmp_path, "v2") == tmp_path / CURRENT_FILE
    assert (tmp_path / CURRENT_FILE).read_text() == "v2\n"
    assert read_current(tmp_path) == "v2"
    assert not (tmp_path / CURRENT_FILE).is_symlink()
    assert sorted(os.listdir(tmp_path)) == [CURRENT_FILE, "v1", "v2"]
    if os.name == "posix":
        assert (tmp_path / CURRENT_FILE).stat().st_mode & 0o777 == 0o644


# --- building and publishing --------------------------------------------------------------------------------


def test_new_build_dir_is_a_hidden_readable_dir_in_the_model_dir(tmp_path: Path) -> None:
    model_dir = tmp_path / "store" / "press-line"
    build = new_build_dir(model_dir)
    assert build.is_dir() and build.parent == model_dir and build.name.startswith(BUILD_PREFIX)
    assert new_build_dir(model_dir) != build
    if os.name == "posix":
        assert build.stat().st_mode & 0o777 == 0o755


def test_publish_version_moves_the_build_dir(tmp_path: Path) -> None:
    build = new_build_dir(tmp_path)
    (build / "model.onnx").write_bytes(b"onnx-bytes")
    published = publish_version(build, tmp_path, "v1")
    assert published == tmp_path / "v1"
    assert not build.exists()
    assert (published / "model.onnx").read_bytes() == b"onnx-bytes"
    assert not (tmp_path / CURRENT_FILE).exists()  # publishing does not serve


@pytest.mark.parametrize("existing_content", [True, False])
def test_publish_version_never_overwrites(tmp_path: Path, existing_content: bool) -> None:
    (tmp_path / "v1").mkdir()  # POSIX rename would silently replace an empty directory
    if existing_content:
        (tmp_path / "v1" / "model.onnx").write_bytes(b"old")
    build = new_build_dir(tmp_path)
    (build / "model.onnx").write_bytes(b"new")
    expect("version_exists", "already exists", publish_version, build, tmp_path, "v1")
    assert (build / "model.onnx").read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == (["model.onnx"] if existing_content else [])


def test_publish_version_refuses_a_name_no_reader_would_accept(tmp_path: Path) -> None:
    build = new_build_dir(tmp_path)
    with pytest.raises(ValueError, match="starts with '.'"):
        publish_version(build, tmp_path, ".v1")
    assert build.is_dir()


def test_list_versions_skips_build_hidden_dirs_and_files(tmp_path: Path) -> None:
    assert list_versions(tmp_path / "nowhere") == []
    for name in ("v2", "v1", ".hidden", "with space"):
        (tmp_path / name).mkdir()
    new_build_dir(tmp_path)
    (tmp_path / CURRENT_FILE).write_text("v1\n")
    (tmp_path / "notes.txt").write_text("")
    assert list_versions(tmp_path) == ["v1", "v2"]


def test_build_publish_serve_lifecycle(tmp_path: Path) -> None:
    model_dir = tmp_path / "store" / "press-line"
    build = new_build_dir(model_dir)
    for rel, content in FILES.items():
        (build / rel).parent.mkdir(parents=True, exist_ok=True)
        (build / rel).write_bytes(content)
    files = hash_files(build)
    created = datetime(2026, 11, 26, 5, 35, 41, tzinfo=UTC)
    version = version_id(created, files["model.onnx"])
    manifest = replace(valid_manifest(files, version), created_at=iso_utc(created))
    check_consistency(manifest)
    write_manifest(manifest, build)
    publish_version(build, model_dir, version)
    write_current(model_dir, version)
    assert list_versions(model_dir) == [version]
    assert verify_artifact(resolve_current(model_dir)) == manifest


# --- the import boundary ------------------------------------------------------------------------------------


def test_imports_only_the_standard_library_and_pydantic() -> None:
    blocked = ("torch", "onnx", "onnxruntime", "fastapi", "numpy")
    code = (
        "import sys\n"
        f"for m in {blocked!r}: sys.modules[m] = None\n"
        "before = set(sys.modules)\n"
        "import factory_anomaly.artifact\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "new = {m for m in new if not m.startswith('_sysconfigdata')}\n"  # stdlib, by platform
        "print(sorted(new - set(sys.stdlib_module_names) - {'factory_anomaly'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # pydantic and what pydantic itself imports, nothing else
    assert set(ast.literal_eval(out.stdout)) <= {
        "pydantic", "pydantic_core", "typing_extensions", "annotated_types", "typing_inspection"
    }  # fmt: skip
