from __future__ import annotations

import numpy as np
import pytest

from alphaq.errors import ConfigError, PlanError
from alphaq.planning.allocators import (
    ALLOCATORS,
    AlphaQAllocator,
    FrequencyAllocator,
    RandomAllocator,
    UniformAllocator,
    create_allocator,
)
from alphaq.planning.budget import Bounds, Budget, allowed_mask, budget_constraint
from alphaq.planning.costs import MatrixErrors, build_cost_table
from alphaq.planning.units import build_units, expert_rows
from tests.planning.test_units import make_details

NAMES = sorted(ALLOCATORS)


def make_table(details, widths=(2, 3, 4, 8), group_size=32, gamma=1.0, curve=None, rng=None, granularity="expert"):
    """Cost table with hand-made error curves: ``curve`` [W] for every matrix, or random decreasing ones."""
    rows = expert_rows(details)
    bits = np.asarray(widths, dtype=float)
    if curve is not None:
        error = np.tile(np.asarray(curve, dtype=float), (len(rows), 1))
    else:
        error = rng.uniform(0.5, 2.0, (len(rows), 1)) * 2.0**-bits * rng.uniform(0.9, 1.1, (len(rows), len(bits)))
        error = np.minimum.accumulate(error, axis=1)
    sq_norm = (
        rng.uniform(0.5, 2.0, len(rows)) * rows["params"].to_numpy()
        if rng is not None
        else rows["params"].to_numpy(dtype=float)
    )
    errors = MatrixErrors(tuple(rows["name"]), tuple(widths), error, sq_norm, "measured")
    return build_cost_table(build_units(details, granularity), errors, group_size, gamma)


def random_case(rng):
    layers, experts = int(rng.integers(1, 4)), int(rng.integers(1, 7))
    cols = int(rng.choice([24, 40, 64, 100]))
    shapes = {"gate": (16, cols), "up": (16, cols), "down": (cols, 16)}
    alphas = {(l, e): float(rng.uniform(1.5, 6.0)) for l in range(layers) for e in range(experts)}
    details = make_details(layers, experts, alphas=alphas, extra=False, shapes=shapes)
    widths = tuple(sorted(rng.choice(np.arange(1, 9), size=int(rng.integers(1, 5)), replace=False).tolist()))
    granularity = str(rng.choice(["expert", "matrix", "layer"]))
    table = make_table(
        details, widths, int(rng.choice([8, 32, 128])), float(rng.uniform(0, 3)), rng=rng, granularity=granularity
    )
    bounds = Bounds.parse(f"0:{widths[-1]}") if rng.random() < 0.2 else Bounds()
    mask = allowed_mask(table.units, widths, bounds)
    kind = "bits" if rng.random() < 0.5 else "bytes"
    source = table.payload_bits if kind == "bits" else table.bytes
    lo = int(np.where(mask, source, source.max()).min(axis=1).sum())
    hi = int(np.where(mask, source, 0).max(axis=1).sum())
    if kind == "bytes":
        return table, Budget("bytes", float(rng.integers(lo, hi + 1))), bounds, mask
    value = float(rng.uniform(lo, hi)) / table.total_params
    while value * table.total_params < lo:  # keep the rounded capacity inside [lo, hi]
        value = float(np.nextafter(value, np.inf))
    while value * table.total_params > hi:
        value = float(np.nextafter(value, -np.inf))
    budget = Budget("bits", value)
    return table, budget, bounds, mask


@pytest.mark.parametrize("name", NAMES)
def test_every_allocator_respects_budget_and_bounds_and_uses_the_budget(name) -> None:
    rng = np.random.default_rng(abs(hash(name)) % 1000)
    for trial in range(40):
        table, budget, bounds, mask = random_case(rng)
        shares = {(u.layer, u.expert): float(rng.uniform(0, 1)) for u in table.units if u.expert is not None}
        alloc = create_allocator(name, seed=trial, routing_shares=shares or {(0, 0): 1.0}).allocate(
            table, budget, bounds
        )
        units = np.arange(len(table.units))
        assert mask[units, alloc.choice].all()
        params = table.params
        if budget.kind == "bits":
            assert float(params @ alloc.bits) / params.sum() <= budget.value + 1e-12
        else:
            assert int(table.bytes[units, alloc.choice].sum()) <= budget.value
        con = budget_constraint(budget, table)
        used = con.weight[units, alloc.choice].sum()
        cost = table.cost(alloc.importance)
        for u in units:  # no single move up still fits (heuristics) / improves the objective (solvers)
            for w in np.flatnonzero(mask[u]):
                if w > alloc.choice[u] and used - con.weight[u, alloc.choice[u]] + con.weight[u, w] <= con.capacity:
                    assert alloc.solver is not None and cost[u, w] >= cost[u, alloc.choice[u]] - 1e-12
        assert alloc.error == pytest.approx(float((params * table.error[units, alloc.choice]).sum() / params.sum()))


