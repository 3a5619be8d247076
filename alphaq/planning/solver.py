"""Multiple-choice knapsack: pick one width per unit, minimise total cost, keep total weight <= capacity.

Two solvers over the same arrays (``cost`` and ``weight`` [U, W], ``allowed`` [U, W] bool):

- :func:`solve_lagrangian` (fast path): the LP relaxation of the multiple-choice knapsack is solved
  exactly by walking the per-unit lower convex hulls in order of decreasing benefit per unit of weight
  (Sinha-Zoltners). This finds the optimal Lagrange multiplier ``lambda`` exactly, at a hull breakpoint,
  where a bisection on ``lambda`` would converge to. The dual value ``L(lambda*)`` (= the LP bound) is
  a lower bound on every feasible solution. The integer solution is the hull walk up to the critical
  segment, then a greedy fill that spends the remaining capacity on the best single-unit changes.
- :func:`solve_exact`: the same Lagrangian bound and incumbent first; options whose reduced cost
  proves they cannot beat the incumbent are removed (reduced-cost fixing, exact). The remaining core is
  solved exactly by a dynamic program over the total weight deviation (integer weights, the bit-width
  case: weights are first shifted per unit and divided by their gcd) or, otherwise, as a binary program
  with ``scipy.optimize.milp`` (HiGHS), under a time limit. Measured on a DeepSeek-V3-sized problem (14,848
  expert units x 4 widths; ``bench/highs_solver.py`` -> ``bench/results/highs_solver.json``, a shared 2-core CPU):
  HiGHS alone on the whole binary program takes 3.6-4.4 s at 2.5, 3.37 and 3.5 bits, and at 4.37 and 4.9 bits
  stops at its 60 s limit without proving optimality (at 4.9 after 194 s, 1.7e-4 above the optimum); this
  solver proves optimality at every one of those budgets in 0.06-1.2 s.

Both are deterministic. The objective is ``sum_u cost[u, choice[u]]``; ``gap = (objective - bound) /
|objective|`` (0 when both are 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from alphaq.errors import PlanError
from alphaq.planning.core_solvers import DP_MAX_CELLS, solve_core_dp, solve_core_milp  # noqa: F401  (DP_MAX_CELLS: re-exported)

#: Relative slack when deciding that a reduced cost proves a choice cannot be optimal.
FIXING_TOLERANCE = 1e-9

CoreMethod = Literal["auto", "dp", "milp"]


@dataclass(frozen=True, eq=False)
class Solution:
    """One width choice per unit and how good it provably is.

    Attributes:
        choice: int64 [U], column index of the chosen option per unit.
        objective: ``sum_u cost[u, choice[u]]``.
        bound: a proven lower bound on the optimal objective.
        gap: ``(objective - bound) / |objective|`` (0.0 when both are 0).
        status: ``optimal`` (proven within ``mip_rel_gap``), ``time_limit`` (stopped, feasible, gap as
            reported), ``heuristic`` (Lagrangian path: feasible, gap as reported) or ``fallback`` (the
            MIP answer failed the exact capacity re-check; the Lagrangian solution is returned).
        seconds: wall time of the solve.
        method: ``exact`` or ``lagrangian``.
        multiplier: the Lagrange multiplier ``lambda*`` of the capacity constraint (0 when slack).
        weight: total weight of the choice (<= capacity).
        core_units: units left to the core solve after reduced-cost fixing (0 when none was needed).
    """

    choice: np.ndarray
    objective: float
    bound: float
    gap: float
    status: str
    seconds: float
    method: str
    multiplier: float
    weight: float
    core_units: int = 0


def relative_gap(objective: float, bound: float) -> float:
    """``(objective - bound) / |objective|``, clamped at 0; 0 when both are 0, inf when only the bound is."""
    diff = max(0.0, objective - bound)
    if objective == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / abs(objective)


def _validate(
    cost: np.ndarray, weight: np.ndarray, capacity: float, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cost = np.asarray(cost, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    if cost.ndim != 2 or cost.shape != weight.shape or cost.shape[0] == 0 or cost.shape[1] == 0:
        raise ValueError(
            f"cost and weight must be non-empty [U, W] arrays of one shape, got {cost.shape} and {weight.shape}"
        )
    mask = np.ones(cost.shape, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    if mask.shape != cost.shape:
        raise ValueError(f"allowed_mask shape {mask.shape} differs from cost shape {cost.shape}")
    if not mask.any(axis=1).all():
        bad = int(np.flatnonzero(~mask.any(axis=1))[0])
        raise PlanError(f"unit {bad} has no allowed width; widen --min-bits/--max-bits or add widths")
    if not (np.isfinite(cost[mask]).all() and np.isfinite(weight[mask]).all()):
        raise ValueError("cost and weight must be finite wherever the option is allowed")
    if (weight[mask] < 0).any():
        raise ValueError("weights must be non-negative")
    if not np.isfinite(capacity):
        raise ValueError(f"capacity must be finite, got {capacity}")
    lightest = float(np.where(mask, weight, np.inf).min(axis=1).sum())
    if lightest > capacity:
        raise PlanError(
            f"infeasible: the lightest allowed choice weighs {lightest:.6g} > capacity "
            f"{capacity:.6g}; raise the budget or lower --min-bits"
        )
    return cost, weight, mask


def normalize_weights(weight: np.ndarray, capacity: float, mask: np.ndarray) -> tuple[np.ndarray, float]:
    """An equivalent, better-conditioned constraint: same feasible choices, smaller numbers.

    Each unit's lightest allowed weight is subtracted from its row and from the capacity (one option
    per unit is always chosen). When the weights are then integers, they are divided by their greatest
    common divisor and the capacity is floored to a multiple of it; this tightens the LP bound (a
    capacity remainder no choice can use is dropped) without changing the feasible set.

    Args:
        weight: [U, W] non-negative weights.
        capacity: the most total weight allowed.
        mask: [U, W] allowed options.

    Returns:
        (weight' [U, W] with 0 at disallowed options, capacity', divisor): ``weight' = (weight -
        shift) / divisor``.
    """
    shift = np.where(mask, weight, np.inf).min(axis=1, keepdims=True)  # [U, 1]
    shifted = np.where(mask, weight - shift, 0.0)
    integral = (np.abs(weight[mask]) < 2.0**53).all() and (weight[mask] == np.floor(weight[mask])).all()
    if not integral:
        return shifted, capacity - float(shift.sum()), 1.0
    ints = shifted.astype(np.int64)
    divisor = int(np.gcd.reduce(ints[ints > 0])) if (ints > 0).any() else 1
    whole = int(np.floor(capacity)) - int(shift.astype(np.int64).sum())  # exact integer arithmetic
    return ints / divisor, float(whole // divisor), float(divisor)


def _lightest(cost: np.ndarray, weight: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per unit, the allowed option of least weight (least cost among equal weights). [U]"""
    w = np.where(mask, weight, np.inf)
    at_min = mask & (w == w.min(axis=1, keepdims=True))
    return np.where(at_min, cost, np.inf).argmin(axis=1)


