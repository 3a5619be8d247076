"""``alphaq plan``: optimal per-expert bit allocation under a memory budget (AlphaQ allocator and baselines).

The public API is imported lazily so the CLI starts fast:

- :func:`make_plan` / :func:`sweep` / :class:`PlanConfig` (:mod:`alphaq.planning.planner`): details + weights ->
  a :class:`Plan`; predicted error against budget for several allocators.
- :class:`Plan`, :func:`save_plan`, :func:`load_plan`, :data:`PLAN_SCHEMA_VERSION` (:mod:`alphaq.planning.plan_file`).
- :class:`Budget`, :class:`Bounds` (:mod:`alphaq.planning.budget`); :class:`KeepPolicy`, :func:`build_units`,
  :class:`Unit` (:mod:`alphaq.planning.units`); :class:`CostTable` (:mod:`alphaq.planning.costs`).
- :data:`ALLOCATORS`, :class:`Allocation` (:mod:`alphaq.planning.allocators`); :func:`solve_exact`,
  :func:`solve_lagrangian`, :class:`Solution` (:mod:`alphaq.planning.solver`).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "PlanConfig": "alphaq.planning.planner",
    "make_plan": "alphaq.planning.planner",
    "sweep": "alphaq.planning.planner",
    "cost_table": "alphaq.planning.planner",
    "Plan": "alphaq.planning.plan_file",
    "PlanTensor": "alphaq.planning.plan_file",
    "save_plan": "alphaq.planning.plan_file",
    "load_plan": "alphaq.planning.plan_file",
    "PLAN_SCHEMA_VERSION": "alphaq.planning.plan_file",
    "Budget": "alphaq.planning.budget",
    "Bounds": "alphaq.planning.budget",
    "parse_widths": "alphaq.planning.budget",
    "KeepPolicy": "alphaq.planning.units",
    "Unit": "alphaq.planning.units",
    "build_units": "alphaq.planning.units",
    "Granularity": "alphaq.planning.units",
    "CostTable": "alphaq.planning.costs",
    "build_cost_table": "alphaq.planning.costs",
    "matrix_errors": "alphaq.planning.costs",
    "ALLOCATORS": "alphaq.planning.allocators",
    "Allocation": "alphaq.planning.allocators",
    "Allocator": "alphaq.planning.allocators",
    "create_allocator": "alphaq.planning.allocators",
    "Solution": "alphaq.planning.solver",
    "solve_exact": "alphaq.planning.solver",
    "solve_lagrangian": "alphaq.planning.solver",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'alphaq.planning' has no attribute {name!r}")
