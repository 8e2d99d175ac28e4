"""The manifest schema: everything serving needs to know about one version, as pydantic dataclasses.

`manifest.json` is `Manifest.to_dict()` as JSON. Parsing (`Manifest.from_dict`, `read_manifest`) checks
types only and names the first bad field by its path (`threshold.value`, `sensor_names[3]`,
`graphs['scorer'].inputs[0].shape[1]`); missing and unknown fields are both refused, since a field this
code does not know is one it cannot honour. That fields agree with each other and with the files on disk
is `verify`'s job.
"""

from __future__ import annotations

import json
import re
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, PlainValidator, StrictInt, StrictStr, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from factory_anomaly.artifact.errors import ArtifactCode, ArtifactError
from factory_anomaly.artifact.layout import MANIFEST_FILE

FORMAT_VERSION = 1

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SHOW_CHARS = 60  # longest repr of a bad value quoted in a message
_SCHEMA = ConfigDict(extra="forbid")


def _number(value: Any) -> float:
    """A JSON number (an integer is accepted; a boolean or a numeric string is not). Finiteness is a
    consistency check, not a type check."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a number")
    return float(value)


def _dim(value: Any) -> int | str:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ValueError("an integer or a symbolic name")


def _sha256(value: Any) -> str:
    if not isinstance(value, str) or not _SHA256_HEX.fullmatch(value):
        raise ValueError("a sha256 digest (64 lowercase hex characters)")
    return value


def _utc_timestamp(value: Any) -> str:
    parsed: datetime | None = None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None or parsed.utcoffset() != timedelta(0):
        raise ValueError("an ISO 8601 UTC timestamp such as '2026-11-26T05:35:41Z'")
    return value


Number = Annotated[float, PlainValidator(_number)]
Dim = Annotated[int | str, PlainValidator(_dim)]  # str = a symbolic dimension such as "N"
Sha256 = Annotated[str, PlainValidator(_sha256)]
UtcTimestamp = Annotated[str, PlainValidator(_utc_timestamp)]


@dataclass(frozen=True, config=_SCHEMA)
class TensorSpec:
    name: StrictStr
    dtype: StrictStr  # numpy-style name, e.g. "float32"
    shape: tuple[Dim, ...]


@dataclass(frozen=True, config=_SCHEMA)
class GraphSpec:
    file: StrictStr  # path relative to the version directory, e.g. "model.onnx"; must be listed in `files`
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: StrictInt


@dataclass(frozen=True, config=_SCHEMA)
class ThresholdSpec:
    value: Number  # a reading is anomalous when score > value; finite, > 0
    method: StrictStr  # e.g. "empirical_quantile", "gpd_tail"
    target_fpr: Number  # false-alarm rate per reading the value was calibrated for, in (0, 1)
    n_calibration: StrictInt  # rows it was calibrated on, > 0

    def to_dict(self) -> dict[str, Any]:
        return _dump(self)


@dataclass(frozen=True, config=_SCHEMA)
class JitterSection:
    """The jitter channel (`factory_anomaly.alarms.jitter`): per sensor, the noise model
    E[d²] = noise_floor + noise_slope·(x − sensor_low)² of its second difference d, and the start and mean
    excess of its smoothed statistic's tail; `lam` the smoothing weight; `level` on a reading's evidence,
    calibrated for `target_episodes_per_day`, the channel's share of the alarm target."""

    lam: Number
    level: Number
    target_episodes_per_day: Number
    noise_floor: tuple[Number, ...]
    noise_slope: tuple[Number, ...]
    tail_start: tuple[Number, ...]
    tail_excess: tuple[Number, ...]


@dataclass(frozen=True, config=_SCHEMA)
class VelocitySection:
    """The velocity channel (`factory_anomaly.alarms.velocity`): the standardisation (`center`, `scale`,
    per sensor), the state's principal `directions` [components][n_sensors], the normal changes' mean
    [components] and inverse covariance [components][components] over `lag` readings; `level` on the
    change statistic, calibrated for `target_episodes_per_day`, the channel's share of the alarm target."""

    lag: StrictInt
    level: Number
    target_episodes_per_day: Number
    center: tuple[Number, ...]
    scale: tuple[Number, ...]
    directions: tuple[tuple[Number, ...], ...]
    change_mean: tuple[Number, ...]
    change_precision: tuple[tuple[Number, ...], ...]