def _hull_segments(cost: np.ndarray, weight: np.ndarray, mask: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, ...]:
    """Segments of every unit's lower convex hull, from its lightest option towards its cheapest.

    Returns:
        (unit, to_option, step, d_cost, d_weight, slope) arrays [S]; a unit's segments have
        non-decreasing slope (``d_cost / d_weight < 0``) in step order.
    """
    num_units = cost.shape[0]
    cur = start.copy()
    rows = np.arange(num_units)
    active = np.ones(num_units, dtype=bool)
    out: list[tuple[np.ndarray, ...]] = []
    for step in range(cost.shape[1]):
        c0 = cost[rows, cur][:, None]  # [U, 1]
        w0 = weight[rows, cur][:, None]  # [U, 1]
        valid = mask & (weight > w0) & (cost < c0) & active[:, None]  # [U, W]
        if not valid.any():
            break
        dw = np.where(valid, weight - w0, 1.0)
        slope = np.where(valid, (cost - c0) / dw, np.inf)  # [U, W]
        best = slope.min(axis=1, keepdims=True)
        ties = valid & (slope == best)
        nxt = np.where(ties, weight, np.inf).argmin(axis=1)  # nearest point on the steepest ray
        has = valid.any(axis=1)
        units = rows[has]
        to = nxt[has]
        out.append(
            (
                units,
                to,
                np.full(units.size, step),
                cost[units, to] - c0[has, 0],
                weight[units, to] - w0[has, 0],
                best[has, 0],
            )
        )
        cur = np.where(has, nxt, cur)
        active = has
    if not out:
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
        return empty_i, empty_i, empty_i, empty_f, empty_f, empty_f
    return tuple(np.concatenate([part[k] for part in out]) for k in range(6))


