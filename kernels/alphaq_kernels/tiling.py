"""How the Triton kernels cut the packed format into units and tiles (pure Python, no torch or triton).

The packed row (``docs/quantization-format.md``) is a little-endian bitstream: 8 consecutive values of
a row become ``bits`` bytes. The kernels read it in *units*: ``unit_bytes`` consecutive bytes holding
``unit_values`` whole values, all in one thread's registers, from which each value is a shift and a
mask. A unit never straddles two groups. How a unit is read (its *source*):

- ``"word"`` (widths 1, 2, 4, 8; rows of whole 4-byte words): a unit is one aligned int32 holding
  ``32 / bits`` values, loaded as such (16-byte vector loads along a row);
- ``"words"`` (widths 3, 5, 6, 7; rows of whole words, group size a multiple of 32): a unit is
  ``bits`` int32 words holding 32 values, loaded word by word; a value that straddles two words is
  read from the 64-bit pair;
- ``"bytes"`` (any other case, e.g. a row length that is not a multiple of 4 bytes): a unit is
  ``bits`` bytes for 8 values (or up to 4 bytes for widths that divide 8), loaded byte by byte and
  assembled into one int32 (int64 for 5..7 bits).

The quantize kernel writes with the ``"bytes"`` unit shape (one integer per unit).
"""

from __future__ import annotations

from dataclasses import dataclass

