"""Write row tables (lists of dicts) as CSV without pandas, in pandas' own format, and as Parquet with pyarrow.

The inspect command writes its tables here so that it never waits for pandas' import (about 0.4 s, a third of
a small audit). Each column is typed as ``pandas.DataFrame(rows)`` would type it, so the CSV is byte-for-byte
what ``DataFrame.to_csv(index=False)`` writes (tested):

* integer columns named in ``int_columns`` (pandas' nullable "Int64"): ints, missing values empty;
* numbers only, all ints, none missing: ints; numbers with a float or a missing value: floats written by
  ``repr`` (``2.0``, ``1e-05``), missing values empty;
* booleans only, none missing: ``True``/``False``; anything else (text): as text, missing values empty.

Parquet is written by pyarrow with the same column types: int64 (nullable), float64, bool, string; NaN is written
as null, as ``DataFrame.to_parquet`` does, and pandas' schema metadata is stored so that ``pandas.read_parquet``
gives the nullable integer columns back as "Int64".
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from alphaq._version import __version__

ColumnKind = Literal["nullable_int", "int", "float", "bool", "text"]


def column_kinds(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], int_columns: Sequence[str] = ()
) -> dict[str, ColumnKind]:
    """The kind of each column, as pandas infers its dtype from the rows (a key absent from a row is missing).

    Args:
        rows: the table's rows.
        columns: its columns, in order.
        int_columns: columns cast to nullable integers whatever their values.

    Returns:
        ``{column: kind}``.
    """
    kinds: dict[str, ColumnKind] = {}
    for column in columns:
        values = [row.get(column, _ABSENT) for row in rows]
        present = [value for value in values if not is_missing(value)]
        missing = len(present) < len(values)
        if column in int_columns:
            kinds[column] = "nullable_int"
        elif present and all(_is_bool(value) for value in present):
            kinds[column] = "text" if missing else "bool"
        elif present and all(_is_number(value) for value in present):
            kinds[column] = "int" if not missing and all(_is_int(value) for value in present) else "float"
        elif not present and values:
            kinds[column] = "float" if any(value is not None for value in values) else "text"
        else:
            kinds[column] = "text"
    return kinds


def write_csv(
    path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    int_columns: Sequence[str] = (),
    *,
    kinds: Mapping[str, ColumnKind] | None = None,
) -> None:
    """Write ``rows`` as ``DataFrame(rows, columns=columns).to_csv(path, index=False)`` would.

    Args:
        path: the file to write (the caller makes the write atomic).
        rows: the table's rows (dicts; absent keys are missing values).
        columns: the columns, in order.
        int_columns: columns written as nullable integers.
        kinds: :func:`column_kinds` of the rows, when the caller has them (one pass for a CSV and a Parquet file).
    """
    kinds = kinds or column_kinds(rows, columns, int_columns)
    with Path(path).open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_cell(row.get(column), kinds[column]) for column in columns])


def write_parquet(
    path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    int_columns: Sequence[str] = (),
    *,
    kinds: Mapping[str, ColumnKind] | None = None,
) -> None:
    """Write ``rows`` as a Parquet file with pyarrow (int64 / float64 / bool / string columns, nulls for missing
    values). pandas' schema metadata is stored, so ``pandas.read_parquet`` gives the frame ``DataFrame.to_parquet``
    would have written (nullable ints as Int64).

    Args:
        path: the file to write (the caller makes the write atomic).
        rows: the table's rows.
        columns: the columns, in order.
        int_columns: columns written as nullable int64.
        kinds: :func:`column_kinds` of the rows, when the caller has them.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = kinds or column_kinds(rows, columns, int_columns)
    types = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "string": pa.string()}
    schema = pa.schema(
        [pa.field(column, types[_PARQUET_KINDS[kinds[column]]]) for column in columns],
        metadata=_pandas_metadata(columns, kinds),
    )
    arrays = [
        pa.array([_parquet_cell(row.get(column), kinds[column]) for row in rows], type=schema.field(column).type)
        for column in columns
    ]  # [rows] each
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), str(path))


def is_missing(value: Any) -> bool:
    """None, NaN (Python or numpy float) or pandas' NA."""
    if value is None or value is _ABSENT:
        return True
    try:
        return math.isnan(value)
    except TypeError:  # text, or pandas.NA (which refuses float())
        return type(value).__name__ == "NAType"


def number_or_nan(value: Any) -> float:
    """``float(value)``, or NaN for a missing value (:func:`is_missing`)."""
    return math.nan if is_missing(value) else float(value)


# -- internals ---------------------------------------------------------------------------------------

#: A key a row lacks: pandas makes it NaN (so a column of absent keys is float), unlike an explicit None.
_ABSENT = object()


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    if _is_bool(value) or isinstance(value, str):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer))


def _csv_cell(value: Any, kind: ColumnKind) -> str:
    if is_missing(value):
        return ""
    if kind in ("nullable_int", "int"):
        return str(int(value))
    if kind == "float":
        return repr(float(value))
    if kind == "bool":
        return str(bool(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


#: Parquet column kind of each table column kind.
_PARQUET_KINDS = {"nullable_int": "int64", "int": "int64", "float": "float64", "bool": "bool", "text": "string"}


def _parquet_cell(value: Any, kind: ColumnKind) -> Any:
    """A cell as its Parquet column stores it: None when missing (NaN included, as ``DataFrame.to_parquet``
    writes it), else int / float / bool / str."""
    if is_missing(value):
        return None
    if kind in ("nullable_int", "int"):
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        return bool(value)
    return value if isinstance(value, str) else str(value)


def _pandas_metadata(columns: Sequence[str], kinds: Mapping[str, ColumnKind]) -> dict[str, str]:
    """The schema metadata ``DataFrame.to_parquet`` writes, so that ``pandas.read_parquet`` gives the nullable
    integer columns back as "Int64" (without it they read as float64)."""
    import json

    pandas_types = {
        "nullable_int": ("int64", "Int64"),
        "int": ("int64", "int64"),
        "float": ("float64", "float64"),
        "bool": ("bool", "bool"),
        "text": ("unicode", "object"),
    }
    meta = {
        "index_columns": [],
        "column_indexes": [],
        "creator": {"library": "alphaq", "version": __version__},
        "pandas_version": None,  # not written by pandas (looking its version up costs start-up)
        "columns": [
            {
                "name": c,
                "field_name": c,
                "pandas_type": pandas_types[kinds[c]][0],
                "numpy_type": pandas_types[kinds[c]][1],
                "metadata": None,
            }
            for c in columns
        ],
    }
    return {"pandas": json.dumps(meta)}
