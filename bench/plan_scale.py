"""How fast is ``alphaq plan``'s allocation at DeepSeek-V3 scale?

58 MoE layers x 256 routed experts, each expert three matrices of the real V3 shapes (gate/up 2048x7168,
down 7168x2048), candidate widths 2/3/4/8, group size 128, synthetic alphas and error curves. Solves
each budget exactly (Lagrangian bound + reduced-cost fixing + exact DP core) and with the Lagrangian
fast path, at expert granularity (14,848 units) and matrix granularity (44,544 units), and once with
plain HiGHS on the full binary program for reference. Prints a table and writes
``bench/results/plan_scale.json`` (atomically).

Run: ``python bench/plan_scale.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

from alphaq.atomic import write_json
from alphaq.planning.allocators import AlphaQAllocator
from alphaq.planning.budget import Bounds, Budget, allowed_mask, budget_constraint
from alphaq.planning.costs import MatrixErrors, build_cost_table
from alphaq.planning.solver import solve_exact, solve_lagrangian
from alphaq.planning.units import build_units

LAYERS = range(3, 61)  # V3: layers 0-2 dense, 3-60 MoE (58 layers)
EXPERTS = 256
SHAPES = {"gate": (2048, 7168), "up": (2048, 7168), "down": (7168, 2048)}
WIDTHS = (2, 3, 4, 8)
GROUP_SIZE = 128
BUDGETS = ("2.5", "3.0", "3.37", "3.5", "4.37", "4.9", "250GB")
RESULT = Path(__file__).resolve().parent / "results" / "plan_scale.json"


def machine_record() -> dict:
    """Where the benchmark ran: CPUs, platform and the numerical libraries' versions."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }


def synthetic_details(rng: np.random.Generator) -> pd.DataFrame:
    """Details rows of every routed-expert matrix, alphas drifting with depth plus per-expert spread."""
    rows = []
    for layer in LAYERS:
        layer_alpha = 3.0 + 1.5 * (layer - 3) / 57
        for expert in range(EXPERTS):
            alpha = float(layer_alpha * rng.lognormal(0.0, 0.15))
            for proj, (r, c) in SHAPES.items():
                rows.append(
                    {
                        "name": f"L{layer}.E{expert}.{proj}",
                        "tensor": f"model.layers.{layer}.mlp.experts.{expert}.{proj}_proj.weight",
                        "layer": layer,
                        "expert": expert,
                        "proj": proj,
                        "role": "expert",
                        "rows": r,
                        "cols": c,
                        "params": r * c,
                        "alpha": alpha * float(rng.lognormal(0.0, 0.05)),
                        "status": "success",
                    }
                )
    return pd.DataFrame(rows)


def synthetic_errors(details: pd.DataFrame, rng: np.random.Generator) -> MatrixErrors:
    """RTN-like relative errors ~ c * 2^-b with per-matrix scale and 2% noise, non-increasing in bits."""
    bits = np.asarray(WIDTHS, dtype=np.float64)
    scale = 0.35 * rng.uniform(0.8, 1.2, (len(details), 1))
    error = scale * 2.0**-bits * (1.0 + 0.02 * rng.standard_normal((len(details), len(bits))))
    sq_norm = details["params"].to_numpy(np.float64) * 1e-4
    return MatrixErrors(tuple(details["name"]), WIDTHS, np.minimum.accumulate(error, axis=1), sq_norm, "measured")


def run_granularity(details: pd.DataFrame, errors: MatrixErrors, granularity: str) -> dict:
    start = time.perf_counter()
    units = build_units(details, granularity)
    table = build_cost_table(units, errors, GROUP_SIZE, gamma=1.0)
    setup = time.perf_counter() - start
    mask = allowed_mask(table.units, WIDTHS, Bounds())
    cost = table.cost()
    rows = []
    for text in BUDGETS:
        budget = Budget.parse(text)
        con = budget_constraint(budget, table)
        exact = solve_exact(cost, con.weight, con.capacity, mask, time_limit=60.0)
        fast = solve_lagrangian(cost, con.weight, con.capacity, mask)
        start = time.perf_counter()
        alloc = AlphaQAllocator(solver="exact").allocate(table, budget)
        rows.append(
            {
                "budget": text,
                "exact_seconds": exact.seconds,
                "exact_status": exact.status,
                "exact_gap": exact.gap,
                "exact_core_units": exact.core_units,
                "exact_objective": exact.objective,
                "exact_bound": exact.bound,
                "lagrangian_seconds": fast.seconds,
                "lagrangian_gap": fast.gap,
                "lagrangian_excess": (fast.objective - exact.objective) / exact.objective,
                "allocator_seconds": time.perf_counter() - start,
                "average_payload_bits": float(table.params @ alloc.bits / table.total_params),
                "expert_gb": float(table.bytes[np.arange(len(units)), alloc.choice].sum()) / 1e9,
            }
        )
    return {
        "granularity": granularity,
        "units": len(units),
        "options": int(cost.size),
        "setup_seconds": setup,
        "budgets": rows,
        "table": table,
        "mask": mask,
    }


