from __future__ import annotations

import math

import numpy as np
import pytest

from alphaq.errors import ConfigError
from alphaq.evaluation.bootstrap import paired_bootstrap


def test_identical_models_give_a_zero_interval() -> None:
    nll = np.linspace(500.0, 700.0, 50)
    ci = paired_bootstrap(nll, nll, 255, resamples=200)
    assert ci.delta == 0.0 and ci.low == 0.0 and ci.high == 0.0 and not ci.significant


def test_constant_shift_is_significant_and_pairing_removes_text_variance() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(4.5, 0.6, 400) * 255  # windows of very different difficulty
    worse = base + 0.01 * 255 + rng.normal(0, 0.002 * 255, 400)  # a small, consistent damage
    ci = paired_bootstrap(worse, base, 255, resamples=500, seed=3)
    expected = math.exp(worse.sum() / (400 * 255)) - math.exp(base.sum() / (400 * 255))
    assert ci.delta == pytest.approx(expected) and ci.low > 0 and ci.significant
    assert ci.low < ci.delta < ci.high
    unpaired = paired_bootstrap(worse, np.roll(base, 1), 255, resamples=500, seed=3)  # pairing broken
    assert (unpaired.high - unpaired.low) > 5 * (ci.high - ci.low)


def test_same_seed_same_interval_and_bad_input() -> None:
    a, b = np.arange(10.0, 30.0), np.arange(11.0, 31.0)
    assert paired_bootstrap(a, b, 3, seed=7, resamples=100) == paired_bootstrap(a, b, 3, seed=7, resamples=100)
    with pytest.raises(ConfigError, match="one length"):
        paired_bootstrap(a, b[:-1], 3)
    with pytest.raises(ConfigError, match="at least 2 windows"):
        paired_bootstrap(a[:1], b[:1], 3)
