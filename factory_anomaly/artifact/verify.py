"""Is this version usable? Its fields agree with each other, every listed file is there with the bytes
training wrote (sha256), and nothing listed points outside the version directory.

Cheap checks come first and hashing last, so a broken version fails fast with one precise code.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from pathlib import Path, PurePosixPath

from factory_anomaly.artifact.errors import ArtifactCode, ArtifactError
from factory_anomaly.artifact.layout import INPUT_DTYPE, MANIFEST_FILE, SCORER
from factory_anomaly.artifact.manifest import (
    AlarmSpec,
    GraphSpec,
    JitterSection,
    Manifest,
    VelocitySection,
    read_manifest,
)

_CHUNK_BYTES = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (model files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def hash_files(directory: Path) -> dict[str, str]:
    """The manifest's `files`: relative POSIX path -> sha256 of every file but manifest.json."""
    directory = Path(directory)
    digests = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel != MANIFEST_FILE:
            digests[rel] = sha256_file(path)
    return digests


def _inconsistent(message: str) -> ArtifactError:
    return ArtifactError(ArtifactCode.INCONSISTENT, f"{MANIFEST_FILE}: {message}")


def check_consistency(manifest: Manifest) -> None:
    """Raise "inconsistent" with the first contradiction between fields; needs no files.

    Training can call it before writing; `verify_artifact` calls it on every load.
    """
    n = manifest.n_sensors
    if n <= 0:
        raise _inconsistent(f"n_sensors must be > 0, got {n}")
    for field in ("sensor_names", "sensor_low", "sensor_high", "sensor_units"):
        values = getattr(manifest, field)
        if values is not None and len(values) != n:  # sensor_units is optional
            raise _inconsistent(f"n_sensors is {n} but {field} has {len(values)} entries")
    first_index: dict[str, int] = {}
    for i, sensor in enumerate(manifest.sensor_names):
        if not sensor:
            raise _inconsistent(f"sensor_names[{i}] is empty")
        if sensor in first_index:
            raise _inconsistent(
                f"sensor name {sensor!r} is not unique (sensor_names[{first_index[sensor]}] and [{i}])"
            )
        first_index[sensor] = i
    for i, (low, high) in enumerate(zip(manifest.sensor_low, manifest.sensor_high, strict=True)):
        if not (math.isfinite(low) and math.isfinite(high)):
            raise _inconsistent(f"sensor_low[{i}], sensor_high[{i}] must be finite, got [{low}, {high}]")
        if low > high:
            raise _inconsistent(f"sensor_low[{i}] = {low} > sensor_high[{i}] = {high}")
    if SCORER not in manifest.graphs:
        roles = ", ".join(sorted(manifest.graphs)) or "none"
        raise _inconsistent(f"no {SCORER!r} graph (graphs present: {roles})")
    for role, graph in manifest.graphs.items():
        _check_graph(graph, f"graphs[{role!r}]", manifest)
    threshold = manifest.threshold
    if not (math.isfinite(threshold.value) and threshold.value > 0):
        raise _inconsistent(f"threshold.value must be finite and > 0, got {threshold.value}")
    if not 0 < threshold.target_fpr < 1:
        raise _inconsistent(f"threshold.target_fpr must be in (0, 1), got {threshold.target_fpr}")
    if threshold.n_calibration <= 0:
        raise _inconsistent(f"threshold.n_calibration must be > 0, got {threshold.n_calibration}")
    if manifest.alarms is not None:
        _check_alarms(manifest.alarms, n)


def _check_alarms(alarms: AlarmSpec, n: int) -> None:
    limits = alarms.stuck_limits
    if limits is not None and (len(limits) != n or min(limits) < 0):
        raise _inconsistent(f"alarms.stuck_limits must be {n} counts >= 0, got {len(limits)} entries")
    if not 1 <= alarms.k <= alarms.n:
        raise _inconsistent(f"alarms needs 1 <= k <= n, got k={alarms.k}, n={alarms.n}")
    if alarms.close_after < alarms.n:
        raise _inconsistent(f"alarms.close_after must be >= n, got {alarms.close_after} < {alarms.n}")
    for name in ("level", "reading_period_s", "target_episodes_per_day"):
        value = getattr(alarms, name)
        if not (math.isfinite(value) and value > 0):
            raise _inconsistent(f"alarms.{name} must be finite and > 0, got {value}")
    if alarms.jitter is not None:
        _check_jitter(alarms.jitter, alarms.target_episodes_per_day, n)
    if alarms.velocity is not None:
        _check_velocity(alarms.velocity, n)
    if not alarms.rule_target_per_day > 0:
        raise _inconsistent(
            f"the channels' shares of alarms.target_episodes_per_day ({alarms.target_episodes_per_day}) "
            f"leave the score's rule nothing: {alarms.rule_target_per_day}"
        )


def _check_jitter(jitter: JitterSection, target: float, n: int) -> None:
    if not 0 < jitter.lam <= 1:
        raise _inconsistent(f"alarms.jitter.lam must lie in (0, 1], got {jitter.lam}")
    if not (math.isfinite(jitter.level) and jitter.level >= 0):
        raise _inconsistent(f"alarms.jitter.level must be finite and >= 0, got {jitter.level}")
    if not 0 < jitter.target_episodes_per_day < target:
        raise _inconsistent(
            f"alarms.jitter.target_episodes_per_day must be > 0 and below the alarm target {target}, got "
            f"{jitter.target_episodes_per_day}"
        )
    for name in ("noise_floor", "noise_slope", "tail_start", "tail_excess"):
        values = getattr(jitter, name)
        if len(values) != n or not all(math.isfinite(v) and v >= 0 for v in values):
            raise _inconsistent(f"alarms.jitter.{name} must be {n} finite values >= 0, got {len(values)}")


