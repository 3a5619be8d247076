from __future__ import annotations

import numpy as np
import pytest

from alphaq.errors import ConfigError, PlanError
from alphaq.planning.budget import Bounds, Budget, allowed_mask, budget_constraint, check_feasible, parse_widths
from alphaq.planning.costs import MatrixErrors, build_cost_table
from alphaq.planning.units import build_units, expert_rows
from tests.planning.test_units import make_details


def table_for(details, widths=(2, 3, 4, 8), group_size=32):
    rows = expert_rows(details)
    errors = MatrixErrors(
        tuple(rows["name"]),
        tuple(widths),
        np.tile(2.0 ** -np.asarray(widths, float), (len(rows), 1)),
        np.ones(len(rows)),
        "measured",
    )
    return build_cost_table(build_units(details, "expert"), errors, group_size)


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("3.5", "bits", 3.5),
        ("3.5bits", "bits", 3.5),
        (" 2 bit ", "bits", 2.0),
        (3, "bits", 3.0),
        ("12GB", "bytes", 12e9),
        ("800MB", "bytes", 800e6),
        ("1.5GiB", "bytes", 1.5 * 2**30),
        ("100 kB", "bytes", 1e5),
        ("64KiB", "bytes", 65536),
        ("1000000B", "bytes", 1e6),
        ("2tb", "bytes", 2e12),
    ],
)
def test_budget_parse(text, kind, value) -> None:
    budget = Budget.parse(text)
    assert budget.kind == kind and budget.value == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "3.5 parsecs", "-2", "0", "12 G B"])
def test_budget_parse_errors(text) -> None:
    with pytest.raises(ConfigError):
        Budget.parse(text)


def test_parse_widths() -> None:
    assert parse_widths("8,2, 4,3,4") == (2, 3, 4, 8)
    assert parse_widths([1, 8]) == (1, 8)
    for bad in ("", "0,2", "2,9", "two", [16]):
        with pytest.raises(ConfigError):
            parse_widths(bad)


def test_bounds_parse_and_limits() -> None:
    bounds = Bounds.parse("2,0:4,3-5:3", "8,1:4")
    assert bounds.limits(0) == (4, 8) and bounds.limits(1) == (2, 4) and bounds.limits(4) == (3, 8)
    assert bounds.limits(9) == (2, 8) and bounds.limits(None) == (2, 8)
    assert Bounds.parse(None, None).limits(0) == (1, 8)
    assert Bounds.parse("0:4").limits(0) == (4, 8) and Bounds.parse("0:4").limits(1) == (1, 8)
    for low, high in (("x", None), ("0:", None), ("9", None), ("4", "3"), ("0:6", "0:5")):
        with pytest.raises(ConfigError):
            Bounds.parse(low, high)


def test_allowed_mask() -> None:
    units = build_units(make_details(layers=2, experts=2), "expert")
    mask = allowed_mask(units, (2, 3, 4, 8), Bounds.parse("0:4", "1:3"))
    assert mask.tolist() == [[False, False, True, True]] * 2 + [[True, True, False, False]] * 2
    with pytest.raises(PlanError, match=r"no candidate width of \[2, 3, 4, 8\] lies in \[5, 7\] for unit L0.E0"):
        allowed_mask(units, (2, 3, 4, 8), Bounds.parse("5", "7"))


def test_constraint_bits_counts_payload_over_real_params_and_bytes_include_overhead() -> None:
    table = table_for(make_details(layers=1, experts=2, extra=False), group_size=32)
    bits = budget_constraint(Budget.parse("3.5"), table)
    assert bits.unit == "bits" and bits.capacity == 3.5 * 2 * 6144
    assert bits.weight[0].tolist() == [2 * 6144, 3 * 6144, 4 * 6144, 8 * 6144]
    nbytes = budget_constraint(Budget.parse("10kB"), table)
    # per expert at 2 bits, group 32: payload 6144 * 2 / 8 = 1536; scales+zeros: (32*2 + 32*2 + 64*1) * 2 * 2 = 768
    assert nbytes.unit == "bytes" and nbytes.capacity == 10_000 and nbytes.weight[0, 0] == 1536 + 768


def test_infeasible_budget_reports_range() -> None:
    table = table_for(make_details(layers=1, experts=2, extra=False), group_size=32)
    mask = np.ones((2, 4), dtype=bool)
    check_feasible(Budget.parse("2"), table, mask)
    check_feasible(Budget.parse("8"), table, mask)
    with pytest.raises(PlanError, match=r"below the smallest.*2 to 8 bits/weight .*4608 to 13824 bytes"):
        check_feasible(Budget.parse("1.5"), table, mask)
    with pytest.raises(PlanError, match=r"above the largest.*2 to 8 bits/weight"):
        check_feasible(Budget.parse("9"), table, mask)
    with pytest.raises(PlanError, match=r"4608 to 13824 bytes"):
        check_feasible(Budget.parse("4kB"), table, mask)
    bounded = np.array([[False, False, True, True]] * 2)
    with pytest.raises(PlanError, match=r"4 to 8 bits/weight"):
        check_feasible(Budget.parse("3"), table, bounded)