def test_uniform_spreads_the_remainder_evenly_over_layers() -> None:
    table = make_table(make_details(layers=4, experts=8, extra=False), curve=[0.4, 0.2, 0.1, 0.01])
    alloc = UniformAllocator().allocate(table, Budget.parse("3.5"), None)
    layers = np.array([u.layer for u in table.units])
    assert sorted(set(alloc.bits.tolist())) == [3, 4]
    assert [int((alloc.bits[layers == l] == 4).sum()) for l in range(4)] == [4, 4, 4, 4]
    odd = UniformAllocator().allocate(table, Budget.parse(str(3 + 6 / 32)), None)  # 6 units upgraded
    per_layer = [int((odd.bits[layers == l] == 4).sum()) for l in range(4)]
    assert sum(per_layer) == 6 and max(per_layer) - min(per_layer) <= 1
    exact = UniformAllocator().allocate(table, Budget.parse("4"), None)
    assert set(exact.bits.tolist()) == {4}


def test_random_is_seeded() -> None:
    table = make_table(make_details(layers=3, experts=6, extra=False), curve=[0.4, 0.2, 0.1, 0.01])
    budget = Budget.parse("3.3")
    first = RandomAllocator(seed=1).allocate(table, budget).choice
    np.testing.assert_array_equal(first, RandomAllocator(seed=1).allocate(table, budget).choice)
    assert not np.array_equal(first, RandomAllocator(seed=2).allocate(table, budget).choice)


def test_alphaq_gives_lower_alpha_at_least_the_bits_of_higher_alpha() -> None:
    rng = np.random.default_rng(0)
    alphas = {
        (l, e): float(a) for (l, e), a in zip([(l, e) for l in range(2) for e in range(8)], rng.uniform(2, 6, 16))
    }
    details = make_details(layers=2, experts=8, alphas=alphas, extra=False)
    for gamma in (0.5, 1.0, 4.0):
        table = make_table(details, curve=[0.4, 0.2, 0.1, 0.01], gamma=gamma)
        for budget in ("2.4", "3", "3.5", "4.7", "6"):
            alloc = AlphaQAllocator(solver="exact").allocate(table, Budget.parse(budget))
            alpha = np.array([u.alpha for u in table.units])
            order = np.argsort(alpha)
            assert (np.diff(alloc.bits[order]) <= 0).all(), (gamma, budget, alloc.bits[order])
            assert alloc.status == "optimal"
    table = make_table(details, curve=[0.4, 0.2, 0.1, 0.01], gamma=1.0)
    fast = AlphaQAllocator(solver="lagrangian").allocate(table, Budget.parse("3.5"))
    assert fast.solver == "lagrangian" and fast.gap >= 0 and fast.bound <= fast.objective


def test_alpha_ratio_moves_quartiles() -> None:
    alphas = {(0, e): 2.0 + e for e in range(8)}
    details = make_details(layers=1, experts=8, alphas=alphas, extra=False)
    table = make_table(details, widths=(2, 3, 4), curve=[0.4, 0.2, 0.1])
    alloc = create_allocator("alpha_ratio").allocate(table, Budget.parse("3"))
    assert alloc.bits.tolist() == [4, 4, 3, 3, 3, 3, 2, 2]


def test_frequency_uses_routing_shares() -> None:
    details = make_details(layers=1, experts=4, alphas={(0, e): 3.0 for e in range(4)}, extra=False)
    table = make_table(details, curve=[0.4, 0.2, 0.1, 0.01])
    shares = {(0, 0): 0.7, (0, 1): 0.1, (0, 2): 0.1, (0, 3): 0.1}
    alloc = FrequencyAllocator(routing_shares=shares).allocate(table, Budget.parse("3"))
    assert alloc.bits[0] == alloc.bits.max() and alloc.bits[0] > alloc.bits[1]
    assert alloc.importance.tolist() == pytest.approx([2.8, 0.4, 0.4, 0.4])
    partial = FrequencyAllocator(routing_shares={(0, 0): 0.5, (0, 1): 0.5}).allocate(table, Budget.parse("3"))
    assert partial.notes and "2 unit(s) without a routing share" in partial.notes[0]
    with pytest.raises(PlanError, match="routing shares"):
        FrequencyAllocator().allocate(table, Budget.parse("3"))
    assert FrequencyAllocator.needs_data and not AlphaQAllocator.needs_data


def test_weight_norm_prefers_large_weights() -> None:
    details = make_details(layers=1, experts=2, alphas={(0, 0): 3.0, (0, 1): 3.0}, extra=False)
    rows = expert_rows(details)
    errors = MatrixErrors(
        tuple(rows["name"]), (2, 4), np.tile([0.4, 0.1], (6, 1)), np.array([1.0] * 3 + [9.0] * 3) * 2048, "measured"
    )
    table = build_cost_table(build_units(details, "expert"), errors, 32)
    alloc = create_allocator("weight_norm").allocate(table, Budget.parse("3"))
    assert alloc.bits.tolist() == [2, 4]
    assert alloc.importance.tolist() == pytest.approx([0.5, 1.5])


def test_registry_and_errors() -> None:
    assert set(ALLOCATORS) == {"alphaq", "uniform", "random", "alpha_ratio", "weight_norm", "frequency"}
    assert isinstance(create_allocator("random", seed=3, solver="exact"), RandomAllocator)
    with pytest.raises(ConfigError, match="unknown allocator"):
        create_allocator("greedy")
    with pytest.raises(ConfigError, match="solver"):
        AlphaQAllocator(solver="fast")
    table = make_table(make_details(layers=1, experts=2, extra=False), curve=[0.4, 0.2, 0.1, 0.01])
    with pytest.raises(PlanError, match="below the smallest"):
        UniformAllocator().allocate(table, Budget.parse("1.5"))