@dataclass(frozen=True, config=_SCHEMA)
class AlarmSpec:
    """The per-asset episode rule (`factory_anomaly.alarms.rule.EpisodeRule`) and what it was calibrated
    to: k of an asset's last n readings with score > level open an episode, close_after quiet ones close
    it; the level was set for `target_episodes_per_day` false episodes per asset-day on normal data, at
    one reading every `reading_period_s` seconds."""

    k: StrictInt
    n: StrictInt
    level: Number
    close_after: StrictInt
    reading_period_s: Number
    target_episodes_per_day: Number
    method: StrictStr  # how the level was estimated, e.g. "gumbel_block_maxima"
    # per sensor: readings unchanged (away from sensor_low/high) beyond this count as evidence too
    # (`factory_anomaly.alarms.stuck`); 0 = off for that sensor; None = no stuck channel
    stuck_limits: tuple[StrictInt, ...] | None = None
    # readings whose jitter exceeds its level count as evidence too; None = no jitter channel. Its share
    # of `target_episodes_per_day` is its own; the score's rule was calibrated for the rest
    jitter: JitterSection | None = None
    # a reading whose state change exceeds its level opens an episode on its own; None = no velocity
    # channel. Its share of `target_episodes_per_day` is its own too
    velocity: VelocitySection | None = None

    @property
    def rule_target_per_day(self) -> float:
        """The false episodes per asset-day the score's rule (k of n over `level`) was calibrated for."""
        shares = [c.target_episodes_per_day for c in (self.jitter, self.velocity) if c is not None]
        return self.target_episodes_per_day - sum(shares)

    def to_dict(self) -> dict[str, Any]:
        return _dump(self)


@dataclass(frozen=True, config=_SCHEMA)
class Manifest:
    """Everything serving needs to know about one version. Constructing one (or `dataclasses.replace`)
    checks types; `verify.check_consistency` checks that the fields agree."""

    format_version: StrictInt
    name: StrictStr
    version: StrictStr  # the name of the version directory
    created_at: UtcTimestamp  # ISO 8601 UTC, e.g. "2026-11-26T05:35:41Z" (see `iso_utc`)
    n_sensors: StrictInt
    sensor_names: tuple[StrictStr, ...]
    sensor_low: tuple[Number, ...]  # per-sensor min seen in the training rows (for input-drift checks)
    sensor_high: tuple[Number, ...]  # per-sensor max seen in the training rows
    graphs: dict[StrictStr, GraphSpec]  # role -> graph; layout.SCORER is required, EXPLAINER optional
    threshold: ThresholdSpec
    files: dict[
        StrictStr, Sha256
    ]  # relative POSIX path -> sha256, every file of the version but the manifest
    training: dict[StrictStr, Any]  # free-form: config, seed, data fingerprint, epochs, timings
    library_versions: dict[StrictStr, StrictStr]
    metrics: dict[StrictStr, Any]  # free-form evaluation metrics
    alarms: AlarmSpec | None = None  # versions from before alarm episodes have none
    # per sensor, the unit the training data names ("" where it names none); None: the data named none
    sensor_units: tuple[StrictStr, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists, free-form dicts are copied, optional fields left out when
        unset: `_dump`); `from_dict` inverts it."""
        return _dump(self)

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Type-check a decoded manifest.json and build the Manifest.

        `format_version` is checked first, so a newer format fails as "format_version" whatever else it
        holds. Any other problem is "manifest_invalid" naming the field path.
        """
        if not isinstance(data, dict):
            raise _invalid("the top level", "an object", data)
        if "format_version" not in data:
            raise ArtifactError(ArtifactCode.MANIFEST_INVALID, f"{MANIFEST_FILE}: format_version is missing")
        found = data["format_version"]
        if isinstance(found, bool) or not isinstance(found, int):
            raise _invalid("format_version", "an integer", found)
        if found != FORMAT_VERSION:
            raise ArtifactError(
                ArtifactCode.FORMAT_VERSION,
                f"{MANIFEST_FILE}: format_version {found} is not supported (supported: {FORMAT_VERSION})",
            )
        try:
            return _ADAPTERS[Manifest].validate_python(data)
        except ValidationError as exc:
            raise _from_pydantic(exc) from None


