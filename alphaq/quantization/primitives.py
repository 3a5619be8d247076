"""Group-wise asymmetric integer quantization: the pure-torch reference of the alphaq weight format.

A weight ``W`` [R, C] is split along the input dimension C into groups of ``group_size`` consecutive
columns (the last group may be partial). Each (row, group) has a float16 ``scale`` and a float16 ``zero``;
a quantized value ``q`` in ``[0, 2**bits - 1]`` dequantizes to ``(q - zero) * scale``. ``zero`` is a float
(HQQ style, not rounded), so the same format holds round-to-nearest and HQQ results.

Every computation runs in float32 whatever the input dtype, and the codes are always chosen with the
float16-rounded scale and zero that are stored, so :func:`dequantize_groupwise` reproduces exactly the
values the quantizer measured its error on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from alphaq.quantization.layout import QuantBytes, QuantSpec, num_groups, quantized_nbytes

#: Shrink factors of the [min, max] range tried by ``clip_search`` (1.0 first, so never worse than RTN).
CLIP_SHRINK_GRID: tuple[float, ...] = tuple(round(1.0 - 0.025 * i, 3) for i in range(21))
#: Largest finite float16; weights beyond it are rejected.
FP16_MAX = 65504.0
#: Smallest positive float16 (subnormal, 2**-24); the smallest stored scale.
FP16_TINY = 2.0**-24

#: (codes [R, G, n] float32, scale [R, G] float16, zero [R, G] float16) for one block of groups.
GroupParams = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class QuantizedTensor:
    """A group-wise quantized matrix (unpacked codes; see :mod:`alphaq.quantization.packing` for storage).

    Attributes:
        q: uint8 codes [R, C], each in ``0..2**bits - 1``.
        scale: float16 [R, G], ``G = ceil(C / group_size)``.
        zero: float16 [R, G]; a value dequantizes to ``(q - zero) * scale``.
        spec: width and group size.
        shape: ``(R, C)`` of the original matrix.
    """

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    spec: QuantSpec
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        rows, cols = self.shape
        groups = (rows, num_groups(cols, self.spec.group_size))
        if self.q.dtype != torch.uint8 or tuple(self.q.shape) != (rows, cols):
            raise ValueError(
                f"QuantizedTensor.q must be uint8 {(rows, cols)}, got {self.q.dtype} {tuple(self.q.shape)}"
            )
        for name, tensor in (("scale", self.scale), ("zero", self.zero)):
            if tensor.dtype != torch.float16 or tuple(tensor.shape) != groups:
                raise ValueError(
                    f"QuantizedTensor.{name} must be float16 {groups}, got {tensor.dtype} {tuple(tensor.shape)}"
                )

    @property
    def nbytes(self) -> QuantBytes:
        """Stored size of this matrix once packed (the :func:`quantized_nbytes` contract)."""
        return quantized_nbytes(self.shape[0], self.shape[1], self.spec)


# ---------------------------------------------------------------------------------------------------
# Building blocks shared with hqq.py


def as_float_matrix(w: torch.Tensor) -> torch.Tensor:
    """Validate a weight and return it as float32 [R, C] (raises ValueError on bad shape or NaN/Inf)."""
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        got = f"shape {tuple(w.shape)}" if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(
            f"expected a 2-D weight tensor [out, in], got {got}; reshape 3-D expert tensors "
            f"to one [out, in] matrix per expert"
        )
    if not w.is_floating_point():
        raise ValueError(f"expected a floating-point weight, got {w.dtype}")
    if w.numel() == 0:
        raise ValueError(f"cannot quantize an empty weight of shape {tuple(w.shape)}")
    w32 = w.detach().to(torch.float32)
    low, high = (float(v) for v in torch.aminmax(w32))  # one pass; NaN propagates, Inf is an extreme
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("weight contains NaN or Inf values; fix the checkpoint before quantizing")
    if max(-low, high) > FP16_MAX:
        raise ValueError(
            f"weight has values beyond +-{FP16_MAX:g}, which the float16 scales and zeros of "
            f"the format cannot hold; keep this matrix unquantized"
        )
    return w32


def map_groups(
    w: torch.Tensor, group_size: int, fn: Callable[[torch.Tensor], GroupParams]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply ``fn`` to the full groups [R, G_full, group_size] and to the partial tail [R, 1, tail].

    Args:
        w: float32 [R, C].
        group_size: columns per group.
        fn: block [R, G, n] -> (codes float32 [R, G, n], scale float16 [R, G], zero float16 [R, G]).

    Returns:
        (q uint8 [R, C], scale float16 [R, G], zero float16 [R, G]) for the whole matrix.
    """
    rows, cols = w.shape
    full = cols // group_size
    blocks = []
    if full:
        blocks.append(w[:, : full * group_size].reshape(rows, full, group_size))  # [R, G_full, gs]
    if cols % group_size:
        blocks.append(w[:, full * group_size :].reshape(rows, 1, cols % group_size))  # [R, 1, tail]
    results = [fn(block) for block in blocks]
    q = torch.cat([block_codes.reshape(rows, -1) for block_codes, _, _ in results], dim=1)  # [R, C]
    scale = torch.cat([s for _, s, _ in results], dim=1)  # [R, G]
    zero = torch.cat([z for _, _, z in results], dim=1)  # [R, G]
    return q.to(torch.uint8), scale, zero


