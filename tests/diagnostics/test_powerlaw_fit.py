"""fit_ww against weightwatcher 0.7.7's own WWFit, Hill, and fits of synthetic tails."""

from __future__ import annotations

import contextlib
import functools
import io
import math

import numpy as np
import pytest

from alphaq.diagnostics.powerlaw_fit import EVALS_THRESH, PowerLawFit, fit_hill, fit_power_law, fit_ww


def _wwfit(evals: np.ndarray):
    """weightwatcher's fit on the eigenvalues it would keep (its analyze() drops evals <= 1e-5)."""
    from weightwatcher.WW_powerlaw import WWFit

    kept = np.sort(evals[evals > EVALS_THRESH])
    with contextlib.redirect_stdout(io.StringIO()):  # its small-N path prints
        return WWFit(kept), kept


def _gram_spectrum(rng: np.random.Generator, rows: int, cols: int, kind: str) -> np.ndarray:
    if kind == "gauss":
        w = rng.standard_normal((rows, cols))
    else:
        w = rng.standard_t(float(kind), size=(rows, cols))
    return np.clip(np.linalg.eigvalsh(w @ w.T), 0.0, None)  # eigenvalues of W W^T = sigma(W)^2


@functools.lru_cache(maxsize=1)
def _spectra() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    return {
        "exponential_900": rng.exponential(1.0, 900),
        "lognormal_1500": rng.lognormal(0.0, 1.5, 1500),
        "pareto_a2.5_2000": rng.pareto(1.5, 2000) + 1.0,
        "pareto_a4_700": rng.pareto(3.0, 700) + 1.0,
        "bulk_plus_tail_1200": np.concatenate([rng.uniform(0.5, 2.0, 1100), 2.0 + 10.0 * rng.pareto(1.0, 100)]),
        "mp_gauss_256x700": _gram_spectrum(rng, 256, 700, "gauss"),
        "student_t2_300x300": _gram_spectrum(rng, 300, 300, "2.0"),
        "student_t3_128x512": _gram_spectrum(rng, 128, 512, "3.0"),
        "with_zeros_and_tiny": np.concatenate([np.zeros(40), np.full(5, 1e-6), rng.pareto(2.0, 400) + 0.5]),
        "ties": np.round(rng.pareto(1.5, 800) + 1.0, 1),
        "tied_top": np.concatenate([rng.pareto(2.0, 300) + 1.0, np.full(4, 500.0)]),
        "small_n_12": rng.pareto(2.0, 12) + 1.0,
        "small_n_19": rng.lognormal(0.0, 1.0, 19),
        "boundary_n_20": rng.pareto(1.5, 20) + 1.0,
        "min_n_8": rng.exponential(1.0, 8),
    }


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # weightwatcher's own, on tied tops
@pytest.mark.parametrize("name", list(_spectra()))
def test_fit_ww_equals_weightwatcher_wwfit(name: str) -> None:
    evals = _spectra()[name]
    reference, kept = _wwfit(evals)
    fit = fit_ww(evals)

    assert fit.status == "success" and fit.method == "ww"
    assert fit.xmin == reference.xmin
    assert abs(fit.alpha - reference.alpha) <= 1e-9 * abs(reference.alpha)
    assert abs(fit.D - reference.D) <= 1e-9 * max(reference.D, 1e-3)
    assert abs(fit.sigma - reference.sigma) <= 1e-9 * abs(reference.sigma)
    assert fit.xmax == kept[-1]
    assert fit.num_evals == kept.size
    assert fit.num_pl_spikes == int(np.count_nonzero(evals >= reference.xmin))