def _check_velocity(velocity: VelocitySection, n: int) -> None:
    if velocity.lag < 1:
        raise _inconsistent(f"alarms.velocity.lag must be >= 1, got {velocity.lag}")
    if not (math.isfinite(velocity.level) and velocity.level > 0):
        raise _inconsistent(f"alarms.velocity.level must be finite and > 0, got {velocity.level}")
    if not (math.isfinite(velocity.target_episodes_per_day) and velocity.target_episodes_per_day > 0):
        raise _inconsistent(f"alarms.velocity.target_episodes_per_day must be > 0, got "
                            f"{velocity.target_episodes_per_day}")  # fmt: skip
    k = len(velocity.directions)
    shapes = {
        "center": len(velocity.center) == n,
        "scale": len(velocity.scale) == n and all(v > 0 for v in velocity.scale),
        "directions": 1 <= k <= n and all(len(row) == n for row in velocity.directions),
        "change_mean": len(velocity.change_mean) == k,
        "change_precision": len(velocity.change_precision) == k
        and all(len(row) == k for row in velocity.change_precision),
    }
    for name, fits in shapes.items():
        values = getattr(velocity, name)
        flat = [v for row in values for v in (row if isinstance(row, tuple) else (row,))]
        if not fits or not all(math.isfinite(v) for v in flat):
            raise _inconsistent(f"alarms.velocity.{name} must be finite, shaped for {n} sensors and "
                                f"{k} components (scale > 0)")  # fmt: skip


def _check_graph(graph: GraphSpec, path: str, manifest: Manifest) -> None:
    if graph.file not in manifest.files:
        raise _inconsistent(f"{path}.file {graph.file!r} is not listed in files")
    if not graph.inputs:
        raise _inconsistent(f"{path} has no inputs")
    if not graph.outputs:
        raise _inconsistent(f"{path} has no outputs")
    first = graph.inputs[0]
    where = f"{path}.inputs[0] ({first.name!r})"
    if first.dtype != INPUT_DTYPE:
        raise _inconsistent(f"{where} has dtype {first.dtype!r}, expected {INPUT_DTYPE!r}")
    shape = first.shape
    width = shape[1] if len(shape) == 2 else None
    if not (isinstance(width, int) and width == manifest.n_sensors):
        raise _inconsistent(
            f"{where} has shape {list(shape)}, expected [batch, {manifest.n_sensors}] (n_sensors)"
        )


def _listed_path_problem(rel: str) -> str | None:
    """Why `rel` is not a normalised relative POSIX path that stays inside its directory, or None."""
    if not rel:
        return "it is empty"
    if "\\" in rel or "\x00" in rel:
        return "it contains a backslash or NUL"
    pure = PurePosixPath(rel)
    if pure.is_absolute() or re.match(r"[A-Za-z]:", rel):
        return "it is absolute"
    if ".." in pure.parts:
        return "it contains '..'"
    if str(pure) != rel or rel == ".":
        return f"it is not normalised (normal form: {str(pure)!r})"
    return None


def verify_artifact(directory: Path) -> Manifest:
    """Read and check a version directory completely; return its manifest or raise one ArtifactError.

    Cheap checks come first, hashing last: listed paths (manifest_invalid), directory name == version,
    `check_consistency` (inconsistent), every listed file present (file_missing), then every sha256
    (checksum_mismatch). Files not listed are allowed (they are not served).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    root = directory.resolve()
    for rel in manifest.files:
        problem = _listed_path_problem(rel)
        if problem is None and rel == MANIFEST_FILE:
            problem = "the manifest cannot list itself"
        if problem is None and not (directory / rel).resolve().is_relative_to(root):
            problem = "it resolves outside the version directory (a symlink)"
        if problem is not None:
            raise ArtifactError(
                ArtifactCode.MANIFEST_INVALID,
                f"{MANIFEST_FILE}: files entry {rel!r} must be a normalised relative path inside the "
                f"version directory: {problem}",
            )
    directory_name = Path(os.path.abspath(directory)).name
    if directory_name != manifest.version:
        raise _inconsistent(f"version is {manifest.version!r} but the directory is named {directory_name!r}")
    check_consistency(manifest)
    for rel in manifest.files:
        if not (directory / rel).is_file():
            raise ArtifactError(
                ArtifactCode.FILE_MISSING, f"{rel}: listed in {MANIFEST_FILE} but missing from {directory}"
            )
    for rel, expected in manifest.files.items():
        try:
            actual = sha256_file(directory / rel)
        except OSError as exc:
            raise ArtifactError(ArtifactCode.FILE_MISSING, f"{rel}: cannot be read ({exc.strerror})") from exc
        if actual != expected:
            raise ArtifactError(
                ArtifactCode.CHECKSUM_MISMATCH,
                f"{rel}: checksum mismatch: expected sha256 {expected[:12]}..., got {actual[:12]}...",
            )
    return manifest
