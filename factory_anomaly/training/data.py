"""Load real sensor recordings (CSV, Parquet, NPY, NPZ) into one checked, in-memory form.

Every later step (scaler, training, threshold calibration, evaluation) assumes finite float32 values in time
order with exactly one name per column. Checking that once, here, with errors that name the file, row and
column, is far cheaper than chasing a NaN loss or a silently shuffled column three modules later.

Row numbers in messages are 0-based data-row indices, the same index the fault-sensor JSON files use; CSV
messages add the 1-based file line (header = line 1), assuming one record per line.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("training.data")

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".pq", ".npy", ".npz")
LABEL_SUFFIXES = (".csv", ".parquet", ".pq")
TIMESTAMP_COLUMN = "timestamp"
LABEL_COLUMN = "label"
FAULT_KIND_COLUMN = "fault_kind"
NORMAL_FAULT_KIND = "none"

_SPECIAL_COLUMNS = (TIMESTAMP_COLUMN, LABEL_COLUMN)
_CSV_FIRST_DATA_LINE = 2  # header is line 1, data row 0 is line 2
_NAMES_SHOWN = 5
_VALUE_CHARS_SHOWN = 40
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_ROW_KEY = re.compile(r"-?[0-9]+")


class DataError(ValueError):
    """Bad input data; the message names the file and, where it applies, the row and column."""


class CalibrationError(DataError):
    """The data cannot support the requested false-alarm target; the message names the tightest it can."""


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """One recording: float32 values with one unique name per column, rows in time order.

    `load_dataset` guarantees the values are finite; the constructor checks shapes, names and 0/1 labels.

    Inputs are coerced on construction (values to C-contiguous float32, labels to int8, timestamps to
    datetime64[ns]) so code that builds a Dataset directly, e.g. from synthetic data, gets the same contract.
    """

    values: np.ndarray
    """float32 [rows, n_sensors], C-contiguous, rows in file order (= time order)."""
    sensor_names: tuple[str, ...]
    """One unique name per column of `values`."""
    labels: np.ndarray | None = None
    """int8 [rows], 1 = anomalous; None when the source has no labels."""
    timestamps: np.ndarray | None = None
    """datetime64[ns] [rows], UTC without tz; None when the source has none."""
    source: Path = Path("<memory>")

    def __post_init__(self) -> None:
        source = Path(self.source)
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        if values.ndim != 2:
            raise DataError(f"{source}: values must be 2-D (rows x sensors), got shape {values.shape}")
        names = tuple(str(name) for name in self.sensor_names)
        if len(names) != values.shape[1]:
            raise DataError(f"{source}: {len(names)} sensor names for {values.shape[1]} value columns")
        duplicated = _duplicates(names)
        if duplicated:
            raise DataError(f"{source}: duplicate sensor names {_preview(duplicated)}")
        labels = None
        if self.labels is not None:
            raw = np.asarray(self.labels)
            if raw.shape != (values.shape[0],):
                raise DataError(f"{source}: labels have shape {raw.shape}, expected ({values.shape[0]},)")
            if not np.isin(raw, (0, 1)).all():
                raise DataError(f"{source}: labels must be 0 or 1")
            labels = raw.astype(np.int8)
        timestamps = None
        if self.timestamps is not None:
            timestamps = np.asarray(self.timestamps, dtype="datetime64[ns]")
            if timestamps.shape != (values.shape[0],):
                raise DataError(
                    f"{source}: timestamps have shape {timestamps.shape}, expected ({values.shape[0]},)"
                )
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "sensor_names", names)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "timestamps", timestamps)

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_sensors(self) -> int:
        return int(self.values.shape[1])

    def normal_rows(self) -> np.ndarray:
        """Rows labelled 0, for fitting and calibrating on normal behaviour only.

        A copy when labels exist; `values` itself (not a copy) when there are no labels.
        """
        if self.labels is None:
            return self.values
        return self.values[self.labels == 0]

    def __repr__(self) -> str:
        extras = [name for name in ("labels", "timestamps") if getattr(self, name) is not None]
        return (
            f"Dataset({str(self.source)!r}, {self.n_rows} rows x {self.n_sensors} sensors"
            f"{', with ' + ' and '.join(extras) if extras else ''})"
        )


def load_dataset(path: str | Path, *, impute: bool = False, min_rows: int = 1) -> Dataset:
    """Read one recording and check it; see the module docstring for the conventions.

    CSV/Parquet: `timestamp` and `label` columns (exact names) are special, every other column is a sensor.
    NPY: a 2-D numeric array, sensors named s0000, s0001, ... NPZ: `values` plus optional `sensor_names`,
    `label`, `timestamp`; other keys are ignored.

    Missing (NaN, empty cell) and infinite values are an error unless `impute`: then each sensor is forward
    filled in time and leading gaps back filled; a sensor with no finite value at all is still an error.
    Timestamps out of order only warn: rows are always used in file order.
    """
    path = Path(path)
    suffix = _check_file(path, SUPPORTED_SUFFIXES, "data")
    if suffix == ".csv":
        table = _read_csv_table(path)
    elif suffix in (".parquet", ".pq"):
        table = _read_parquet_table(path)
    elif suffix == ".npy":
        table = _read_npy_table(path)
    else:
        table = _read_npz_table(path)

    n_rows = table.values.shape[0]
    if n_rows < min_rows:
        raise DataError(
            f"{path} has {n_rows} rows; at least {min_rows} {'is' if min_rows == 1 else 'are'} needed"
        )
    values = _fill_gaps(table.values, table.names, path, table.line_offset) if impute else table.values
    _check_finite(values, table.names, path, table.line_offset)
    labels = None if table.labels is None else _parse_labels(table.labels, path, table.line_offset)
    timestamps = None
    if table.timestamps is not None:
        timestamps = _parse_timestamps(table.timestamps, path, table.line_offset)
        backwards = np.flatnonzero(timestamps[1:] < timestamps[:-1])
        if backwards.size:
            row = int(backwards[0]) + 1
            warnings.warn(
                f"{path}: timestamps are not in time order ({_at(row, table.line_offset)} is "
                f"{timestamps[row]}, before the previous row's {timestamps[row - 1]}); rows are used in "
                "file order",
                stacklevel=2,
            )
    return Dataset(values, tuple(table.names), labels, timestamps, path)


def load_labels(path: str | Path, n_rows: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Read per-row ground truth kept beside the data: (labels int8 [n_rows], fault_kinds or None).

    A CSV or Parquet file with a `label` column (0/1; also 0.0/1.0, true/false) and optionally `fault_kind`;
    other columns are ignored. Fault kinds come back as an object array of str, with empty, missing and
    "none" (any case) all normalised to "none" so callers can compare against NORMAL_FAULT_KIND. Labels and
    fault kinds are not cross-checked: a label-1 row may have kind "none" (fault of unknown kind).
    """
    path = Path(path)
    suffix = _check_file(path, LABEL_SUFFIXES, "labels")
    if suffix == ".csv":
        header = _read_csv_header(path)
        offset: int | None = _CSV_FIRST_DATA_LINE
    else:
        header = _parquet_columns(path)
        offset = None
    if LABEL_COLUMN not in header:
        raise DataError(f"{path}: no {LABEL_COLUMN!r} column (columns: {_preview(header)})")
    wanted = [name for name in (LABEL_COLUMN, FAULT_KIND_COLUMN) if name in header]
    for name in wanted:
        if header.count(name) > 1:
            raise DataError(f"{path}: column {name!r} appears {header.count(name)} times")
    if suffix == ".csv":
        frame = _read_csv_frame(path, usecols=wanted, text_columns=wanted)
    else:
        frame = _read_parquet_frame(path, columns=wanted)
    if len(frame) != n_rows:
        raise DataError(f"{path} has {len(frame)} label rows; the data has {n_rows}")

    labels = _parse_labels(frame[LABEL_COLUMN], path, offset)
    if FAULT_KIND_COLUMN not in frame.columns:
        return labels, None
    kinds = frame[FAULT_KIND_COLUMN].fillna("").astype(str).str.strip()
    kinds = kinds.where(~kinds.str.lower().isin(["", NORMAL_FAULT_KIND]), NORMAL_FAULT_KIND)
    return labels, kinds.to_numpy(dtype=object)


