"""Power-law fits of an eigenvalue spectrum's tail.

* ``fit_ww``: weightwatcher 0.7.7's default fit (``WWFit``, ``pl_package='ww'``) reproduced to the
  same alpha, xmin and D, in O(N log N) + a pruned KS search instead of its O(N^2) loop.
* ``fit_hill``: the Hill estimator of the AlphaQ paper's code.

Both take eigenvalues (any order) and return a frozen :class:`PowerLawFit`; a fit that cannot be
made carries NaN values and a ``status`` of ``"failed"`` or ``"skipped"`` (never ``-1``).

How ``fit_ww`` reproduces weightwatcher (``weightwatcher/WW_powerlaw.py`` and ``fit_powerlaw`` in
``weightwatcher.py``, version 0.7.7, CPU build):

* eigenvalues ``<= EVALS_THRESH`` (1e-5) are dropped, the rest sorted ascending: ``x[0..N-1]``;
* every eigenvalue but the largest is an xmin candidate ``i`` with tail ``x[i..N-1]`` of size
  ``n = N - i`` (tied values are separate candidates, as in weightwatcher);
* ``alpha_i = 1 + n / (sum_{j>=i} ln x_j - n ln x_i)``; here the suffix sums come from one
  cumulative sum (extended precision where the platform has it) instead of one sum per candidate;
* ``D_i = max_k |1 - (x_{i+k}/x_i)^(1-alpha_i) - k/n|``, k = 0..n-1 (lower empirical CDF), and
  ``D_i = 1`` where ``alpha_i <= 1``; the fit is the first candidate with the smallest ``D_i``;
  ``sigma = (alpha - 1) / sqrt(n)``;
* with ``N < 20`` eigenvalues: ``alpha_i = 1 + (n-1)/sum ln(x/x_i)``, candidates need ``n >= 8`` and
  ``sum ln > 1e-12``; weightwatcher computes an objective ``D_i - 0.868/sqrt(n)`` but its
  ``WWFit.__init__`` then re-selects by ``argmin(D_i)``, so the smallest D wins (verified against
  0.7.7's results).

The KS search is exact, not approximate: :mod:`alphaq.diagnostics.ks_search` evaluates only the points that
can decide the argmin (23-45x faster than ``WWFit`` on Gaussian and Student-t spectra of 1024-4096 eigenvalues,
11-17x on a pure Pareto sample: ``bench/results/ks_search_vs_wwfit.json``).
Deviation: for ``N < 8`` eigenvalues weightwatcher still returns a fit (its fallback); here the fit is
``"skipped"`` (``min_evals``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from alphaq.diagnostics.ks_search import ks_search

FitMethod = Literal["ww", "hill"]

#: weightwatcher 0.7.7's ``EVALS_THRESH`` on a CPU build (``EVALS_HALF_THRESH`` = 1e-4 only with CUDA).
EVALS_THRESH = 1e-5
#: Fewer eigenvalues than this switch weightwatcher to its small-N fit.
SMALL_N_CUTOFF = 20
#: Smallest tail of a small-N candidate.
SMALL_N_MIN_TAIL = 8
#: Fewest eigenvalues (above the threshold) that ``fit_ww`` fits; weightwatcher's ``min_evals``.
DEFAULT_MIN_EVALS = 8
#: Hill's default tail: ``k = max(HILL_MIN_K, floor(HILL_K_FRACTION * n))``.
HILL_MIN_K = 10
HILL_K_FRACTION = 0.1


@dataclass(frozen=True)
class PowerLawFit:
    """A power-law fit of the tail ``x >= xmin`` of an eigenvalue spectrum.

    Attributes:
        alpha: exponent of the density ``p(x) ~ x^-alpha`` (NaN unless successful).
        xmin: start of the fitted tail.
        xmax: largest eigenvalue fitted.
        D: Kolmogorov-Smirnov distance between the tail and the fitted power law.
        sigma: standard error of alpha, ``(alpha - 1) / sqrt(tail size)``.
        num_pl_spikes: eigenvalues ``>= xmin`` (weightwatcher's column; ties at xmin included).
        num_evals: eigenvalues the fit saw (after the ``EVALS_THRESH`` filter for ``ww``).
        method: ``"ww"`` or ``"hill"``.
        status: ``"success"``, ``"failed"`` or ``"skipped"``.
        message: why the fit failed or was skipped ("" on success).
    """

    alpha: float
    xmin: float
    xmax: float
    D: float
    sigma: float
    num_pl_spikes: int
    num_evals: int
    method: str
    status: str
    message: str = ""

    @property
    def ok(self) -> bool:
        """Whether the fit succeeded."""
        return self.status == "success"

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


def _not_fitted(method: str, status: str, message: str, num_evals: int, xmax: float = math.nan) -> PowerLawFit:
    return PowerLawFit(
        alpha=math.nan,
        xmin=math.nan,
        xmax=xmax,
        D=math.nan,
        sigma=math.nan,
        num_pl_spikes=0,
        num_evals=num_evals,
        method=method,
        status=status,
        message=message,
    )


def fit_power_law(evals: np.ndarray, method: FitMethod = "ww") -> PowerLawFit:
    """Fit a power law to the tail of ``evals`` with the chosen estimator.

    Args:
        evals: eigenvalues (any order).
        method: ``"ww"`` (weightwatcher's KS criterion) or ``"hill"`` (AlphaQ's Hill estimator).

    Returns:
        The fit.

    Raises:
        ValueError: unknown ``method``.
    """
    if method == "ww":
        return fit_ww(evals)
    if method == "hill":
        return fit_hill(evals)
    raise ValueError(f"unknown fit method {method!r}; use 'ww' or 'hill'")


# -- weightwatcher's fit -------------------------------------------------------------------------


def fit_ww(evals: np.ndarray, *, min_evals: int = DEFAULT_MIN_EVALS) -> PowerLawFit:
    """weightwatcher 0.7.7's default power-law fit (``WWFit``), same alpha, xmin and D.

    Args:
        evals: eigenvalues (any order); values ``<= 1e-5`` are ignored as weightwatcher does.
        min_evals: fewest eigenvalues above the threshold to fit (at least 2); fewer give
            status ``"skipped"``.

    Returns:
        The fit (``method="ww"``); status ``"failed"`` for non-finite eigenvalues or a degenerate
        tail (all candidate tails constant), ``"skipped"`` for too few eigenvalues.
    """
    values = np.asarray(evals, dtype=np.float64).ravel()
    if not np.all(np.isfinite(values)):
        return _not_fitted("ww", "failed", "eigenvalues hold NaN or Inf", int(values.size))
    x = np.sort(values[values > EVALS_THRESH])
    count = int(x.size)
    xmax = float(x[-1]) if count else math.nan
    needed = max(2, int(min_evals))
    if count < needed:
        return _not_fitted(
            "ww", "skipped", f"{count} eigenvalues above {EVALS_THRESH:g}, fewer than {needed} to fit", count, xmax
        )

    if count < SMALL_N_CUTOFF:
        best, alpha, distance = _select_small_n(x)
    else:
        best, alpha, distance = _select_standard(x)
    if best < 0 or not math.isfinite(alpha) or alpha <= 1.0:
        return _not_fitted("ww", "failed", "degenerate spectrum: no tail with a finite power-law exponent", count, xmax)
    tail = count - best
    xmin = float(x[best])
    return PowerLawFit(
        alpha=float(alpha),
        xmin=xmin,
        xmax=xmax,
        D=float(distance),
        sigma=float((alpha - 1.0) / math.sqrt(tail)),
        num_pl_spikes=int(count - np.searchsorted(x, xmin, side="left")),
        num_evals=count,
        method="ww",
        status="success",
    )


def _suffix_log_sums(logx: np.ndarray) -> np.ndarray:
    """``out[i] = sum_{j >= i} logx[j]``, accumulated in extended precision where available."""
    wide = logx[::-1].astype(np.longdouble)
    return np.cumsum(wide)[::-1].astype(np.float64)


def _ww_distance(x: np.ndarray, i: int, alpha: float) -> float:
    """weightwatcher's KS distance of candidate ``i``, with its own expression."""
    n = float(x.size - i)
    return float(np.max(np.abs(1 - (x[i:] / x[i]) ** (-alpha + 1) - np.arange(n) / n)))


def _select_small_n(x: np.ndarray) -> tuple[int, float, float]:
    """weightwatcher's small-N fit (N < 20): returns (candidate index, alpha, D).

    ``WWFit.fit_powerlaw_smallN`` ranks candidates by ``D - 0.868/sqrt(n)``, but ``WWFit.__init__``
    then overrides that choice with ``argmin(Ds)`` (``Ds`` = 1 where no fit was made), so the
    effective rule is the smallest D among tails of at least 8 points with the bias-corrected alpha.
    """
    count = x.size
    logx = np.log(x)
    alphas = np.zeros(count - 1)
    distances = np.ones(count - 1)
    fitted = False
    for i in range(count - 1):
        n = count - i
        if n < SMALL_N_MIN_TAIL:
            continue
        s = np.sum(logx[i:]) - float(n) * logx[i]
        if s <= 1e-12:
            continue
        alpha = 1.0 + (n - 1.0) / s
        alphas[i] = alpha
        if alpha <= 1.0:
            continue
        distances[i] = _small_n_distance(x, i, alpha)
        fitted = True
    if not fitted:
        # weightwatcher's fallback: the whole spectrum as the tail
        n = count
        s = np.sum(logx) - float(n) * logx[0]
        if s <= 1e-12:
            return -1, math.nan, math.nan
        alphas[0] = 1.0 + (n - 1.0) / s
        distances[0] = _small_n_distance(x, 0, alphas[0])
    best = int(np.argmin(distances))
    return best, float(alphas[best]), float(distances[best])


def _small_n_distance(x: np.ndarray, i: int, alpha: float) -> float:
    n = x.size - i
    fitted_cdf = 1.0 - (x[i:] / x[i]) ** (1.0 - alpha)
    return float(np.max(np.abs(np.arange(n, dtype=np.float64) / float(n) - fitted_cdf)))


def _select_standard(x: np.ndarray) -> tuple[int, float, float]:
    """weightwatcher's standard fit (N >= 20): returns (candidate index, alpha, D)."""
    count = x.size
    logx = np.log(x)
    tails = (count - np.arange(count - 1)).astype(np.float64)  # [C] tail size per candidate
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = _suffix_log_sums(logx)[:-1] - tails * logx[:-1]
        # constant tails (every value equal to the largest): weightwatcher's own sum, bit for bit
        for i in np.flatnonzero(x[:-1] == x[-1]):
            s[i] = np.sum(logx[i:]) - tails[i] * logx[i]
        alphas = 1.0 + tails / s
    valid = alphas > 1.0
    distances = np.ones(count - 1)  # weightwatcher's D for alpha <= 1
    candidates = np.flatnonzero(valid)
    if candidates.size:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ks_search(x, candidates, alphas, tails, distances)
    best = int(np.argmin(distances))
    alpha = float(alphas[best])
    if valid[best] and math.isfinite(alpha):
        distances_best = _ww_distance(x, best, alpha)
    else:
        distances_best = float(distances[best])
    return best, alpha, distances_best


# -- Hill ----------------------------------------------------------------------------------------


def fit_hill(evals: np.ndarray, *, k: int | None = None) -> PowerLawFit:
    """The AlphaQ paper's Hill estimator of the tail exponent.

    With eigenvalues sorted descending ``l_(1) >= l_(2) >= ...`` and ``k = max(10, floor(0.1 n))``
    (clamped to ``n - 1``): ``alpha = 1 + k / sum_{i<=k} ln(l_(i) / l_(k+1))``, ``xmin = l_(k+1)``.
    No eigenvalue threshold (as in the AlphaQ code). ``D`` is the KS distance (weightwatcher's
    expression) of the fitted law on the ``k + 1`` eigenvalues ``>= xmin``; ``sigma = (alpha-1)/sqrt(k)``.

    Args:
        evals: eigenvalues (any order).
        k: tail size; None for the default.

    Returns:
        The fit (``method="hill"``); ``"skipped"`` with fewer than 2 eigenvalues, ``"failed"`` for
        non-finite input or a degenerate tail (all top-k eigenvalues equal to ``l_(k+1)``, or
        ``l_(k+1) <= 0``).

    Raises:
        ValueError: ``k < 1``.
    """
    if k is not None and k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    values = np.asarray(evals, dtype=np.float64).ravel()
    n = int(values.size)
    if not np.all(np.isfinite(values)):
        return _not_fitted("hill", "failed", "eigenvalues hold NaN or Inf", n)
    if n < 2:
        return _not_fitted("hill", "skipped", f"{n} eigenvalues, fewer than 2 to fit", n)
    x = np.sort(values)
    xmax = float(x[-1])
    k_used = max(HILL_MIN_K, int(math.floor(HILL_K_FRACTION * n))) if k is None else int(k)
    k_used = max(1, min(k_used, n - 1))
    xmin = float(x[n - k_used - 1])
    if xmin <= 0.0:
        return _not_fitted(
            "hill", "failed", f"the ({k_used}+1)-th largest eigenvalue is {xmin:g}, not positive", n, xmax
        )
    top = x[n - k_used :]
    denominator = float(np.sum(np.log(top / xmin)))
    if not denominator > 1e-12:
        return _not_fitted("hill", "failed", "degenerate tail: the top eigenvalues equal xmin", n, xmax)
    alpha = 1.0 + k_used / denominator
    tail = x[n - k_used - 1 :]
    m = float(tail.size)
    distance = float(np.max(np.abs(1.0 - (tail / xmin) ** (1.0 - alpha) - np.arange(m) / m)))
    return PowerLawFit(
        alpha=float(alpha),
        xmin=xmin,
        xmax=xmax,
        D=distance,
        sigma=float((alpha - 1.0) / math.sqrt(k_used)),
        num_pl_spikes=int(np.count_nonzero(x >= xmin)),
        num_evals=n,
        method="hill",
        status="success",
    )
