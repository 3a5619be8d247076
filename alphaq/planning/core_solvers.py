"""The exact solvers of the reduced ("core") knapsack that :func:`alphaq.planning.solver.solve_exact` leaves after
reduced-cost fixing: a dynamic program over the total weight deviation (integer weights, every bit-width
problem) and HiGHS through ``scipy.optimize.milp`` (any weights, under a time limit).

Both take the core's arrays (``cost``, ``weight`` [F, W] and ``keep`` [F, W] bool, the options still allowed) and
return ``(choice [F], lower bound, status)``; see each function for its other outcomes.
"""

from __future__ import annotations

import time

import numpy as np

#: Largest (core units x deviation states) table the exact DP builds (int8 back-pointers, bytes).
DP_MAX_CELLS = 100_000_000


def _deviation_reach(delta: np.ndarray, reduced: np.ndarray, keep: np.ndarray, gap_abs: float, sign: int) -> int:
    """Largest total deviation of one sign any choice with summed reduced cost <= gap_abs can make."""
    ok = keep & (sign * delta > 0)  # [F, W]
    cheapest = np.sort(np.where(ok, reduced, np.inf).min(axis=1))  # [F] least reduced cost to move this way
    movers = int(np.searchsorted(np.cumsum(cheapest), gap_abs, side="right"))
    largest = np.sort(np.where(ok, sign * delta, 0).max(axis=1))[::-1]  # [F]
    return int(largest[:movers].sum())


def solve_core_dp(
    cost: np.ndarray,
    weight: np.ndarray,
    keep: np.ndarray,
    reduced: np.ndarray,
    capacity: float,
    gap_abs: float,
    deadline: float,
) -> tuple[np.ndarray, float, str] | str:
    """Exact DP over the total weight deviation from each unit's Lagrangian choice (integer weights).

    Any solution at least as good as the incumbent has summed reduced cost <= ``gap_abs``, so its positive
    and negative deviations, and every partial sum of them, lie in ``[-down, up]`` (:func:`_deviation_reach`).
    Returns (choice [F], lower bound = its objective, "optimal"), or ``"too_large"`` when the table would
    exceed :data:`DP_MAX_CELLS`, or ``"timeout"`` when the deadline passes.
    """
    num_units = cost.shape[0]
    rows = np.arange(num_units)
    ref = np.where(keep, reduced, np.inf).argmin(axis=1)  # [F] the Lagrangian choice (reduced cost 0)
    delta = np.where(keep, weight - weight[rows, ref][:, None], 0.0).astype(np.int64)  # [F, W]
    d_cost = cost - cost[rows, ref][:, None]  # [F, W]
    up = _deviation_reach(delta, reduced, keep, gap_abs, 1)
    down = _deviation_reach(delta, reduced, keep, gap_abs, -1)
    size = up + down + 1
    if size * num_units > DP_MAX_CELLS:
        return "too_large"
    vals = np.full(size, np.inf)
    vals[down] = 0.0  # index = deviation + down
    pick = np.zeros((num_units, size), dtype=np.int8)  # [F, S] option chosen to reach each state
    for unit in range(num_units):
        if unit % 1024 == 0 and time.perf_counter() > deadline:
            return "timeout"
        new = np.full(size, np.inf)
        for option in np.flatnonzero(keep[unit]):
            d = int(delta[unit, option])
            if abs(d) >= size:
                continue
            shifted = np.full(size, np.inf)
            if d >= 0:
                shifted[d:] = vals[: size - d] + d_cost[unit, option]
            else:
                shifted[: size + d] = vals[-d:] + d_cost[unit, option]
            better = shifted < new
            new[better] = shifted[better]
            pick[unit, better] = option
        vals = new
    limit = int(np.floor(capacity - float(weight[rows, ref].sum()) + 1e-9)) + down  # highest feasible index
    if limit < 0:  # cannot happen: the incumbent is a feasible state in range
        return "too_large"
    state = int(np.argmin(vals[: min(limit, size - 1) + 1]))
    if not np.isfinite(vals[state]):
        return "too_large"
    choice = np.empty(num_units, dtype=np.int64)
    for unit in range(num_units - 1, -1, -1):
        choice[unit] = pick[unit, state]
        state -= int(delta[unit, choice[unit]])
    objective = float(cost[rows, choice].sum())
    return choice, objective, "optimal"


def solve_core_milp(
    cost: np.ndarray, weight: np.ndarray, keep: np.ndarray, capacity: float, time_limit: float, mip_rel_gap: float
) -> tuple[np.ndarray, float, str] | None:
    """HiGHS on the reduced problem; returns (choice [U'], lower bound, status) or None if no solution."""
    from scipy import sparse
    from scipy.optimize import Bounds, LinearConstraint, milp

    num_units, num_options = cost.shape
    unit_idx, option_idx = np.nonzero(keep)  # variables, unit-major
    shift = np.where(keep, cost, np.inf).min(axis=1)  # [U'] per-unit constant, removed for conditioning
    c = cost[unit_idx, option_idx] - shift[unit_idx]
    scale = float(c[c > 0].mean()) if (c > 0).any() else 1.0
    w_scale = float(weight[unit_idx, option_idx].max()) or 1.0
    n = unit_idx.size
    one_each = sparse.csr_array((np.ones(n), (unit_idx, np.arange(n))), shape=(num_units, n))
    w_row = sparse.csr_array((weight[unit_idx, option_idx] / w_scale)[None, :])
    result = milp(
        c / scale,
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(w_row, -np.inf, capacity / w_scale)],
        options={"time_limit": float(time_limit), "mip_rel_gap": float(mip_rel_gap)},
    )
    if result.x is None:
        return None
    x = np.zeros((num_units, num_options))
    x[unit_idx, option_idx] = result.x
    x[~keep] = -np.inf
    choice = x.argmax(axis=1)
    dual_bound = getattr(result, "mip_dual_bound", None)
    lower = float(dual_bound) * scale if dual_bound is not None and np.isfinite(dual_bound) else -np.inf
    status = "optimal" if result.status == 0 else "time_limit"
    return choice, lower + float(shift.sum()), status


__all__ = ["DP_MAX_CELLS", "solve_core_dp", "solve_core_milp"]
