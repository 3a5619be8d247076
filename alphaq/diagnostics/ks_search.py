"""The exact minimum of the KS distance over a power-law fit's xmin candidates, without evaluating every point.

The KS search (exact, not approximate) evaluates ``g_i(k) = |F_i(x_{i+k}) - k/n|`` only where it can
decide the argmin. Sampled on a grid of k, the largest sample is a lower bound of ``D_i``; since the
fitted CDF ``F_i`` and the empirical CDF both rise with k, the two samples around an interval bound
every deviation inside it. (1) A 33-point grid for every candidate; the exact D of the few most
promising candidates gives ``best``, an upper bound of the minimum; candidates whose lower bound
exceeds ``best`` are out. (2) A 257-point grid for the rest, same test. (3) The survivors, in order
of their lower bound until it exceeds ``best``, get their exact D from the points of the intervals
whose bound exceeds their sampled maximum. The winner's D is recomputed over its whole tail with
weightwatcher's own expression. Measured against weightwatcher 0.7.7's ``WWFit`` on the same spectra (same xmin,
alpha and D; ``bench/ks_search_vs_wwfit.py`` -> ``bench/results/ks_search_vs_wwfit.json``, one fit at a time on a
shared 2-core CPU): Gaussian and Student-t(3) weight spectra of N = 1024-4096 eigenvalues 23-45x faster (0.7-7 ms
against 22-212 ms); a pure Pareto sample, whose D is flat over thousands of candidates, 11-17x (1.7-16 ms).

Used by :func:`alphaq.diagnostics.powerlaw_fit.fit_ww`; pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SLACK = 1e-12  # allowance for rounding in the KS bounds (values are within [0, 1])
_COARSE_POINTS = 32  # first grid: intervals per candidate
_FINE_POINTS = 256  # second grid, for the survivors of the first
_SEEDS = 4  # candidates (by lowest lower and by lowest upper bound) whose exact D seeds the search
_FULL_SEARCH_MAX = 1 << 15  # below this many (candidate, point) pairs, evaluate everything
_CHUNK_ELEMENTS = 1 << 20


def ks_search(
    x: np.ndarray, candidates: np.ndarray, alphas: np.ndarray, tails: np.ndarray, distances: np.ndarray
) -> None:
    """Write into ``distances`` the exact KS distance of every candidate that can be the argmin, and
    for the others a value above the minimum (their lower bound, or the minimum + a margin).

    Args:
        x: eigenvalues, ascending (float64) [N].
        candidates: xmin candidates to search (indices into ``x`` with ``alphas > 1``) [C].
        alphas: the fitted exponent of every candidate [N - 1].
        tails: tail size ``N - i`` of every candidate [N - 1].
        distances: [N - 1], written at ``candidates``.
    """
    exponents = 1.0 - alphas
    if float(np.sum(tails[candidates])) <= _FULL_SEARCH_MAX:
        distances[candidates] = _exact_distances(x, candidates, exponents, tails)
        return

    exact: dict[int, float] = {}
    lower = np.zeros(distances.size)
    # 1. coarse grid for every candidate; exact distances of the most promising few give an upper
    #    bound ``best`` of the minimum (much tighter than the grid's own upper bounds)
    grid = _sample_grid(x, candidates, exponents, tails, _COARSE_POINTS)
    lower[candidates] = grid.lower
    seeds = np.unique(
        np.concatenate(
            [
                candidates[np.argsort(grid.lower, kind="stable")[:_SEEDS]],
                candidates[np.argsort(grid.upper, kind="stable")[:_SEEDS]],
            ]
        )
    )
    for c, d in zip(seeds.tolist(), _exact_distances(x, seeds, exponents, tails).tolist()):
        exact[c] = d
    best = min(exact.values())
    alive = candidates[grid.lower - _SLACK <= best]
    # 2. fine grid for the survivors
    grid = _sample_grid(x, alive, exponents, tails, _FINE_POINTS)
    lower[alive] = np.maximum(lower[alive], grid.lower)
    keep = lower[alive] - _SLACK <= best
    alive, grid = alive[keep], grid.subset(keep)
    # 3. exact distances of the survivors in order of their lower bound, until the next bound exceeds
    #    the best distance found
    order = np.argsort(lower[alive], kind="stable")
    start, step = 0, 8
    while start < order.size and lower[alive[order[start]]] - _SLACK <= best:
        rows = order[start : start + step]
        values = _refine(x, grid, rows, exponents, tails, lower[alive[rows]])
        for c, d in zip(alive[rows].tolist(), values.tolist()):
            exact[c] = d
        best = min(best, float(np.min(values)))
        start += rows.size
        step *= 2
    # everything not computed exactly has a lower bound above ``best``
    distances[candidates] = np.maximum(lower[candidates], best + 2 * _SLACK)
    known = np.fromiter(exact.keys(), dtype=np.int64, count=len(exact))
    distances[known] = np.fromiter(exact.values(), dtype=np.float64, count=len(exact))


@dataclass(frozen=True)
class _Grid:
    """KS deviations of some candidates sampled at ``points + 1`` tail positions each (column s is
    candidate s; rows are sample points)."""

    candidates: np.ndarray  # [S]
    positions: np.ndarray  # [P, S] tail offsets k, non-decreasing down a column
    lower: np.ndarray  # [S] max deviation over the samples
    upper: np.ndarray  # [S] bound on the deviation anywhere in the tail
    interval_upper: np.ndarray  # [P-1, S] bound on the deviation inside each interval (without slack)

    def subset(self, keep: np.ndarray) -> _Grid:
        return _Grid(
            self.candidates[keep],
            self.positions[:, keep],
            self.lower[keep],
            self.upper[keep],
            self.interval_upper[:, keep],
        )


def _sample_grid(x: np.ndarray, candidates: np.ndarray, exponents: np.ndarray, tails: np.ndarray, points: int) -> _Grid:
    sizes = x.size - candidates  # [S]
    positions = ((sizes - 1)[None, :] * np.arange(points + 1)[:, None]) // points  # [P, S]
    n = tails[candidates]  # [S]
    ecdf = positions / n  # [P, S]
    cdf = np.take(x, positions + candidates)
    cdf /= x[candidates]
    cdf **= exponents[candidates]
    np.subtract(1.0, cdf, out=cdf)  # fitted CDF, [P, S]
    lower = np.abs(cdf - ecdf).max(axis=0)
    # inside (k_a, k_b): ecdf in [(k_a+1)/n, (k_b-1)/n] and cdf in [cdf_a, cdf_b]; for a closed
    # interval (k_b - k_a < 2) the same expression is below the endpoint deviations
    interval_upper = cdf[1:] - ecdf[:-1]
    np.maximum(interval_upper, ecdf[1:] - cdf[:-1], out=interval_upper)
    interval_upper -= 1.0 / n
    upper = np.maximum(lower, interval_upper.max(axis=0)) + 2 * _SLACK
    return _Grid(candidates, positions, lower, upper, interval_upper)


def _refine(
    x: np.ndarray, grid: _Grid, rows: np.ndarray, exponents: np.ndarray, tails: np.ndarray, lower: np.ndarray
) -> np.ndarray:
    """Exact KS distances of ``grid.candidates[rows]``: evaluates every point of the intervals that
    could hold a deviation above the sampled maximum ``lower``."""
    result = lower.astype(np.float64).copy()
    positions = grid.positions[:, rows]  # [P, R]
    wide = (positions[1:] - positions[:-1]) >= 2
    j_idx, r_idx = np.nonzero(wide & (grid.interval_upper[:, rows] + _SLACK > lower[None, :]))  # intervals to evaluate
    if r_idx.size == 0:
        return result
    ka = positions[j_idx, r_idx] + 1
    kb = positions[j_idx + 1, r_idx]  # exclusive
    widths = kb - ka
    starts = grid.candidates[rows][r_idx]
    for lo, hi in _chunks(widths):
        w = widths[lo:hi]
        offsets = np.cumsum(w) - w
        total = int(w.sum())
        k = np.repeat(ka[lo:hi], w) + (np.arange(total) - np.repeat(offsets, w))
        i = np.repeat(starts[lo:hi], w)
        dev = np.abs(1.0 - (x[i + k] / x[i]) ** exponents[i] - k / tails[i])
        interval_max = np.maximum.reduceat(dev, offsets)
        np.maximum.at(result, r_idx[lo:hi], interval_max)
    return result


def _exact_distances(x: np.ndarray, candidates: np.ndarray, exponents: np.ndarray, tails: np.ndarray) -> np.ndarray:
    """Every KS distance of ``candidates`` over their whole tails (for small problems)."""
    sizes = x.size - candidates
    out = np.empty(candidates.size)
    for lo, hi in _chunks(sizes):
        w = sizes[lo:hi]
        offsets = np.cumsum(w) - w
        total = int(w.sum())
        k = np.arange(total) - np.repeat(offsets, w)
        i = np.repeat(candidates[lo:hi], w)
        dev = np.abs(1.0 - (x[i + k] / x[i]) ** exponents[i] - k / tails[i])
        out[lo:hi] = np.maximum.reduceat(dev, offsets)
    return out


def _chunks(sizes: np.ndarray) -> list[tuple[int, int]]:
    """Split rows into consecutive ranges of about ``_CHUNK_ELEMENTS`` elements (at least one row)."""
    bounds, start = [], 0
    cumulative = np.cumsum(sizes)
    while start < sizes.size:
        base = cumulative[start - 1] if start else 0
        stop = int(np.searchsorted(cumulative, base + _CHUNK_ELEMENTS, side="right"))
        stop = max(stop, start + 1)
        bounds.append((start, stop))
        start = stop
    return bounds


__all__ = ["ks_search"]
