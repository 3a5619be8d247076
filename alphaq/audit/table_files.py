"""Write row tables (lists of dicts) as CSV and Parquet without pandas, in pandas' own formats.

The inspect command writes its tables here so that it never waits for pandas' import (about 0.4 s, a third of
a small audit). Each column is typed as ``pandas.DataFrame(rows)`` would type it, so the CSV is byte-for-byte
what ``DataFrame.to_csv(index=False)`` writes (tested):

* integer columns named in ``int_columns`` (pandas' nullable "Int64"): ints, missing values empty;
* numbers only, all ints, none missing: ints; numbers with a float or a missing value: floats written by
  ``repr`` (``2.0``, ``1e-05``), missing values empty;
* booleans only, none missing: ``True``/``False``; anything else (text): as text, missing values empty.

Parquet (pyarrow, when installed) gets the same column types: int64 (nullable), float64, bool, string; NaN is
written as null, as ``DataFrame.to_parquet`` does.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

ColumnKind = Literal["nullable_int", "int", "float", "bool", "text"]


def column_kinds(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                 int_columns: Sequence[str] = ()) -> dict[str, ColumnKind]:
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


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
              int_columns: Sequence[str] = (), *, kinds: Mapping[str, ColumnKind] | None = None) -> None:
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


def write_parquet(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
                  int_columns: Sequence[str] = (), *, kinds: Mapping[str, ColumnKind] | None = None) -> None:
    """Write ``rows`` as a Parquet file with pyarrow (int64 / float64 / bool / string columns, nulls for missing).

    Args:
        path: the file to write (the caller makes the write atomic).
        rows: the table's rows.
        columns: the columns, in order.
        int_columns: columns written as nullable int64.
        kinds: :func:`column_kinds` of the rows, when the caller has them.

    Raises:
        ImportError: pyarrow is not installed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = kinds or column_kinds(rows, columns, int_columns)
    arrays = [_arrow_column([row.get(column) for row in rows], kinds[column]) for column in columns]
    table = pa.Table.from_arrays(arrays, names=list(columns)).replace_schema_metadata(_pandas_metadata(columns, kinds))
    pq.write_table(table, str(path))


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


def _pandas_metadata(columns: Sequence[str], kinds: Mapping[str, ColumnKind]) -> dict[bytes, bytes]:
    """The schema metadata ``DataFrame.to_parquet`` writes, so that ``pandas.read_parquet`` gives the nullable
    integer columns back as "Int64" (without it they read as float64)."""
    import json

    import pyarrow as pa

    pandas_types = {"nullable_int": ("int64", "Int64"), "int": ("int64", "int64"), "float": ("float64", "float64"),
                    "bool": ("bool", "bool"), "text": ("unicode", "object")}
    meta = {"index_columns": [], "column_indexes": [], "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": None,  # not written by pandas (looking its version up costs start-up)
            "columns": [{"name": c, "field_name": c, "pandas_type": pandas_types[kinds[c]][0],
                         "numpy_type": pandas_types[kinds[c]][1], "metadata": None} for c in columns]}
    return {b"pandas": json.dumps(meta).encode("utf-8")}


def _arrow_column(values: list[Any], kind: ColumnKind) -> Any:
    """One pyarrow array built from its buffers (validity bitmap, values or offsets + UTF-8 bytes):
    ``pyarrow.array`` would import pandas to check its input's type, which is what this module avoids."""
    import pyarrow as pa

    valid = np.array([not is_missing(value) for value in values], dtype=bool)  # [n]
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little").tobytes())
    nulls = int(len(values) - valid.sum())
    if kind in ("nullable_int", "int", "float"):
        dtype = np.float64 if kind == "float" else np.int64
        data = np.array([v if ok else 0 for v, ok in zip(values, valid)], dtype=dtype)  # [n]
        arrow_type = pa.float64() if kind == "float" else pa.int64()
        return pa.Array.from_buffers(arrow_type, len(values), [bitmap, pa.py_buffer(data.tobytes())], nulls)
    if kind == "bool":
        data = np.packbits(np.array([bool(v) if ok else False for v, ok in zip(values, valid)]), bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [bitmap, pa.py_buffer(data.tobytes())], nulls)
    encoded = [(v if isinstance(v, str) else str(v)).encode("utf-8") if ok else b"" for v, ok in zip(values, valid)]
    offsets = np.zeros(len(values) + 1, dtype=np.int32)  # [n + 1]
    np.cumsum([len(item) for item in encoded], out=offsets[1:])
    buffers = [bitmap, pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers, nulls)
