"""The model-artifact contract, defined once: training writes it, the serving app reads it.

Standard library only, so the serving image (no torch, no onnx) and the training side import the same
definition. Layout of a model store::

    <store>/<name>/<version>/{model.onnx, explainer.onnx, manifest.json, model_card.md, *.png, ...}
    <store>/<name>/CURRENT        one line: the served version id (a plain file, never a symlink)
    <store>/<name>/.build-XXXX/   a version being built; readers ignore it

A version is built in a `.build-` directory and published with one atomic rename, so a reader never sees
half a version; it is served once CURRENT is atomically replaced to name it. `manifest.json` records the
sha256 of every other file of the version, so a load checks exactly the bytes that training wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
CURRENT_FILE = "CURRENT"
BUILD_PREFIX = ".build-"
SCORER = "scorer"  # role name of the required graph
EXPLAINER = "explainer"  # role name of the optional attention explainer graph (`POST /v1/explain`)
INPUT_DTYPE = "float32"  # dtype of every graph's first input: raw readings, one column per sensor

_CHUNK_BYTES = 1 << 20
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SHOW_CHARS = 60  # longest repr of a bad value quoted in a message


class ArtifactError(Exception):
    """One precise reason an artifact cannot be used; `code` is stable (APIs and metrics use it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message))  # survives pickling (worker processes)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy-style name, e.g. "float32"
    shape: tuple[int | str, ...]  # str = symbolic dimension such as "N"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphSpec:
    file: str  # path relative to the version directory, e.g. "model.onnx"; must be listed in `files`
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "opset": self.opset,
        }


@dataclass(frozen=True)
class ThresholdSpec:
    value: float  # a reading is anomalous when score > value; finite, > 0
    method: str  # e.g. "empirical_quantile", "gpd_tail"
    target_fpr: float  # false-alarm rate per reading the value was calibrated for, in (0, 1)
    n_calibration: int  # rows it was calibrated on, > 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "method": self.method,
            "target_fpr": self.target_fpr,
            "n_calibration": self.n_calibration,
        }


@dataclass(frozen=True)
class Manifest:
    """Everything serving needs to know about one version; `manifest.json` is `to_dict()` as JSON.

    Parsing (`from_dict`) checks types only; `check_consistency` checks that the fields agree with each
    other, and `verify_artifact` checks both plus the files on disk.
    """

    format_version: int
    name: str
    version: str  # the name of the version directory
    created_at: str  # ISO 8601 UTC, e.g. "2026-11-26T05:35:41Z" (see `iso_utc`)
    n_sensors: int
    sensor_names: tuple[str, ...]
    sensor_low: tuple[float, ...]  # per-sensor min seen in the training rows (for input-drift checks)
    sensor_high: tuple[float, ...]  # per-sensor max seen in the training rows
    graphs: dict[str, GraphSpec]  # role -> graph; SCORER is required, "explainer" optional
    threshold: ThresholdSpec
    files: dict[str, str]  # relative POSIX path -> sha256 hex, every file of the version but manifest.json
    training: dict[str, Any]  # free-form: config, seed, data fingerprint, epochs, timings
    library_versions: dict[str, str]
    metrics: dict[str, Any]  # free-form evaluation metrics

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists, free-form dicts are copied); `from_dict` inverts it."""
        return {
            "format_version": self.format_version,
            "name": self.name,
            "version": self.version,
            "created_at": self.created_at,
            "n_sensors": self.n_sensors,
            "sensor_names": list(self.sensor_names),
            "sensor_low": list(self.sensor_low),
            "sensor_high": list(self.sensor_high),
            "graphs": {role: graph.to_dict() for role, graph in self.graphs.items()},
            "threshold": self.threshold.to_dict(),
            "files": dict(self.files),
            "training": _plain(self.training),
            "library_versions": dict(self.library_versions),
            "metrics": _plain(self.metrics),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Type-check a decoded manifest.json and build the Manifest.

        `format_version` is checked first, so a newer format fails as "format_version" whatever else it
        holds. Any other problem is "manifest_invalid" with a message naming the field path
        (`threshold.value`, `sensor_names[3]`, `graphs['scorer'].inputs[0].shape[1]`). Missing and unknown
        fields are both refused: a field this code does not know is one it cannot honour.
        """
        if not isinstance(data, dict):
            raise _invalid("the top level", "an object", data)
        if "format_version" not in data:
            raise _missing("format_version")
        found = _int(data["format_version"], "format_version")
        if found != FORMAT_VERSION:
            raise ArtifactError(
                "format_version",
                f"{MANIFEST_FILE}: format_version {found} is not supported (supported: {FORMAT_VERSION})",
            )
        data = _object(data, "", _MANIFEST_FIELDS)
        graphs = _mapping(data["graphs"], "graphs")
        files = _mapping(data["files"], "files")
        library_versions = _mapping(data["library_versions"], "library_versions")
        return cls(
            format_version=found,
            name=_str(data["name"], "name"),
            version=_str(data["version"], "version"),
            created_at=_utc_timestamp(data["created_at"], "created_at"),
            n_sensors=_int(data["n_sensors"], "n_sensors"),
            sensor_names=tuple(
                _str(v, f"sensor_names[{i}]")
                for i, v in enumerate(_list(data["sensor_names"], "sensor_names"))
            ),
            sensor_low=tuple(
                _float(v, f"sensor_low[{i}]") for i, v in enumerate(_list(data["sensor_low"], "sensor_low"))
            ),
            sensor_high=tuple(
                _float(v, f"sensor_high[{i}]")
                for i, v in enumerate(_list(data["sensor_high"], "sensor_high"))
            ),
            graphs={role: _graph(g, f"graphs[{role!r}]") for role, g in graphs.items()},
            threshold=_threshold(data["threshold"], "threshold"),
            files={rel: _sha256(digest, f"files[{rel!r}]") for rel, digest in files.items()},
            training=_mapping(data["training"], "training"),
            library_versions={
                lib: _str(v, f"library_versions[{lib!r}]") for lib, v in library_versions.items()
            },
            metrics=_mapping(data["metrics"], "metrics"),
        )


