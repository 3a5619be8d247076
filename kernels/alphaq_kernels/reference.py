"""Plain-torch references of the kernels, with the same signatures (any device, no triton).

They are built from :mod:`alphaq.quantization` (``quantize_groupwise``, ``pack``, ``unpack``,
``dequantize_groupwise``), which defines the format; the Triton kernels are tested against them and
the dispatchers in :mod:`alphaq.kernels.ops` fall back to them where Triton cannot run.
"""

from __future__ import annotations

import torch

from alphaq.quantization.layout import QuantSpec
from alphaq.quantization.packing import pack, unpack
from alphaq.quantization.primitives import QuantizedTensor, dequantize_groupwise, quantize_groupwise


def quantize_pack(w: torch.Tensor, bits: int, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min-max round-to-nearest group-wise quantization, packed.

    Args:
        w: weight [R, C] (float16, bfloat16 or float32).
        bits: width, 1..8.
        group_size: columns per group, a positive multiple of 8.

    Returns:
        (packed uint8 [R, ceil(C / 8) * bits], scale float16 [R, G], zero float16 [R, G]) exactly as
        ``quantize_groupwise(w, QuantSpec(bits, group_size))`` then ``pack``.
    """
    qt = quantize_groupwise(w, QuantSpec(bits, group_size))
    return pack(qt.q, bits), qt.scale, qt.zero


def unpack_dequantize(
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    cols: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``(q - zero) * scale`` in float32, cast to ``dtype``.

    Args:
        packed: uint8 [R, ceil(cols / 8) * bits].
        scale: float16 [R, G].
        zero: float16 [R, G].
        bits: width, 1..8.
        group_size: columns per group.
        cols: C, values per row.
        dtype: output dtype.

    Returns:
        W [R, cols] of ``dtype`` (``dequantize_groupwise`` of the unpacked codes).
    """
    qt = QuantizedTensor(
        q=unpack(packed, bits, cols),
        scale=scale,
        zero=zero,
        spec=QuantSpec(bits, group_size),
        shape=(packed.shape[0], cols),
    )
    return dequantize_groupwise(qt, dtype=dtype)


def dequant_matmul(
    x: torch.Tensor,
    packed: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    bits: int,
    group_size: int,
    cols: int,
) -> torch.Tensor:
    """``x @ W.T`` with ``W = unpack_dequantize(...)``, computed in float32.

    Args:
        x: [M, cols] float16, bfloat16 or float32.
        packed, scale, zero, bits, group_size, cols: the quantized W [R, cols].

    Returns:
        y [M, R] of ``x.dtype``.
    """
    w = unpack_dequantize(packed, scale, zero, bits, group_size, cols, torch.float32)  # [R, C]
    return (x.to(torch.float32) @ w.T).to(x.dtype)