def test_fit_ww_many_random_spectra_match_weightwatcher() -> None:
    """The pruned KS search returns weightwatcher's argmin on many shapes of spectra."""
    rng = np.random.default_rng(7)
    for trial in range(30):
        n = int(rng.integers(21, 1200))
        kind = trial % 3
        if kind == 0:
            evals = rng.pareto(rng.uniform(0.8, 4.0), n) + 1.0
        elif kind == 1:
            evals = rng.lognormal(0.0, rng.uniform(0.3, 2.0), n)
        else:
            evals = np.concatenate([rng.chisquare(4, n), 20.0 * (rng.pareto(1.2, n // 8 + 1) + 1.0)])
        reference, _ = _wwfit(evals)
        fit = fit_ww(evals)
        assert fit.xmin == reference.xmin, trial
        assert abs(fit.alpha - reference.alpha) <= 1e-9 * reference.alpha, trial


def test_fit_ww_is_order_independent() -> None:
    evals = np.random.default_rng(3).pareto(2.0, 500) + 1.0
    assert fit_ww(evals) == fit_ww(evals[::-1].copy())


@pytest.mark.parametrize("a", [2.0, 3.0, 4.0])
def test_fit_ww_recovers_pareto_exponent(a: float) -> None:
    # density ~ x^-a  <=>  numpy's Lomax shape a - 1, shifted to start at 1
    evals = np.random.default_rng(int(a * 10)).pareto(a - 1.0, 4000) + 1.0
    fit = fit_ww(evals)
    assert abs(fit.alpha - a) < 0.2
    assert fit.xmin < 1.5  # the whole sample is a power law: the tail starts near the bottom


def test_student_t_weights_are_heavy_tailed_gaussian_are_not() -> None:
    for seed in range(3):
        rng = np.random.default_rng(seed)
        heavy = fit_ww(_gram_spectrum(rng, 256, 768, "2.0"))
        light = fit_ww(_gram_spectrum(np.random.default_rng(seed), 256, 768, "gauss"))
        assert 2.0 < heavy.alpha < 4.0
        assert light.alpha > 4.0


def test_hill_recovers_pareto_exponent_and_matches_formula() -> None:
    evals = np.random.default_rng(11).pareto(2.0, 5000) + 1.0  # tail exponent 3
    fit = fit_hill(evals)
    k = max(10, int(0.1 * evals.size))
    top = np.sort(evals)[::-1]
    expected = 1.0 + k / np.sum(np.log(top[:k] / top[k]))
    assert fit.status == "success" and fit.method == "hill"
    assert fit.alpha == pytest.approx(expected, rel=1e-12)
    assert abs(fit.alpha - 3.0) < 0.3
    assert fit.xmin == top[k] and fit.num_pl_spikes == k + 1
    assert fit.sigma == pytest.approx((fit.alpha - 1.0) / math.sqrt(k))
    assert 0.0 < fit.D < 0.2


def test_hill_small_k_and_minimum_k() -> None:
    evals = np.arange(1.0, 51.0)
    assert fit_hill(evals).num_pl_spikes == 11  # k = max(10, 5) = 10, plus xmin
    assert fit_hill(evals, k=5).num_pl_spikes == 6
    assert fit_hill(evals, k=500).num_pl_spikes == 50  # clamped to n - 1
    with pytest.raises(ValueError):
        fit_hill(evals, k=0)


def _assert_not_fitted(fit: PowerLawFit, status: str) -> None:
    assert fit.status == status
    assert fit.message
    for value in (fit.alpha, fit.xmin, fit.D, fit.sigma):
        assert math.isnan(value)
    assert fit.num_pl_spikes == 0
    assert not fit.ok


def test_failed_and_skipped_fits_carry_nan_and_status() -> None:
    _assert_not_fitted(fit_ww(np.array([1.0, 2.0, 3.0])), "skipped")
    _assert_not_fitted(fit_ww(np.zeros(100)), "skipped")  # all below the 1e-5 threshold
    _assert_not_fitted(fit_ww(np.array([1.0, np.nan] * 20)), "failed")
    _assert_not_fitted(fit_ww(np.full(50, 3.0)), "failed")  # constant spectrum: no finite alpha
    _assert_not_fitted(fit_hill(np.array([1.0])), "skipped")
    _assert_not_fitted(fit_hill(np.full(30, 2.0)), "failed")
    _assert_not_fitted(fit_hill(np.array([np.inf, 1.0, 2.0])), "failed")


def test_dispatcher() -> None:
    evals = np.random.default_rng(5).pareto(2.0, 300) + 1.0
    assert fit_power_law(evals, "ww") == fit_ww(evals)
    assert fit_power_law(evals, "hill") == fit_hill(evals)
    with pytest.raises(ValueError):
        fit_power_law(evals, "mle")  # type: ignore[arg-type]