def load_fault_sensors(path: str | Path, n_rows: int, n_sensors: int) -> dict[int, list[int]]:
    """Read which sensors each faulty row really broke, to score the explainer against.

    JSON object {"row index": [sensor indices]}; keys are 0-based data-row indices. Returns rows in
    ascending order, each with its sensor indices sorted and de-duplicated. An empty list is allowed.
    """
    path = Path(path)
    parsed = _read_json(path, "fault-sensor")
    if not isinstance(parsed, _JsonObject):
        raise DataError(
            f"{path}: expected a JSON object mapping row index to a list of sensor indices, "
            f"got {_json_type(parsed)}"
        )

    fault_sensors: dict[int, list[int]] = {}
    for key, sensors in parsed.pairs:
        if not _ROW_KEY.fullmatch(key):
            raise DataError(f"{path}: key {key!r} is not an integer row index")
        row = int(key)
        if not 0 <= row < n_rows:
            raise DataError(f"{path}: row index {row} is out of range [0, {n_rows})")
        if row in fault_sensors:
            raise DataError(f"{path}: row index {row} appears more than once")
        if not isinstance(sensors, list):
            raise DataError(
                f"{path}: row {row}: expected a list of sensor indices, got {_json_type(sensors)}"
            )
        for sensor in sensors:
            if isinstance(sensor, bool) or not isinstance(sensor, int):
                raise DataError(f"{path}: row {row}: sensor index {sensor!r} is not an integer")
            if not 0 <= sensor < n_sensors:
                raise DataError(f"{path}: row {row}: sensor index {sensor} is out of range [0, {n_sensors})")
        fault_sensors[row] = sorted(set(sensors))
    return dict(sorted(fault_sensors.items()))


