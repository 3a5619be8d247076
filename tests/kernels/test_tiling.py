from __future__ import annotations

import pytest

from alphaq.errors import ConfigError
from alphaq.kernels.tiling import (
    gemv_tiling,
    largest_power_of_2_dividing,
    next_power_of_2,
    row_geometry,
    split_k,
    unit_layout,
)


def test_power_of_2_helpers() -> None:
    assert [next_power_of_2(n) for n in (0, 1, 2, 3, 5, 8, 9)] == [1, 1, 2, 4, 8, 8, 16]
    assert [largest_power_of_2_dividing(n) for n in (1, 12, 96, 128, 7)] == [1, 4, 32, 128, 1]


@pytest.mark.parametrize(
    ("bits", "group_size", "unit_bytes", "load_bytes", "unit_values", "wide"),
    [
        (1, 128, 4, 4, 32, False),
        (1, 16, 2, 2, 16, False),  # 32 values would straddle two groups of 16
        (1, 8, 1, 1, 8, False),
        (2, 128, 4, 4, 16, False),
        (2, 24, 2, 2, 8, False),
        (4, 32, 4, 4, 8, False),
        (8, 8, 4, 4, 4, False),
        (3, 128, 3, 4, 8, False),
        (5, 64, 5, 8, 8, True),
        (6, 32, 6, 8, 8, True),
        (7, 128, 7, 8, 8, True),
    ],
)
def test_unit_layout(
    bits: int, group_size: int, unit_bytes: int, load_bytes: int, unit_values: int, wide: bool
) -> None:
    layout = unit_layout(bits, group_size)
    assert (layout.unit_bytes, layout.load_bytes, layout.unit_values, layout.wide_word) == (
        unit_bytes,
        load_bytes,
        unit_values,
        wide,
    )
    # A unit holds whole values, and whole units make a group.
    assert layout.unit_values * bits == layout.unit_bytes * 8 or layout.unit_bytes == bits
    assert group_size % layout.unit_values == 0


def test_unit_layout_rejects_bad_format() -> None:
    with pytest.raises(ConfigError):
        unit_layout(9, 128)
    with pytest.raises(ConfigError):
        unit_layout(4, 100)


def test_row_geometry() -> None:
    # 2 bits, C = 40: 5 * 2 = 10 bytes; units of 4 bytes -> 3, the last one past the row end.
    geo = row_geometry(40, unit_layout(2, 8))
    assert (geo.row_bytes, geo.groups, geo.units, geo.byte_mask) == (10, 5, 5, False)  # 2-byte units for gs=8
    geo = row_geometry(40, unit_layout(2, 32))
    assert (geo.row_bytes, geo.groups, geo.units, geo.byte_mask) == (10, 2, 3, True)
    geo = row_geometry(4096, unit_layout(3, 128))
    assert (geo.row_bytes, geo.groups, geo.units, geo.byte_mask) == (1536, 32, 512, False)


def test_gemv_tiling_keeps_groups_aligned() -> None:
    # 4 bits, gs 128: 16 units (8 values each) per group; 512 values -> 64 units = 4 groups.
    tiling = gemv_tiling(unit_layout(4, 128, word_aligned=True), 512)
    assert (tiling.groups_per_tile, tiling.units_per_group_in_tile, tiling.block_units) == (4, 16, 64)
    # 3 bits, gs 96, bytes: 12 units per group (not a power of two) -> tiles of 4 units in one group.
    tiling = gemv_tiling(unit_layout(3, 96), 512)
    assert (tiling.groups_per_tile, tiling.units_per_group_in_tile) == (1, 4)
    # 8 bits, gs 128: 32 units of 4 values; 16 values -> 4 units, part of one group.
    tiling = gemv_tiling(unit_layout(8, 128, word_aligned=True), 16)
    assert (tiling.groups_per_tile, tiling.units_per_group_in_tile) == (1, 4)


def test_split_k() -> None:
    assert split_k(programs=256, tiles=32, sm_count=132) == 1  # every SM has a program already
    assert split_k(programs=88, tiles=16, sm_count=132) == 3  # 264 wanted -> 3 splits
    assert split_k(programs=10, tiles=8, sm_count=132) == 4  # at least 2 tiles per split
    assert split_k(programs=10, tiles=3, sm_count=132) == 1
