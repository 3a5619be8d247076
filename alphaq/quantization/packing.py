"""Bit packing of quantized values: 8 consecutive values of a row -> ``bits`` bytes, little-endian.

Layout (see ``docs/quantization-format.md``): the values ``v0..v7`` of columns ``8k..8k+7`` form the
bitstream ``v0 | v1 << bits | ... | v7 << 7*bits`` of ``8 * bits`` bits, stored as ``bits`` bytes with the
lowest bits in the first byte. Rows are zero-padded to a multiple of 8 values. For 8 bits the packed
row is the row itself; for 4 bits byte ``j`` holds value ``2j`` in its low nibble and ``2j+1`` in its
high nibble; for 2 bits byte ``j`` holds values ``4j..4j+3`` from the lowest crumb up; for 1 bit byte
``j`` holds values ``8j..8j+7`` from the least significant bit up.
"""

from __future__ import annotations

import torch

from alphaq.quantization.layout import PACK_VALUES, check_bits, packed_row_bytes

#: Values handled per row chunk; bounds the int64 temporaries to about 8 bytes * this.
_CHUNK_VALUES = 1 << 22


def _row_slices(rows: int, row_values: int) -> list[slice]:
    """Row ranges of at most ``_CHUNK_VALUES`` values each (at least one row per range)."""
    step = max(1, _CHUNK_VALUES // max(1, row_values))
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def _check_packable(q: torch.Tensor, bits: int) -> None:
    if not isinstance(q, torch.Tensor) or q.dtype != torch.uint8 or q.dim() != 2:
        got = f"{q.dtype} with shape {tuple(q.shape)}" if isinstance(q, torch.Tensor) else type(q).__name__
        raise ValueError(f"pack expects a 2-D uint8 tensor [R, C], got {got}")
    if q.numel() and int(q.max()) >> bits:
        raise ValueError(
            f"pack: value {int(q.max())} does not fit in {bits} bits; quantize to 0..{(1 << bits) - 1} first"
        )


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack quantized values into the little-endian 8-values-per-``bits``-bytes layout.

    Args:
        q: uint8 tensor [R, C] with every value < ``2**bits``.
        bits: width of one value, 1..8.

    Returns:
        uint8 tensor [R, ceil(C / 8) * bits] on ``q``'s device; the row tail is zero-padded.
    """
    check_bits(bits)
    _check_packable(q, bits)
    rows, cols = q.shape
    groups = -(-cols // PACK_VALUES)
    padded = torch.nn.functional.pad(q, (0, groups * PACK_VALUES - cols)) if cols % PACK_VALUES else q
    if bits == 8:
        return padded.clone(memory_format=torch.contiguous_format) if padded is q else padded
    if 8 % bits == 0:  # 1, 2, 4 bits: whole values per byte, OR-ed in uint8 (the same bytes, no int64 temporaries)
        per_byte = 8 // bits
        values = padded.reshape(rows, groups * bits, per_byte)  # [R, bytes, values per byte]
        out = values[..., 0].clone()
        for k in range(1, per_byte):
            out |= values[..., k] << (k * bits)
        return out
    if bits == 3:  # 8 values -> 3 bytes, spelled out in uint8 (the generic bytes, no int64 temporaries)
        v = [padded.reshape(rows, groups, PACK_VALUES)[..., k] for k in range(PACK_VALUES)]  # 8 x [R, n8]
        b0 = v[0] | (v[1] << 3) | (v[2] << 6)  # uint8 shifts drop the bits past 8
        b1 = (v[2] >> 2) | (v[3] << 1) | (v[4] << 4) | (v[5] << 7)
        b2 = (v[5] >> 1) | (v[6] << 2) | (v[7] << 5)
        return torch.stack((b0, b1, b2), dim=-1).reshape(rows, groups * 3)
    out = torch.empty((rows, groups * bits), dtype=torch.uint8, device=q.device)
    value_shifts = torch.arange(PACK_VALUES, device=q.device, dtype=torch.int64) * bits  # [8]
    byte_shifts = torch.arange(bits, device=q.device, dtype=torch.int64) * 8  # [bits]
    for rows_slice in _row_slices(rows, groups * PACK_VALUES):
        chunk = padded[rows_slice]
        values = chunk.reshape(chunk.shape[0], groups, PACK_VALUES).to(torch.int64)  # [r, n8, 8]
        # Bit ranges do not overlap, so the sum is the bitwise OR; at most 56 bits, no sign issue.
        words = (values << value_shifts).sum(dim=-1)  # [r, n8]
        packed = (words.unsqueeze(-1) >> byte_shifts) & 0xFF  # [r, n8, bits]
        out[rows_slice] = packed.to(torch.uint8).reshape(chunk.shape[0], groups * bits)
    return out


def unpack(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of :func:`pack`.

    Args:
        packed: uint8 tensor [R, ceil(cols / 8) * bits].
        bits: width of one value, 1..8.
        cols: number of values per row before padding.

    Returns:
        uint8 tensor [R, cols] with values < ``2**bits``, on ``packed``'s device.
    """
    check_bits(bits)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 2:
        got = (
            f"{packed.dtype} with shape {tuple(packed.shape)}"
            if isinstance(packed, torch.Tensor)
            else type(packed).__name__
        )
        raise ValueError(f"unpack expects a 2-D uint8 tensor, got {got}")
    expected = packed_row_bytes(cols, bits)
    if packed.shape[1] != expected:
        raise ValueError(
            f"unpack: packed rows have {packed.shape[1]} bytes but {cols} values at {bits} bits "
            f"need {expected}; pass the original column count"
        )
    rows = packed.shape[0]
    groups = -(-cols // PACK_VALUES)
    if bits == 8:
        return packed[:, :cols].contiguous().clone()
    out = torch.empty((rows, groups * PACK_VALUES), dtype=torch.uint8, device=packed.device)
    value_shifts = torch.arange(PACK_VALUES, device=packed.device, dtype=torch.int64) * bits  # [8]
    byte_shifts = torch.arange(bits, device=packed.device, dtype=torch.int64) * 8  # [bits]
    mask = (1 << bits) - 1
    for rows_slice in _row_slices(rows, groups * PACK_VALUES):
        chunk = packed[rows_slice]
        data = chunk.reshape(chunk.shape[0], groups, bits).to(torch.int64)  # [r, n8, bits]
        words = (data << byte_shifts).sum(dim=-1)  # [r, n8]
        values = (words.unsqueeze(-1) >> value_shifts) & mask  # [r, n8, 8]
        out[rows_slice] = values.to(torch.uint8).reshape(chunk.shape[0], groups * PACK_VALUES)
    return out[:, :cols].contiguous() if cols % PACK_VALUES else out