MAX_UNIT_CHARS = 32


def load_sensor_units(path: str | Path, sensor_names: Sequence[str]) -> tuple[str, ...]:
    """Each sensor's unit ("" where the file names none), in `sensor_names` order, so an explanation can
    say "bar" beside a value.

    JSON: an object {"sensor name": "unit"}, or an array of records with "name" and "unit" (the form
    `synth` writes to sensors.json; other keys are ignored). A name the model does not have, a name given
    twice, or a unit that is not a string of at most MAX_UNIT_CHARS characters is an error naming the item.
    """
    path = Path(path)
    parsed = _read_json(path, "sensor-units")
    if isinstance(parsed, _JsonObject):
        pairs = [(f"key {name!r}", name, unit) for name, unit in parsed.pairs]
    elif isinstance(parsed, list):
        pairs = [_unit_record(path, i, item) for i, item in enumerate(parsed)]
    else:
        raise DataError(f"{path}: expected an object of sensor name -> unit or an array of records, "
                        f"got {_json_type(parsed)}")  # fmt: skip
    position = {name: i for i, name in enumerate(sensor_names)}
    units = [""] * len(sensor_names)
    seen: set[str] = set()
    for where, name, unit in pairs:
        if name not in position:
            raise DataError(f"{path}: {where}: sensor {name!r} is not one of the recording's sensors")
        if name in seen:
            raise DataError(f"{path}: {where}: sensor {name!r} is given more than once")
        if not isinstance(unit, str) or len(unit.strip()) > MAX_UNIT_CHARS:
            raise DataError(
                f"{path}: {where}: the unit must be a string of at most {MAX_UNIT_CHARS} characters, "
                f"got {_json_type(unit) if not isinstance(unit, str) else repr(unit[:_VALUE_CHARS_SHOWN])}"
            )
        seen.add(name)
        units[position[name]] = unit.strip()
    return tuple(units)


