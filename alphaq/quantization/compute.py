"""The per-matrix work of ``alphaq quantize``: quantize with the chosen method, pack, measure the error.

Pure computation on tensors (no file I/O); :mod:`alphaq.quantization.run` reads the matrices and writes the results.
The results are those of the reference quantizers of :mod:`alphaq.quantization` on the whole matrix, bit for bit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from alphaq.quantization.layout import QuantSpec
from alphaq.quantization.shards import PackedTensor

if TYPE_CHECKING:
    import torch

    from alphaq.quantization.gptq import GptqOptions
    from alphaq.quantization.primitives import QuantizedTensor

#: Methods of ``alphaq quantize``.
#: Weights per block of rows quantized at once by rtn/rtn_clip (fits in cache; the result does not depend on it).
ROW_BLOCK_VALUES = 1 << 18


def quantize_matrix(
    w: torch.Tensor,
    spec: QuantSpec,
    method: str,
    *,
    device: str = "cpu",
    kernels: bool = False,
    integer_zeros: bool = False,
    hessian: torch.Tensor | None = None,
    gptq: GptqOptions | None = None,
) -> tuple[PackedTensor, float]:
    """Quantize and pack one matrix; return it (on the CPU) and its relative Frobenius reconstruction error.

    Args:
        w: weight [R, C], any float dtype.
        spec: width and group size.
        method: ``rtn``, ``rtn_clip``, ``hqq`` or ``gptq``.
        device: where to compute.
        kernels: use ``alphaq.kernels.quantize_pack`` (rtn only; bit-exact with the torch reference).
        integer_zeros: round every zero point to an integer and re-choose the codes
            (:func:`alphaq.quantization.primitives.round_zero_points`), the form compressed-tensors holds.
            ``gptq`` rounds each zero when it chooses the group's parameters and picks its codes with it.
        hessian: ``gptq`` only: ``2 X^T X`` [C, C] of the matrix's calibration inputs (None: no input reached
            the matrix, and GPTQ is round-to-nearest, i.e. ``rtn``).
        gptq: ``gptq`` only: the protocol (None: the paper's).

    Returns:
        (:class:`alphaq.quantization.writer.PackedTensor`, ``||W - W_hat||_F / ||W||_F`` on the full matrix).
    """
    import torch

    from alphaq.quantization.packing import pack, unpack
    from alphaq.quantization.primitives import QuantizedTensor

    w = w.to(device=device, dtype=torch.float32)
    rows, cols = w.shape
    if kernels and method == "rtn":
        from alphaq.kernels import quantize_pack

        packed, scale, zero = quantize_pack(w, spec.bits, spec.group_size)
        qt = QuantizedTensor(q=unpack(packed, spec.bits, cols), scale=scale, zero=zero, spec=spec, shape=(rows, cols))
    elif method == "gptq":
        from alphaq.quantization.gptq import quantize_gptq

        h = torch.zeros(cols, cols, device=device) if hessian is None else hessian.to(device)  # [C, C]; 0: rtn
        qt, packed = quantize_gptq(w, h, spec, gptq, integer_zeros=integer_zeros), None
        integer_zeros = False  # already integer
    else:
        qt = quantize_rows(w, spec, method)
        packed = None
    if integer_zeros:
        from alphaq.quantization.primitives import round_zero_points

        qt, packed = round_zero_points(w, qt), None
    if packed is None:
        packed = pack(qt.q, spec.bits)
    error = reconstruction_error(w, qt)
    return PackedTensor(
        packed=packed.cpu(), scale=qt.scale.cpu(), zero=qt.zero.cpu(), spec=spec, shape=(rows, cols)
    ), error


def quantize_rows(w: torch.Tensor, spec: QuantSpec, method: str) -> QuantizedTensor:
    """The torch reference quantizer of ``method`` on ``w`` [R, C]; rtn/rtn_clip run on blocks of rows.

    rtn and rtn_clip are row-local, so blocks of :data:`ROW_BLOCK_VALUES` weights give the very bits of
    ``quantize_groupwise`` on the whole matrix, several times faster (the block stays in cache). hqq stops
    on the whole matrix's error, so it runs on the whole matrix.

    Returns:
        The :class:`alphaq.quantization.primitives.QuantizedTensor`, equal to the reference's.
    """
    import torch

    from alphaq.quantization.hqq import quantize_hqq
    from alphaq.quantization.primitives import QuantizedTensor, quantize_groupwise

    if method == "hqq":
        return quantize_hqq(w, spec)
    rows, cols = w.shape
    step = max(1, ROW_BLOCK_VALUES // cols)
    if step >= rows:
        return quantize_groupwise(w, spec, clip_search=method == "rtn_clip")
    parts = [
        quantize_groupwise(w[start : start + step], spec, clip_search=method == "rtn_clip")
        for start in range(0, rows, step)
    ]
    return QuantizedTensor(
        q=torch.cat([p.q for p in parts]),
        scale=torch.cat([p.scale for p in parts]),
        zero=torch.cat([p.zero for p in parts]),
        spec=spec,
        shape=(rows, cols),
    )


def reconstruction_error(w: torch.Tensor, qt: QuantizedTensor, *, chunk_values: int = ROW_BLOCK_VALUES) -> float:
    """``||W - W_hat||_F / ||W||_F`` in float64, dequantizing a block of rows at a time.

    The value of :func:`alphaq.quantization.primitives.relative_error` (up to float64 summation order, ~1e-10
    relative on 60M weights) without
    materialising ``W_hat`` or float64 copies of the whole matrix.

    Args:
        w: the original weight [R, C].
        qt: its quantization.
        chunk_values: weights per block of rows.

    Returns:
        The ratio; 0.0 when both are all zero, ``inf`` when only ``W`` is.
    """
    import math

    import torch

    from alphaq.quantization.primitives import QuantizedTensor, dequantize_groupwise

    rows, cols = qt.shape
    step = max(1, chunk_values // max(cols, 1))
    diff_sq = norm_sq = 0.0
    for start in range(0, rows, step):
        block = slice(start, min(start + step, rows))
        part = QuantizedTensor(
            q=qt.q[block],
            scale=qt.scale[block],
            zero=qt.zero[block],
            spec=qt.spec,
            shape=(block.stop - block.start, cols),
        )
        ref = w[block].to(torch.float64).reshape(-1)  # [b * C]
        diff = ref - dequantize_groupwise(part).to(ref.device).reshape(-1)  # float64 (the float32 is widened)
        diff_sq += float(torch.dot(diff, diff))
        norm_sq += float(torch.dot(ref, ref))
    if norm_sq == 0.0:
        return 0.0 if diff_sq == 0.0 else math.inf
    return math.sqrt(diff_sq) / math.sqrt(norm_sq)
