"""Bit allocators: one width per unit under a budget, behind one interface.

``Allocator.allocate(table, budget, bounds) -> Allocation``. Every allocator returns a feasible choice
(within the budget and the width bounds) that uses the budget: after it, no unit can move one candidate
width up without breaking the budget (the exact solvers may stop short of that only where a wider width
would not lower the objective).

- ``alphaq``: minimise ``sum_u s_u * params_u * err_u(b)`` with the alpha importance, exactly.
- ``uniform``: one width everywhere, the remainder spread round-robin over layers.
- ``random``: seeded random widths, repaired to the budget.
- ``alpha_ratio``: the paper-style heuristic (per layer, worst-trained quartile one width down, best-trained
  quartile one width up), repaired to the budget.
- ``weight_norm``: the exact solve with importance from each unit's RMS weight instead of alpha.
- ``frequency``: the calibrated PMQ-style baseline, importance from routing shares measured on text.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from alphaq.errors import ConfigError, PlanError
from alphaq.planning.budget import Bounds, Budget, allowed_mask, budget_constraint, check_feasible
from alphaq.planning.costs import CostTable
from alphaq.planning.solver import Solution, solve_exact, solve_lagrangian

SolverName = Literal["exact", "lagrangian", "auto"]
#: ``auto`` uses the exact solver up to this many (unit, width) options, the Lagrangian path above.
AUTO_EXACT_MAX_OPTIONS = 4_000_000


@dataclass(frozen=True, eq=False)
class Allocation:
    """One allocator's choice.

    Attributes:
        allocator: registry name.
        choice: int64 [U] column of ``table.widths`` per unit.
        bits: int64 [U] width per unit.
        objective: the allocator's own objective (its importance; NaN for heuristics without one).
        alpha_objective: ``sum table.cost()`` of the choice: the alpha-importance objective, comparable
            across allocators.
        error: parameter-weighted mean predicted error of the choice (importance 1).
        bound: proven lower bound on the allocator's objective (NaN for heuristics).
        gap: relative gap of ``objective`` to ``bound`` (NaN for heuristics).
        status: solver status, or ``heuristic``.
        seconds: wall time.
        solver: ``exact``, ``lagrangian`` or None for heuristics.
        importance: [U] importance the allocator used (ones for heuristics).
        notes: remarks for the plan (e.g. units without a routing share).
    """

    allocator: str
    choice: np.ndarray
    bits: np.ndarray
    objective: float
    alpha_objective: float
    error: float
    bound: float
    gap: float
    status: str
    seconds: float
    solver: str | None
    importance: np.ndarray
    notes: tuple[str, ...] = ()


def _finish(
    name: str,
    table: CostTable,
    choice: np.ndarray,
    start: float,
    *,
    importance: np.ndarray | None = None,
    solution: Solution | None = None,
    notes: tuple[str, ...] = (),
) -> Allocation:
    rows = np.arange(len(table.units))
    choice = np.asarray(choice, dtype=np.int64)
    ones = np.ones(len(table.units))
    objective = float(table.cost(importance)[rows, choice].sum()) if importance is not None else math.nan
    return Allocation(
        allocator=name,
        choice=choice,
        bits=np.asarray(table.widths, dtype=np.int64)[choice],
        objective=objective,
        alpha_objective=float(table.cost()[rows, choice].sum()),
        error=float(table.cost(ones)[rows, choice].sum()),
        bound=solution.bound if solution else math.nan,
        gap=solution.gap if solution else math.nan,
        status=solution.status if solution else "heuristic",
        seconds=time.perf_counter() - start,
        solver=solution.method if solution else None,
        importance=ones if importance is None else importance,
        notes=notes,
    )


def _setup(table: CostTable, budget: Budget, bounds: Bounds | None) -> tuple[np.ndarray, np.ndarray, float]:
    """(allowed mask [U, W], weight [U, W], capacity), after checking the budget is feasible."""
    mask = allowed_mask(table.units, table.widths, bounds or Bounds())
    check_feasible(budget, table, mask)
    con = budget_constraint(budget, table)
    return mask, con.weight, con.capacity


def _total(weight: np.ndarray, choice: np.ndarray) -> float:
    return float(weight[np.arange(len(choice)), choice].sum())


def _step(mask: np.ndarray, unit: int, current: int, direction: int) -> int | None:
    """Next allowed option of ``unit`` one candidate width up (+1) or down (-1), or None."""
    options = np.flatnonzero(mask[unit])
    later = options[options > current] if direction > 0 else options[options < current][::-1]
    return int(later[0]) if later.size else None


def shrink_in_order(
    choice: np.ndarray, weight: np.ndarray, capacity: float, mask: np.ndarray, order: Sequence[int]
) -> np.ndarray:
    """Move units one width down, cycling through ``order``, until the total weight fits ``capacity``."""
    choice = choice.copy()
    total = _total(weight, choice)
    while total > capacity:
        moved = False
        for unit in order:
            lower = _step(mask, unit, int(choice[unit]), -1)
            if lower is None:
                continue
            total += float(weight[unit, lower] - weight[unit, choice[unit]])
            choice[unit], moved = lower, True
            if total <= capacity:
                break
        if not moved:
            raise PlanError("cannot bring the allocation within the budget; raise the budget or lower --min-bits")
    return choice


def fill_in_order(
    choice: np.ndarray, weight: np.ndarray, capacity: float, mask: np.ndarray, order: Sequence[int]
) -> np.ndarray:
    """Move units one width up, cycling through ``order``, while each move fits; stop when none does."""
    choice = choice.copy()
    total = _total(weight, choice)
    moved = True
    while moved:
        moved = False
        for unit in order:
            upper = _step(mask, unit, int(choice[unit]), +1)
            if upper is None:
                continue
            extra = float(weight[unit, upper] - weight[unit, choice[unit]])
            if total + extra <= capacity:
                total += extra
                choice[unit], moved = upper, True
    return choice


def nearest_below(mask: np.ndarray, column: int) -> np.ndarray:
    """[U] per unit, the widest allowed option at or below ``column`` (its narrowest one if none)."""
    cols = np.arange(mask.shape[1])
    below = np.where(mask & (cols[None, :] <= column), cols[None, :], -1).max(axis=1)
    narrowest = np.where(mask, cols[None, :], mask.shape[1]).min(axis=1)
    return np.where(below >= 0, below, narrowest)


def uniform_base(mask: np.ndarray, weight: np.ndarray, capacity: float) -> np.ndarray:
    """The widest single width (clamped to each unit's bounds) whose allocation fits ``capacity``."""
    for column in range(mask.shape[1] - 1, -1, -1):
        choice = nearest_below(mask, column)
        if _total(weight, choice) <= capacity:
            return choice
    return nearest_below(mask, 0)


def round_robin_order(table: CostTable) -> list[int]:
    """Units ordered rank-within-layer first, layer second: one per layer before a second one anywhere."""
    rank: dict[Any, int] = {}
    keys = []
    for i, unit in enumerate(table.units):
        position = rank.get(unit.layer, 0)
        rank[unit.layer] = position + 1
        keys.append((position, -1 if unit.layer is None else unit.layer, i))
    return [i for _, _, i in sorted(keys)]


class Allocator:
    """Base class: ``allocate(table, budget, bounds) -> Allocation``."""

    name: ClassVar[str] = ""
    #: True when the allocator needs data beyond the weights (calibration text).
    needs_data: ClassVar[bool] = False

    def allocate(self, table: CostTable, budget: Budget, bounds: Bounds | None = None) -> Allocation:
        """Choose one width per unit of ``table`` within ``budget`` and ``bounds``.

        Raises:
            PlanError: infeasible budget or bounds.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class _Solved(Allocator):
    """Exact (or Lagrangian) minimisation of the importance-weighted error."""

    solver: SolverName = "auto"
    time_limit: float = 60.0

    def __post_init__(self) -> None:
        if self.solver not in ("exact", "lagrangian", "auto"):
            raise ConfigError(f"unknown solver {self.solver!r}; use exact, lagrangian or auto")

    def importance(self, table: CostTable) -> tuple[np.ndarray, tuple[str, ...]]:
        return table.importance, ()

    def allocate(self, table: CostTable, budget: Budget, bounds: Bounds | None = None) -> Allocation:
        start = time.perf_counter()
        mask, weight, capacity = _setup(table, budget, bounds)
        importance, notes = self.importance(table)
        cost = table.cost(importance)
        use_exact = self.solver == "exact" or (self.solver == "auto" and cost.size <= AUTO_EXACT_MAX_OPTIONS)
        if use_exact:
            solution = solve_exact(cost, weight, capacity, mask, time_limit=self.time_limit)
        else:
            solution = solve_lagrangian(cost, weight, capacity, mask)
        return _finish(self.name, table, solution.choice, start, importance=importance, solution=solution, notes=notes)


@dataclass(frozen=True)
class AlphaQAllocator(_Solved):
    """The AlphaQ allocation: importance ``(median_alpha / alpha) ** gamma`` from the cost table, solved exactly."""

    name: ClassVar[str] = "alphaq"


@dataclass(frozen=True)
class WeightNormAllocator(_Solved):
    """Data-free control: importance ``(rms_u / median rms) ** gamma`` (RMS weight instead of alpha)."""

    name: ClassVar[str] = "weight_norm"
    gamma: float = 1.0

    def importance(self, table: CostTable) -> tuple[np.ndarray, tuple[str, ...]]:
        if not np.isfinite(table.rms).all():
            raise PlanError(
                "weight_norm needs each matrix's norm: give the weights (read_matrix) or a details "
                "table with a norm column"
            )
        median = float(np.median(table.rms))
        if median <= 0:
            return np.ones(len(table.units)), ("every unit has zero weights; weight_norm importance set to 1",)
        return (table.rms / median) ** self.gamma, ()


@dataclass(frozen=True)
class FrequencyAllocator(_Solved):
    """The calibrated PMQ-style baseline: importance from how often each expert is routed to.

    Needs data: ``routing_shares`` maps (layer, expert) to the expert's share of its layer's top-k
    selections on calibration text (:meth:`alphaq.evaluation.routing.RoutingStats.shares`); the caller measures it.
    Importance is ``(share / mean share) ** gamma``; units without a share get 1 and are noted. Layer units
    hold every expert of the layer, so with ``granularity="layer"`` all importances are 1.
    """

    name: ClassVar[str] = "frequency"
    needs_data: ClassVar[bool] = True
    routing_shares: Mapping[tuple[int, int], float] | None = field(default=None, hash=False)
    gamma: float = 1.0

    def importance(self, table: CostTable) -> tuple[np.ndarray, tuple[str, ...]]:
        if not self.routing_shares:
            raise PlanError(
                "the frequency allocator needs routing shares measured on calibration text; "
                "run routing statistics first or pick a data-free allocator"
            )
        shares = np.array(
            [np.nan if u.expert is None else self.routing_shares.get((u.layer, u.expert), np.nan) for u in table.units],
            dtype=np.float64,
        )
        known = np.isfinite(shares)
        importance = np.ones(len(table.units))
        if known.any() and shares[known].mean() > 0:
            importance[known] = (shares[known] / shares[known].mean()) ** self.gamma
        missing = [u.key for u, ok in zip(table.units, known) if not ok]
        notes = (
            (
                f"{len(missing)} unit(s) without a routing share got importance 1: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}",
            )
            if missing
            else ()
        )
        return importance, notes


@dataclass(frozen=True)
class UniformAllocator(Allocator):
    """One width everywhere (the widest that fits), then the remainder spread round-robin over layers."""

    name: ClassVar[str] = "uniform"

    def allocate(self, table: CostTable, budget: Budget, bounds: Bounds | None = None) -> Allocation:
        start = time.perf_counter()
        mask, weight, capacity = _setup(table, budget, bounds)
        choice = fill_in_order(uniform_base(mask, weight, capacity), weight, capacity, mask, round_robin_order(table))
        return _finish(self.name, table, choice, start)


@dataclass(frozen=True)
class RandomAllocator(Allocator):
    """Seeded random widths, brought within the budget and filled in a seeded random order."""

    name: ClassVar[str] = "random"
    seed: int = 0

    def allocate(self, table: CostTable, budget: Budget, bounds: Bounds | None = None) -> Allocation:
        start = time.perf_counter()
        mask, weight, capacity = _setup(table, budget, bounds)
        rng = np.random.default_rng(self.seed)
        keys = np.where(mask, rng.random(mask.shape), -1.0)  # [U, W]
        choice = keys.argmax(axis=1)  # a uniformly random allowed option per unit
        choice = shrink_in_order(choice, weight, capacity, mask, rng.permutation(len(choice)).tolist())
        choice = fill_in_order(choice, weight, capacity, mask, rng.permutation(len(choice)).tolist())
        return _finish(self.name, table, choice, start)


@dataclass(frozen=True)
class AlphaRatioAllocator(Allocator):
    """Paper-style heuristic: around the uniform width, per layer the top alpha quartile (worst-trained)
    one candidate width down and the bottom quartile one up; then repaired to the budget (highest alpha
    moved down first, lowest alpha moved up first). With ``granularity="layer"`` quartiles are global."""

    name: ClassVar[str] = "alpha_ratio"

    def allocate(self, table: CostTable, budget: Budget, bounds: Bounds | None = None) -> Allocation:
        start = time.perf_counter()
        mask, weight, capacity = _setup(table, budget, bounds)
        base = uniform_base(mask, weight, capacity)
        choice = base.copy()
        per_layer = any(u.expert is not None for u in table.units)
        groups: dict[Any, list[int]] = {}
        for i, unit in enumerate(table.units):
            groups.setdefault(unit.layer if per_layer else None, []).append(i)
        for members in groups.values():
            fitted = sorted((table.units[i].alpha, i) for i in members if math.isfinite(table.units[i].alpha))
            quarter = len(fitted) // 4
            for _, unit in fitted[:quarter]:
                upper = _step(mask, unit, int(base[unit]), +1)
                choice[unit] = base[unit] if upper is None else upper
            for _, unit in fitted[len(fitted) - quarter :]:
                lower = _step(mask, unit, int(base[unit]), -1)
                choice[unit] = base[unit] if lower is None else lower
        alpha = np.array([u.alpha for u in table.units])
        alpha = np.where(np.isfinite(alpha), alpha, np.nanmedian(alpha) if np.isfinite(alpha).any() else 0.0)
        by_alpha = np.argsort(alpha, kind="stable")
        choice = shrink_in_order(choice, weight, capacity, mask, by_alpha[::-1].tolist())
        choice = fill_in_order(choice, weight, capacity, mask, by_alpha.tolist())
        return _finish(self.name, table, choice, start)


#: Registry: allocator name -> class.
ALLOCATORS: dict[str, type[Allocator]] = {
    cls.name: cls
    for cls in (
        AlphaQAllocator,
        UniformAllocator,
        RandomAllocator,
        AlphaRatioAllocator,
        WeightNormAllocator,
        FrequencyAllocator,
    )
}


def create_allocator(name: str, **options: Any) -> Allocator:
    """Instantiate a registered allocator with the options it accepts (others are ignored).

    Args:
        name: a key of :data:`ALLOCATORS`.
        **options: e.g. ``solver``, ``time_limit``, ``seed``, ``routing_shares``.

    Raises:
        ConfigError: unknown allocator name.
    """
    if name not in ALLOCATORS:
        raise ConfigError(f"unknown allocator {name!r}; use one of {', '.join(ALLOCATORS)}")
    cls = ALLOCATORS[name]
    accepted = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return cls(**{k: v for k, v in options.items() if k in accepted})
