"""weightwatcher-style metrics of one eigenvalue spectrum (ESD), computed from the eigenvalues alone.

Column names and formulas follow weightwatcher 0.7.7 (``apply_esd``, ``apply_powerlaw``,
``apply_norm_metrics``, ``apply_detX``), with three deliberate differences:

* a failed or skipped fit gives NaN for the fit-dependent columns and no ``warning`` label
  (weightwatcher writes -1 and then labels the layer ``over-trained``);
* ``matrix_rank`` counts eigenvalues above ``lambda_max * max(M, N) * eps`` (numpy's tolerance applied
  to the Gram matrix), which is robust to Gram-route eigenvalues; weightwatcher applies that tolerance
  to singular values. They agree unless a matrix is numerically rank-deficient;
* ``detX`` is found with a running sum of logarithms; weightwatcher multiplies eigenvalues, which
  overflows to inf for large spectra (then it reports every eigenvalue as the ERG tail).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from alphaq.diagnostics.powerlaw_fit import FitMethod, PowerLawFit, fit_power_law

#: weightwatcher's warning thresholds on alpha.
OVER_TRAINED_THRESH = 2.0
UNDER_TRAINED_THRESH = 6.0
OVER_TRAINED = "over-trained"
UNDER_TRAINED = "under-trained"
#: weightwatcher's ``EPSILON`` (CPU build) in the matrix entropy.
ENTROPY_EPSILON = 1e-10


@dataclass(frozen=True)
class ESDMetrics:
    """HT-SR metrics of one weight matrix, named as weightwatcher's ``analyze()`` columns.

    Attributes:
        num_evals: eigenvalues given (K = min(M, N), zeros included).
        lambda_max: largest eigenvalue (= spectral_norm).
        norm: sum of eigenvalues, ``||W||_F^2``.
        log_norm: log10 of norm.
        spectral_norm: largest eigenvalue, ``||W||_2^2``.
        log_spectral_norm: log10 of spectral_norm.
        alpha: power-law exponent of the tail (NaN if the fit failed).
        alpha_weighted: ``alpha * log10(lambda_max)`` ("alpha-hat").
        log_alpha_norm: ``log10(sum lambda^alpha)``.
        D: KS distance of the fit.
        sigma: standard error of alpha.
        xmin: start of the fitted tail.
        xmax: largest fitted eigenvalue.
        num_pl_spikes: eigenvalues ``>= xmin``.
        stable_rank: ``norm / lambda_max``.
        matrix_rank: eigenvalues above ``lambda_max * max(M, N) * eps``.
        entropy: weightwatcher's matrix entropy, ``-sum p ln p / ln(rank)`` with
            ``p = lambda / sum lambda + 1e-10``.
        detX_num: size of the ERG tail (eigenvalues rescaled to mean 1; smallest top set whose
            log-sum first drops below 0, walking down from the largest).
        detX_val: eigenvalue where that tail starts (original scale).
        fit: estimator, ``"ww"`` or ``"hill"``.
        status: ``"success"``, ``"failed"`` or ``"skipped"`` (the fit's status).
        warning: ``"over-trained"`` (alpha < 2), ``"under-trained"`` (alpha > 6) or ``""``.
        message: why the fit failed or was skipped.
    """

    num_evals: int
    lambda_max: float
    norm: float
    log_norm: float
    spectral_norm: float
    log_spectral_norm: float
    alpha: float
    alpha_weighted: float
    log_alpha_norm: float
    D: float
    sigma: float
    xmin: float
    xmax: float
    num_pl_spikes: int
    stable_rank: float
    matrix_rank: int
    entropy: float
    detX_num: int
    detX_val: float
    fit: str
    status: str
    warning: str
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a plain dict (Python scalars)."""
        return asdict(self)


def esd_metrics(evals: np.ndarray, *, method: FitMethod = "ww", max_dim: int | None = None) -> ESDMetrics:
    """Every metric of one spectrum.

    Args:
        evals: eigenvalues of ``W^T W`` (any order), e.g. from :func:`alphaq.diagnostics.spectrum.eigenvalues`.
        method: power-law estimator, ``"ww"`` or ``"hill"``.
        max_dim: the larger side of the matrix, for the ``matrix_rank`` tolerance; None uses
            ``len(evals)``.

    Returns:
        The metrics. Non-finite or empty eigenvalues give status ``"failed"``/``"skipped"`` and NaN.
    """
    values = np.sort(np.asarray(evals, dtype=np.float64).ravel())
    count = int(values.size)
    if count == 0 or not np.all(np.isfinite(values)):
        status, message = ("skipped", "no eigenvalues") if count == 0 else ("failed", "eigenvalues hold NaN or Inf")
        return _empty(count, method, status, message)

    fit = fit_power_law(values, method=method)
    lambda_max = float(values[-1])
    norm = float(np.sum(values))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_norm = float(np.log10(norm)) if norm > 0 else math.nan
        log_spectral_norm = float(np.log10(lambda_max)) if lambda_max > 0 else math.nan
        stable_rank = norm / lambda_max if lambda_max > 0 else math.nan
    rank = matrix_rank(values, max_dim=max_dim)
    detx_num, detx_val = detx_constraint(values)
    alpha = fit.alpha if fit.ok else math.nan
    return ESDMetrics(
        num_evals=count,
        lambda_max=lambda_max,
        norm=norm,
        log_norm=log_norm,
        spectral_norm=lambda_max,
        log_spectral_norm=log_spectral_norm,
        alpha=alpha,
        alpha_weighted=alpha * log_spectral_norm,
        log_alpha_norm=_log_alpha_norm(values, alpha),
        D=fit.D,
        sigma=fit.sigma,
        xmin=fit.xmin,
        xmax=fit.xmax,
        num_pl_spikes=fit.num_pl_spikes,
        stable_rank=stable_rank,
        matrix_rank=rank,
        entropy=matrix_entropy(values, rank),
        detX_num=detx_num,
        detX_val=detx_val,
        fit=fit.method,
        status=fit.status,
        warning=training_warning(fit),
        message=fit.message,
    )


def training_warning(fit: PowerLawFit) -> str:
    """weightwatcher's label: ``"over-trained"`` if alpha < 2, ``"under-trained"`` if alpha > 6, else
    ``""``; always ``""`` for a fit that did not succeed.

    Args:
        fit: a power-law fit.

    Returns:
        The label.
    """
    if not fit.ok or not math.isfinite(fit.alpha):
        return ""
    if fit.alpha < OVER_TRAINED_THRESH:
        return OVER_TRAINED
    if fit.alpha > UNDER_TRAINED_THRESH:
        return UNDER_TRAINED
    return ""


def matrix_rank(evals: np.ndarray, *, max_dim: int | None = None) -> int:
    """Numerical rank from eigenvalues: count above ``lambda_max * max_dim * eps(float64)``.

    Args:
        evals: eigenvalues of ``W^T W``.
        max_dim: larger side of ``W`` (None: ``len(evals)``).

    Returns:
        The rank (0 for an empty or all-zero spectrum).
    """
    values = np.asarray(evals, dtype=np.float64)
    if values.size == 0:
        return 0
    dim = values.size if max_dim is None else max(int(max_dim), values.size)
    tolerance = float(np.max(values)) * dim * np.finfo(np.float64).eps
    return int(np.count_nonzero(values > tolerance))


def matrix_entropy(evals: np.ndarray, rank: int) -> float:
    """weightwatcher's matrix entropy: ``-sum p ln p / ln(rank)``, ``p = lambda / sum(lambda) + 1e-10``.

    Args:
        evals: eigenvalues of ``W^T W``.
        rank: numerical rank (see :func:`matrix_rank`).

    Returns:
        The entropy (1 for a flat spectrum, near 0 for rank one); NaN if undefined.
    """
    values = np.asarray(evals, dtype=np.float64)
    total = float(np.sum(values))
    if values.size == 0 or not total > 0:
        return math.nan
    p = values / total + ENTROPY_EPSILON
    denominator = math.log(rank + ENTROPY_EPSILON) if rank > 0 else math.nan
    if not denominator or not math.isfinite(denominator):
        return math.nan
    return float(-np.sum(p * np.log(p)) / denominator)


def detx_constraint(evals: np.ndarray) -> tuple[int, float]:
    """The ERG / SETOL ``det X = 1`` tail.

    Eigenvalues are rescaled so their mean is 1; walking down from the largest, the tail is the
    first ``evals[idx:]`` whose product drops below 1 (log-sum below 0), as weightwatcher's
    ``detX_constraint``; like it, a spectrum with fewer than 2 or constant eigenvalues gives
    ``(0, evals[0])`` and a walk that never drops below 1 gives ``(len(evals), evals[1])``.

    Args:
        evals: eigenvalues sorted ascending.

    Returns:
        ``(detX_num, detX_val)``: tail size and the eigenvalue (original scale) where it starts.
    """
    values = np.asarray(evals, dtype=np.float64)
    count = int(values.size)
    if count == 0:
        return 0, math.nan
    if count < 2 or not values[0] < values[-1]:
        return 0, float(values[0])
    scaled = values * (count / float(np.sum(values)))
    with np.errstate(divide="ignore"):
        top_log_sums = np.cumsum(np.log(scaled[:0:-1]))  # sums over evals[idx:] for idx = count-1 .. 1
    below = np.flatnonzero(top_log_sums < 0.0)
    if below.size == 0:
        return count, float(values[1])
    idx = count - 1 - int(below[0])
    return count - idx, float(values[idx])


def _log_alpha_norm(values: np.ndarray, alpha: float) -> float:
    if not math.isfinite(alpha):
        return math.nan
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        total = float(np.sum(values**alpha))
        return float(np.log10(total)) if total > 0 else math.nan


def _empty(count: int, method: str, status: str, message: str) -> ESDMetrics:
    nan = math.nan
    return ESDMetrics(
        num_evals=count,
        lambda_max=nan,
        norm=nan,
        log_norm=nan,
        spectral_norm=nan,
        log_spectral_norm=nan,
        alpha=nan,
        alpha_weighted=nan,
        log_alpha_norm=nan,
        D=nan,
        sigma=nan,
        xmin=nan,
        xmax=nan,
        num_pl_spikes=0,
        stable_rank=nan,
        matrix_rank=0,
        entropy=nan,
        detX_num=0,
        detX_val=nan,
        fit=method,
        status=status,
        warning="",
        message=message,
    )