from alphaq.quantization.layout import PACK_VALUES, check_bits, check_group_size, num_groups, packed_row_bytes


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= ``n`` (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def largest_power_of_2_dividing(n: int) -> int:
    """Largest power of two that divides the positive integer ``n``."""
    return n & -n


#: How a unit is read; the kernels take the index as the SOURCE constant.
SOURCES: tuple[str, ...] = ("word", "bytes", "words")


@dataclass(frozen=True)
class UnitLayout:
    """The unit a kernel reads for one (bits, group_size, alignment).

    Attributes:
        bits: width of a value, 1..8.
        group_size: columns per (scale, zero) group.
        unit_bytes: bytes of one unit as stored.
        load_bytes: power of two >= ``unit_bytes`` (the quantize kernel's store tile).
        unit_values: values per unit (a power of two that divides ``group_size``).
        wide_word: a ``"bytes"`` unit needs a 64-bit integer (5, 6, 7 bits: 40..56 bits per unit).
        source: ``"word"``, ``"bytes"`` or ``"words"`` (module docstring).
    """

    bits: int
    group_size: int
    unit_bytes: int
    load_bytes: int
    unit_values: int
    wide_word: bool
    source: str = "bytes"

    @property
    def units_per_group(self) -> int:
        """Units in one full group (``group_size / unit_values``)."""
        return self.group_size // self.unit_values

    @property
    def source_index(self) -> int:
        """``source`` as the kernels' SOURCE constant (0 word, 1 bytes, 2 words)."""
        return SOURCES.index(self.source)


def unit_layout(bits: int, group_size: int, word_aligned: bool = False) -> UnitLayout:
    """The unit for ``bits`` and ``group_size`` (see the module docstring).

    Args:
        bits: width, 1..8.
        group_size: a positive multiple of 8.
        word_aligned: the packed rows start on 4-byte boundaries and hold whole 4-byte words, so
            units can be loaded as int32 (``"word"`` / ``"words"`` sources).

    Returns:
        The :class:`UnitLayout`.
    """
    check_bits(bits)
    check_group_size(group_size)
    if 8 % bits == 0:
        unit_bytes = 4
        while group_size % (unit_bytes * 8 // bits):
            unit_bytes //= 2
        source = "word" if word_aligned and unit_bytes == 4 else "bytes"
        return UnitLayout(bits, group_size, unit_bytes, unit_bytes, unit_bytes * 8 // bits, False, source)
    if word_aligned and group_size % 32 == 0:
        return UnitLayout(bits, group_size, 4 * bits, 4 * next_power_of_2(bits), 32, False, "words")
    return UnitLayout(bits, group_size, bits, next_power_of_2(bits), PACK_VALUES, bits * PACK_VALUES > 32)


@dataclass(frozen=True)
class RowGeometry:
    """Per-row sizes of an ``[R, C]`` matrix in the packed format, in the kernels' units.

    Attributes:
        cols: C, values per row.
        row_bytes: packed bytes per row, ``ceil(C / 8) * bits``.
        groups: G, (scale, zero) pairs per row.
        units: units per row, ``ceil(row_bytes / unit_bytes)``.
        byte_mask: the last unit of a row runs past the row's bytes (1 and 2 bits only), so loads
            and stores need a per-byte mask.
    """

    cols: int
    row_bytes: int
    groups: int
    units: int
    byte_mask: bool


def row_geometry(cols: int, layout: UnitLayout) -> RowGeometry:
    """The :class:`RowGeometry` of rows of ``cols`` values under ``layout``."""
    row_bytes = packed_row_bytes(cols, layout.bits)
    units = -(-row_bytes // layout.unit_bytes)
    return RowGeometry(
        cols=cols,
        row_bytes=row_bytes,
        groups=num_groups(cols, layout.group_size),
        units=units,
        byte_mask=row_bytes % layout.unit_bytes != 0,
    )


@dataclass(frozen=True)
class GemvTiling:
    """A GEMV tile along a row: ``groups_per_tile`` groups of ``units_per_group_in_tile`` units.

    Attributes:
        groups_per_tile: GPT, whole groups per tile (1 when a tile is part of one group).
        units_per_group_in_tile: UPGT, the units of a group inside a tile (a power of two).
    """

    groups_per_tile: int
    units_per_group_in_tile: int

    @property
    def block_units(self) -> int:
        """Units per tile along a row."""
        return self.groups_per_tile * self.units_per_group_in_tile


def gemv_tiling(layout: UnitLayout, target_values: int) -> GemvTiling:
    """GEMV tile of at most ``target_values`` values per row (at least one unit), cut along groups.

    A tile holds either whole groups (when a group's unit count is a power of two) or a power-of-two
    part of one group, so each (row, group) of a tile has one scale and zero.

    Args:
        layout: the unit layout.
        target_values: wanted values per row and tile.

    Returns:
        The :class:`GemvTiling`.
    """
    upg = layout.units_per_group
    block = max(1, next_power_of_2(max(1, target_values // layout.unit_values) + 1) // 2)  # floor pow2
    if upg & (upg - 1):  # not a power of two: stay inside one group
        block = min(block, largest_power_of_2_dividing(upg))
    in_tile = min(upg, block)
    return GemvTiling(groups_per_tile=block // in_tile, units_per_group_in_tile=in_tile)


def dot_block_units(layout: UnitLayout, block_k: int) -> int:
    """Units per tile of the tl.dot kernel for about ``block_k`` values (at least 16 values per tile)."""
    return max(1, max(block_k, 16) // layout.unit_values)


def split_k(programs: int, tiles: int, sm_count: int, waves: int = 2, min_tiles: int = 2) -> int:
    """Splits along C for a grid that leaves multiprocessors idle (fewer programs than SMs).

    Splitting costs a float32 partial-sum buffer and one reduction afterwards, so it is used only
    when the grid does not give every multiprocessor a program; it then aims at ``waves``
    programs per multiprocessor without splits of fewer than ``min_tiles`` tiles.

    Args:
        programs: programs of the grid before splitting (row blocks x batch blocks).
        tiles: tiles along C.
        sm_count: streaming multiprocessors of the device.
        waves: programs wanted per multiprocessor once splitting.
        min_tiles: fewest tiles one split keeps.

    Returns:
        The split count, >= 1.
    """
    if programs >= sm_count or tiles < 2 * min_tiles:
        return 1
    wanted = -(-waves * sm_count // max(1, programs))
    return max(1, min(wanted, tiles // min_tiles))
