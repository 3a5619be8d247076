"""Half-quadratic quantization (HQQ, Badri & Shaji 2023): data-free optimisation of the zero point.

HQQ minimises the sparsity-promoting loss ``||W - dequant(quant(W))||_p^p`` (``p < 1``) per group by
half-quadratic splitting with an auxiliary error variable ``W_e``. Starting from the min-max
round-to-nearest solution, each iteration

1. quantizes with the current parameters: ``W_q = clamp(round(W / s + z), 0, 2**b - 1)``,
   ``W_r = (W_q - z) * s``;
2. updates the error by generalised soft-thresholding (the proximal operator of ``|.|^p``):
   ``W_e = sign(d) * relu(|d| - |d|^(p-1) / beta)`` with ``d = W - W_r``;
3. updates the zero in closed form: ``z = mean(W_q - (W - W_e) / s)`` over the group
   (optionally also the scale, by a least-squares fit of ``W - W_e`` on ``W_q``);
4. raises the penalty ``beta *= kappa``.

It stops when the total squared error stops decreasing. Differences from the reference
implementation, all toward the stored format: every iterate is scored with its zero (and scale)
rounded to float16, i.e. by the error of what would be stored; each group keeps the best parameters
seen by that squared reconstruction error (the measure the bit allocator uses), so the result is
never worse than min-max RTN, group by group; the initial range holds 0 (see ``minmax_params``).
Like the reference, ``beta`` is in the weight's units (the shrinkage threshold is not normalised
per group). Deterministic.
"""

from __future__ import annotations

import torch

from alphaq.errors import ConfigError
from alphaq.quantization.layout import QuantSpec
from alphaq.quantization.primitives import (
    GroupParams,
    QuantizedTensor,
    as_float_matrix,
    codes,
    map_groups,
    rtn_block,
    to_fp16_scale,
    to_fp16_zero,
)

#: Keeps ``|x|^(p - 1)`` finite at ``x = 0``.
_SHRINK_EPS = 1e-8


def shrink_lp(x: torch.Tensor, beta: float, lp_norm: float) -> torch.Tensor:
    """Generalised soft-thresholding, the proximal step of ``|x|^p / beta``.

    Args:
        x: float32 tensor.
        beta: penalty weight (> 0); larger means less shrinkage.
        lp_norm: ``p`` in (0, 1]; 1 is plain soft-thresholding.

    Returns:
        ``sign(x) * relu(|x| - |x|^(p-1) / beta)``.
    """
    magnitude = x.abs()
    if lp_norm == 1.0:
        threshold = torch.full_like(magnitude, 1.0 / beta)
    else:
        threshold = (magnitude + _SHRINK_EPS).pow(lp_norm - 1.0) / beta
    return torch.sign(x) * torch.relu(magnitude - threshold)


def _check_params(iters: int, lp_norm: float, beta: float, kappa: float) -> None:
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ConfigError(f"hqq iters={iters!r} must be a non-negative integer (20 is the default)")
    if not 0.0 < lp_norm <= 1.0:
        raise ConfigError(f"hqq lp_norm={lp_norm!r} must be in (0, 1] (0.7 is the default)")
    if not beta > 0.0:
        raise ConfigError(f"hqq beta={beta!r} must be positive (10.0 is the default)")
    if not kappa >= 1.0:
        raise ConfigError(f"hqq kappa={kappa!r} must be >= 1 (1.01 is the default)")


