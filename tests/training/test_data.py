"""Loading real sensor files: every format round-trips, and every bad input names its file, row and column."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factory_anomaly.training.data import (
    SUPPORTED_SUFFIXES,
    DataError,
    Dataset,
    align_sensors,
    load_dataset,
    load_fault_sensors,
    load_labels,
    load_sensor_units,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def csv_with(tmp_path: Path, rows: list[str], header: str = "a,b,c") -> Path:
    return write(tmp_path / "data.csv", "\n".join([header, *rows]) + "\n")


def assert_values_contract(dataset: Dataset) -> None:
    assert dataset.values.dtype == np.float32
    assert dataset.values.flags.c_contiguous
    assert dataset.values.shape == (dataset.n_rows, dataset.n_sensors)
    assert len(dataset.sensor_names) == dataset.n_sensors


# --- round trips -----------------------------------------------------------------------------------------


def test_csv_round_trip_with_labels_and_timestamps(tmp_path: Path) -> None:
    path = write(
        tmp_path / "plant.csv",
        "timestamp,temp_001,label,p_002\n"
        "2024-03-01T00:00:00Z,1.5,0,10\n"
        "2024-03-01T02:00:01+01:00,2.5,1,20\n"  # = 01:00:01 UTC
        "2024-03-01 02:00:00,-3.25,0.0,30\n",  # naive: taken as UTC
    )
    dataset = load_dataset(path)

    assert_values_contract(dataset)
    assert dataset.sensor_names == ("temp_001", "p_002")
    np.testing.assert_array_equal(dataset.values, [[1.5, 10], [2.5, 20], [-3.25, 30]])
    assert dataset.labels is not None and dataset.labels.dtype == np.int8
    assert dataset.labels.tolist() == [0, 1, 0]
    assert dataset.timestamps is not None and dataset.timestamps.dtype == np.dtype("datetime64[ns]")
    expected = np.array(
        ["2024-03-01T00:00:00", "2024-03-01T01:00:01", "2024-03-01T02:00:00"], "datetime64[ns]"
    )
    np.testing.assert_array_equal(dataset.timestamps, expected)
    np.testing.assert_array_equal(dataset.normal_rows(), [[1.5, 10], [-3.25, 30]])
    assert dataset.source == path
    assert (dataset.n_rows, dataset.n_sensors) == (3, 2)


def test_csv_without_special_columns_has_no_labels_or_timestamps(tmp_path: Path) -> None:
    dataset = load_dataset(csv_with(tmp_path, ["1,2,3", "4,5,6"]))
    assert dataset.labels is None and dataset.timestamps is None
    assert dataset.normal_rows() is dataset.values
    assert "2 rows x 3 sensors" in repr(dataset)


def test_csv_labels_accept_booleans(tmp_path: Path) -> None:
    dataset = load_dataset(csv_with(tmp_path, ["1,True", "2,false", "3,1.0"], header="a,label"))
    assert dataset.labels is not None and dataset.labels.tolist() == [1, 0, 1]


def test_csv_trailing_blank_lines_are_not_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "a,b\r\n1,2\r\n3,4\r\n\r\n\r\n")
    assert load_dataset(path).n_rows == 2


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet_round_trip(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame(
        {
            "x": [1.0, 2.0, 3.0],
            "timestamp": pd.date_range("2024-01-01 01:00", periods=3, freq="min", tz="Europe/Berlin"),
            "n": np.array([7, 8, 9], dtype=np.int64),
            "label": [False, True, False],
        }
    )
    path = tmp_path / f"plant{suffix}"
    frame.to_parquet(path)
    dataset = load_dataset(path)

    assert_values_contract(dataset)
    assert dataset.sensor_names == ("x", "n")
    np.testing.assert_array_equal(dataset.values, [[1, 7], [2, 8], [3, 9]])
    assert dataset.labels is not None and dataset.labels.tolist() == [0, 1, 0]
    assert dataset.timestamps is not None
    assert str(dataset.timestamps[0]) == "2024-01-01T00:00:00.000000000"  # Berlin 01:00 = 00:00 UTC


def test_parquet_time_index_becomes_timestamps(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0]}, index=pd.date_range("2024-01-01", periods=2, name="timestamp"))
    frame.to_parquet(tmp_path / "d.parquet")
    dataset = load_dataset(tmp_path / "d.parquet")
    assert dataset.sensor_names == ("x",) and dataset.timestamps is not None


def test_npy_round_trip_with_default_names(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "d.npy", np.asfortranarray(values))
    dataset = load_dataset(tmp_path / "d.npy")

    assert_values_contract(dataset)
    np.testing.assert_array_equal(dataset.values, values)
    assert dataset.sensor_names == ("s0000", "s0001", "s0002")
    assert dataset.labels is None and dataset.timestamps is None


def test_npy_default_names_widen_past_four_digits(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.zeros((1, 10_001), dtype=np.float32))
    names = load_dataset(tmp_path / "d.npy").sensor_names
    assert names[0] == "s00000" and names[-1] == "s10000"


@pytest.mark.parametrize("as_text", [False, True])
def test_npz_round_trip(tmp_path: Path, as_text: bool) -> None:
    times = np.array(["2024-01-01T00:00", "2024-01-01T00:01", "2024-01-01T00:02"], dtype="datetime64[s]")
    np.savez(
        tmp_path / "d.npz",
        values=np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int32),
        sensor_names=np.array(["flow", "temp"]),
        label=np.array([0, 0, 1]),
        timestamp=times.astype(str) if as_text else times,
        notes=np.array([1.0]),  # unknown keys are ignored
    )
    dataset = load_dataset(tmp_path / "d.npz")

    assert_values_contract(dataset)
    assert dataset.sensor_names == ("flow", "temp")
    np.testing.assert_array_equal(dataset.values, [[1, 2], [3, 4], [5, 6]])
    assert dataset.labels is not None and dataset.labels.tolist() == [0, 0, 1]
    np.testing.assert_array_equal(dataset.timestamps, times.astype("datetime64[ns]"))
    np.testing.assert_array_equal(dataset.normal_rows(), [[1, 2], [3, 4]])


def test_npz_with_values_only(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", values=np.ones((2, 2)))
    dataset = load_dataset(tmp_path / "d.npz")
    assert dataset.sensor_names == ("s0000", "s0001") and dataset.labels is None


@pytest.mark.parametrize("n_sensors", [2, 38, 2400])
def test_any_number_of_sensors(tmp_path: Path, n_sensors: int) -> None:
    rng = np.random.default_rng(n_sensors)
    values = rng.normal(size=(5, n_sensors)).astype(np.float32)
    names = [f"t_{index:04d}" for index in range(n_sensors)]
    pd.DataFrame(values, columns=names).to_csv(tmp_path / "d.csv", index=False)
    np.savez(tmp_path / "d.npz", values=values, sensor_names=np.array(names))

    for path in (tmp_path / "d.csv", tmp_path / "d.npz"):
        dataset = load_dataset(path)
        assert_values_contract(dataset)
        assert dataset.sensor_names == tuple(names)
        np.testing.assert_array_equal(dataset.values, values)


# --- file-level errors -----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not found: .*nope\.csv"):
        load_dataset(tmp_path / "nope.csv")


def test_unknown_format_lists_supported_suffixes(tmp_path: Path) -> None:
    path = write(tmp_path / "d.xlsx", "a\n1\n")
    with pytest.raises(DataError, match=r"'\.xlsx'") as raised:
        load_dataset(path)
    assert all(suffix in str(raised.value) for suffix in SUPPORTED_SUFFIXES)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"d\.csv: file is empty"):
        load_dataset(write(tmp_path / "d.csv", ""))


def test_too_few_rows(tmp_path: Path) -> None:
    path = csv_with(tmp_path, ["1,2,3"] * 40)
    with pytest.raises(DataError, match=r"data\.csv has 40 rows; at least 100 are needed"):
        load_dataset(path, min_rows=100)
    assert load_dataset(path, min_rows=40).n_rows == 40


def test_header_only_has_zero_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="has 0 rows; at least 1 is needed"):
        load_dataset(csv_with(tmp_path, [], header="a,b"))


def test_no_sensor_columns(tmp_path: Path) -> None:
    path = csv_with(tmp_path, ["2024-01-01,0"], header="timestamp,label")
    with pytest.raises(DataError, match="no sensor columns"):
        load_dataset(path)
    np.save(tmp_path / "d.npy", np.zeros((3, 0)))
    with pytest.raises(DataError, match="no sensor columns"):
        load_dataset(tmp_path / "d.npy")


def test_duplicate_column_names(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"duplicate column names \['a'\]"):
        load_dataset(csv_with(tmp_path, ["1,2,3"], header="a,b,a"))


def test_duplicate_column_names_in_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table([pa.array([1.0]), pa.array([2.0])], names=["a", "a"]), tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"duplicate column names \['a'\]"):
        load_dataset(tmp_path / "d.parquet")


def test_duplicate_sensor_names_in_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", values=np.ones((2, 2)), sensor_names=np.array(["x", "x"]))
    with pytest.raises(DataError, match=r"duplicate column names \['x'\]"):
        load_dataset(tmp_path / "d.npz")


def test_empty_column_name(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="column 1 has an empty name"):
        load_dataset(csv_with(tmp_path, ["0,1,2"], header=",a,b"))


def test_rows_wider_than_header(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="more fields than the header"):
        load_dataset(csv_with(tmp_path, ["1,2,3,4", "5,6,7,8"]))
    with pytest.raises(DataError, match="Expected 3 fields in line 3, saw 4"):
        load_dataset(csv_with(tmp_path, ["1,2,3", "5,6,7,8"]))


def test_other_delimiter_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="looks delimited by ';', but only ',' is read"):
        load_dataset(csv_with(tmp_path, ["1;2;3"], header="a;b;c"))


def test_not_a_parquet_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a readable Parquet file"):
        load_dataset(write(tmp_path / "d.parquet", "hello"))


def test_npy_must_be_2d_numbers(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", np.zeros(5))
    with pytest.raises(DataError, match=r"expected a 2-D array \(rows x sensors\), got shape \(5,\)"):
        load_dataset(tmp_path / "d.npy")
    np.save(tmp_path / "d.npy", np.array([["a", "b"]]))
    with pytest.raises(DataError, match="expected numbers"):
        load_dataset(tmp_path / "d.npy")


def test_npz_needs_values_and_matching_lengths(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", data=np.ones((2, 2)))
    with pytest.raises(DataError, match=r"no 'values' array in the archive \(keys: \['data'\]\)"):
        load_dataset(tmp_path / "d.npz")
    np.savez(tmp_path / "d.npz", values=np.ones((2, 2)), label=np.zeros(3))
    with pytest.raises(DataError, match=r"'label' has shape \(3,\); expected one entry per row \(2,\)"):
        load_dataset(tmp_path / "d.npz")
    np.savez(tmp_path / "d.npz", values=np.ones((2, 2)), sensor_names=np.array(["a"]))
    with pytest.raises(DataError, match="1 sensor_names for 2 value columns"):
        load_dataset(tmp_path / "d.npz")


# --- cell-level errors -----------------------------------------------------------------------------------


def test_non_numeric_cell_names_row_line_and_column(tmp_path: Path) -> None:
    rows = ["1,2,3"] * 12 + ["1,2,abc"] + ["x,2,3"]  # row 12 col c comes before row 13 col a
    with pytest.raises(DataError, match=r"non-numeric value 'abc' in row 12 \(file line 14\), column 'c'"):
        load_dataset(csv_with(tmp_path, rows))


def test_non_numeric_first_in_row_major_order(tmp_path: Path) -> None:
    rows = ["1,2,3", "1,oops,zz", "q,2,3"]
    with pytest.raises(DataError, match=r"'oops' in row 1 \(file line 3\), column 'b'"):
        load_dataset(csv_with(tmp_path, rows))


def test_non_numeric_in_parquet_has_no_file_line(tmp_path: Path) -> None:
    pd.DataFrame({"a": ["1", "2", "bad"]}).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"non-numeric value 'bad' in row 2, column 'a'$"):
        load_dataset(tmp_path / "d.parquet")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["1,2,3", "4,,6"], r"missing value \(NaN\) in row 1 \(file line 3\), column 'b'"),
        (["1,2,3", "4,5,NaN", "nan,5,6"], r"missing value \(NaN\) in row 1 \(file line 3\), column 'c'"),
        (["1,2,3", "1,2,3", "1,-inf,3"], r"infinite value in row 2 \(file line 4\), column 'b'"),
        (["1,2,3", "", "1,2,3"], r"missing value \(NaN\) in row 1 \(file line 3\), column 'a'"),
    ],
)
def test_missing_and_infinite_values(tmp_path: Path, rows: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(csv_with(tmp_path, rows))


def test_missing_value_in_npy_names_row_and_column(tmp_path: Path) -> None:
    values = np.ones((5, 3))
    values[3, 2] = np.nan
    values[4, 0] = np.inf
    np.save(tmp_path / "d.npy", values)
    with pytest.raises(DataError, match=r"missing value \(NaN\) in row 3, column 's0002'"):
        load_dataset(tmp_path / "d.npy")


def test_value_outside_float32_range(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"value 1e\+40 outside float32 range in row 0 \(file line 2\), column 'b'"
    ):
        load_dataset(csv_with(tmp_path, ["1,1e40,3"]), impute=True)


# --- imputation ------------------------------------------------------------------------------------------


def test_impute_forward_fills_then_back_fills_leading_gaps(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [",10,1", ",,2", "3,inf,", "4,12,", "5,,5"]
    with caplog.at_level(logging.INFO, logger="training.data"):
        dataset = load_dataset(csv_with(tmp_path, rows), impute=True)

    expected = [[3, 10, 1], [3, 10, 2], [3, 10, 2], [4, 12, 2], [5, 12, 5]]
    np.testing.assert_array_equal(dataset.values, expected)
    assert_values_contract(dataset)
    message = caplog.records[-1].getMessage()
    assert "imputed 7 of 15 cells" in message and "in 3 of 3 sensor columns" in message
    assert message.endswith("most imputed: 'b' 3, 'a' 2, 'c' 2")


def test_impute_leaves_clean_data_untouched(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="training.data"):
        dataset = load_dataset(csv_with(tmp_path, ["1,2,3"]), impute=True)
    assert dataset.values.tolist() == [[1, 2, 3]] and not caplog.records


def test_impute_refuses_a_column_without_any_value(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no finite value to impute from in column\(s\) \['b'\]"):
        load_dataset(csv_with(tmp_path, ["1,,3", "4,inf,6"]), impute=True)


def test_impute_does_not_excuse_non_numeric_cells(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="non-numeric value 'n/a!'"):
        load_dataset(csv_with(tmp_path, ["1,n/a!,3"]), impute=True)


# --- labels and timestamps inside the data ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "message"),
    [("2", r"label must be 0 or 1, got '2' in row 1 \(file line 3\)"), ("", r"missing label in row 1")],
)
def test_bad_label_in_data(tmp_path: Path, cell: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(csv_with(tmp_path, ["1,0", f"2,{cell}"], header="a,label"))


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("yesterday", r"unparseable timestamp 'yesterday' in row 1 \(file line 3\)"),
        ("", r"missing timestamp in row 1 \(file line 3\)"),
    ],
)
def test_bad_timestamp(tmp_path: Path, cell: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(csv_with(tmp_path, ["2024-01-01,1", f"{cell},2"], header="timestamp,a"))


def test_numeric_timestamps_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", values=np.ones((2, 1)), timestamp=np.array([1_700_000_000, 1_700_000_001]))
    with pytest.raises(DataError, match="'timestamp' holds numbers"):
        load_dataset(tmp_path / "d.npz")


def test_timestamps_out_of_order_warn_but_keep_file_order(tmp_path: Path) -> None:
    rows = ["2024-01-01T00:00,1", "2024-01-01T00:02,2", "2024-01-01T00:01,3"]
    with pytest.warns(UserWarning, match=r"not in time order \(row 2 \(file line 4\)"):
        dataset = load_dataset(csv_with(tmp_path, rows, header="timestamp,a"))
    assert dataset.values[:, 0].tolist() == [1, 2, 3]


# --- Dataset ---------------------------------------------------------------------------------------------


def test_dataset_coerces_on_construction() -> None:
    loose_parts: tuple = (np.ones((2, 2), dtype=np.float64, order="F"), ["a", "b"], [0, 1], None, "mem")
    dataset = Dataset(*loose_parts)  # lists and str on purpose: the constructor coerces them
    assert_values_contract(dataset)
    assert dataset.labels is not None and dataset.labels.dtype == np.int8
    assert dataset.source == Path("mem")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sensor_names": ("a",)}, "1 sensor names for 2 value columns"),
        ({"sensor_names": ("a", "a")}, r"duplicate sensor names \['a'\]"),
        ({"labels": np.array([0, 2])}, "labels must be 0 or 1"),
        ({"labels": np.array([0])}, r"labels have shape \(1,\)"),
    ],
)
def test_dataset_rejects_inconsistent_parts(kwargs: dict[str, object], message: str) -> None:
    parts: dict[str, object] = {"values": np.ones((2, 2)), "sensor_names": ("a", "b"), **kwargs}
    with pytest.raises(DataError, match=message):
        Dataset(**parts)  # type: ignore[arg-type]


# --- align_sensors ---------------------------------------------------------------------------------------


def small_dataset(names: tuple[str, ...]) -> Dataset:
    values = np.arange(2 * len(names), dtype=np.float32).reshape(2, len(names))
    return Dataset(values, names, np.array([0, 1]), None, Path("d.csv"))


def test_align_reorders_columns_to_the_model() -> None:
    dataset = small_dataset(("a", "b", "c"))
    aligned = align_sensors(dataset, ["c", "a", "b"])
    assert aligned.sensor_names == ("c", "a", "b")
    np.testing.assert_array_equal(aligned.values, dataset.values[:, [2, 0, 1]])
    assert aligned.values.flags.c_contiguous
    assert aligned.labels is not None and aligned.labels.tolist() == [0, 1]
    assert align_sensors(dataset, ("a", "b", "c")) is dataset


def test_align_names_missing_and_unexpected_sensors() -> None:
    dataset = small_dataset(tuple(f"t_{i:03d}" for i in range(3, 10)) + ("foo",))
    expected = [f"t_{i:03d}" for i in range(10)]
    message = (
        "d.csv: data has 8 sensors, model expects 10: missing ['t_000', 't_001', 't_002']; unexpected ['foo']"
    )
    with pytest.raises(DataError, match=re.escape(message)):
        align_sensors(dataset, expected)


def test_align_shortens_long_lists() -> None:
    dataset = small_dataset(("a",))
    expected = ["a"] + [f"m{i}" for i in range(8)]
    with pytest.raises(
        DataError, match=re.escape("missing ['m0', 'm1', 'm2', 'm3', 'm4', ... (3 more)]") + "$"
    ):
        align_sensors(dataset, expected)


def test_align_refuses_duplicate_model_names() -> None:
    with pytest.raises(DataError, match=r"model sensor names contain duplicates: \['a'\]"):
        align_sensors(small_dataset(("a", "b")), ["a", "b", "a"])


# --- load_labels -----------------------------------------------------------------------------------------


def test_load_labels_with_fault_kind(tmp_path: Path) -> None:
    path = write(tmp_path / "labels.csv", "label,fault_kind,note\n0,,x\n1,drift,y\n0,None,z\n1, spike ,w\n")
    labels, kinds = load_labels(path, 4)
    assert labels.dtype == np.int8 and labels.tolist() == [0, 1, 0, 1]
    assert kinds is not None and kinds.dtype == object
    assert kinds.tolist() == ["none", "drift", "none", "spike"]


def test_load_labels_without_fault_kind_from_parquet(tmp_path: Path) -> None:
    pd.DataFrame({"label": [1.0, 0.0]}).to_parquet(tmp_path / "labels.parquet")
    labels, kinds = load_labels(tmp_path / "labels.parquet", 2)
    assert labels.tolist() == [1, 0] and kinds is None


def test_load_labels_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"labels file not found: .*nope\.csv"):
        load_labels(tmp_path / "nope.csv", 2)
    with pytest.raises(DataError, match=r"unknown labels file format '\.npy'; supported suffixes: \.csv"):
        load_labels(write(tmp_path / "l.npy", ""), 2)
    with pytest.raises(DataError, match=r"no 'label' column \(columns: \['y'\]\)"):
        load_labels(write(tmp_path / "l.csv", "y\n0\n1\n"), 2)
    with pytest.raises(DataError, match=r"label must be 0 or 1, got 'yes' in row 1 \(file line 3\)"):
        load_labels(write(tmp_path / "l.csv", "label\n0\nyes\n"), 2)
    with pytest.raises(DataError, match=r"l\.csv has 3 label rows; the data has 2"):
        load_labels(write(tmp_path / "l.csv", "label\n0\n1\n0\n"), 2)


# --- load_fault_sensors ----------------------------------------------------------------------------------


def test_load_fault_sensors(tmp_path: Path) -> None:
    path = write(tmp_path / "f.json", json.dumps({"7": [3, 1, 3], "2": [0], "9": []}))
    assert load_fault_sensors(path, n_rows=10, n_sensors=4) == {2: [0], 7: [1, 3], 9: []}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"1": [0]', r"not valid JSON: .* at line 1, column 10"),
        ("[[1, 0]]", "expected a JSON object mapping row index to a list of sensor indices, got an array"),
        ('{"one": [0]}', "key 'one' is not an integer row index"),
        ('{"1.5": [0]}', "key '1.5' is not an integer row index"),
        ('{"10": [0]}', r"row index 10 is out of range \[0, 10\)"),
        ('{"-1": [0]}', r"row index -1 is out of range \[0, 10\)"),
        ('{"3": [4]}', r"row 3: sensor index 4 is out of range \[0, 4\)"),
        ('{"3": 2}', "row 3: expected a list of sensor indices, got a number"),
        ('{"3": {"a": 1}}', "row 3: expected a list of sensor indices, got an object"),
        ('{"3": [1.0]}', "row 3: sensor index 1.0 is not an integer"),
        ('{"3": [true]}', "row 3: sensor index True is not an integer"),
        ('{"3": [1], "03": [2]}', "row index 3 appears more than once"),
    ],
)
def test_load_fault_sensors_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_fault_sensors(write(tmp_path / "f.json", text), n_rows=10, n_sensors=4)


def test_load_fault_sensors_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"fault-sensor file not found: .*f\.json"):
        load_fault_sensors(tmp_path / "f.json", n_rows=1, n_sensors=1)


# --- load_sensor_units -----------------------------------------------------------------------------------


def test_load_sensor_units_from_a_mapping_and_from_synths_records(tmp_path: Path) -> None:
    names = ("a", "b", "c")
    mapping = write(tmp_path / "m.json", json.dumps({"c": " bar ", "a": "rpm" + " " * 40}))  # fits, stripped
    assert load_sensor_units(mapping, names) == ("rpm", "", "bar")
    records = [{"index": 1, "name": "b", "unit": "°C", "kind": "temperature"}, {"name": "a", "unit": ""}]
    assert load_sensor_units(write(tmp_path / "r.json", json.dumps(records)), names) == ("", "°C", "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": "bar"', r"not valid JSON: .* at line 1, column 12"),
        ('"bar"', "expected an object of sensor name -> unit or an array of records, got a string"),
        ('{"z": "bar"}', "key 'z': sensor 'z' is not one of the recording's sensors"),
        ('{"a": "bar", "a": "V"}', "key 'a': sensor 'a' is given more than once"),
        ('{"a": 3}', "key 'a': the unit must be a string of at most 32 characters, got a number"),
        ('{"a": "' + "x" * 33 + '"}', "key 'a': the unit must be a string of at most 32 characters"),
        ('[{"name": "a"}]', "item 0: the record has no 'unit'"),
        ('[{"unit": "V"}]', "item 0: the record has no 'name'"),
        ('[{"name": "a", "unit": "V"}, 7]', "item 1: expected a record with 'name' and 'unit', got a number"),
        ('[{"name": 1, "unit": "V"}]', "item 0: 'name' must be a string, got a number"),
        ('[{"name": "a", "unit": "V", "unit": "bar"}]', "item 0: the record gives 'unit' more than once"),
    ],
)
def test_load_sensor_units_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_sensor_units(write(tmp_path / "u.json", text), ("a", "b"))


def test_load_sensor_units_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"sensor-units file not found: .*u\.json"):
        load_sensor_units(tmp_path / "u.json", ("a",))