def _greedy_fill(
    cost: np.ndarray, weight: np.ndarray, mask: np.ndarray, choice: np.ndarray, remaining: float
) -> tuple[np.ndarray, float]:
    """Repeatedly apply the single-unit change with the largest cost decrease that still fits."""
    rows = np.arange(cost.shape[0])
    for _ in range(cost.shape[0] * cost.shape[1]):
        extra = weight - weight[rows, choice][:, None]  # [U, W]
        gain = cost[rows, choice][:, None] - cost  # [U, W]
        ok = mask & (extra <= remaining) & (gain > 0)
        if not ok.any():
            break
        flat = int(np.where(ok, gain, -np.inf).argmax())
        unit, option = divmod(flat, cost.shape[1])
        remaining -= float(extra[unit, option])
        choice[unit] = option
    return choice, remaining


def _lagrangian_core(
    cost: np.ndarray, weight: np.ndarray, capacity: float, mask: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """(feasible choice [U], multiplier lambda*, LP/Lagrangian lower bound)."""
    rows = np.arange(cost.shape[0])
    choice = _lightest(cost, weight, mask)
    remaining = capacity - float(weight[rows, choice].sum())
    units, to, step, d_cost, d_weight, slope = _hull_segments(cost, weight, mask, choice)
    order = np.lexsort((step, units, slope))  # most cost saved per weight first; ties by unit, step
    cum = np.cumsum(d_weight[order])
    fits = int(np.searchsorted(cum, remaining, side="right"))  # segments [0, fits) fit entirely
    taken = order[:fits]
    # a unit's segments keep their step order within the sort, so the last one assigned is its furthest
    for seg in taken:
        choice[units[seg]] = to[seg]
    remaining -= float(cum[fits - 1]) if fits else 0.0
    objective_lp = float(cost[rows, choice].sum())
    if fits == len(order):
        return choice, 0.0, objective_lp
    crit = order[fits]
    multiplier = float(-slope[crit])
    bound = objective_lp + float(d_cost[crit]) * (remaining / float(d_weight[crit]))
    blocked = {int(units[crit])}
    for seg in order[fits + 1 :]:
        unit = int(units[seg])
        if unit in blocked:
            continue
        if d_weight[seg] <= remaining:
            choice[unit] = to[seg]
            remaining -= float(d_weight[seg])
        else:
            blocked.add(unit)
    choice, remaining = _greedy_fill(cost, weight, mask, choice, remaining)
    return choice, multiplier, bound


def solve_lagrangian(
    cost: np.ndarray, weight: np.ndarray, capacity: float, allowed_mask: np.ndarray | None = None
) -> Solution:
    """Fast feasible solution with a proven lower bound (see the module docstring).

    Args:
        cost: [U, W] cost of each option.
        weight: [U, W] non-negative weight of each option.
        capacity: the most total weight allowed.
        allowed_mask: [U, W] bool, options that may be chosen (default: all).

    Returns:
        A :class:`Solution` with ``status="heuristic"`` and the Lagrangian dual bound.

    Raises:
        PlanError: even the lightest allowed choice exceeds the capacity, or a unit has no option.
    """
    start = time.perf_counter()
    cost, weight, mask = _validate(cost, weight, capacity, allowed_mask)
    norm_weight, norm_capacity, divisor = normalize_weights(weight, capacity, mask)
    choice, multiplier, bound = _lagrangian_core(cost, norm_weight, norm_capacity, mask)
    return _finish(cost, weight, choice, bound, "heuristic", start, "lagrangian", multiplier / divisor)


def _finish(
    cost: np.ndarray,
    weight: np.ndarray,
    choice: np.ndarray,
    bound: float,
    status: str,
    start: float,
    method: str,
    multiplier: float,
    core_units: int = 0,
) -> Solution:
    rows = np.arange(cost.shape[0])
    objective = float(cost[rows, choice].sum())
    bound = min(bound, objective)
    return Solution(
        choice=choice.astype(np.int64),
        objective=objective,
        bound=bound,
        gap=relative_gap(objective, bound),
        status=status,
        seconds=time.perf_counter() - start,
        method=method,
        multiplier=multiplier,
        weight=float(weight[rows, choice].sum()),
        core_units=core_units,
    )


def solve_exact(
    cost: np.ndarray,
    weight: np.ndarray,
    capacity: float,
    allowed_mask: np.ndarray | None = None,
    *,
    time_limit: float = 60.0,
    mip_rel_gap: float = 1e-6,
    core: CoreMethod = "auto",
) -> Solution:
    """Optimal multiple-choice knapsack: Lagrangian bound, reduced-cost fixing, then an exact core solve.

    Binary ``x[u, w]``, ``sum_w x[u, w] = 1`` per unit, ``sum weight * x <= capacity``. Options whose
    Lagrangian reduced cost exceeds the incumbent's gap are fixed to 0 first (this never removes a
    solution at least as good as the incumbent); units left with one option are fixed. The remaining
    core is solved by a dynamic program over the total weight deviation from the Lagrangian solution
    (``dp``: exact, used when the weights are integers and the deviations any improving solution can make
    are few, as for every bit-width problem) or by HiGHS through ``scipy.optimize.milp`` (``milp``).

    Args:
        cost: [U, W] cost of each option.
        weight: [U, W] non-negative weight of each option.
        capacity: the most total weight allowed.
        allowed_mask: [U, W] bool, options that may be chosen (default: all).
        time_limit: seconds the core solve may run; on expiry the best solution found is returned.
        mip_rel_gap: relative gap at which the search stops and reports ``optimal``.
        core: ``auto`` (dp where it applies, else milp), ``dp`` or ``milp``.

    Returns:
        A :class:`Solution` (``optimal``, ``time_limit`` or ``fallback``), never worse than
        :func:`solve_lagrangian`.

    Raises:
        PlanError: even the lightest allowed choice exceeds the capacity, or a unit has no option.
    """
    if core not in ("auto", "dp", "milp"):
        raise ValueError(f"core must be auto, dp or milp, got {core!r}")
    start = time.perf_counter()
    cost, orig_weight, mask = _validate(cost, weight, capacity, allowed_mask)
    orig_capacity = capacity
    weight, capacity, divisor = normalize_weights(orig_weight, capacity, mask)
    incumbent, multiplier, bound = _lagrangian_core(cost, weight, capacity, mask)
    lam = multiplier / divisor  # per unit of the caller's weight
    rows = np.arange(cost.shape[0])
    upper = float(cost[rows, incumbent].sum())
    if relative_gap(upper, bound) <= mip_rel_gap:
        return _finish(cost, orig_weight, incumbent, bound, "optimal", start, "exact", lam)
    lagr = np.where(mask, cost + multiplier * weight, np.inf)  # [U, W]
    best = lagr.min(axis=1, keepdims=True)
    dual = max(bound, float(best.sum()) - multiplier * capacity)
    gap_abs = (upper - dual) + FIXING_TOLERANCE * max(1.0, abs(upper), abs(dual))
    reduced = np.where(mask, lagr - best, np.inf)  # [U, W] reduced costs, >= 0
    keep = mask & (reduced <= gap_abs)  # [U, W]
    keep[rows, incumbent] = True
    free = keep.sum(axis=1) > 1
    if not free.any():
        return _finish(cost, orig_weight, incumbent, dual, "optimal", start, "exact", lam)
    choice = np.where(keep, 0, 1).argmin(axis=1)  # the only kept option where not free
    fixed_cost = float(cost[rows[~free], choice[~free]].sum())
    core_capacity = capacity - float(weight[rows[~free], choice[~free]].sum())
    result: tuple[np.ndarray, float, str] | str | None = None
    integral = divisor != 1.0 or bool((weight == np.floor(weight)).all())
    if core == "dp" and not integral:
        raise ValueError("core='dp' needs integer weights; use core='milp' or 'auto'")
    if core in ("auto", "dp") and integral:
        result = solve_core_dp(
            cost[free], weight[free], keep[free], reduced[free], core_capacity, gap_abs, start + time_limit
        )
        if result == "too_large" and core == "dp":
            raise ValueError("the DP state range exceeds DP_MAX_CELLS for this instance; use core='milp' or 'auto'")
    if result is None or result == "too_large":
        remaining = max(0.0, start + time_limit - time.perf_counter())
        result = solve_core_milp(cost[free], weight[free], keep[free], core_capacity, remaining, mip_rel_gap)
    if not isinstance(result, tuple):  # time limit without a solution of its own
        return _finish(cost, orig_weight, incumbent, dual, "time_limit", start, "exact", lam, int(free.sum()))
    core_choice, core_bound, core_status = result
    choice[free] = core_choice
    total_weight = float(orig_weight[rows, choice].sum())
    better = float(cost[rows, choice].sum()) <= upper and total_weight <= orig_capacity
    final = choice if better else incumbent
    proven = max(dual, fixed_cost + core_bound)
    status = core_status if better else ("fallback" if total_weight > orig_capacity else "time_limit")
    return _finish(cost, orig_weight, final, proven, status, start, "exact", lam, int(free.sum()))
