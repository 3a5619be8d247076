"""Statistics of a compare run, from its measured windows: intervals, seed spread, predictor correlations.

Pure functions on the per-window NLLs and the results table that :mod:`alphaq.evaluation.compare` measured; the
compare page reads what they return (saved in compare.json) and recomputes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from alphaq.evaluation.bootstrap import paired_bootstrap, paired_mean_bootstrap

ORIGINAL = "original"
#: Data-free predictors whose rank correlation with the measured perplexity increase compare reports.
PREDICTORS: tuple[str, ...] = (
    "predicted_error",
    "alpha_objective",
    "abs_sq_error",
    "alpha_sq_error",
    "depth_sq_error",
    "routed_sq_error",
)
#: Column pairs added to the table by :func:`add_intervals`.
INTERVAL_COLUMNS = [
    "ci_low",
    "ci_high",
    "significant",
    "vs_uniform",
    "vs_uniform_low",
    "vs_uniform_high",
    "significant_vs_uniform",
    "kld_low",
    "kld_high",
    "kld_vs_uniform",
    "kld_vs_uniform_low",
    "kld_vs_uniform_high",
    "kld_significant_vs_uniform",
]


def row_key(row: Mapping[str, Any]) -> str:
    """The key of a table row in the per-window NLL map: ``entry@budget`` (``#seed`` for random seeds)."""
    if row["entry"] == ORIGINAL:
        return ORIGINAL
    seed = row.get("seed")
    suffix = f"#{int(seed)}" if seed is not None and not (isinstance(seed, float) and math.isnan(seed)) else ""
    return f"{row['entry']}@{row['budget']}{suffix}"


def add_intervals(
    table: pd.DataFrame,
    windows: Mapping[str, tuple[Sequence[float], Sequence[int]]],
    *,
    resamples: int,
    level: float,
    seed: int = 0,
    kld_windows: Mapping[str, tuple[Sequence[float], Sequence[int]]] | None = None,
) -> pd.DataFrame:
    """Paired-bootstrap intervals of every plan's perplexity increase, against the original and against uniform,
    and of its mean KL divergence from the original (alone, and minus uniform's at the same budget).

    Args:
        table: the compare table (``entry``, ``budget``, ``seed``, ``ppl``).
        windows: :func:`row_key` -> (per-window NLL sums, per-window tokens) of every evaluated row.
        resamples: bootstrap resamples.
        level: coverage (0.95).
        seed: resampling seed (one seed: every comparison uses the same draws).
        kld_windows: :func:`row_key` -> (per-window KLD sums, per-window tokens) (None: no KLD intervals).

    Returns:
        The table with :data:`INTERVAL_COLUMNS` (NaN/None where a row was not evaluated or has no uniform peer;
        the uniform row at a budget gets no ``vs_uniform``; no interval at all with fewer than 2 windows).
    """
    out = table.copy()
    for column in INTERVAL_COLUMNS:
        out[column] = None
    original = windows.get(ORIGINAL)
    if original is None or len(original[0]) < 2:  # one window: no interval can be drawn
        return out
    for i, row in out.iterrows():
        key = row_key(row)
        if row["entry"] == ORIGINAL or key not in windows or original is None:
            continue
        nll, tokens = windows[key]
        ci = paired_bootstrap(nll, original[0], tokens, resamples=resamples, seed=seed, level=level)
        out.at[i, "ci_low"], out.at[i, "ci_high"], out.at[i, "significant"] = ci.low, ci.high, ci.significant
        uniform = windows.get(f"uniform@{row['budget']}")
        if row["entry"] != "uniform" and uniform is not None:
            vs = paired_bootstrap(nll, uniform[0], tokens, resamples=resamples, seed=seed, level=level)
            out.at[i, "vs_uniform"], out.at[i, "vs_uniform_low"] = vs.delta, vs.low
            out.at[i, "vs_uniform_high"], out.at[i, "significant_vs_uniform"] = vs.high, vs.significant
        _kld_intervals(out, i, row, kld_windows or {}, resamples=resamples, level=level, seed=seed)
    return out


def _kld_intervals(
    out: pd.DataFrame,
    i: Any,
    row: Mapping[str, Any],
    kld_windows: Mapping[str, tuple[Sequence[float], Sequence[int]]],
    *,
    resamples: int,
    level: float,
    seed: int,
) -> None:
    """The mean-KLD interval of one row, and its paired difference from uniform's at the same budget."""
    own = kld_windows.get(row_key(row))
    if own is None or len(own[0]) < 2:
        return
    sums, tokens = own
    zeros = [0.0] * len(sums)
    ci = paired_mean_bootstrap(sums, zeros, tokens, resamples=resamples, seed=seed, level=level)
    out.at[i, "kld_low"], out.at[i, "kld_high"] = ci.low, ci.high
    uniform = kld_windows.get(f"uniform@{row['budget']}")
    if row["entry"] != "uniform" and uniform is not None:
        vs = paired_mean_bootstrap(sums, uniform[0], tokens, resamples=resamples, seed=seed, level=level)
        out.at[i, "kld_vs_uniform"], out.at[i, "kld_vs_uniform_low"] = vs.delta, vs.low
        out.at[i, "kld_vs_uniform_high"], out.at[i, "kld_significant_vs_uniform"] = vs.high, vs.significant


def seed_spread(table: pd.DataFrame, entry: str = "random") -> dict[str, dict[str, Any]]:
    """Mean and spread of an allocator's perplexity increase over its seeds, per budget.

    Returns:
        budget -> ``{"seeds", "mean", "std", "min", "max"}`` (``std`` with ddof 1; NaN for one seed).
    """
    rows = table[(table["entry"] == entry) & table["ppl_increase"].notna()]
    out: dict[str, dict[str, Any]] = {}
    for budget, group in rows.groupby("budget", sort=False):
        values = group["ppl_increase"].astype(float).to_numpy()
        out[str(budget)] = {
            "seeds": [int(s) for s in group["seed"]],
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if values.size > 1 else math.nan,
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return out


def prediction_check(table: pd.DataFrame) -> dict[str, Any]:
    """Spearman rank correlation of each data-free predictor with the measured perplexity increase.

    Args:
        table: the compare table; predictor columns that are missing are reported as ``missing``.

    Returns:
        predictor -> ``{"rho", "p_value", "plans", "status"}`` (``ok``; ``too_few_plans`` with NaN below 3 plans).
    """
    from scipy.stats import spearmanr

    rows = table[(table["entry"] != ORIGINAL) & table["ppl"].notna()]
    out: dict[str, Any] = {}
    for column in PREDICTORS:
        if column not in rows.columns:
            out[column] = {"rho": math.nan, "p_value": math.nan, "plans": 0, "status": "missing"}
            continue
        sub = rows[rows[column].notna()]
        if len(sub) < 3 or sub[column].nunique() < 2 or sub["ppl_increase"].nunique() < 2:
            out[column] = {"rho": math.nan, "p_value": math.nan, "plans": len(sub), "status": "too_few_plans"}
            continue
        rho, p = spearmanr(sub[column].astype(float), sub["ppl_increase"].astype(float))
        out[column] = {"rho": float(rho), "p_value": float(p), "plans": len(sub), "status": "ok"}
    return out


def plan_predictors(
    tensors: Sequence[Any],
    sq_norm: Mapping[str, float],
    alpha: Mapping[str, float],
    num_layers: int,
    routing_prior: Mapping[tuple[int, int], float] | None = None,
) -> dict[str, float]:
    """Richer data-free predictors of a plan's damage, from its tensors' predicted relative errors.

    ``abs_sq_error``: ``sum ||W||^2 e^2``, the absolute squared Frobenius error (a relative error on a large-norm
    matrix does more harm). ``alpha_sq_error``: the same weighted by ``median_alpha / alpha`` (better-trained
    matrices matter more). ``depth_sq_error``: weighted by ``1 + (layers - 1 - layer) / layers`` (an error early in the
    network passes through more layers). ``routed_sq_error``: weighted by the expert's share in the data-free
    routing prior (:func:`alphaq.evaluation.routing.random_token_routing`): an expert's error reaches the output
    only through the tokens routed to it.

    Args:
        tensors: the plan's :class:`~alphaq.planning.plan_file.PlanTensor` rows.
        sq_norm: matrix name -> ``||W||_F^2``.
        alpha: matrix name -> fitted alpha (NaN when the fit failed).
        num_layers: decoder layers.
        routing_prior: (layer, expert) -> routing share of the prior (``routed_sq_error`` is NaN without it, or
            when an expert of the plan is missing from it).

    Returns:
        Predictor name -> value (NaN when a needed figure is missing).
    """
    experts = [t for t in tensors if t.unit is not None and t.error is not None]
    alphas = np.array([alpha.get(t.name, math.nan) for t in experts], dtype=np.float64)
    finite = alphas[np.isfinite(alphas) & (alphas > 0)]
    median = float(np.median(finite)) if finite.size else math.nan
    abs_sq = alpha_sq = depth_sq = routed_sq = 0.0
    for t, a in zip(experts, alphas):
        base = sq_norm.get(t.name, math.nan) * float(t.error) ** 2
        abs_sq += base
        alpha_sq += base * (median / a if math.isfinite(a) and a > 0 else 1.0)
        layer = t.layer if t.layer is not None else 0
        depth_sq += base * (1 + (num_layers - 1 - layer) / max(num_layers, 1))
        share = routing_prior.get((t.layer, t.expert), math.nan) if routing_prior is not None else math.nan
        routed_sq += base * share
    return {
        "abs_sq_error": abs_sq,
        "alpha_sq_error": alpha_sq,
        "depth_sq_error": depth_sq,
        "routed_sq_error": routed_sq,
    }


__all__ = [
    "INTERVAL_COLUMNS",
    "PREDICTORS",
    "add_intervals",
    "plan_predictors",
    "prediction_check",
    "row_key",
    "seed_spread",
]
