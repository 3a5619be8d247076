from __future__ import annotations

import pytest

from alphaq.errors import ConfigError
from alphaq.quantization.layout import (
    QuantBytes,
    QuantSpec,
    dense_nbytes,
    num_groups,
    packed_row_bytes,
    quantized_nbytes,
)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("group_size", [8, 32, 64, 128, 136])
def test_quant_spec_accepts_supported_values(bits: int, group_size: int) -> None:
    spec = QuantSpec(bits, group_size)
    assert spec.max_code == 2**bits - 1


def test_quant_spec_defaults_to_group_128() -> None:
    assert QuantSpec(4).group_size == 128


@pytest.mark.parametrize("bits", [0, 9, -1, 2.0, True, "4"])
def test_quant_spec_rejects_bad_bits(bits: object) -> None:
    with pytest.raises(ConfigError, match="bits"):
        QuantSpec(bits)  # type: ignore[arg-type]


@pytest.mark.parametrize("group_size", [0, -8, 12, 130, 64.0, True])
def test_quant_spec_rejects_bad_group_size(group_size: object) -> None:
    with pytest.raises(ConfigError, match="group_size"):
        QuantSpec(4, group_size)  # type: ignore[arg-type]


def test_quant_spec_is_frozen_and_hashable() -> None:
    spec = QuantSpec(3, 64)
    with pytest.raises(AttributeError):
        spec.bits = 4  # type: ignore[misc]
    assert {spec: 1}[QuantSpec(3, 64)] == 1


@pytest.mark.parametrize(
    ("cols", "bits", "expected"),
    [
        (0, 3, 0),
        (1, 3, 3),
        (8, 3, 3),
        (9, 3, 6),
        (10, 3, 6),
        (12, 4, 8),
        (13, 8, 16),
        (2816, 4, 1408),
        (4096, 2, 1024),
        (1000, 1, 125),
    ],
)
def test_packed_row_bytes(cols: int, bits: int, expected: int) -> None:
    assert packed_row_bytes(cols, bits) == expected


@pytest.mark.parametrize(
    ("cols", "group_size", "expected"),
    [
        (0, 128, 0),
        (1, 128, 1),
        (128, 128, 1),
        (129, 128, 2),
        (1000, 128, 8),
        (2816, 128, 22),
        (2816, 64, 44),
        (100, 32, 4),
    ],
)
def test_num_groups(cols: int, group_size: int, expected: int) -> None:
    assert num_groups(cols, group_size) == expected


def test_quantized_nbytes_by_hand() -> None:
    # 1024 x 2816, 4 bits, g128: 352 units * 4 bytes per row; 22 groups.
    assert quantized_nbytes(1024, 2816, QuantSpec(4, 128)) == QuantBytes(
        payload=1_441_792, scales=45_056, zeros=45_056, total=1_531_904
    )
    # 3 x 1000, 3 bits, g64: 125 units * 3 bytes = 375 per row; 16 groups (last one partial).
    assert quantized_nbytes(3, 1000, QuantSpec(3, 64)) == QuantBytes(payload=1125, scales=96, zeros=96, total=1317)
    # 5 x 13, 1 bit, g8: 2 units * 1 byte per row; 2 groups.
    assert quantized_nbytes(5, 13, QuantSpec(1, 8)) == QuantBytes(payload=10, scales=20, zeros=20, total=50)
    # 2 x 8 at 8 bits, g128: one byte per value, one (partial) group.
    assert quantized_nbytes(2, 8, QuantSpec(8)) == QuantBytes(payload=16, scales=4, zeros=4, total=24)


def test_quantized_nbytes_bits_per_weight_at_g128() -> None:
    nb = quantized_nbytes(4096, 4096, QuantSpec(4, 128))
    assert nb.total * 8 / (4096 * 4096) == pytest.approx(4.25)


def test_dense_nbytes() -> None:
    assert dense_nbytes(1024, 2816) == 5_767_168
    assert dense_nbytes(3, 5, dtype_bytes=4) == 60
    with pytest.raises(ValueError, match="dtype_bytes"):
        dense_nbytes(3, 5, dtype_bytes=0)


@pytest.mark.parametrize(
    "call",
    [
        lambda: packed_row_bytes(-1, 4),
        lambda: num_groups(-8, 128),
        lambda: quantized_nbytes(-1, 8, QuantSpec(4)),
        lambda: dense_nbytes(2, 1.5),
    ],
)
def test_negative_or_non_integer_dims_are_rejected(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


def test_layout_helpers_validate_bits_and_group_size() -> None:
    with pytest.raises(ConfigError):
        packed_row_bytes(8, 0)
    with pytest.raises(ConfigError):
        num_groups(8, 10)
