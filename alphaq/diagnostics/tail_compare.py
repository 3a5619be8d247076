"""Is the fitted tail really a power law? Likelihood-ratio tests against lognormal, exponential and truncated
power-law tails with powerlaw 2.0.0 (``Fit.distribution_compare``): the ``--tail-test`` of ``alphaq inspect``.

``R > 0`` favours the power law, ``R < 0`` the alternative; ``p`` is the significance of the sign of ``R``
(Vuong's test; for the truncated power law, which nests the power law, the likelihood-ratio test of nested
models): a small p means the sign is meaningful. The power law's alpha range is opened to ``[1, inf)``:
powerlaw's default ``[0, 3]`` silently clamps alphas above 3. Cost, measured on a 2048x4096 Student-t matrix
(217 tail eigenvalues, this 2-core CPU): lognormal 0.18 s, exponential 0.006 s, truncated power law 0.7 s.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TailComparison:
    """Log-likelihood ratios (power law vs alternative) on the tail ``x >= xmin``.

    Attributes:
        R_lognormal: log-likelihood ratio power law / lognormal (NaN if failed).
        p_lognormal: its p-value.
        R_exponential: log-likelihood ratio power law / exponential.
        p_exponential: its p-value.
        R_truncated: log-likelihood ratio power law / truncated power law (``R < 0`` with a small p: the tail bends
            down, an exponential cut-off fits better).
        p_truncated: its p-value (nested models).
        status: ``"success"``, ``"failed"`` or ``"skipped"``.
        message: why it failed or was skipped.
    """

    R_lognormal: float
    p_lognormal: float
    R_exponential: float
    p_exponential: float
    R_truncated: float
    p_truncated: float
    status: str
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)


#: Fewest tail eigenvalues worth a likelihood-ratio test.
MIN_TAIL = 5
#: The ratios and p-values, also the names of the details columns ``alphaq inspect --tail-test`` adds.
TAIL_COLUMNS = ("R_lognormal", "p_lognormal", "R_exponential", "p_exponential", "R_truncated", "p_truncated")


def compare_power_law(evals: np.ndarray, xmin: float) -> TailComparison:
    """Compare the power-law tail ``evals >= xmin`` with lognormal, exponential and truncated power-law tails.

    powerlaw's prints and warnings are silenced inside this call only (no global filter).

    Args:
        evals: eigenvalues (any order).
        xmin: start of the tail, e.g. ``PowerLawFit.xmin``.

    Returns:
        The comparison; status ``"skipped"`` for a NaN/non-positive xmin or fewer than
        :data:`MIN_TAIL` tail values, ``"failed"`` if powerlaw raises or returns non-finite ratios.
    """
    values = np.asarray(evals, dtype=np.float64).ravel()
    if not (math.isfinite(xmin) and xmin > 0):
        return _not_compared("skipped", f"no valid xmin ({xmin})")
    values = values[np.isfinite(values) & (values > 0)]
    tail = int(np.count_nonzero(values >= xmin))
    if tail < MIN_TAIL:
        return _not_compared("skipped", f"{tail} eigenvalues >= xmin, fewer than {MIN_TAIL}")

    import powerlaw

    sink = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
            warnings.catch_warnings(),
            np.errstate(all="ignore"),
        ):
            warnings.simplefilter("ignore")
            fit = powerlaw.Fit(values, xmin=float(xmin), parameter_ranges={"alpha": [1, None]}, verbose=0)
            r_log, p_log = fit.distribution_compare("power_law", "lognormal")
            r_exp, p_exp = fit.distribution_compare("power_law", "exponential")
            r_tpl, p_tpl = fit.distribution_compare("power_law", "truncated_power_law", nested=True)
    except (ValueError, ArithmeticError, RuntimeError, IndexError, TypeError) as error:
        return _not_compared("failed", f"powerlaw raised {type(error).__name__}: {error}")
    result = tuple(float(v) for v in (r_log, p_log, r_exp, p_exp, r_tpl, p_tpl))
    if not all(math.isfinite(v) for v in result):
        return _not_compared("failed", "powerlaw returned a non-finite ratio or p-value")
    return TailComparison(*result, status="success")


def _not_compared(status: str, message: str) -> TailComparison:
    return TailComparison(*(math.nan,) * len(TAIL_COLUMNS), status=status, message=message)