_ADAPTERS: dict[type, TypeAdapter[Any]] = {
    cls: TypeAdapter(cls) for cls in (Manifest, ThresholdSpec, AlarmSpec)
}
_KEYED_FIELDS = frozenset({"graphs", "files", "training", "library_versions", "metrics"})
"""Fields whose next path part is a key of the user's, written ['key'] rather than .field."""
_EXPECTED = {
    "int_type": "an integer",
    "string_type": "a string",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "an object",
    "dataclass_type": "an object",
    "dataclass_args_type": "an object",
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."


def _invalid(path: str, expected: str, value: Any) -> ArtifactError:
    return ArtifactError(
        ArtifactCode.MANIFEST_INVALID, f"{MANIFEST_FILE}: {path} must be {expected}, got {_show(value)}"
    )


def _path(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as the manifest's field path: `graphs['scorer'].inputs[0].shape[1]`."""
    text = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        elif i == 1 and loc[0] in _KEYED_FIELDS:
            text += f"[{part!r}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _from_pydantic(exc: ValidationError) -> ArtifactError:
    """The first problem pydantic found, in the manifest's words."""
    error = exc.errors()[0]
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    if loc and loc[-1] == "[key]":
        return _invalid(f"a key of {_path(loc[:-2])}", "a string", loc[-2])
    path = _path(loc)
    if kind in ("missing", "missing_argument"):
        return ArtifactError(ArtifactCode.MANIFEST_INVALID, f"{MANIFEST_FILE}: {path} is missing")
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return ArtifactError(ArtifactCode.MANIFEST_INVALID, f"{MANIFEST_FILE}: unknown field {path}")
    if kind == "value_error":
        expected = str(error.get("ctx", {}).get("error", error["msg"]))
    else:
        expected = _EXPECTED.get(kind, f"valid ({error['msg']})")
    return _invalid(path, expected, value)


def _dump(spec: Any) -> dict[str, Any]:
    """`spec` (one of the dataclasses above) JSON-ready. An optional field (default None) that is None is
    left out, here and in the sections within: reading it back gives the same None, and a server from
    before the field still reads the version (it refuses fields it does not know), so rollbacks work."""
    data = _plain(_ADAPTERS[type(spec)].dump_python(spec))
    _drop_unset(spec, data)
    return data


def _drop_unset(spec: Any, data: dict[str, Any]) -> None:
    for field in fields(spec):
        value = getattr(spec, field.name)
        if value is None and field.default is None:
            data.pop(field.name, None)
        elif is_dataclass(value) and isinstance(data.get(field.name), dict):
            _drop_unset(value, data[field.name])


def _plain(value: Any) -> Any:
    """A deep copy of free-form JSON-like data with tuples turned into lists."""
    if isinstance(value, dict):
        return {key: _plain(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def iso_utc(moment: datetime) -> str:
    """`created_at` text for an aware datetime, to the second: "2026-11-26T05:35:41Z"."""
    if moment.utcoffset() is None:
        raise ValueError(f"a naive datetime has no time zone; pass an aware one (UTC), got {moment!r}")
    return f"{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    """Write `directory/manifest.json` as-is (no checks: see `verify.check_consistency`); return its path."""
    path = Path(directory) / MANIFEST_FILE
    path.write_text(json.dumps(manifest.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_manifest(directory: Path) -> Manifest:
    """Parse `directory/manifest.json`: "manifest_missing", "manifest_invalid" or "format_version"."""
    path = Path(directory) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ArtifactError(ArtifactCode.MANIFEST_MISSING, f"no {MANIFEST_FILE} in {directory}") from exc
    except IsADirectoryError as exc:
        raise ArtifactError(ArtifactCode.MANIFEST_MISSING, f"{path} is a directory, not a file") from exc
    except UnicodeDecodeError as exc:
        raise ArtifactError(
            ArtifactCode.MANIFEST_INVALID, f"{MANIFEST_FILE}: not UTF-8 text ({exc.reason})"
        ) from exc
    except OSError as exc:
        raise ArtifactError(
            ArtifactCode.MANIFEST_INVALID, f"{MANIFEST_FILE}: cannot be read ({exc.strerror})"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            ArtifactCode.MANIFEST_INVALID,
            f"{MANIFEST_FILE}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
        ) from exc
    return Manifest.from_dict(data)