def to_fp16_scale(scale: torch.Tensor) -> torch.Tensor:
    """Smallest float16 >= a positive float32 scale; raise ValueError where it overflows float16.

    Rounding up (never down) keeps every value of the group's range inside the code range, also for
    tiny scales where float16 subnormals are coarse; the result is at least the smallest float16.
    """
    scale = scale.clamp_min(FP16_TINY)
    scale16 = scale.to(torch.float16)
    up = torch.nextafter(scale16, torch.full_like(scale16, math.inf))
    scale16 = torch.where(scale16.to(torch.float32) < scale, up, scale16)
    if not bool(torch.isfinite(scale16).all()):
        raise ValueError(
            "a group's range max(w, 0) - min(w, 0) is too wide for a float16 scale at this "
            "width (over 65504 per code step); use more bits or keep this matrix unquantized"
        )
    return scale16


def to_fp16_zero(z: torch.Tensor) -> torch.Tensor:
    """Round a float32 zero point to float16, clamped to the finite float16 range."""
    return z.clamp(-FP16_MAX, FP16_MAX).to(torch.float16)


def codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, max_code: int) -> torch.Tensor:
    """Quantize a block: ``clamp(round(w / scale + zero), 0, max_code)`` in float32.

    Args:
        w: float32 [R, G, n].
        scale: float32 [R, G, 1] (float16-representable values).
        zero: float32 [R, G, 1].
        max_code: ``2**bits - 1``.

    Returns:
        float32 integer-valued codes [R, G, n].
    """
    return torch.round(w / scale + zero).clamp_(0, max_code)


