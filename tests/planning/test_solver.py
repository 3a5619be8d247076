from __future__ import annotations

import itertools

import numpy as np
import pytest

from alphaq.errors import PlanError
from alphaq.planning.solver import normalize_weights, relative_gap, solve_exact, solve_lagrangian


def brute_force(cost: np.ndarray, weight: np.ndarray, capacity: float, mask: np.ndarray) -> float:
    units = np.arange(cost.shape[0])
    best = np.inf
    for combo in itertools.product(range(cost.shape[1]), repeat=cost.shape[0]):
        choice = np.array(combo)
        if mask[units, choice].all() and weight[units, choice].sum() <= capacity:
            best = min(best, float(cost[units, choice].sum()))
    return best


def random_instance(rng: np.random.Generator, integral: bool) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    units, options = int(rng.integers(1, 7)), int(rng.integers(1, 5))
    cost = rng.uniform(0.0, 10.0, (units, options))
    if integral:
        weight = rng.integers(0, 20, (units, options)) * 1000.0 + 7.0
    else:
        weight = rng.uniform(0.0, 20.0, (units, options))
    mask = rng.random((units, options)) < 0.8
    mask[np.arange(units), rng.integers(0, options, units)] = True
    lo = np.where(mask, weight, np.inf).min(axis=1).sum()
    hi = np.where(mask, weight, -np.inf).max(axis=1).sum()
    return cost, weight, float(rng.uniform(lo, hi + 1.0)), mask


@pytest.mark.parametrize("integral", [True, False])
def test_exact_equals_brute_force_and_lagrangian_within_its_gap(integral: bool) -> None:
    rng = np.random.default_rng(7 if integral else 8)
    for _ in range(150):
        cost, weight, capacity, mask = random_instance(rng, integral)
        best = brute_force(cost, weight, capacity, mask)
        for core in ("auto", "milp") if integral else ("auto",):
            exact = solve_exact(cost, weight, capacity, mask, mip_rel_gap=0.0, core=core)
            assert exact.objective == pytest.approx(best, rel=1e-9, abs=1e-9)
            assert exact.weight <= capacity and exact.status == "optimal"
            assert exact.bound <= best + 1e-9
        fast = solve_lagrangian(cost, weight, capacity, mask)
        units = np.arange(len(fast.choice))
        assert mask[units, fast.choice].all()
        assert weight[units, fast.choice].sum() <= capacity
        assert fast.objective == pytest.approx(cost[units, fast.choice].sum())
        assert fast.bound <= best + 1e-9 <= fast.objective + 2e-9
        assert fast.objective - fast.bound == pytest.approx(fast.gap * abs(fast.objective), abs=1e-9)


def test_dp_core_on_structured_instance_is_optimal_and_beats_greedy() -> None:
    # 120 units with equal weights 2,3,4,8 and near-equal convex costs: the Lagrangian greedy leaves a gap
    rng = np.random.default_rng(0)
    widths = np.array([2.0, 3.0, 4.0, 8.0])
    cost = rng.uniform(0.8, 1.2, (120, 1)) * 2.0**-widths * (1 + 0.02 * rng.standard_normal((120, 4)))
    weight = np.broadcast_to(widths * 1000, (120, 4)).copy()
    capacity = (588 + 3) * 1000.0
    fast = solve_lagrangian(cost, weight, capacity)
    exact = solve_exact(cost, weight, capacity, mip_rel_gap=0.0, core="dp")
    milp = solve_exact(cost, weight, capacity, mip_rel_gap=0.0, core="milp", time_limit=30)
    assert fast.gap > 0 and exact.status == "optimal" and exact.gap == 0.0
    assert exact.objective < fast.objective and exact.weight <= capacity and exact.core_units == 120
    assert exact.objective == pytest.approx(milp.objective, rel=1e-9)


def test_deterministic() -> None:
    rng = np.random.default_rng(3)
    cost, weight = rng.uniform(size=(50, 4)), rng.integers(1, 9, (50, 4)).astype(float)
    capacity = float(weight.mean(axis=1).sum())
    first = solve_exact(cost, weight, capacity, mip_rel_gap=0.0)
    second = solve_exact(cost, weight, capacity, mip_rel_gap=0.0)
    np.testing.assert_array_equal(first.choice, second.choice)
    np.testing.assert_array_equal(
        solve_lagrangian(cost, weight, capacity).choice, solve_lagrangian(cost, weight, capacity).choice
    )


def test_slack_capacity_takes_cheapest_everywhere() -> None:
    cost = np.array([[3.0, 1.0, 2.0], [5.0, 4.0, 0.5]])
    weight = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    for solution in (solve_exact(cost, weight, 100.0), solve_lagrangian(cost, weight, 100.0)):
        assert solution.choice.tolist() == [1, 2] and solution.gap == 0.0 and solution.multiplier == 0.0


def test_infeasible_and_bad_input() -> None:
    cost, weight = np.ones((2, 2)), np.array([[2.0, 3.0], [2.0, 3.0]])
    with pytest.raises(PlanError, match="lightest allowed choice weighs 4 > capacity 3"):
        solve_exact(cost, weight, 3.0)
    with pytest.raises(PlanError, match="no allowed width"):
        solve_lagrangian(cost, weight, 10.0, np.array([[True, True], [False, False]]))
    with pytest.raises(ValueError, match="shape"):
        solve_exact(np.ones((2, 2)), np.ones((2, 3)), 1.0)


def test_normalize_weights_is_exact() -> None:
    weight = np.array([[10.0, 16.0, 22.0], [7.0, 13.0, 31.0]])
    mask = np.ones_like(weight, dtype=bool)
    norm, capacity, divisor = normalize_weights(weight, 40.9, mask)
    assert divisor == 6.0
    np.testing.assert_array_equal(norm, [[0, 1, 2], [0, 1, 4]])
    assert capacity == 3.0  # floor(40.9) - 17 = 23 -> 23 // 6 = 3
    _, capacity_float, divisor_float = normalize_weights(weight + 0.5, 41.4, mask)
    assert divisor_float == 1.0 and capacity_float == pytest.approx(41.4 - 18.0)


def test_relative_gap() -> None:
    assert relative_gap(0.0, 0.0) == 0.0
    assert relative_gap(2.0, 1.0) == 0.5
    assert relative_gap(1.0, 1.0 + 1e-12) == 0.0


def test_time_limit_returns_the_lagrangian_incumbent() -> None:
    rng = np.random.default_rng(0)
    widths = np.array([2.0, 3.0, 4.0, 8.0])
    cost = rng.uniform(0.8, 1.2, (120, 1)) * 2.0**-widths * (1 + 0.02 * rng.standard_normal((120, 4)))
    weight = np.broadcast_to(widths * 1000, (120, 4)).copy()
    capacity = (588 + 3) * 1000.0
    fast = solve_lagrangian(cost, weight, capacity)
    stopped = solve_exact(cost, weight, capacity, mip_rel_gap=0.0, time_limit=1e-9)
    assert stopped.status == "time_limit" and stopped.objective == fast.objective and stopped.gap > 0
    with pytest.raises(ValueError, match="integer weights"):
        solve_exact(cost, weight * rng.uniform(1.0, 1.1, weight.shape), capacity, mip_rel_gap=0.0, core="dp")
