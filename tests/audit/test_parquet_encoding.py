"""The Parquet encoder against pyarrow's reader (and pyarrow's own writer): values, nulls, types, footer."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alphaq.audit.parquet_encoding import (
    MAGIC,
    ParquetColumn,
    _levels,
    _struct,
    _varint,
    _zigzag,
    encode_table,
)


def _columns(rows: int, seed: int = 0) -> list[ParquetColumn]:
    rng = np.random.default_rng(seed)
    gaps = rng.random((4, rows)) < 0.3  # [4, rows] missing cells

    def holes(values, column):
        return [None if gaps[column, i] else value for i, value in enumerate(values)]

    return [
        ParquetColumn("layer", "int64", holes([int(v) for v in rng.integers(-2**62, 2**62, rows)], 0)),
        ParquetColumn("alpha", "float64", holes([float(v) for v in rng.standard_normal(rows) * 1e6], 1)),
        ParquetColumn("ok", "bool", holes([bool(v) for v in rng.random(rows) < 0.5], 2)),
        ParquetColumn("name", "string", holes([f"layer.{i}.é\u4e2d,\"q\"\n" * (i % 3) for i in range(rows)], 3)),
        ParquetColumn("rows", "int64", list(range(rows))),
        ParquetColumn("nothing", "string", [None] * rows),
    ]


@pytest.mark.parametrize("rows", [0, 1, 7, 8, 9, 1000])
def test_pyarrow_reads_every_value_and_null_back(rows):
    columns = _columns(rows)
    table = pq.read_table(io.BytesIO(encode_table(columns)))
    table.validate(full=True)
    assert table.num_rows == rows
    assert table.schema.names == [c.name for c in columns]
    assert [str(t) for t in table.schema.types] == ["int64", "double", "bool", "string", "int64", "string"]
    for column in columns:
        assert table.column(column.name).to_pylist() == list(column.values), column.name


def test_same_table_as_pyarrows_own_writer():
    columns = _columns(300, seed=3)
    ours = pq.read_table(io.BytesIO(encode_table(columns)))
    buffer = io.BytesIO()
    pq.write_table(pa.table({c.name: pa.array(c.values, type=ours.schema.field(c.name).type) for c in columns}), buffer)
    assert ours.equals(pq.read_table(io.BytesIO(buffer.getvalue())))


def test_file_layout_footer_and_metadata():
    data = encode_table([ParquetColumn("x", "int64", [1, None, 3])], {"pandas": '{"a": 1}'}, created_by="alphaq version 9")
    assert data[:4] == MAGIC and data[-4:] == MAGIC
    footer_length = struct.unpack("<I", data[-8:-4])[0]
    assert 0 < footer_length < len(data) - 12
    meta = pq.read_metadata(io.BytesIO(data))
    assert (meta.num_rows, meta.num_row_groups, meta.num_columns) == (3, 1, 1)
    assert meta.created_by == "alphaq version 9" and meta.metadata == {b"pandas": b'{"a": 1}'}
    chunk = meta.row_group(0).column(0)
    assert chunk.compression == "UNCOMPRESSED" and chunk.data_page_offset == 4 and not chunk.is_stats_set
    assert meta.schema.column(0).max_definition_level == 1  # OPTIONAL: nulls allowed
    assert chunk.total_compressed_size == chunk.total_uncompressed_size


def test_levels_encoding_bytes():
    assert _levels(np.ones(5, dtype=bool)) == b"\x0a\x01"  # RLE run: (5 << 1), value 1
    assert _levels(np.array([1, 0, 1], dtype=bool)) == b"\x03\x05"  # one bit-packed group: 0b101
    assert _levels(np.array([1] * 8 + [0], dtype=bool)) == b"\x05\xff\x00"  # two groups
    assert _levels(np.zeros(0, dtype=bool)) == b""


def test_thrift_compact_primitives():
    assert [_zigzag(v) for v in (0, -1, 1, -2, 2**40)] == [0, 1, 2, 3, 2**41]
    assert _varint(300) == b"\xac\x02" and _varint(0) == b"\x00"
    # field 1 i32 = 2 (delta 1, type 5; zigzag 4), field 20 i64 = 1 (long form: type 6, zigzag id 40), stop
    assert _struct([(1, 5, 2), (20, 6, 1)]) == bytes([0x15, 0x04, 0x06, 0x28, 0x02, 0x00])


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="same number"):
        encode_table([ParquetColumn("a", "int64", [1]), ParquetColumn("b", "int64", [1, 2])])
    with pytest.raises(ValueError, match="unique"):
        encode_table([ParquetColumn("a", "int64", [1]), ParquetColumn("a", "float64", [1.0])])
    with pytest.raises(ValueError, match="unknown column kind"):
        ParquetColumn("a", "int32", [1])  # type: ignore[arg-type]


def test_special_floats_survive():
    values = [math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]
    back = pq.read_table(io.BytesIO(encode_table([ParquetColumn("f", "float64", values)]))).column("f").to_pylist()
    assert back == values and math.copysign(1.0, back[2]) == -1.0