def dequantize_block(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``(q - zero) * scale`` in float32; the same operations as :func:`dequantize_groupwise`."""
    return (q - zero) * scale


def group_sq_error(w: torch.Tensor, w_hat: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors per group: [R, G, n] x2 -> [R, G] float32."""
    return (w - w_hat).square().sum(dim=-1)


def minmax_params(lo: torch.Tensor, hi: torch.Tensor, max_code: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float16 (scale, zero) mapping ``[lo, hi]`` onto the codes ``0..max_code``.

    ``lo <= 0 <= hi`` is required: the range always holds 0, so the zero lies in ``[0, max_code]`` and
    never overflows float16. The scale is rounded up to float16 and the zero is computed from it, then
    rounded to float16 itself (moving the grid by at most 1/16 step), so every value in ``[lo, hi]``
    maps into ``[-0.5, max_code + 0.5]`` and stays within ``scale / 2`` of its dequantized value.
    An empty range (all-zero group) gets scale 1 and zero 0 (exact).

    Args:
        lo: float32 [R, G], <= 0.
        hi: float32 [R, G], >= 0.
        max_code: ``2**bits - 1``.

    Returns:
        (scale float16 [R, G], zero float16 [R, G]).
    """
    span = hi - lo
    scale16 = to_fp16_scale(torch.where(span > 0, span / max_code, torch.ones_like(span)))
    zero16 = to_fp16_zero(-lo / scale16.to(torch.float32))
    return scale16, zero16


def group_params(
    w_min: torch.Tensor, w_max: torch.Tensor, max_code: int, shrink: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max float16 (scale, zero) per group from the group's extremes.

    The range is ``[min(w_min, 0), max(w_max, 0)]`` scaled by ``shrink``. A constant group ``c``
    (including all-zero) gets ``scale = 1, zero = float16(-c)``: its codes are
    ``round(c - float16(c))``, 0 unless ``|c| > 2048``, and it dequantizes to ``c`` up to float16
    rounding (exact for float16 values).

    Args:
        w_min: float32 [R, G], the group minima.
        w_max: float32 [R, G], the group maxima.
        max_code: ``2**bits - 1``.
        shrink: factor in (0, 1] applied to the range.

    Returns:
        (scale float16 [R, G], zero float16 [R, G]).
    """
    scale16, zero16 = minmax_params(w_min.clamp_max(0.0) * shrink, w_max.clamp_min(0.0) * shrink, max_code)
    constant = w_min == w_max
    scale16 = torch.where(constant, torch.ones_like(scale16), scale16)
    zero16 = torch.where(constant, to_fp16_zero(-w_min), zero16)
    return scale16, zero16


def rtn_block(block: torch.Tensor, max_code: int, shrinks: tuple[float, ...] = (1.0,)) -> GroupParams:
    """Round-to-nearest of one block [R, G, n], keeping per group the best range shrink factor.

    Args:
        block: float32 [R, G, n].
        max_code: ``2**bits - 1``.
        shrinks: factors applied to the [min, max] range; the first candidate wins ties.

    Returns:
        (codes float32 [R, G, n], scale float16 [R, G], zero float16 [R, G]).
    """
    w_min, w_max = block.amin(dim=-1), block.amax(dim=-1)  # [R, G]
    best_scale, best_zero = group_params(w_min, w_max, max_code, shrinks[0])
    if len(shrinks) > 1:
        s, z = best_scale.to(torch.float32).unsqueeze(-1), best_zero.to(torch.float32).unsqueeze(-1)
        best_err = group_sq_error(block, dequantize_block(codes(block, s, z, max_code), s, z))  # [R, G]
        for shrink in shrinks[1:]:
            scale16, zero16 = group_params(w_min, w_max, max_code, shrink)
            s, z = scale16.to(torch.float32).unsqueeze(-1), zero16.to(torch.float32).unsqueeze(-1)
            err = group_sq_error(block, dequantize_block(codes(block, s, z, max_code), s, z))  # [R, G]
            better = err < best_err
            best_scale = torch.where(better, scale16, best_scale)
            best_zero = torch.where(better, zero16, best_zero)
            best_err = torch.where(better, err, best_err)
    s, z = best_scale.to(torch.float32).unsqueeze(-1), best_zero.to(torch.float32).unsqueeze(-1)
    return codes(block, s, z, max_code), best_scale, best_zero


# ---------------------------------------------------------------------------------------------------
# Public API


def quantize_groupwise(w: torch.Tensor, spec: QuantSpec, *, clip_search: bool = False) -> QuantizedTensor:
    """Min-max round-to-nearest group-wise quantization.

    Each group's range ``[min(w, 0), max(w, 0)]`` maps onto the codes ``0..2**bits - 1``; every element
    is then within ``scale / 2`` of its dequantized value (up to float32 arithmetic).

    Args:
        w: weight [R, C] of any float dtype (computed in float32).
        spec: width and group size.
        clip_search: also try ranges shrunk by :data:`CLIP_SHRINK_GRID` (1.0 down to 0.5) and keep,
            per group, the one with the smallest squared reconstruction error (never worse than plain).

    Returns:
        The :class:`QuantizedTensor` (codes, float16 scale and zero).

    Raises:
        ValueError: ``w`` is not a non-empty 2-D float tensor, holds NaN/Inf, or exceeds float16 range.
    """
    w32 = as_float_matrix(w)
    shrinks = CLIP_SHRINK_GRID if clip_search else (1.0,)
    q, scale, zero = map_groups(w32, spec.group_size, lambda block: rtn_block(block, spec.max_code, shrinks))
    return QuantizedTensor(q=q, scale=scale, zero=zero, spec=spec, shape=(w32.shape[0], w32.shape[1]))


def dequantize_groupwise(qt: QuantizedTensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Reconstruct ``(q - zero) * scale`` (computed in float32, then cast).

    Args:
        qt: a quantized matrix.
        dtype: output dtype.

    Returns:
        Tensor [R, C] of ``dtype`` on ``qt.q``'s device.
    """
    rows, cols = qt.shape
    gs = qt.spec.group_size
    groups = qt.scale.shape[1]
    q = qt.q.to(torch.float32)
    if cols % gs:
        q = torch.nn.functional.pad(q, (0, groups * gs - cols))
    scale = qt.scale.to(torch.float32).unsqueeze(-1)  # [R, G, 1]
    zero = qt.zero.to(torch.float32).unsqueeze(-1)  # [R, G, 1]
    w_hat = dequantize_block(q.reshape(rows, groups, gs), scale, zero).reshape(rows, groups * gs)
    return w_hat[:, :cols].to(dtype).contiguous()


def round_zero_points(w: torch.Tensor, qt: QuantizedTensor) -> QuantizedTensor:
    """Round each group's zero to an integer in ``[0, 2**b - 1]`` and re-choose the codes for it.

    The form that integer-zero formats (compressed-tensors, GPTQ/AWQ checkpoints) can hold: the scales are kept,
    the zeros become integers (still stored as float16, which holds them exactly), and the codes are
    ``clamp(round(w / scale + zero), 0, 2**b - 1)``. Partial last groups are handled.

    Args:
        w: the original weight [R, C] (float32 for exact codes).
        qt: a quantization of ``w`` (any zeros).

    Returns:
        The :class:`QuantizedTensor` with integer zeros.
    """
    rows, cols = qt.shape
    gs, max_code = qt.spec.group_size, qt.spec.max_code
    zero = torch.round(qt.zero.to(torch.float32)).clamp_(0, max_code)  # [R, G]
    scale_cols = qt.scale.to(torch.float32).repeat_interleave(gs, dim=1)[:, :cols]  # [R, C]
    zero_cols = zero.repeat_interleave(gs, dim=1)[:, :cols]  # [R, C]
    q = torch.round(w.to(torch.float32) / scale_cols + zero_cols).clamp_(0, max_code)
    return QuantizedTensor(
        q=q.to(torch.uint8), scale=qt.scale, zero=zero.to(torch.float16), spec=qt.spec, shape=qt.shape
    )


def relative_error(w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """Relative Frobenius error ``||W - W_hat||_F / ||W||_F`` computed in float64.

    Args:
        w: reference tensor.
        w_hat: approximation of the same shape.

    Returns:
        The ratio; 0.0 when both are all zero, ``inf`` when only ``w`` is.
    """
    if tuple(w.shape) != tuple(w_hat.shape):
        raise ValueError(f"relative_error: shapes differ, {tuple(w.shape)} vs {tuple(w_hat.shape)}")
    ref = w.detach().to(torch.float64)
    diff = torch.linalg.vector_norm(ref - w_hat.detach().to(device=ref.device, dtype=torch.float64)).item()
    norm = torch.linalg.vector_norm(ref).item()
    if norm == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / norm
