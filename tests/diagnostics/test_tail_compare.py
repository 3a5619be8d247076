"""Likelihood-ratio tail tests through powerlaw 2.0.0."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from alphaq.diagnostics.powerlaw_fit import fit_ww
from alphaq.diagnostics.tail_compare import compare_power_law


def test_power_law_sample_gives_finite_ratios_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    evals = np.random.default_rng(0).pareto(2.0, 2000) + 1.0  # a true power law, exponent 3
    fit = fit_ww(evals)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # powerlaw's warnings must not leak out
        result = compare_power_law(evals, fit.xmin)
    assert result.status == "success" and result.message == ""
    for value in (
        result.R_lognormal,
        result.p_lognormal,
        result.R_exponential,
        result.p_exponential,
        result.R_truncated,
        result.p_truncated,
    ):
        assert math.isfinite(value)
    assert result.R_exponential > 0  # a power law beats an exponential tail
    assert 0.0 <= result.p_lognormal <= 1.0 and 0.0 <= result.p_exponential <= 1.0
    assert result.p_truncated > 0.05  # no significant cut-off in a true power law
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_exponential_sample_prefers_exponential() -> None:
    evals = np.random.default_rng(1).exponential(1.0, 3000) + 1.0
    result = compare_power_law(evals, 1.0)
    assert result.status == "success"
    assert result.R_exponential < 0


def test_unusable_inputs_are_skipped_with_nan() -> None:
    evals = np.random.default_rng(2).pareto(2.0, 100) + 1.0
    for xmin, status in ((math.nan, "skipped"), (-1.0, "skipped"), (1e9, "skipped")):
        result = compare_power_law(evals, xmin)
        assert result.status == status and result.message
        assert all(
            math.isnan(v)
            for v in (
                result.R_lognormal,
                result.p_lognormal,
                result.R_exponential,
                result.p_exponential,
                result.R_truncated,
                result.p_truncated,
            )
        )
    assert set(compare_power_law(evals, 1.0).to_dict()) == {
        "R_lognormal",
        "p_lognormal",
        "R_exponential",
        "p_exponential",
        "R_truncated",
        "p_truncated",
        "status",
        "message",
    }


def test_powerlaw_errors_give_failed_status(monkeypatch: pytest.MonkeyPatch) -> None:
    import powerlaw

    def broken_fit(*args: object, **kwargs: object) -> None:
        raise ValueError("no convergence")

    monkeypatch.setattr(powerlaw, "Fit", broken_fit)
    result = compare_power_law(np.random.default_rng(3).pareto(2.0, 200) + 1.0, 1.0)
    assert result.status == "failed" and "no convergence" in result.message
    assert math.isnan(result.R_lognormal) and math.isnan(result.p_exponential)
