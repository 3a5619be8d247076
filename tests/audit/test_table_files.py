"""The pandas-free table writer: byte-equal to pandas' CSV, same Parquet types."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alphaq.audit.table_files import column_kinds, is_missing, write_csv, write_parquet

COLUMNS = ["name", "layer", "count", "ratio", "flag", "maybe_flag", "note", "absent", "mixed"]
ROWS = [
    {"name": "a,b", "layer": 0, "count": 3, "ratio": 0.1, "flag": True, "maybe_flag": True, "note": 'say "hi"',
     "mixed": 2},
    {"name": "line\nbreak", "layer": None, "count": 4, "ratio": 1e-05, "flag": False, "maybe_flag": None, "note": "",
     "mixed": 2.5},
    {"name": "c", "layer": 7, "count": 5, "ratio": math.nan, "flag": np.bool_(True), "note": None, "mixed": 1e16},
    {"name": "d", "layer": np.int64(2), "count": np.int64(6), "ratio": np.float64(123456789.123), "flag": False,
     "maybe_flag": False, "note": "x", "mixed": None},
]


def _pandas_frame(rows, int_columns=("layer",)):
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for column in int_columns:
        frame[column] = frame[column].astype("Int64")
    return frame


def test_kinds_follow_pandas_inference():
    kinds = column_kinds(ROWS, COLUMNS, ("layer",))
    assert kinds == {"name": "text", "layer": "nullable_int", "count": "int", "ratio": "float", "flag": "bool",
                     "maybe_flag": "text", "note": "text", "absent": "float", "mixed": "float"}


@pytest.mark.parametrize("rows", [ROWS, ROWS[:1], ROWS[2:], []], ids=["all", "one", "two", "empty"])
def test_csv_is_byte_equal_to_pandas(tmp_path, rows):
    write_csv(tmp_path / "t.csv", rows, COLUMNS, ("layer",))
    assert (tmp_path / "t.csv").read_bytes() == _pandas_frame(rows).to_csv(index=False).encode()


def test_one_empty_column_is_quoted_as_pandas_does(tmp_path):
    write_csv(tmp_path / "t.csv", [{"x": math.nan}, {"x": 1.5}], ["x"])
    assert (tmp_path / "t.csv").read_text() == 'x\n""\n1.5\n' == pd.DataFrame({"x": [math.nan, 1.5]}).to_csv(index=False)


def test_parquet_reads_back_with_the_same_values_and_nullable_ints(tmp_path):
    write_parquet(tmp_path / "t.parquet", ROWS, COLUMNS, ("layer",))
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert list(back.columns) == COLUMNS
    assert str(back["layer"].dtype) == "Int64" and back["layer"].tolist()[::2] == [0, 7]
    assert back["layer"].isna().tolist() == [False, True, False, False]
    assert back["count"].tolist() == [3, 4, 5, 6] and str(back["count"].dtype) == "int64"
    assert back["ratio"].iloc[1] == 1e-05 and pd.isna(back["ratio"].iloc[2])
    assert back["flag"].tolist() == [True, False, True, False]
    assert back["name"].tolist() == ["a,b", "line\nbreak", "c", "d"] and pd.isna(back["note"].iloc[2])
    assert back["absent"].isna().all() and back["mixed"].tolist()[:3] == [2.0, 2.5, 1e16]


def test_missing_values():
    assert all(is_missing(v) for v in (None, math.nan, np.float64("nan"), np.float32("nan"), pd.NA))
    assert not any(is_missing(v) for v in (0, 0.0, "", "nan", False))
