"""A small Parquet encoder: flat tables of nullable int64, float64, boolean and UTF-8 string columns, in bytes.

The inspect stage writes its details table as Parquet on every install, and without importing pyarrow (which,
with what it pulls in, costs about 0.15 s of a one-second audit). The file is the plainest form the format has,
which every reader accepts (pyarrow, pandas, polars, DuckDB, Spark):

* one row group, one data page (v1) per column, PLAIN values, uncompressed, no dictionary, no statistics;
* every column OPTIONAL (definition level 1 = present), levels in the RLE / bit-packed hybrid encoding;
* physical types INT64, DOUBLE, BOOLEAN and BYTE_ARRAY annotated as STRING (converted type UTF8 as well);
* the footer (``FileMetaData``) in Thrift's compact protocol, with the caller's key/value metadata (the inspect
  stage stores pandas' schema there, so ``pandas.read_parquet`` gives the nullable integers back as Int64).

Reference: the Apache Parquet format specification (``parquet.thrift``, "Encodings") and Thrift's compact
protocol specification. Nothing here touches files: :func:`encode_table` returns the file's bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ParquetKind = Literal["int64", "float64", "bool", "string"]

MAGIC = b"PAR1"
#: parquet.thrift enums used here.
_PHYSICAL = {"bool": 0, "int64": 2, "float64": 5, "string": 6}  # Type: BOOLEAN, INT64, DOUBLE, BYTE_ARRAY
_OPTIONAL, _UTF8, _PLAIN, _RLE, _DATA_PAGE, _UNCOMPRESSED = 1, 0, 0, 3, 0, 0
#: Thrift compact protocol type codes.
_I32, _I64, _BINARY, _LIST, _STRUCT = 5, 6, 8, 9, 12


@dataclass(frozen=True)
class ParquetColumn:
    """One column: its name, kind and values (None for a missing value, already converted to the kind's type).

    Attributes:
        name: column name.
        kind: ``int64``, ``float64``, ``bool`` or ``string``.
        values: Python values, None where missing.
    """

    name: str
    kind: ParquetKind
    values: Sequence[Any]

    def __post_init__(self) -> None:
        if self.kind not in _PHYSICAL:
            raise ValueError(f"unknown column kind {self.kind!r}; use one of {sorted(_PHYSICAL)}")


def encode_table(columns: Sequence[ParquetColumn], metadata: Mapping[str, str] | None = None,
                 created_by: str = "alphaq") -> bytes:
    """The bytes of a Parquet file holding ``columns`` (all of the same length).

    Args:
        columns: the table's columns, in order.
        metadata: key/value pairs stored in the footer (e.g. ``{"pandas": json}``).
        created_by: the writer's name recorded in the footer.

    Returns:
        The whole file: ``PAR1``, one column chunk per column, the footer, its length, ``PAR1``.

    Raises:
        ValueError: columns of different lengths, or two columns of one name.
    """
    rows = len(columns[0].values) if columns else 0
    if any(len(column.values) != rows for column in columns):
        raise ValueError("every column needs the same number of values")
    if len({column.name for column in columns}) != len(columns):
        raise ValueError("column names must be unique")
    out = bytearray(MAGIC)
    chunks = []
    for column in columns:
        page = _data_page(column)
        header = _struct([(1, _I32, _DATA_PAGE), (2, _I32, len(page)), (3, _I32, len(page)),
                          (5, _STRUCT, [(1, _I32, rows), (2, _I32, _PLAIN), (3, _I32, _RLE), (4, _I32, _RLE)])])
        offset = len(out)
        out += header + page
        size = len(header) + len(page)
        chunks.append([(2, _I64, 0), (3, _STRUCT, [
            (1, _I32, _PHYSICAL[column.kind]), (2, _LIST, (_I32, [_PLAIN, _RLE])),
            (3, _LIST, (_BINARY, [column.name])), (4, _I32, _UNCOMPRESSED), (5, _I64, rows),
            (6, _I64, size), (7, _I64, size), (9, _I64, offset)])])
    schema = [[(4, _BINARY, "schema"), (5, _I32, len(columns))]]
    for column in columns:
        element = [(1, _I32, _PHYSICAL[column.kind]), (3, _I32, _OPTIONAL), (4, _BINARY, column.name)]
        if column.kind == "string":
            element += [(6, _I32, _UTF8), (10, _STRUCT, [(1, _STRUCT, [])])]  # LogicalType.STRING
        schema.append(element)
    data_bytes = len(out) - len(MAGIC)
    footer_fields = [
        (1, _I32, 1), (2, _LIST, (_STRUCT, schema)), (3, _I64, rows),
        (4, _LIST, (_STRUCT, [[(1, _LIST, (_STRUCT, chunks)), (2, _I64, data_bytes), (3, _I64, rows)]])),
    ]
    if metadata:
        footer_fields.append((5, _LIST, (_STRUCT, [[(1, _BINARY, k), (2, _BINARY, v)] for k, v in metadata.items()])))
    footer_fields.append((6, _BINARY, created_by))
    footer = _struct(footer_fields)
    out += footer + struct.pack("<I", len(footer)) + MAGIC
    return bytes(out)


# -- pages -------------------------------------------------------------------------------------------


def _data_page(column: ParquetColumn) -> bytes:
    """Definition levels (4-byte length + hybrid runs) followed by the PLAIN values of the present ones."""
    present = [value for value in column.values if value is not None]
    levels = _levels(np.fromiter((value is not None for value in column.values), dtype=bool, count=len(column.values)))
    return struct.pack("<I", len(levels)) + levels + _plain(column.kind, present)


def _levels(valid: np.ndarray) -> bytes:
    """Definition levels of width 1 in the RLE / bit-packed hybrid: one RLE run when none is missing, else
    bit-packed groups of 8 (least significant bit first, the last group zero-padded)."""
    if valid.size == 0:
        return b""
    if valid.all():
        return _varint(valid.size << 1) + b"\x01"
    groups = -(-valid.size // 8)
    return _varint(groups << 1 | 1) + np.packbits(valid, bitorder="little").tobytes()


def _plain(kind: ParquetKind, values: list[Any]) -> bytes:
    if kind == "int64":
        return np.asarray(values, dtype="<i8").tobytes()
    if kind == "float64":
        return np.asarray(values, dtype="<f8").tobytes()
    if kind == "bool":
        return np.packbits(np.asarray(values, dtype=bool), bitorder="little").tobytes()
    encoded = [str(value).encode("utf-8") for value in values]
    return b"".join(struct.pack("<I", len(item)) + item for item in encoded)


# -- Thrift compact protocol ----------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _zigzag(value: int) -> int:
    return value << 1 if value >= 0 else (-value << 1) - 1


def _value(code: int, value: Any) -> bytes:
    if code in (_I32, _I64):
        return _varint(_zigzag(int(value)))
    if code == _BINARY:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return _varint(len(data)) + data
    if code == _STRUCT:
        return _struct(value)
    element, items = value  # _LIST
    head = bytes([len(items) << 4 | element]) if len(items) < 15 else bytes([0xF0 | element]) + _varint(len(items))
    return head + b"".join(_value(element, item) for item in items)


def _struct(fields: Sequence[tuple[int, int, Any]]) -> bytes:
    """A struct: each field as (id delta << 4 | type) then its value, ascending ids, then the stop byte."""
    out, last = bytearray(), 0
    for field_id, code, value in fields:
        delta = field_id - last
        out += bytes([delta << 4 | code]) if 0 < delta <= 15 else bytes([code]) + _varint(_zigzag(field_id))
        out += _value(code, value)
        last = field_id
    out.append(0)
    return bytes(out)


__all__ = ["MAGIC", "ParquetColumn", "ParquetKind", "encode_table"]