def _least_squares_scale(
    target: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit ``target ~ (q - zero) * scale`` per group; keep the old values where the fit is degenerate.

    Args:
        target: float32 [R, G, n], the weight minus the sparse error.
        q: float32 codes [R, G, n].
        scale: float32 [R, G, 1] current scale.
        zero: float32 [R, G, 1] current zero.

    Returns:
        (scale, zero) float32 [R, G, 1].
    """
    q_mean = q.mean(dim=-1, keepdim=True)
    t_mean = target.mean(dim=-1, keepdim=True)
    q_centred = q - q_mean
    var = q_centred.square().sum(dim=-1, keepdim=True)
    cov = (q_centred * (target - t_mean)).sum(dim=-1, keepdim=True)
    slope = cov / var.clamp_min(1e-12)
    ok = (var > 0) & (slope > 0)
    new_scale = torch.where(ok, slope, scale)
    new_zero = torch.where(ok, q_mean - t_mean / slope.where(ok, torch.ones_like(slope)), zero)
    return new_scale, new_zero


def _score(w_scaled: torch.Tensor, zero: torch.Tensor, scale: torch.Tensor, max_code: int) -> torch.Tensor:
    """Squared reconstruction error per group of the codes ``round(w / scale + zero)``.

    Args:
        w_scaled: float32 [R, G, n], ``w / scale``.
        zero: float32 [R, G, 1].
        scale: float32 [R, G, 1].
        max_code: ``2**bits - 1``.

    Returns:
        float32 [R, G]: ``scale**2 * sum((x - q)**2)`` with ``x = w / scale + zero``, ``q`` its code.
    """
    x = w_scaled + zero
    residual = x - torch.round(x).clamp_(0, max_code)  # (w - w_hat) / scale
    return residual.square_().sum(dim=-1) * scale.squeeze(-1).square()


def hqq_block(
    block: torch.Tensor, max_code: int, *, iters: int, lp_norm: float, beta: float, kappa: float, optimize_scale: bool
) -> GroupParams:
    """HQQ on one block of groups [R, G, n], starting from min-max RTN.

    Works in code units (``w / scale``). The iterate (scale, zero) stays in float32 as in the reference
    (rounding it to float16 every step stalls the zero at 8 bits, where float16 steps are 1/8 of a
    code); each iterate is scored after rounding to float16, which is what would be stored.

    Returns:
        (codes float32 [R, G, n], scale float16 [R, G], zero float16 [R, G]).
    """
    _, best_scale, best_zero = rtn_block(block, max_code)
    scale = best_scale.to(torch.float32).unsqueeze(-1)  # [R, G, 1]
    zero = best_zero.to(torch.float32).unsqueeze(-1)  # [R, G, 1]
    w_scaled = block / scale  # [R, G, n]
    best_err = _score(w_scaled, zero, scale, max_code)  # [R, G]
    previous_total = float(best_err.sum())
    x = w_scaled + zero
    q = torch.round(x).clamp_(0, max_code)  # [R, G, n]
    for _ in range(iters):
        residual = x - q  # (w - w_r) / scale, [R, G, n]
        sparse = shrink_lp(residual * scale, beta, lp_norm)  # W_e, [R, G, n]
        if optimize_scale:
            scale, zero = _least_squares_scale(block - sparse, q, scale, zero)
            w_scaled = block / scale
        else:
            # Closed form: z = mean(q - (w - W_e) / s) = z + mean(W_e / s - residual).
            zero = zero + (sparse / scale - residual).mean(dim=-1, keepdim=True)
        beta *= kappa
        x = w_scaled + zero
        q = torch.round(x).clamp_(0, max_code)
        # Score what would be stored: the float16-rounded parameters.
        scale16 = to_fp16_scale(scale.squeeze(-1)) if optimize_scale else best_scale
        zero16 = to_fp16_zero(zero.squeeze(-1))
        scale32 = scale16.to(torch.float32).unsqueeze(-1)
        err = _score(
            block / scale32 if optimize_scale else w_scaled, zero16.to(torch.float32).unsqueeze(-1), scale32, max_code
        )  # [R, G]
        # A margin keeps float32 near-ties (two parameter sets with the same error) on the earlier one.
        better = err < best_err * (1.0 - 1e-6)
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale16, best_scale)
        best_zero = torch.where(better, zero16, best_zero)
        total = float(err.sum())
        if total >= previous_total:
            break
        previous_total = total
    q = codes(block, best_scale.to(torch.float32).unsqueeze(-1), best_zero.to(torch.float32).unsqueeze(-1), max_code)
    return q, best_scale, best_zero


def quantize_hqq(
    w: torch.Tensor,
    spec: QuantSpec,
    *,
    iters: int = 20,
    lp_norm: float = 0.7,
    beta: float = 10.0,
    kappa: float = 1.01,
    optimize_scale: bool = False,
) -> QuantizedTensor:
    """Group-wise quantization with HQQ's half-quadratic zero-point optimisation (data-free).

    Args:
        w: weight [R, C] of any float dtype (computed in float32).
        spec: width and group size.
        iters: maximum number of half-quadratic iterations (0 gives min-max RTN).
        lp_norm: ``p`` of the sparsity-promoting error norm, in (0, 1].
        beta: initial penalty of the half-quadratic splitting, in the weight's units.
        kappa: factor by which ``beta`` grows each iteration (>= 1).
        optimize_scale: also refit the scale each iteration (least squares); off as in HQQ.

    Returns:
        The :class:`QuantizedTensor`; per group never worse (squared error) than min-max RTN.

    Raises:
        ConfigError: an optimiser parameter is out of range.
        ValueError: ``w`` is not a non-empty 2-D float tensor, holds NaN/Inf, or exceeds float16 range.
    """
    _check_params(iters, lp_norm, beta, kappa)
    w32 = as_float_matrix(w)
    q, scale, zero = map_groups(
        w32,
        spec.group_size,
        lambda block: hqq_block(
            block,
            spec.max_code,
            iters=iters,
            lp_norm=float(lp_norm),
            beta=float(beta),
            kappa=float(kappa),
            optimize_scale=optimize_scale,
        ),
    )
    return QuantizedTensor(q=q, scale=scale, zero=zero, spec=spec, shape=(w32.shape[0], w32.shape[1]))