def highs_full(table, mask: np.ndarray, text: str, time_limit: float = 60.0) -> dict:
    """Plain HiGHS on the whole binary program (no fixing), for reference."""
    from scipy import sparse
    from scipy.optimize import Bounds as VarBounds
    from scipy.optimize import LinearConstraint, milp

    cost = table.cost()
    con = budget_constraint(Budget.parse(text), table)
    num_units, num_options = cost.shape
    n = num_units * num_options
    one_each = sparse.kron(sparse.eye(num_units, format="csr"), np.ones((1, num_options)), format="csr")
    scale = float(con.weight.max())
    start = time.perf_counter()
    result = milp(
        cost.ravel() / cost.mean(),
        integrality=np.ones(n),
        bounds=VarBounds(0, np.where(mask, 1, 0).ravel()),
        constraints=[
            LinearConstraint(one_each, 1, 1),
            LinearConstraint(sparse.csr_array(con.weight.ravel()[None, :] / scale), -np.inf, con.capacity / scale),
        ],
        options={"time_limit": time_limit, "mip_rel_gap": 1e-6},
    )
    return {
        "budget": text,
        "seconds": time.perf_counter() - start,
        "message": result.message,
        "objective": float(result.fun * cost.mean()) if result.x is not None else None,
    }


def main() -> int:
    rng = np.random.default_rng(0)
    details = synthetic_details(rng)
    errors = synthetic_errors(details, rng)
    results = [run_granularity(details, errors, g) for g in ("expert", "matrix")]
    reference = highs_full(results[0]["table"], results[0]["mask"], "3.5")
    print(
        f"DeepSeek-V3-sized plan: {len(LAYERS)} MoE layers x {EXPERTS} experts x 3 matrices, widths {WIDTHS}, "
        f"group {GROUP_SIZE}, {os.cpu_count()} CPU(s)"
    )
    for res in results:
        print(
            f"\n{res['granularity']} granularity: {res['units']} units, {res['options']} options, "
            f"setup (units + cost table) {res['setup_seconds']:.2f} s"
        )
        print(
            f"{'budget':>8} {'exact s':>8} {'status':>9} {'gap':>9} {'core':>6} {'lagr s':>7} {'lagr gap':>9} "
            f"{'lagr excess':>11} {'alloc s':>8} {'bits':>6} {'GB':>7}"
        )
        for row in res["budgets"]:
            print(
                f"{row['budget']:>8} {row['exact_seconds']:8.3f} {row['exact_status']:>9} {row['exact_gap']:9.2e} "
                f"{row['exact_core_units']:6d} {row['lagrangian_seconds']:7.3f} {row['lagrangian_gap']:9.2e} "
                f"{row['lagrangian_excess']:11.2e} {row['allocator_seconds']:8.3f} "
                f"{row['average_payload_bits']:6.3f} {row['expert_gb']:7.2f}"
            )
    print(
        f"\nreference: plain HiGHS on the full expert-granularity program at 3.5 bits: "
        f"{reference['seconds']:.2f} s ({reference['message']})"
    )
    payload = {
        "benchmark": "plan_scale",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_record(),
        "problem": {
            "moe_layers": len(LAYERS),
            "experts": EXPERTS,
            "shapes": SHAPES,
            "widths": list(WIDTHS),
            "group_size": GROUP_SIZE,
            "budgets": list(BUDGETS),
            "gamma": 1.0,
            "seed": 0,
        },
        "results": [{k: v for k, v in res.items() if k not in ("table", "mask")} for res in results],
        "highs_full_reference": reference,
    }
    write_json(RESULT, payload)
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
