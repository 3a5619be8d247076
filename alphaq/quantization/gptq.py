"""GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers").

Pure computation on one matrix ``W`` [R, C] and the Hessian of its layer-wise objective, ``H = 2 X^T X`` [C, C]
(``X`` [N, C]: the matrix's inputs on calibration tokens, see :mod:`alphaq.quantization.calibration`). GPTQ
quantizes the columns left to right; after each column the rounding error is spread over the columns not yet
quantized, weighted by the inverse Hessian, so ``||X W^T - X W_hat^T||`` stays small. The protocol is the paper's
standard one:

* dampening ``0.01 * mean(diag(H))`` added to the diagonal;
* the Cholesky formulation: the upper Cholesky factor of ``H^-1`` gives every column's update row;
* lazy batch updates in blocks of 128 columns (the result does not depend on the block size up to float rounding);
* group-wise parameters (group 128 by default, the plan's group size here), act-order off: each group's
  min-max scale and zero are chosen on the current, error-updated weights of the group when GPTQ reaches its
  first column.

The result is alphaq's own :class:`~alphaq.quantization.primitives.QuantizedTensor` (uint8 codes, float16 scale
and zero per (row, group), value ``(q - zero) * scale``) with the same min-max parameters and rounding as
``rtn``, so packing, writing and loading are unchanged; with ``H = I`` GPTQ spreads no error and returns exactly
the ``rtn`` result. Two details differ from the reference code: inputs never seen in calibration (``H[j, j] = 0``)
keep their weight (the reference zeroes it), and when the Cholesky factorization fails the dampening is raised
tenfold (at most three times) instead of stopping.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from alphaq.quantization.layout import QuantSpec

if TYPE_CHECKING:
    import torch

    from alphaq.quantization.primitives import QuantizedTensor

#: The paper's dampening: ``DAMP * mean(diag(H))`` is added to the Hessian's diagonal.
DAMP = 0.01
#: Columns per lazy-batch block.
BLOCK_SIZE = 128
#: Tenfold dampening increases tried when the Cholesky factorization fails.
DAMP_RETRIES = 3


@dataclass(frozen=True)
class GptqOptions:
    """The GPTQ protocol (recorded in ``quantize.json``).

    Attributes:
        damp: relative dampening (fraction of the mean Hessian diagonal).
        block_size: columns per lazy-batch block.
        act_order: quantize columns by decreasing Hessian diagonal (not supported: always False).
    """

    damp: float = DAMP
    block_size: int = BLOCK_SIZE
    act_order: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.damp, float) and 0.0 < self.damp < 1.0):
            raise ValueError(f"GPTQ damp={self.damp!r} must be a float in (0, 1) (the paper uses 0.01)")
        if isinstance(self.block_size, bool) or not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"GPTQ block_size={self.block_size!r} must be a positive integer (the paper uses 128)")
        if self.act_order:
            raise ValueError("GPTQ act_order is not supported (the standard protocol with groups keeps it off)")

    def record(self) -> dict[str, object]:
        return {"damp": self.damp, "block_size": self.block_size, "act_order": self.act_order}


def inverse_hessian_factor(hessian: torch.Tensor, damp: float = DAMP) -> torch.Tensor:
    """Upper Cholesky factor ``U`` of ``(H + damp * mean(diag H) * I)^-1`` (``U^T U = H^-1``), float32 [C, C].

    Dead inputs (``H[j, j] = 0``) get ``H[j, j] = 1`` first; an all-zero ``H`` (a matrix that saw no token)
    becomes the identity, for which GPTQ is plain round-to-nearest.

    Raises:
        ValueError: the dampened Hessian is not positive definite even after :data:`DAMP_RETRIES` increases.
    """
    import torch

    h = hessian.detach().to(torch.float32).clone()  # [C, C]
    cols = h.shape[0]
    diag = torch.arange(cols, device=h.device)
    dead = diag[h[diag, diag] == 0]  # inputs never seen: their rows and columns of H are zero too
    h[dead, dead] = 1.0
    base = float(h.diagonal().mean())
    for attempt in range(DAMP_RETRIES + 1):
        damped = h.clone()
        damped[diag, diag] += damp * (10.0**attempt) * base
        chol, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
    raise ValueError(
        "the calibration Hessian is not positive definite even with 1000x the dampening; calibrate on more text"
    )


def _block_bounds(cols: int, group_size: int, block_size: int) -> list[int]:
    """Block starts: every ``block_size`` columns and every group start (so a group always starts a block)."""
    return sorted(set(range(0, cols, block_size)) | set(range(0, cols, group_size))) + [cols]


def quantize_gptq(
    w: torch.Tensor,
    hessian: torch.Tensor,
    spec: QuantSpec,
    options: GptqOptions | None = None,
    *,
    integer_zeros: bool = False,
) -> QuantizedTensor:
    """GPTQ of one matrix into alphaq's group-wise format.

    Args:
        w: weight [R, C] of any float dtype (computed in float32 on its device).
        hessian: ``2 X^T X`` [C, C] of the matrix's calibration inputs (any positive scale; all-zero: no data).
        spec: width and group size.
        options: the protocol (default: the paper's).
        integer_zeros: round each group's zero to an integer when its parameters are chosen (GPTQ's own form,
            what compressed-tensors holds); the codes are then chosen with it.

    Returns:
        The :class:`~alphaq.quantization.primitives.QuantizedTensor`.

    Raises:
        ValueError: a bad weight (see :func:`~alphaq.quantization.primitives.as_float_matrix`), a Hessian of the
            wrong shape or with NaN/Inf, or one that cannot be factorized.
    """
    import torch

    from alphaq.quantization.layout import num_groups
    from alphaq.quantization.primitives import QuantizedTensor, as_float_matrix, codes, group_params

    opts = options or GptqOptions()
    weight = as_float_matrix(w).clone()  # [R, C], updated in place as errors are spread
    rows, cols = weight.shape
    if tuple(hessian.shape) != (cols, cols):
        raise ValueError(f"GPTQ Hessian is {tuple(hessian.shape)}, expected {(cols, cols)} for a {rows}x{cols} weight")
    if not bool(torch.isfinite(hessian).all()):
        raise ValueError("the calibration Hessian holds NaN or Inf values")
    hinv = inverse_hessian_factor(hessian.to(weight.device), opts.damp)  # [C, C] upper
    gs, max_code = spec.group_size, spec.max_code
    q = torch.zeros(rows, cols, dtype=torch.float32, device=weight.device)
    scales = torch.empty(rows, num_groups(cols, gs), dtype=torch.float16, device=weight.device)
    zeros = torch.empty_like(scales)
    bounds = _block_bounds(cols, gs, opts.block_size)
    s = z = weight.new_empty(rows, 1)
    for i1, i2 in itertools.pairwise(bounds):
        if i1 % gs == 0:  # a group starts: min-max on its current (error-updated) weights
            group = weight[:, i1 : min(i1 + gs, cols)]  # [R, n]
            scale16, zero16 = group_params(group.amin(dim=1), group.amax(dim=1), max_code)  # [R]
            if integer_zeros:
                zero16 = torch.round(zero16.to(torch.float32)).clamp_(0, max_code).to(torch.float16)
            scales[:, i1 // gs], zeros[:, i1 // gs] = scale16, zero16
            s, z = scale16.to(torch.float32).unsqueeze(1), zero16.to(torch.float32).unsqueeze(1)  # [R, 1]
        block = weight[:, i1:i2].clone()  # [R, B]
        err = torch.zeros_like(block)  # [R, B]
        h_block = hinv[i1:i2, i1:i2]  # [B, B]
        for i in range(i2 - i1):
            col = block[:, i : i + 1]  # [R, 1]
            code = codes(col, s, z, max_code)  # [R, 1]
            q[:, i1 + i : i1 + i + 1] = code
            e = (col - (code - z) * s) / h_block[i, i]  # [R, 1]
            block[:, i:] -= e @ h_block[i : i + 1, i:]
            err[:, i : i + 1] = e
        weight[:, i2:] -= err @ hinv[i1:i2, i2:]
    return QuantizedTensor(q=q.to(torch.uint8), scale=scales, zero=zeros, spec=spec, shape=(rows, cols))


def output_error(x: torch.Tensor, w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """``||X W^T - X W_hat^T||_F`` in float64 (the objective GPTQ lowers).

    Args:
        x: inputs [N, C].
        w: weight [R, C].
        w_hat: its approximation [R, C].

    Returns:
        The Frobenius norm of the output difference.
    """
    import torch

    diff = w.to(torch.float64) - w_hat.to(torch.float64)
    return float(torch.linalg.matrix_norm(x.to(torch.float64) @ diff.T))


__all__ = ["BLOCK_SIZE", "DAMP", "GptqOptions", "inverse_hessian_factor", "output_error", "quantize_gptq"]
