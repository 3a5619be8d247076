"""The pruned KS search against the brute-force distance of every xmin candidate."""

from __future__ import annotations

import numpy as np
import pytest

from alphaq.diagnostics.ks_search import ks_search


def _brute_force(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """alphas, tails and every candidate's KS distance (weightwatcher's definition, D = 1 where alpha <= 1)."""
    count = x.size
    tails = (count - np.arange(count - 1)).astype(np.float64)  # [C]
    logx = np.log(x)
    alphas = np.array([1.0 + tails[i] / (logx[i:].sum() - tails[i] * logx[i]) for i in range(count - 1)])
    distances = np.ones(count - 1)
    for i in np.flatnonzero(alphas > 1.0):
        n = count - i
        cdf = 1.0 - (x[i:] / x[i]) ** (1.0 - alphas[i])
        distances[i] = np.max(np.abs(np.arange(n) / n - cdf))
    return alphas, tails, distances


@pytest.mark.parametrize("seed, size", [(0, 300), (1, 1500), (2, 4000)])
def test_the_argmin_and_its_distance_are_exact(seed, size):
    """Large enough to take the pruned path (more than 2^15 candidate-point pairs): the candidates that can win
    get their exact distance, every other one a value above the minimum, so the argmin is the brute force's."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.pareto(2.5, size) + rng.random(size) * 0.5 + 0.01)  # [N] heavy tail over a bulk
    alphas, tails, exact = _brute_force(x)
    candidates = np.flatnonzero(alphas > 1.0)
    distances = np.ones(x.size - 1)
    ks_search(x, candidates, alphas, tails, distances)
    best = int(np.argmin(exact))
    assert int(np.argmin(distances)) == best
    assert distances[best] == pytest.approx(exact[best], rel=1e-12, abs=1e-15)
    assert np.all(distances[candidates] >= exact[candidates].min() - 1e-12)
