"""Paired bootstrap over evaluation windows: a confidence interval on a perplexity (or mean KL divergence) difference.

Two models scored on the same windows give per-window NLL sums ``a_i`` and ``b_i`` over the same ``t_i`` tokens.
A resample draws ``n`` window indices with replacement and recomputes both perplexities on it,
``exp(sum a* / sum t*) - exp(sum b* / sum t*)``; the percentile interval of these differences is the CI. Pairing
(the same indices for both models) removes the window-to-window variation of the text itself, which dwarfs the
difference between two quantized models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from alphaq.errors import ConfigError

#: Resamples of :func:`paired_bootstrap` (the Monte-Carlo error of a 95 % percentile bound is then ~1 % of its width).
DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class BootstrapCI:
    """A perplexity difference ``ppl(a) - ppl(b)`` with its paired-bootstrap interval.

    Attributes:
        delta: the difference on all windows.
        low: lower bound of the interval.
        high: upper bound.
        level: coverage (0.95).
        resamples: bootstrap resamples.
        windows: windows paired.
        significant: the interval excludes 0.
    """

    delta: float
    low: float
    high: float
    level: float
    resamples: int
    windows: int

    @property
    def significant(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def to_dict(self) -> dict[str, float | int | bool]:
        """JSON-ready record (``significant`` included)."""
        return {
            "delta": self.delta,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "resamples": self.resamples,
            "windows": self.windows,
            "significant": self.significant,
        }


def paired_bootstrap(
    nll_a: Sequence[float],
    nll_b: Sequence[float],
    tokens: Sequence[int] | int,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapCI:
    """Percentile interval of ``ppl(a) - ppl(b)`` over paired window resamples.

    Args:
        nll_a: per-window NLL sums (nats) of model a, ``[n]``.
        nll_b: the same windows scored by model b, ``[n]``.
        tokens: scored tokens per window, ``[n]`` (or one count for every window).
        resamples: bootstrap resamples.
        seed: seed of the resampling (the same seed pairs every comparison of one run on the same draws).
        level: coverage of the interval, in (0, 1).

    Returns:
        The :class:`BootstrapCI`.

    Raises:
        ConfigError: mismatched lengths, fewer than 2 windows, or a level/resample count out of range.
    """
    return _paired_interval(nll_a, nll_b, tokens, np.exp, resamples=resamples, seed=seed, level=level)


def paired_mean_bootstrap(
    sum_a: Sequence[float],
    sum_b: Sequence[float],
    tokens: Sequence[int] | int,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> BootstrapCI:
    """Percentile interval of a difference of per-token means, ``mean(a) - mean(b)``, over paired window resamples.

    The statistic of KL divergence (or any per-token quantity): ``sum a* / sum t* - sum b* / sum t*``. With
    ``sum_b`` all zeros it is the interval of ``mean(a)`` itself.

    Args:
        sum_a: per-window sums of the per-token quantity for model a, ``[n]``.
        sum_b: the same windows for model b, ``[n]``.
        tokens: scored tokens per window, ``[n]`` (or one count for every window).
        resamples: bootstrap resamples.
        seed: seed of the resampling.
        level: coverage of the interval, in (0, 1).

    Returns:
        The :class:`BootstrapCI`.

    Raises:
        ConfigError: mismatched lengths, fewer than 2 windows, or a level/resample count out of range.
    """
    return _paired_interval(sum_a, sum_b, tokens, None, resamples=resamples, seed=seed, level=level)


def _paired_interval(
    sum_a: Sequence[float],
    sum_b: Sequence[float],
    tokens: Sequence[int] | int,
    transform: Callable[[np.ndarray], np.ndarray] | None,
    *,
    resamples: int,
    seed: int,
    level: float,
) -> BootstrapCI:
    a = np.asarray(sum_a, dtype=np.float64)  # [n]
    b = np.asarray(sum_b, dtype=np.float64)  # [n]
    if a.shape != b.shape or a.ndim != 1:
        raise ConfigError(f"paired bootstrap needs two per-window lists of one length, got {a.shape} and {b.shape}")
    t = np.broadcast_to(np.asarray(tokens, dtype=np.float64), a.shape)  # [n]
    if a.size < 2:
        raise ConfigError(f"paired bootstrap needs at least 2 windows, got {a.size}; evaluate more windows")
    if not 0 < level < 1 or resamples < 10:
        raise ConfigError(f"level must lie in (0, 1) and resamples be >= 10, got {level} and {resamples}")

    def statistic(total_a: np.ndarray, total_b: np.ndarray, total_t: np.ndarray) -> np.ndarray:
        mean_a, mean_b = total_a / total_t, total_b / total_t
        return (transform(mean_a) - transform(mean_b)) if transform is not None else mean_a - mean_b

    delta = float(statistic(np.array([a.sum()]), np.array([b.sum()]), np.array([t.sum()]))[0])
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    chunk = max(1, 2_000_000 // a.size)  # bound the [chunk, n] index matrix
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, a.size, size=(min(chunk, resamples - start), a.size))  # [r, n]
        diffs[start : start + idx.shape[0]] = statistic(a[idx].sum(axis=1), b[idx].sum(axis=1), t[idx].sum(axis=1))
    tail = (1 - level) / 2
    low, high = np.quantile(diffs, [tail, 1 - tail])
    return BootstrapCI(
        delta=delta, low=float(low), high=float(high), level=level, resamples=resamples, windows=int(a.size)
    )


__all__ = ["DEFAULT_RESAMPLES", "BootstrapCI", "paired_bootstrap", "paired_mean_bootstrap"]
