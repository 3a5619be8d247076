"""The table writers: the pandas-free CSV is byte-equal to pandas', the pyarrow Parquet reads back as pandas'."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from alphaq.audit.table_files import column_kinds, is_missing, write_csv, write_parquet

COLUMNS = ["name", "layer", "count", "ratio", "flag", "maybe_flag", "note", "absent", "mixed"]
ROWS = [
    {
        "name": "a,b",
        "layer": 0,
        "count": 3,
        "ratio": 0.1,
        "flag": True,
        "maybe_flag": True,
        "note": 'say "hi"',
        "mixed": 2,
    },
    {
        "name": "line\nbreak",
        "layer": None,
        "count": 4,
        "ratio": 1e-05,
        "flag": False,
        "maybe_flag": None,
        "note": "",
        "mixed": 2.5,
    },
    {"name": "c", "layer": 7, "count": 5, "ratio": math.nan, "flag": np.bool_(True), "note": None, "mixed": 1e16},
    {
        "name": "d",
        "layer": np.int64(2),
        "count": np.int64(6),
        "ratio": np.float64(123456789.123),
        "flag": False,
        "maybe_flag": False,
        "note": "x",
        "mixed": None,
    },
]


def _pandas_frame(rows, int_columns=("layer",), columns=COLUMNS):
    frame = pd.DataFrame(rows, columns=columns)
    for column in int_columns:
        frame[column] = frame[column].astype("Int64")
    return frame


def test_kinds_follow_pandas_inference():
    kinds = column_kinds(ROWS, COLUMNS, ("layer",))
    assert kinds == {
        "name": "text",
        "layer": "nullable_int",
        "count": "int",
        "ratio": "float",
        "flag": "bool",
        "maybe_flag": "text",
        "note": "text",
        "absent": "float",
        "mixed": "float",
    }


@pytest.mark.parametrize("rows", [ROWS, ROWS[:1], ROWS[2:], []], ids=["all", "one", "two", "empty"])
def test_csv_is_byte_equal_to_pandas(tmp_path, rows):
    write_csv(tmp_path / "t.csv", rows, COLUMNS, ("layer",))
    assert (tmp_path / "t.csv").read_bytes() == _pandas_frame(rows).to_csv(index=False).encode()


def test_one_empty_column_is_quoted_as_pandas_does(tmp_path):
    write_csv(tmp_path / "t.csv", [{"x": math.nan}, {"x": 1.5}], ["x"])
    assert (
        (tmp_path / "t.csv").read_text() == 'x\n""\n1.5\n' == pd.DataFrame({"x": [math.nan, 1.5]}).to_csv(index=False)
    )


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


def _random_rows(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    gaps = rng.random((4, count)) < 0.3  # [4, count] missing cells
    return [
        {
            "layer": None if gaps[0, i] else int(rng.integers(-(2**62), 2**62)),
            "alpha": math.nan if gaps[1, i] else float(rng.standard_normal() * 1e6),
            "ok": bool(rng.random() < 0.5),
            "name": None if gaps[3, i] else f'layer.{i}.é\u4e2d,"q"\n' * (i % 3),
            "rows": i,
            "nothing": None,
        }
        for i in range(count)
    ]


RANDOM_COLUMNS = ["layer", "alpha", "ok", "name", "rows", "nothing"]


@pytest.mark.parametrize("count", [0, 1, 7, 8, 9, 1000])
def test_parquet_holds_every_value_and_null_with_pandas_types(tmp_path, count):
    import pyarrow.parquet as pq

    rows = _random_rows(count)
    write_parquet(tmp_path / "t.parquet", rows, RANDOM_COLUMNS, ("layer",))
    table = pq.read_table(tmp_path / "t.parquet")
    table.validate(full=True)
    assert table.num_rows == count and table.schema.names == RANDOM_COLUMNS
    types = ["int64", "double", "bool", "string", "int64", "string"] if count else ["int64"] + ["string"] * 5
    assert [str(t) for t in table.schema.types] == types  # no rows: pandas would type the columns object
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert list(back.columns) == RANDOM_COLUMNS and len(back) == count and str(back["layer"].dtype) == "Int64"
    assert back["layer"].tolist() == [pd.NA if row["layer"] is None else row["layer"] for row in rows]  # exact int64
    if count:
        assert {c: str(back[c].dtype) for c in ("alpha", "ok", "rows")} == {
            "alpha": "float64",
            "ok": "bool",
            "rows": "int64",
        }
    np.testing.assert_array_equal(back["alpha"].to_numpy(dtype=float), [row["alpha"] for row in rows])  # NaN = NaN
    assert back["ok"].tolist() == [row["ok"] for row in rows] and back["rows"].tolist() == list(range(count))
    for column in ("name", "nothing"):  # text: missing cells read back as missing (None or NaN by pandas version)
        assert [None if pd.isna(v) else v for v in back[column]] == [row[column] for row in rows], column


def test_parquet_special_floats_survive(tmp_path):
    values = [math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
    write_parquet(tmp_path / "t.parquet", [{"f": v} for v in values], ["f"])
    back = pd.read_parquet(tmp_path / "t.parquet")["f"].tolist()
    assert back == values and math.copysign(1.0, back[2]) == -1.0


def test_missing_values():
    assert all(is_missing(v) for v in (None, math.nan, np.float64("nan"), np.float32("nan"), pd.NA))
    assert not any(is_missing(v) for v in (0, 0.0, "", "nan", False))
