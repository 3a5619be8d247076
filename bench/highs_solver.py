"""HiGHS alone against alphaq's exact solver on a DeepSeek-V3-sized bit-width plan (the figures in
``alphaq/planning/solver.py``'s docstring).

The problem is ``bench/plan_scale.py``'s: 58 MoE layers x 256 routed experts at expert granularity (14,848 units),
widths 2/3/4/8, group size 128, synthetic alphas and RTN-like error curves (seed 0). For each budget:

* ``highs``: plain HiGHS (``scipy.optimize.milp``) on the whole binary program, relative gap 1e-6, under
  ``--time-limit`` seconds; its status, objective and time;
* ``exact``: :func:`alphaq.planning.solver.solve_exact` (Lagrangian bound, reduced-cost fixing, DP core); its
  status, gap, core size and time;
* ``highs_excess``: how far HiGHS's objective lies above the exact optimum (relative).

Run: ``python bench/highs_solver.py`` (a few minutes on 2 CPU cores). Prints a table and writes
``bench/results/highs_solver.json`` (atomically).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

# the same synthetic problem as bench/plan_scale.py
from plan_scale import (
    EXPERTS,
    GROUP_SIZE,
    LAYERS,
    SHAPES,
    WIDTHS,
    highs_full,
    machine_record,
    synthetic_details,
    synthetic_errors,
)

RESULT = Path(__file__).resolve().parent / "results" / "highs_solver.json"
BUDGETS = ("2.5", "3.37", "3.5", "4.37", "4.9")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=60.0, help="HiGHS time limit per budget, seconds")
    parser.add_argument("--budgets", default=",".join(BUDGETS))
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    from alphaq.atomic import write_json
    from alphaq.planning.budget import Bounds, Budget, allowed_mask, budget_constraint
    from alphaq.planning.costs import build_cost_table
    from alphaq.planning.solver import solve_exact
    from alphaq.planning.units import build_units

    rng = np.random.default_rng(0)
    details = synthetic_details(rng)
    errors = synthetic_errors(details, rng)
    units = build_units(details, "expert")
    table = build_cost_table(units, errors, GROUP_SIZE, gamma=1.0)
    mask = allowed_mask(table.units, WIDTHS, Bounds())
    cost = table.cost()
    rows = []
    print(
        f"DeepSeek-V3-sized plan, expert granularity: {len(units)} units x {len(WIDTHS)} widths, "
        f"HiGHS time limit {args.time_limit:g} s, {os.cpu_count()} CPU(s)"
    )
    print(
        f"{'budget':>7} {'HiGHS s':>8} {'HiGHS status':>40} {'excess':>9} {'exact s':>8} {'status':>8} {'gap':>8} "
        f"{'core':>5}"
    )
    for text in args.budgets.split(","):
        con = budget_constraint(Budget.parse(text), table)
        exact = solve_exact(cost, con.weight, con.capacity, mask, time_limit=args.time_limit)
        highs = highs_full(table, mask, text, time_limit=args.time_limit)
        excess = None if highs["objective"] is None else (highs["objective"] - exact.objective) / abs(exact.objective)
        row = {
            "budget": text,
            "highs_seconds": highs["seconds"],
            "highs_message": highs["message"],
            "highs_objective": highs["objective"],
            "highs_excess": excess,
            "exact_seconds": exact.seconds,
            "exact_status": exact.status,
            "exact_gap": exact.gap,
            "exact_core_units": exact.core_units,
            "exact_objective": exact.objective,
        }
        rows.append(row)
        print(
            f"{text:>7} {highs['seconds']:8.2f} {highs['message'][:40]:>40} "
            f"{excess if excess is not None else float('nan'):9.1e} {exact.seconds:8.3f} {exact.status:>8} "
            f"{exact.gap:8.1e} {exact.core_units:5d}"
        )
    payload = {
        "benchmark": "highs_solver",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_record(),
        "problem": {
            "moe_layers": len(LAYERS),
            "experts": EXPERTS,
            "shapes": SHAPES,
            "widths": list(WIDTHS),
            "group_size": GROUP_SIZE,
            "granularity": "expert",
            "units": len(units),
            "gamma": 1.0,
            "seed": 0,
            "highs_time_limit": args.time_limit,
            "highs_mip_rel_gap": 1e-6,
        },
        "rows": rows,
    }
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