def _read_json(path: Path, what: str) -> Any:
    """The JSON document at `path`, objects as `_JsonObject` (their pairs in order, repeats kept); a
    missing file, text that is not UTF-8 or JSON that does not parse is a DataError naming `path` and,
    for JSON, the line and column."""
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read as UTF-8 text: {error}") from error
    try:
        return json.loads(text, object_pairs_hook=_JsonObject)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from error


def _unit_record(path: Path, index: int, item: Any) -> tuple[str, Any, Any]:
    where = f"item {index}"
    if not isinstance(item, _JsonObject):
        raise DataError(f"{path}: {where}: expected a record with 'name' and 'unit', got {_json_type(item)}")
    fields = dict(item.pairs)
    if len(fields) != len(item.pairs):
        repeated = _duplicates([key for key, _ in item.pairs])[0]
        raise DataError(f"{path}: {where}: the record gives {repeated!r} more than once")
    for key in ("name", "unit"):
        if key not in fields:
            raise DataError(f"{path}: {where}: the record has no {key!r}")
    if not isinstance(fields["name"], str):
        raise DataError(f"{path}: {where}: 'name' must be a string, got {_json_type(fields['name'])}")
    return where, fields["name"], fields["unit"]


def align_sensors(dataset: Dataset, expected_names: Sequence[str]) -> Dataset:
    """Put the columns in the order the model was trained on, or say exactly which sensors differ.

    Returns `dataset` itself when the order already matches, else a copy with reordered columns.
    """
    expected = tuple(expected_names)
    duplicated = _duplicates(expected)
    if duplicated:
        raise DataError(f"model sensor names contain duplicates: {_preview(duplicated)}")
    have = dataset.sensor_names
    duplicated = _duplicates(have)
    if duplicated:  # only reachable by bypassing Dataset's own check
        raise DataError(f"{dataset.source}: duplicate sensor names {_preview(duplicated)}")
    if have == expected:
        return dataset
    expected_set, have_set = set(expected), set(have)
    missing = [name for name in expected if name not in have_set]
    unexpected = [name for name in have if name not in expected_set]
    if missing or unexpected:
        parts = [f"missing {_preview(missing)}"] if missing else []
        parts += [f"unexpected {_preview(unexpected)}"] if unexpected else []
        raise DataError(
            f"{dataset.source}: data has {len(have)} sensors, model expects {len(expected)}: "
            + "; ".join(parts)
        )
    position = {name: index for index, name in enumerate(have)}
    order = [position[name] for name in expected]
    return replace(dataset, values=np.ascontiguousarray(dataset.values[:, order]), sensor_names=expected)


# --- reading -------------------------------------------------------------------------------------------


@dataclass
class _Table:
    """What a reader hands on: sensor values still unchecked for NaN/Inf, raw label/timestamp columns."""

    names: list[str]
    values: np.ndarray  # float32 [rows, sensors], C-contiguous, owned (may be modified in place)
    labels: pd.Series | None
    timestamps: pd.Series | None
    line_offset: int | None  # file line of data row 0 (CSV only)


def _check_file(path: Path, suffixes: tuple[str, ...], what: str) -> str:
    if not path.exists():
        raise DataError(f"{what} file not found: {path}")
    if not path.is_file():
        raise DataError(f"{what} path is not a file: {path}")
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise DataError(
            f"{path}: unknown {what} file format {path.suffix!r}; supported suffixes: {', '.join(suffixes)}"
        )
    return suffix


def _read_csv_table(path: Path) -> _Table:
    header = _read_csv_header(path)
    _check_names(header, path)
    other_delimiter = next((mark for mark in ";\t|" if len(header) == 1 and mark in header[0]), None)
    if other_delimiter is not None:
        raise DataError(
            f"{path}: the header is one column {_show(header[0])}; the file looks delimited by "
            f"{other_delimiter!r}, but only ',' is read"
        )
    frame = _read_csv_frame(path, text_columns=[name for name in _SPECIAL_COLUMNS if name in header])
    if frame.shape[1] != len(header):  # defensive: pandas and our header read disagree
        raise DataError(f"{path}: header has {len(header)} columns but pandas read {frame.shape[1]}")
    return _frame_table(frame, header, path, _CSV_FIRST_DATA_LINE)


