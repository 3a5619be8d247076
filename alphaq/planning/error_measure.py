"""The ``measured`` error model's per-matrix work: quantize and dequantize a sample of rows at every width.

Group-wise quantization works along the columns of each row, so rows are quantized independently and the
relative Frobenius error over a sample of rows, ``sqrt(sum_r e_r / sum_r s_r)`` (``e_r`` the row's squared
error, ``s_r`` its squared norm), estimates the whole matrix's. A matrix with more than ``max_rows`` rows is
measured on an evenly spaced sample that starts at about :data:`SAMPLE_START` rows and grows (to ``max_rows``, then
the whole matrix) until the relative standard error of every width's estimate is at most ``tolerance`` (1 %), from
the ratio estimator's standard error (delta method: ``Var(e/s) ~ Var(e_r - R s_r) / (n mean(s)^2)``); a matrix of
at most ``max_rows`` rows is measured whole, exactly as before. A fixed 1024-row sample, the earlier rule, was up to
7.8 % (mean 1.5 %) off the whole matrix's error on the heavy-tailed experts of ``bench/fullsize.py``. How far the sampled errors are from the whole matrices' on a real-size
checkpoint is measured by ``bench/fullsize.py`` (``plan_sample_check`` in ``bench/results/fullsize.json``).

Pure computation on tensors; :func:`alphaq.planning.costs.matrix_errors` reads the matrices and runs this on
several threads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: Rows of the first sample of a matrix with more than ``max_rows`` rows.
SAMPLE_START = 256
#: Relative standard error the sampled error estimate must reach (else the sample doubles).
TOLERANCE = 0.01


@dataclass(frozen=True)
class MeasuredMatrix:
    """One matrix's measured errors.

    Attributes:
        error: [W] relative Frobenius error ``||W - Q_b(W)||_F / ||W||_F`` at each width.
        rows: rows measured.
        std_error: the largest relative standard error of the estimates (0 when measured whole).
    """

    error: np.ndarray
    rows: int
    std_error: float


def sample_rows(num_rows: int, max_rows: int) -> np.ndarray | None:
    """Evenly spaced row indices (first and last included), or None when all rows are kept."""
    if num_rows <= max_rows:
        return None
    return np.unique(np.linspace(0, num_rows - 1, max_rows).round().astype(np.int64))


def measure_matrix(
    w: torch.Tensor,
    widths: Sequence[int],
    group_size: int,
    method: str,
    max_rows: int,
    *,
    start_rows: int = SAMPLE_START,
    tolerance: float = TOLERANCE,
) -> MeasuredMatrix:
    """Relative error of quantizing ``w`` at every width, on the smallest row sample that is accurate enough.

    The samples are nested: the ``max_rows`` evenly spaced rows of :func:`sample_rows`, taken every ``k``-th
    (``k`` a power of two); a larger sample adds only the rows the smaller one skipped, so growing costs nothing
    twice. When even ``max_rows`` rows leave the estimate short of the tolerance (rows that differ a lot, as with
    heavy-tailed entries), the remaining rows are measured too and the error is the whole matrix's.

    Args:
        w: float32 weight [R, C].
        widths: candidate widths.
        group_size: quantization group size.
        method: data-free quantizer (``rtn``, ``rtn_clip``, ``hqq``).
        max_rows: the largest sample; a matrix with at most this many rows is measured whole, and so is one whose
            ``max_rows``-row sample is not accurate enough.
        start_rows: the first sample of a taller matrix (about; rounded to a power-of-two stride).
        tolerance: relative standard error every width's estimate must reach.

    Returns:
        The :class:`MeasuredMatrix`.

    Raises:
        ValueError: the quantizer refuses the weights (beyond float16's range).
    """
    import torch

    candidates = sample_rows(int(w.shape[0]), max_rows)
    if candidates is None:  # measured whole, as relative_error computes it (the same bits as before sampling)
        return MeasuredMatrix(_whole_errors(w, widths, group_size, method), int(w.shape[0]), 0.0)
    stride = 1
    while len(candidates) // (2 * stride) >= max(1, start_rows):
        stride *= 2
    measured = np.zeros(len(candidates), dtype=bool)
    errs: list[torch.Tensor] = []
    sqs: list[torch.Tensor] = []
    while True:
        take = np.zeros(len(candidates), dtype=bool)
        take[::stride] = True
        new = np.flatnonzero(take & ~measured)
        if len(new):
            row_err, row_sq = _row_errors(w[torch.as_tensor(candidates[new])], widths, group_size, method)
            errs.append(row_err)
            sqs.append(row_sq)
            measured[new] = True
        row_err, row_sq = torch.cat(errs, dim=1), torch.cat(sqs)  # [W, n], [n]
        std_error = _std_error(row_err, row_sq)
        if std_error <= tolerance:
            return MeasuredMatrix(_ratio(row_err, row_sq), int(row_sq.numel()), std_error)
        if stride == 1:  # max_rows rows are not enough: the rows left too, so the whole matrix, exactly
            rest = np.setdiff1d(np.arange(int(w.shape[0])), candidates)
            rest_err, rest_sq = _row_errors(w[torch.as_tensor(rest)], widths, group_size, method)
            row_err, row_sq = torch.cat((row_err, rest_err), dim=1), torch.cat((row_sq, rest_sq))
            return MeasuredMatrix(_ratio(row_err, row_sq), int(row_sq.numel()), 0.0)
        # the standard error falls as 1 / sqrt(n): go to the first sample that should reach the tolerance
        need = row_sq.numel() * (std_error / tolerance) ** 2
        while stride > 1 and len(candidates) / stride < need:
            stride //= 2


def _whole_errors(w: torch.Tensor, widths: Sequence[int], group_size: int, method: str) -> np.ndarray:
    """``relative_error(W, Q_b(W))`` at each width [W]."""
    import torch

    from alphaq.quantization.layout import QuantSpec
    from alphaq.quantization.methods import quantize_dequantize
    from alphaq.quantization.primitives import relative_error

    return np.array(
        [
            relative_error(w, quantize_dequantize(w, QuantSpec(b, group_size), method=method, dtype=torch.float32))
            for b in widths
        ]
    )


def _row_errors(
    sample: torch.Tensor, widths: Sequence[int], group_size: int, method: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared error of each row at each width [W, n], squared norm of each row [n]), in float64."""
    import torch

    from alphaq.quantization.layout import QuantSpec
    from alphaq.quantization.methods import quantize_dequantize

    ref = sample.detach().to(torch.float64)  # [n, C]
    errors = []
    for bits in widths:
        w_hat = quantize_dequantize(sample, QuantSpec(bits, group_size), method=method, dtype=torch.float32)
        errors.append((ref - w_hat.to(torch.float64)).square().sum(dim=1))  # [n]
    return torch.stack(errors), ref.square().sum(dim=1)


def _ratio(row_err: torch.Tensor, row_sq: torch.Tensor) -> np.ndarray:
    """Relative Frobenius error at each width: ``sqrt(sum_r e_r / sum_r s_r)`` [W]."""
    norm_sq = float(row_sq.sum())
    err_sq = row_err.sum(dim=1).numpy()  # [W]
    if norm_sq == 0.0:
        return np.where(err_sq == 0.0, 0.0, math.inf)
    return np.sqrt(err_sq / norm_sq)


def _std_error(row_err: torch.Tensor, row_sq: torch.Tensor) -> float:
    """The largest relative standard error over the widths of the sampled estimate (delta method)."""
    n = int(row_sq.numel())
    norm_sq = float(row_sq.sum())
    if n < 2 or norm_sq == 0.0:
        return 0.0
    worst = 0.0
    for err in row_err:  # [n] per width
        ratio = float(err.sum()) / norm_sq
        if ratio > 0.0:
            se_ratio = math.sqrt(float((err - ratio * row_sq).var()) / n) / (norm_sq / n)
            worst = max(worst, 0.5 * se_ratio / ratio)  # d sqrt(R) / sqrt(R) = dR / 2R
    return worst


__all__ = ["SAMPLE_START", "TOLERANCE", "MeasuredMatrix", "measure_matrix", "sample_rows"]
