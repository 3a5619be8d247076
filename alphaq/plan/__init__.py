"""``alphaq plan``: optimal per-expert bit allocation under a memory budget (AlphaQ allocator and baselines).

The public API is imported lazily so the CLI starts fast:

- :func:`make_plan` / :func:`sweep` / :class:`PlanConfig` (:mod:`alphaq.plan.planner`): details + weights ->
  a :class:`Plan`; predicted error against budget for several allocators.
- :class:`Plan`, :func:`save_plan`, :func:`load_plan`, :data:`PLAN_SCHEMA_VERSION` (:mod:`alphaq.plan.plan_file`).
- :class:`Budget`, :class:`Bounds` (:mod:`alphaq.plan.budget`); :class:`KeepPolicy`, :func:`build_units`,
  :class:`Unit` (:mod:`alphaq.plan.units`); :class:`CostTable` (:mod:`alphaq.plan.costs`).
- :data:`ALLOCATORS`, :class:`Allocation` (:mod:`alphaq.plan.allocators`); :func:`solve_exact`,
  :func:`solve_lagrangian`, :class:`Solution` (:mod:`alphaq.plan.solver`).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "PlanConfig": "alphaq.plan.planner", "make_plan": "alphaq.plan.planner", "sweep": "alphaq.plan.planner",
    "cost_table": "alphaq.plan.planner",
    "Plan": "alphaq.plan.plan_file", "PlanTensor": "alphaq.plan.plan_file", "save_plan": "alphaq.plan.plan_file",
    "load_plan": "alphaq.plan.plan_file", "PLAN_SCHEMA_VERSION": "alphaq.plan.plan_file",
    "Budget": "alphaq.plan.budget", "Bounds": "alphaq.plan.budget", "parse_widths": "alphaq.plan.budget",
    "KeepPolicy": "alphaq.plan.units", "Unit": "alphaq.plan.units", "build_units": "alphaq.plan.units",
    "Granularity": "alphaq.plan.units",
    "CostTable": "alphaq.plan.costs", "build_cost_table": "alphaq.plan.costs", "matrix_errors": "alphaq.plan.costs",
    "ALLOCATORS": "alphaq.plan.allocators", "Allocation": "alphaq.plan.allocators", "Allocator": "alphaq.plan.allocators",
    "create_allocator": "alphaq.plan.allocators",
    "Solution": "alphaq.plan.solver", "solve_exact": "alphaq.plan.solver", "solve_lagrangian": "alphaq.plan.solver",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alphaq.plan' has no attribute {name!r}")