def _read_csv_header(path: Path) -> list[str]:
    """The header cells exactly as written; pandas' own header parsing would rename duplicates to `a.1`."""
    try:
        head = pd.read_csv(
            path, header=None, nrows=1, dtype=str, keep_default_na=False, skip_blank_lines=False
        )
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{path}: file is empty (no header row)") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the CSV header: {str(error).strip()}") from error
    return [str(cell) for cell in head.iloc[0].tolist()]


def _read_csv_frame(path: Path, *, text_columns: list[str], usecols: list[str] | None = None) -> pd.DataFrame:
    """Parse with the C engine; blank lines are kept as rows so file line = row + 2 stays true."""
    try:
        with warnings.catch_warnings():
            # pandas warns (and silently drops fields) when data rows are wider than the header
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                path,
                header=0,
                index_col=False,
                usecols=usecols,
                dtype=dict.fromkeys(text_columns, str),
                skip_blank_lines=False,
                low_memory=False,
                engine="c",
            )
    except pd.errors.ParserWarning as error:
        raise DataError(f"{path}: data rows have more fields than the header; check the delimiter") from error
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{path}: file is empty (no header row)") from error
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot parse CSV: {str(error).strip()}") from error
    blank = _trailing_blank_lines(path)
    if blank and len(frame) >= blank and frame.iloc[len(frame) - blank :].isna().all(axis=None):
        frame = frame.iloc[: len(frame) - blank]
    return frame


def _trailing_blank_lines(path: Path) -> int:
    """Blank lines after the last record, which pandas (keeping blank lines) would turn into NaN rows."""
    with path.open("rb") as stream:
        size = stream.seek(0, 2)
        stream.seek(max(0, size - 4096))
        tail = stream.read()
    ending = tail[len(tail.rstrip(b"\r\n")) :]
    return max(0, ending.count(b"\n") - 1)


def _read_parquet_table(path: Path) -> _Table:
    _parquet_columns(path)
    frame = _read_parquet_frame(path)
    if frame.index.name == TIMESTAMP_COLUMN and TIMESTAMP_COLUMN not in frame.columns:
        frame = frame.reset_index()  # written from a frame indexed by time; any other index is dropped
    names = [str(name) for name in frame.columns]
    _check_names(names, path)
    return _frame_table(frame, names, path, None)


def _parquet_columns(path: Path) -> list[str]:
    """Column names from the schema alone; pyarrow cannot even read a file with duplicate names."""
    import pyarrow.parquet as pq

    try:
        names = [str(name) for name in pq.read_schema(path).names]
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable Parquet file: {error}") from error
    duplicated = _duplicates(names)
    if duplicated:
        raise DataError(f"{path}: duplicate column names {_preview(duplicated)}")
    return names