_MANIFEST_FIELDS = tuple(f.name for f in dataclasses.fields(Manifest))
_GRAPH_FIELDS = tuple(f.name for f in dataclasses.fields(GraphSpec))
_TENSOR_FIELDS = tuple(f.name for f in dataclasses.fields(TensorSpec))
_THRESHOLD_FIELDS = tuple(f.name for f in dataclasses.fields(ThresholdSpec))


# --- parsing helpers: each returns the typed value or raises manifest_invalid naming `path` ---------------


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."


def _invalid(path: str, expected: str, value: Any) -> ArtifactError:
    return ArtifactError(
        "manifest_invalid", f"{MANIFEST_FILE}: {path} must be {expected}, got {_show(value)}"
    )


def _missing(path: str) -> ArtifactError:
    return ArtifactError("manifest_invalid", f"{MANIFEST_FILE}: {path} is missing")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _mapping(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(path, "an object", value)
    for key in value:
        if not isinstance(key, str):
            raise _invalid(f"a key of {path}", "a string", key)
    return value


def _object(value: Any, path: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """`value` as an object with exactly `fields`; the first missing or unknown one is named."""
    value = _mapping(value, path or "the top level")
    for name in fields:
        if name not in value:
            raise _missing(_join(path, name))
    unknown = sorted(key for key in value if key not in fields)
    if unknown:
        raise ArtifactError("manifest_invalid", f"{MANIFEST_FILE}: unknown field {_join(path, unknown[0])}")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid(path, "a list", value)
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _invalid(path, "a string", value)
    return value


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(path, "an integer", value)
    return value


def _float(value: Any, path: str) -> float:
    """A JSON number (an integer is accepted); finiteness is a consistency check, not a type check."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(path, "a number", value)
    return float(value)


def _sha256(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise _invalid(path, "a sha256 digest (64 lowercase hex characters)", value)
    return value


def _utc_timestamp(value: Any, path: str) -> str:
    text = _str(value, path)
    try:
        parsed: datetime | None = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.utcoffset() != timedelta(0):
        raise _invalid(path, "an ISO 8601 UTC timestamp such as '2026-11-26T05:35:41Z'", value)
    return text


def _dim(value: Any, path: str) -> int | str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(path, "an integer or a symbolic name", value)
    return value


def _tensor(value: Any, path: str) -> TensorSpec:
    data = _object(value, path, _TENSOR_FIELDS)
    shape_path = _join(path, "shape")
    return TensorSpec(
        name=_str(data["name"], _join(path, "name")),
        dtype=_str(data["dtype"], _join(path, "dtype")),
        shape=tuple(_dim(d, f"{shape_path}[{i}]") for i, d in enumerate(_list(data["shape"], shape_path))),
    )


def _graph(value: Any, path: str) -> GraphSpec:
    data = _object(value, path, _GRAPH_FIELDS)
    inputs, outputs = _join(path, "inputs"), _join(path, "outputs")
    return GraphSpec(
        file=_str(data["file"], _join(path, "file")),
        inputs=tuple(_tensor(t, f"{inputs}[{i}]") for i, t in enumerate(_list(data["inputs"], inputs))),
        outputs=tuple(_tensor(t, f"{outputs}[{i}]") for i, t in enumerate(_list(data["outputs"], outputs))),
        opset=_int(data["opset"], _join(path, "opset")),
    )


def _threshold(value: Any, path: str) -> ThresholdSpec:
    data = _object(value, path, _THRESHOLD_FIELDS)
    return ThresholdSpec(
        value=_float(data["value"], _join(path, "value")),
        method=_str(data["method"], _join(path, "method")),
        target_fpr=_float(data["target_fpr"], _join(path, "target_fpr")),
        n_calibration=_int(data["n_calibration"], _join(path, "n_calibration")),
    )


def _plain(value: Any) -> Any:
    """A deep copy of free-form JSON-like data with tuples turned into lists."""
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --- consistency ----------------------------------------------------------------------------------------


def _inconsistent(message: str) -> ArtifactError:
    return ArtifactError("inconsistent", f"{MANIFEST_FILE}: {message}")


def check_consistency(manifest: Manifest) -> None:
    """Raise "inconsistent" with the first contradiction between fields; needs no files.

    Training can call it before writing; `verify_artifact` calls it on every load.
    """
    n = manifest.n_sensors
    if n <= 0:
        raise _inconsistent(f"n_sensors must be > 0, got {n}")
    for field in ("sensor_names", "sensor_low", "sensor_high"):
        length = len(getattr(manifest, field))
        if length != n:
            raise _inconsistent(f"n_sensors is {n} but {field} has {length} entries")
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


# --- files ----------------------------------------------------------------------------------------------


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


def iso_utc(moment: datetime) -> str:
    """`created_at` text for an aware datetime, to the second: "2026-11-26T05:35:41Z"."""
    if moment.utcoffset() is None:
        raise ValueError(f"a naive datetime has no time zone; pass an aware one (UTC), got {moment!r}")
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def version_id(created_at: datetime, content_sha256: str) -> str:
    """Id such as "20261126T053541Z-1a2b3c4d": UTC time (ids sort by time) + 8 hex chars of a content hash.

    A naive datetime or a hash that is not hex (at least 8 characters) is a ValueError.
    """
    if created_at.utcoffset() is None:
        raise ValueError(f"a naive datetime has no time zone; pass an aware one (UTC), got {created_at!r}")
    if not re.fullmatch(r"[0-9a-fA-F]{8,}", content_sha256):
        raise ValueError(f"content_sha256 must be a hex digest, got {content_sha256!r}")
    return f"{created_at.astimezone(UTC):%Y%m%dT%H%M%SZ}-{content_sha256[:8].lower()}"


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    """Write `directory/manifest.json` as-is (no checks: see `check_consistency`); return its path."""
    path = Path(directory) / MANIFEST_FILE
    path.write_text(json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_manifest(directory: Path) -> Manifest:
    """Parse `directory/manifest.json`: "manifest_missing", "manifest_invalid" or "format_version"."""
    path = Path(directory) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ArtifactError("manifest_missing", f"no {MANIFEST_FILE} in {directory}") from exc
    except IsADirectoryError as exc:
        raise ArtifactError("manifest_missing", f"{path} is a directory, not a file") from exc
    except UnicodeDecodeError as exc:
        raise ArtifactError("manifest_invalid", f"{MANIFEST_FILE}: not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise ArtifactError("manifest_invalid", f"{MANIFEST_FILE}: cannot be read ({exc.strerror})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            "manifest_invalid",
            f"{MANIFEST_FILE}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
        ) from exc
    return Manifest.from_dict(data)


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
                "manifest_invalid",
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
                "file_missing", f"{rel}: listed in {MANIFEST_FILE} but missing from {directory}"
            )
    for rel, expected in manifest.files.items():
        try:
            actual = sha256_file(directory / rel)
        except OSError as exc:
            raise ArtifactError("file_missing", f"{rel}: cannot be read ({exc.strerror})") from exc
        if actual != expected:
            raise ArtifactError(
                "checksum_mismatch",
                f"{rel}: checksum mismatch: expected sha256 {expected[:12]}..., got {actual[:12]}...",
            )
    return manifest


# --- the model directory: versions, CURRENT, builds -------------------------------------------------------


def _version_name_problem(version: str) -> str | None:
    """Why `version` cannot be a version directory name (what CURRENT may hold), or None."""
    if not version:
        return "is empty"
    if "/" in version or "\\" in version:
        return "contains a path separator"
    if ".." in version:
        return "contains '..'"
    if version.startswith("."):
        return "starts with '.' (hidden and build directories are never versions)"
    if any(c.isspace() for c in version):
        return "contains whitespace"
    if not version.isprintable():
        return "contains a control character"
    return None


def read_current(model_dir: Path) -> str:
    """The version id in `model_dir/CURRENT`: "current_missing" or "current_invalid".

    Surrounding whitespace and blank lines are tolerated (hand edits); anything else is refused.
    """
    path = Path(model_dir) / CURRENT_FILE
    if path.is_symlink():
        raise ArtifactError("current_invalid", f"{path} is a symlink; it must be a plain file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ArtifactError("current_missing", f"no {CURRENT_FILE} in {model_dir}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError("current_invalid", f"{path} cannot be read as text: {exc}") from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ArtifactError("current_invalid", f"{path} is empty")
    if len(lines) > 1:
        raise ArtifactError("current_invalid", f"{path} has {len(lines)} non-empty lines, expected one")
    problem = _version_name_problem(lines[0])
    if problem is not None:
        raise ArtifactError("current_invalid", f"{path} holds {lines[0]!r}, which {problem}")
    return lines[0]


def resolve_current(model_dir: Path) -> Path:
    """The served version directory; "version_missing" if CURRENT names one that does not exist."""
    version = read_current(model_dir)
    path = Path(model_dir) / version
    if not path.is_dir():
        raise ArtifactError(
            "version_missing", f"{CURRENT_FILE} names {version!r} but {path} is not a directory"
        )
    return path


def _fsync_dir(directory: Path) -> None:
    """Make renames in `directory` durable; best effort where a directory cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_current(model_dir: Path, version: str) -> Path:
    """Atomically point `model_dir/CURRENT` at `version`; return CURRENT's path.

    Refuses a name a reader would refuse ("current_invalid") and a version that is not a directory
    ("version_missing"), so CURRENT never names a missing version; the old CURRENT is then untouched.
    Write a temp file, fsync, os.replace, fsync the directory: a crash leaves the old or the new CURRENT.
    """
    model_dir = Path(model_dir)
    problem = _version_name_problem(version)
    if problem is not None:
        raise ArtifactError(
            "current_invalid", f"refusing to write {version!r} to {CURRENT_FILE}: it {problem}"
        )
    if not (model_dir / version).is_dir():
        raise ArtifactError(
            "version_missing", f"refusing to point {CURRENT_FILE} at {model_dir / version}: no such directory"
        )
    target = model_dir / CURRENT_FILE
    fd, tmp_name = tempfile.mkstemp(prefix=f".{CURRENT_FILE}-", suffix=".tmp", dir=model_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(f"{version}\n".encode())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes it 0600; the server may run as another user
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(model_dir)
    return target


def new_build_dir(model_dir: Path) -> Path:
    """A fresh `model_dir/.build-XXXX` to build a version in (same filesystem: publishing is a rename)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    build_dir = Path(tempfile.mkdtemp(prefix=BUILD_PREFIX, dir=model_dir))
    os.chmod(build_dir, 0o755)  # mkdtemp makes it 0700; the published version must be readable by the server
    return build_dir


def _fsync_tree(directory: Path) -> None:
    """Flush every file and directory under `directory`, so the rename that publishes it publishes data."""
    for root, _dirs, names in os.walk(directory):
        for name in names:
            with contextlib.suppress(OSError), open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(Path(root))


def publish_version(build_dir: Path, model_dir: Path, version: str) -> Path:
    """Rename `build_dir` to `model_dir/version` in one step and return the new path; CURRENT is untouched.

    Never overwrites: an existing version is "version_exists". `build_dir` must be on the same filesystem
    (use `new_build_dir`). An invalid version name is a ValueError (a caller bug, not an artifact problem).
    """
    build_dir, model_dir = Path(build_dir), Path(model_dir)
    problem = _version_name_problem(version)
    if problem is not None:
        raise ValueError(f"version {version!r} {problem}")
    target = model_dir / version
    if target.exists() or target.is_symlink():
        raise ArtifactError("version_exists", f"{target} already exists; versions are never overwritten")
    _fsync_tree(build_dir)
    try:
        os.rename(build_dir, target)
    except OSError as exc:
        if target.exists():  # created between the check and the rename
            raise ArtifactError(
                "version_exists", f"{target} already exists; versions are never overwritten"
            ) from exc
        raise
    _fsync_dir(model_dir)
    return target


def list_versions(model_dir: Path) -> list[str]:
    """Sorted version directory names (oldest first for `version_id` names); build and hidden dirs skipped."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(
        entry.name
        for entry in model_dir.iterdir()
        if entry.is_dir()
        and not entry.name.startswith(BUILD_PREFIX)
        and _version_name_problem(entry.name) is None
    )
