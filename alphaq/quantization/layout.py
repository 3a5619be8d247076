"""The quantized-weight format as arithmetic: the spec of one quantized matrix and its exact byte sizes.

Pure Python (no torch), so the planner can predict checkpoint sizes without importing torch. The byte
formula in :func:`quantized_nbytes` is the contract between the planner and the quantized checkpoint: a
matrix quantized with a :class:`QuantSpec` occupies exactly ``quantized_nbytes(...).total`` bytes of
tensor data on disk. The layout itself is described in ``docs/quantization-format.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from alphaq.errors import ConfigError

#: Widths the format supports.
MIN_BITS = 1
MAX_BITS = 8
#: Values per packing unit: 8 consecutive values of one row become ``bits`` bytes.
PACK_VALUES = 8
#: Bytes of one stored scale or zero (float16).
PARAM_BYTES = 2


def check_bits(bits: int) -> int:
    """Return ``bits`` if it is an int width in 1..8, else raise :class:`ConfigError`."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ConfigError(f"bits={bits!r} is not supported; use an integer width from {MIN_BITS} to {MAX_BITS}")
    return bits


def check_group_size(group_size: int) -> int:
    """Return ``group_size`` if it is a positive multiple of 8, else raise :class:`ConfigError`."""
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0 or group_size % PACK_VALUES:
        raise ConfigError(
            f"group_size={group_size!r} is not supported; use a positive multiple of "
            f"{PACK_VALUES} such as 32, 64 or 128"
        )
    return group_size


@dataclass(frozen=True)
class QuantSpec:
    """How one matrix is quantized: ``bits`` per weight, one (scale, zero) pair per ``group_size`` columns.

    Args:
        bits: integer width of a quantized value, 1..8.
        group_size: consecutive input columns sharing one scale and zero; a positive multiple of 8.
    """

    bits: int
    group_size: int = 128

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_group_size(self.group_size)

    @property
    def max_code(self) -> int:
        """Largest quantized value, ``2**bits - 1``."""
        return (1 << self.bits) - 1


@dataclass(frozen=True)
class QuantBytes:
    """Byte sizes of one quantized matrix: packed payload, float16 scales, float16 zeros and their sum."""

    payload: int
    scales: int
    zeros: int
    total: int


def _check_dims(rows: int, cols: int) -> None:
    for name, value in (("rows", rows), ("cols", cols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}={value!r} must be a non-negative integer")


def packed_row_bytes(cols: int, bits: int) -> int:
    """Bytes of one packed row: ``ceil(cols / 8) * bits`` (each 8 values become ``bits`` bytes).

    Args:
        cols: values in the row (input features).
        bits: width of one value, 1..8.

    Returns:
        The packed row length in bytes; a row is zero-padded to a multiple of 8 values.
    """
    _check_dims(0, cols)
    check_bits(bits)
    return -(-cols // PACK_VALUES) * bits


def num_groups(cols: int, group_size: int) -> int:
    """Quantization groups per row: ``ceil(cols / group_size)`` (the last one may be partial).

    Args:
        cols: values in the row (input features).
        group_size: columns per group, a positive multiple of 8.

    Returns:
        The number of (scale, zero) pairs per row.
    """
    _check_dims(0, cols)
    check_group_size(group_size)
    return -(-cols // group_size)


def quantized_nbytes(rows: int, cols: int, spec: QuantSpec) -> QuantBytes:
    """Exact stored size of an ``[rows, cols]`` matrix quantized with ``spec``.

    Args:
        rows: output features R.
        cols: input features C (the grouped, packed dimension).
        spec: width and group size.

    Returns:
        ``payload = rows * packed_row_bytes(cols, bits)``, ``scales = zeros = rows * num_groups * 2``,
        and their ``total``.
    """
    _check_dims(rows, cols)
    payload = rows * packed_row_bytes(cols, spec.bits)
    params = rows * num_groups(cols, spec.group_size) * PARAM_BYTES
    return QuantBytes(payload=payload, scales=params, zeros=params, total=payload + 2 * params)


def dense_nbytes(rows: int, cols: int, dtype_bytes: int = 2) -> int:
    """Stored size of an unquantized ``[rows, cols]`` matrix with ``dtype_bytes`` per element.

    Args:
        rows: output features.
        cols: input features.
        dtype_bytes: bytes per element (2 for bf16/fp16, 4 for fp32).

    Returns:
        ``rows * cols * dtype_bytes``.
    """
    _check_dims(rows, cols)
    if isinstance(dtype_bytes, bool) or not isinstance(dtype_bytes, int) or dtype_bytes <= 0:
        raise ValueError(f"dtype_bytes={dtype_bytes!r} must be a positive integer")
    return rows * cols * dtype_bytes