def _read_parquet_frame(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    try:
        return pd.read_parquet(path, columns=columns)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable Parquet file: {error}") from error


def _frame_table(frame: pd.DataFrame, names: list[str], path: Path, line_offset: int | None) -> _Table:
    positions = [index for index, name in enumerate(names) if name not in _SPECIAL_COLUMNS]
    if not positions:
        raise DataError(
            f"{path}: no sensor columns (every column except {TIMESTAMP_COLUMN!r} and {LABEL_COLUMN!r} "
            "is a sensor)"
        )
    sensor_names = [names[index] for index in positions]
    values = _frame_values(frame, positions, sensor_names, path, line_offset)
    labels = frame.iloc[:, names.index(LABEL_COLUMN)] if LABEL_COLUMN in names else None
    timestamps = frame.iloc[:, names.index(TIMESTAMP_COLUMN)] if TIMESTAMP_COLUMN in names else None
    return _Table(sensor_names, values, labels, timestamps, line_offset)


def _frame_values(
    frame: pd.DataFrame, positions: list[int], names: list[str], path: Path, line_offset: int | None
) -> np.ndarray:
    """Sensor columns as float32; the first bad cell in row-major order is reported, found column-wise.

    Only text columns need coercing (pandas already parsed clean numeric columns); a cell is non-numeric
    when coercion turned it into NaN although it was not missing before.
    """
    out = np.empty((len(frame), len(positions)), dtype=np.float32)
    first_bad: tuple[int, int, str] | None = None
    for column, position in enumerate(positions):
        series = frame.iloc[:, position]
        dtype = series.dtype
        if pd.api.types.is_bool_dtype(dtype) or (
            pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype)
        ):
            numbers = series
        elif _is_text(dtype):
            numbers = pd.to_numeric(series, errors="coerce")
            invalid = numbers.isna().to_numpy() & series.notna().to_numpy()
            if invalid.any():
                row = int(invalid.argmax())
                first_bad = _earlier(first_bad, (row, column, f"non-numeric value {_show(series.iloc[row])}"))
                continue
        else:
            raise DataError(
                f"{path}: column {names[column]!r} has type {dtype}; sensor columns must hold numbers"
            )
        as_float64 = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
        row_out_of_range = _first_out_of_float32_range(as_float64)
        if row_out_of_range is not None:
            value = as_float64[row_out_of_range]
            first_bad = _earlier(
                first_bad, (row_out_of_range, column, f"value {value:g} outside float32 range")
            )
            continue
        out[:, column] = as_float64
    if first_bad is not None:
        row, column, problem = first_bad
        raise DataError(f"{path}: {problem} in {_at(row, line_offset, names[column])}")
    return out


def _read_npy_table(path: Path) -> _Table:
    array = _np_load(path)
    if not isinstance(array, np.ndarray):
        array.close()
        raise DataError(f"{path}: is an .npz archive, not a single .npy array; rename it to .npz")
    return _array_table(array, None, path)


def _read_npz_table(path: Path) -> _Table:
    archive = _np_load(path)
    if isinstance(archive, np.ndarray):
        raise DataError(f"{path}: is a single .npy array, not an .npz archive; rename it to .npy")
    with archive:
        if "values" not in archive.files:
            raise DataError(f"{path}: no 'values' array in the archive (keys: {_preview(archive.files)})")
        values = _npz_array(archive, "values", path)
        names = None
        if "sensor_names" in archive.files:
            raw_names = _npz_array(archive, "sensor_names", path)
            if raw_names.dtype.kind not in "US" or raw_names.ndim != 1:
                raise DataError(
                    f"{path}: 'sensor_names' must be a 1-D str array, got {raw_names.dtype} {raw_names.shape}"
                )
            names = [_text(name) for name in raw_names.tolist()]
        table = _array_table(values, names, path)
        table.labels = _npz_column(archive, LABEL_COLUMN, table.values.shape[0], path)
        table.timestamps = _npz_column(archive, TIMESTAMP_COLUMN, table.values.shape[0], path)
    return table


def _np_load(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable NumPy file: {error}") from error


def _npz_array(archive: Any, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except (OSError, ValueError, EOFError) as error:
        raise DataError(
            f"{path}: cannot read array {key!r} (object arrays are refused; store str or numbers): {error}"
        ) from error


def _npz_column(archive: Any, key: str, n_rows: int, path: Path) -> pd.Series | None:
    if key not in archive.files:
        return None
    column = _npz_array(archive, key, path)
    if column.shape != (n_rows,):
        raise DataError(f"{path}: {key!r} has shape {column.shape}; expected one entry per row ({n_rows},)")
    if column.dtype.kind == "S":
        column = np.char.decode(column, "utf-8")
    return pd.Series(column)


def _array_table(array: np.ndarray, names: list[str] | None, path: Path) -> _Table:
    if array.ndim != 2:
        raise DataError(f"{path}: expected a 2-D array (rows x sensors), got shape {array.shape}")
    if array.shape[1] == 0:
        raise DataError(f"{path}: no sensor columns (array shape {array.shape})")
    if array.dtype.kind not in "biuf":
        raise DataError(f"{path}: values have dtype {array.dtype}; expected numbers")
    if names is None:
        width = max(4, len(str(array.shape[1] - 1)))
        names = [f"s{index:0{width}d}" for index in range(array.shape[1])]
    elif len(names) != array.shape[1]:
        raise DataError(f"{path}: {len(names)} sensor_names for {array.shape[1]} value columns")
    _check_names(names, path)
    if array.dtype.kind == "f" and array.dtype.itemsize > 4:
        with np.errstate(invalid="ignore"):
            too_large = np.isfinite(array) & (np.abs(array) > _FLOAT32_MAX)
        hit = _first_true(too_large)
        if hit is not None:
            row, column = hit
            raise DataError(
                f"{path}: value {array[row, column]:g} outside float32 range in "
                f"{_at(row, None, names[column])}"
            )
    return _Table(names, np.array(array, dtype=np.float32, order="C"), None, None, None)


# --- checking and repairing ----------------------------------------------------------------------------


def _check_names(names: Sequence[str], path: Path) -> None:
    for index, name in enumerate(names):
        if not name.strip():
            raise DataError(f"{path}: column {index + 1} has an empty name (was an index column written?)")
    duplicated = _duplicates(names)
    if duplicated:
        raise DataError(f"{path}: duplicate column names {_preview(duplicated)}")


def _check_finite(values: np.ndarray, names: Sequence[str], path: Path, line_offset: int | None) -> None:
    hit = _first_true(~np.isfinite(values))
    if hit is not None:
        row, column = hit
        problem = "missing value (NaN)" if np.isnan(values[row, column]) else "infinite value"
        raise DataError(f"{path}: {problem} in {_at(row, line_offset, names[column])}")


def _fill_gaps(values: np.ndarray, names: Sequence[str], path: Path, line_offset: int | None) -> np.ndarray:
    """Forward fill each sensor in time, back fill leading gaps; NaN and ±Inf both count as gaps.

    Forward fill because a reading is best predicted by the last one; it never uses the future except for
    a leading gap, which has no past. Only columns with gaps are touched; `values` is modified in place.
    """
    gaps = ~np.isfinite(values)
    columns = np.flatnonzero(gaps.any(axis=0))
    if columns.size == 0:
        return values
    n_rows = values.shape[0]
    gaps = gaps[:, columns]
    counts = gaps.sum(axis=0)
    empty = [names[column] for column in columns[counts == n_rows]]
    if empty:
        raise DataError(f"{path}: no finite value to impute from in column(s) {_preview(empty)}")

    row_index = np.arange(n_rows)[:, None]
    last_good = np.where(gaps, -1, row_index)
    np.maximum.accumulate(last_good, axis=0, out=last_good)
    first_good = np.argmax(~gaps, axis=0)
    source_row = np.where(last_good >= 0, last_good, first_good[None, :])
    values[:, columns] = np.take_along_axis(values[:, columns], source_row, axis=0)

    total = int(counts.sum())
    worst = np.argsort(-counts, kind="stable")[:_NAMES_SHOWN]
    log.info(
        "%s: imputed %d of %d cells (%.3f%%) in %d of %d sensor columns; most imputed: %s",
        path,
        total,
        values.size,
        100.0 * total / values.size,
        columns.size,
        values.shape[1],
        ", ".join(f"{names[columns[k]]!r} {int(counts[k])}" for k in worst),
    )
    if log.isEnabledFor(logging.DEBUG):
        per_column = {
            names[column]: count for column, count in zip(columns.tolist(), counts.tolist(), strict=True)
        }
        log.debug("%s: imputed cells per column: %s", path, per_column)
    return values


def _parse_labels(raw: pd.Series, path: Path, line_offset: int | None) -> np.ndarray:
    """0/1 labels as int8; 0.0/1.0 and true/false (any case) are accepted, anything else names its row."""
    numbers = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    if _is_text(raw.dtype):
        text = raw.astype(str).str.strip().str.lower().to_numpy(dtype=object)
        numbers = np.where(text == "true", 1.0, np.where(text == "false", 0.0, numbers))
    valid = (numbers == 0) | (numbers == 1)
    if not valid.all():
        row = int(np.argmin(valid))
        value = raw.iloc[row]
        where = _at(row, line_offset, LABEL_COLUMN)
        if pd.isna(value):
            raise DataError(f"{path}: missing label in {where}")
        raise DataError(f"{path}: label must be 0 or 1, got {_show(value)} in {where}")
    return numbers.astype(np.int8)


def _parse_timestamps(raw: pd.Series, path: Path, line_offset: int | None) -> np.ndarray:
    """ISO 8601 strings or datetimes -> naive UTC datetime64[ns]; naive input is taken to be UTC already."""
    if pd.api.types.is_numeric_dtype(raw.dtype) and not raw.isna().all():
        raise DataError(
            f"{path}: {TIMESTAMP_COLUMN!r} holds numbers ({raw.dtype}); expected ISO 8601 text or datetimes"
        )
    parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="ISO8601")
    unparsed = parsed.isna().to_numpy()
    if unparsed.any():
        row = int(unparsed.argmax())
        value = raw.iloc[row]
        where = _at(row, line_offset, TIMESTAMP_COLUMN)
        if pd.isna(value):
            raise DataError(f"{path}: missing timestamp in {where}")
        raise DataError(f"{path}: unparseable timestamp {_show(value)} in {where} (expected ISO 8601)")
    naive = parsed.dt.tz_convert(None)
    try:
        return naive.astype("datetime64[ns]").to_numpy()
    except pd.errors.OutOfBoundsDatetime as error:
        moments = naive.to_numpy()
        earliest, latest = (
            bound.to_datetime64().astype(moments.dtype) for bound in (pd.Timestamp.min, pd.Timestamp.max)
        )
        row = int(((moments < earliest) | (moments > latest)).argmax())
        raise DataError(
            f"{path}: timestamp {_show(raw.iloc[row])} in {_at(row, line_offset, TIMESTAMP_COLUMN)} is "
            f"outside the datetime64[ns] range ({pd.Timestamp.min.year}-{pd.Timestamp.max.year})"
        ) from error


# --- small helpers -------------------------------------------------------------------------------------


class _JsonObject:
    """A parsed JSON object as its key/value pairs, so repeated keys are seen, not silently merged."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs


def _json_type(value: Any) -> str:
    if isinstance(value, _JsonObject):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a boolean" if isinstance(value, bool) else "a number"


def _is_text(dtype: Any) -> bool:
    return pd.api.types.is_object_dtype(dtype) or isinstance(dtype, pd.StringDtype)


def _at(row: int, line_offset: int | None, column: str | None = None) -> str:
    where = f"row {row}" if line_offset is None else f"row {row} (file line {row + line_offset})"
    return where if column is None else f"{where}, column {column!r}"


def _first_true(mask: np.ndarray) -> tuple[int, int] | None:
    """(row, column) of the first True in row-major order, without flattening the whole mask."""
    rows = mask.any(axis=1)
    if not rows.any():
        return None
    row = int(rows.argmax())
    return row, int(mask[row].argmax())


def _first_out_of_float32_range(column: np.ndarray) -> int | None:
    with np.errstate(invalid="ignore"):
        too_large = np.isfinite(column) & (np.abs(column) > _FLOAT32_MAX)
    return int(too_large.argmax()) if too_large.any() else None


def _earlier(current: tuple[int, int, str] | None, candidate: tuple[int, int, str]) -> tuple[int, int, str]:
    """Keep the problem that comes first in row-major order (columns are visited left to right)."""
    return candidate if current is None or candidate[0] < current[0] else current


def _duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    repeated: dict[str, None] = {}
    for name in names:
        if name in seen:
            repeated[name] = None
        seen.add(name)
    return list(repeated)


def _preview(names: Sequence[str]) -> str:
    shown = repr(list(names[:_NAMES_SHOWN]))
    return shown if len(names) <= _NAMES_SHOWN else f"{shown[:-1]}, ... ({len(names) - _NAMES_SHOWN} more)]"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _VALUE_CHARS_SHOWN else text[: _VALUE_CHARS_SHOWN - 3] + "..."


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
