"""``make_plan`` and ``sweep``: inspect details + weights -> a bit-width plan, pure and silent.

The expensive step (predicting every matrix's error at every width) runs once per call; ``sweep``
reuses its cost table for every budget and allocator.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from alphaq._version import __version__
from alphaq.errors import ConfigError, PlanError
from alphaq.export.ggml_types import gguf_matrix_nbytes
from alphaq.planning.allocators import ALLOCATORS, Allocation, create_allocator
from alphaq.planning.budget import Budget, budget_constraint
from alphaq.planning.config import DEFAULT_BUDGET, DEFAULT_SWEEP_ALLOCATORS, TARGETS, PlanConfig, _names  # noqa: F401 - re-exported
from alphaq.planning.costs import CostTable, MatrixErrors, ReadMatrix, build_cost_table, matrix_errors
from alphaq.planning.plan_file import Plan, PlanTensor, tensor_totals
from alphaq.planning.units import KEEP_BF16, build_units, kept_bytes_by_role, kept_rows, matrix_nbytes
from alphaq.progress import ProgressFn
from alphaq.quantization.layout import dense_nbytes


def cost_table(
    details: pd.DataFrame,
    read_matrix: ReadMatrix | None,
    config: PlanConfig,
    *,
    progress: ProgressFn | None = None,
    errors: MatrixErrors | None = None,
) -> CostTable:
    """Units, per-width errors, bytes and alpha importance for ``config`` (the expensive step).

    Args:
        details: inspect details, one row per matrix.
        read_matrix: ``name -> float32 tensor [rows, cols]`` (None only for ``analytic`` with a var column).
        config: plan options.
        progress: ``progress(1, matrix name, total)`` per matrix measured.
        errors: per-matrix errors already measured for the same widths and group size (skips the
            expensive step; see :func:`measure_errors`).

    Returns:
        The :class:`alphaq.planning.costs.CostTable`.
    """
    _refuse_gguf(config)
    units = build_units(details, config.granularity)
    if errors is None:
        errors = measure_errors(details, read_matrix, config, progress=progress)
    elif errors.widths != tuple(config.widths) or errors.model != config.error_model:
        raise ConfigError("the given errors were measured for other widths or another error model; re-measure them")
    return build_cost_table(units, errors, config.group_size, config.gamma)


def _refuse_gguf(config: PlanConfig) -> None:
    """Whole-model GGUF plans need llama.cpp (conversion, measured errors, the file's size): another path."""
    if config.target == "gguf":
        raise PlanError(
            "--target gguf plans the whole GGUF file with llama.cpp's own tools; make it with `alphaq plan --target "
            "gguf` or alphaq.plan(model, PlanConfig(target='gguf', ...), out) (alphaq.planning.gguf_run)"
        )


def measure_errors(
    details: pd.DataFrame, read_matrix: ReadMatrix | None, config: PlanConfig, *, progress: ProgressFn | None = None
) -> MatrixErrors:
    """The expensive step of a plan: every routed-expert matrix's error at every candidate width.

    Reuse the result across granularities, allocators and budgets (``errors=`` of the other functions).

    Raises:
        PlanError: the ``gguf`` target (whole-model plans: :mod:`alphaq.planning.gguf_run`).
    """
    _refuse_gguf(config)
    return matrix_errors(
        details,
        read_matrix,
        config.widths,
        config.group_size,
        config.error_model,
        method=config.quant_method,
        max_rows=config.max_rows,
        progress=progress,
    )


def _allocate(
    table: CostTable,
    config: PlanConfig,
    name: str,
    budget: Budget,
    routing_shares: Mapping[tuple[int, int], float] | None,
) -> Allocation:
    allocator = create_allocator(
        name, solver=config.solver, time_limit=config.time_limit, seed=config.seed, routing_shares=routing_shares
    )
    return allocator.allocate(table, budget, config.bounds)


def options_record(config: PlanConfig) -> dict[str, Any]:
    """The options a plan records in ``provenance.options`` (all but the budget), as plain JSON values."""
    return {
        "granularity": config.granularity,
        "error_model": config.error_model,
        "gamma": config.gamma,
        "allocator": config.allocator,
        "widths": list(config.widths),
        "group_size": config.group_size,
        "bounds": config.bounds.describe(),
        "keep": str(config.keep),
        "solver": config.solver,
        "time_limit": config.time_limit,
        "seed": config.seed,
        "quant_method": config.quant_method,
        "max_rows": config.max_rows,
        "target": config.target,
    }


def make_plan(
    details: pd.DataFrame,
    read_matrix: ReadMatrix | None,
    config: PlanConfig,
    *,
    provenance: Mapping[str, Any],
    routing_shares: Mapping[tuple[int, int], float] | None = None,
    progress: ProgressFn | None = None,
    errors: MatrixErrors | None = None,
) -> Plan:
    """Allocate widths to the routed experts within the budget and describe every matrix.

    Args:
        details: inspect details, one row per 2-D matrix.
        read_matrix: ``name -> float32 tensor [rows, cols]`` from the checkpoint loader.
        config: plan options.
        provenance: caller facts (checkpoint path and fingerprint, model_type, diagnostics: fit method and
            inspect fingerprint); merged over the computed provenance.
        routing_shares: (layer, expert) -> routing share, only for the ``frequency`` allocator.
        progress: ``progress(1, matrix name, total)`` per matrix measured.
        errors: reuse errors from :func:`measure_errors`.

    Returns:
        The :class:`alphaq.planning.plan_file.Plan`.

    Raises:
        PlanError: infeasible budget, no routed expert, weights missing or of the wrong shape.
    """
    table = cost_table(details, read_matrix, config, progress=progress, errors=errors)
    allocation = _allocate(table, config, config.allocator, config.budget, routing_shares)
    tensors = plan_tensors(details, table, allocation, config)
    constraint = budget_constraint(config.budget, table)
    computed = {
        "alphaq_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": options_record(config),
        "budget": {
            "given": config.budget.text,
            "kind": config.budget.kind,
            "value": config.budget.value,
            "resolved": {
                "counts": constraint.unit,
                "capacity": constraint.capacity,
                "description": config.budget.describe(),
            },
        },
        "solver": {
            "method": allocation.solver,
            "status": allocation.status,
            "objective": allocation.objective,
            "bound": allocation.bound,
            "gap": allocation.gap,
            "seconds": round(allocation.seconds, 4),
        },
        "failed_fits": list(table.failed),
        "notes": list(allocation.notes) + uniform_note(tensors, table),
    }
    summary = plan_summary(tensors, allocation)
    computed["warnings"] = budget_warnings(config.budget, summary)
    return Plan(provenance={**computed, **dict(provenance)}, summary=summary, tensors=tuple(tensors))


def uniform_note(tensors: Sequence[PlanTensor], table: CostTable) -> list[str]:
    """A note when the optimum gives every routed expert one width although their alphas differ (the plan report
    shows it): the error model then proves uniform optimal at this budget and gamma."""

    widths = {t.bits for t in tensors if t.unit is not None}
    importance = np.asarray(table.importance, dtype=float)
    if len(widths) != 1 or importance.size < 2 or float(importance.max() - importance.min()) <= 1e-12:
        return []
    ratio = float(importance.max() / importance.min()) if importance.min() > 0 else float("inf")
    return [
        f"the exact optimum is the uniform {widths.pop()}-bit plan: at gamma {table.gamma:g} the experts' "
        f"importances differ by at most {ratio:.2f}x, too little for moving bits between them to lower the "
        "alpha-weighted error at this budget; a larger --gamma weights alpha more"
    ]


def budget_warnings(budget: Budget, summary: dict[str, Any]) -> list[str]:
    """A byte budget counts the routed experts only; say so when the whole model does not fit the number given.

    Args:
        budget: the plan's budget.
        summary: the plan's :func:`plan_summary`.

    Returns:
        Zero or one warning line.
    """
    if budget.kind != "bytes" or summary["total_bytes"] <= budget.value:
        return []
    mb = 1e6
    return [
        f"the budget {budget.text or budget.value} counts the routed experts only ({summary['expert_bytes'] / mb:.2f} "
        f"MB planned); the whole model takes {summary['total_bytes'] / mb:.2f} MB with the "
        f"{summary['kept_bytes'] / mb:.2f} MB of non-expert weights, more than the number given: for a whole-model "
        f"limit pass that limit minus {summary['kept_bytes'] / mb:.2f} MB"
    ]


def _opt(value: Any, kind: type) -> Any:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return kind(value)


def plan_tensors(
    details: pd.DataFrame, table: CostTable, allocation: Allocation, config: PlanConfig
) -> list[PlanTensor]:
    """One :class:`PlanTensor` per details row, in the details order."""
    width_of: dict[str, tuple[int, str, int]] = {}
    for unit, column in zip(table.units, allocation.choice):
        for name in unit.matrices:
            width_of[name] = (int(table.widths[column]), unit.key, int(column))
    error_row = table.matrices.index() if table.matrices is not None else {}
    kept = kept_rows(details, config.keep, config.group_size).set_index("name")
    out = []
    for record in details.to_dict("records"):
        name = str(record["name"])
        rows, cols = int(record["rows"]), int(record["cols"])
        if name in width_of:
            bits, unit, column = width_of[name]
            error = float(table.matrices.error[error_row[name], column]) if name in error_row else None
        else:
            bits, unit = int(kept.at[name, "bits"]), None
            error = 0.0 if bits == KEEP_BF16 else None
        out.append(
            PlanTensor(
                name=name,
                tensor=str(record["tensor"]),
                layer=_opt(record["layer"], int),
                expert=_opt(record["expert"], int),
                proj=_opt(record["proj"], str),
                role=str(record["role"]),
                rows=rows,
                cols=cols,
                params=rows * cols,
                bits=bits,
                group_size=None if bits == KEEP_BF16 else config.group_size,
                bytes=_target_nbytes(config, rows, cols, bits, name in width_of),
                error=error,
                unit=unit,
            )
        )
    return out


def _target_nbytes(config: PlanConfig, rows: int, cols: int, bits: int, expert: bool) -> int:
    """Bytes of one matrix in the plan's target format (the ``gguf`` target costs its experts in ggml types)."""
    if config.target == "gguf" and expert:
        return gguf_matrix_nbytes(rows, cols, bits)
    return matrix_nbytes(rows, cols, bits, config.group_size)


def plan_summary(tensors: Sequence[PlanTensor], allocation: Allocation) -> dict[str, Any]:
    """Sizes and averages: payload and effective bits, bytes (bf16 vs plan) by part, compression ratio."""
    experts = [t for t in tensors if t.unit is not None]
    kept = [t for t in tensors if t.unit is None]
    totals = tensor_totals(tensors)  # the figures load_plan checks against the tensors
    params, expert_bytes, kept_bytes, total = (
        totals[k] for k in ("expert_params", "expert_bytes", "kept_bytes", "total_bytes")
    )
    expert_bf16 = sum(dense_nbytes(t.rows, t.cols) for t in experts)
    kept_frame = pd.DataFrame({"role": [t.role for t in kept], "bytes": [t.bytes for t in kept]})
    kept_bf16 = sum(dense_nbytes(t.rows, t.cols) for t in kept)
    by_width: dict[str, int] = {}
    by_layer: dict[str, list[int]] = {}
    for t in experts:
        by_width[str(t.bits)] = by_width.get(str(t.bits), 0) + t.params
        acc = by_layer.setdefault(str(t.layer), [0, 0])
        acc[0] += t.params * t.bits
        acc[1] += t.params
    return {
        "expert_params": params,
        "average_payload_bits": totals["average_payload_bits"],
        "effective_bits": totals["effective_bits"],
        "expert_bytes_bf16": expert_bf16,
        "expert_bytes": expert_bytes,
        "kept_bytes_by_role": kept_bytes_by_role(kept_frame) if kept else {},
        "kept_bytes": kept_bytes,
        "kept_bytes_bf16": kept_bf16,
        "total_bytes": total,
        "total_bytes_bf16": expert_bf16 + kept_bf16,
        "compression_ratio": (expert_bf16 + kept_bf16) / total,
        "expert_compression_ratio": expert_bf16 / expert_bytes,
        "param_share_by_width": {k: v / params for k, v in sorted(by_width.items(), key=lambda kv: int(kv[0]))},
        "average_bits_by_layer": {k: v[0] / v[1] for k, v in by_layer.items()},
        "predicted_error": allocation.error,
        "alpha_objective": allocation.alpha_objective,
        "units": int(len(allocation.choice)),
    }


SWEEP_COLUMNS = [
    "allocator",
    "budget",
    "budget_kind",
    "status",
    "average_payload_bits",
    "effective_bits",
    "expert_bytes",
    "predicted_error",
    "alpha_objective",
    "objective",
    "bound",
    "gap",
    "seconds",
    "message",
]


def sweep(
    details: pd.DataFrame,
    read_matrix: ReadMatrix | None,
    config: PlanConfig,
    budgets: Iterable[Budget | str | float],
    allocators: Iterable[str],
    *,
    routing_shares: Mapping[tuple[int, int], float] | None = None,
    progress: ProgressFn | None = None,
    errors: MatrixErrors | None = None,
) -> pd.DataFrame:
    """Predicted error against budget for several allocators, from one cost table.

    Args:
        details: inspect details.
        read_matrix: weights reader (see :func:`make_plan`).
        config: plan options (its ``budget`` and ``allocator`` are ignored).
        budgets: budgets to evaluate.
        allocators: registry names.
        routing_shares: for ``frequency``.
        progress: per matrix measured.

    Returns:
        One row per (budget, allocator) with :data:`SWEEP_COLUMNS`; an infeasible budget gets
        ``status="infeasible"``, NaN figures and the reason in ``message``.
    """
    names = list(allocators)
    for name in names:
        if name not in ALLOCATORS:
            raise ConfigError(f"unknown allocator {name!r}; use one of {', '.join(ALLOCATORS)}")
    table = cost_table(details, read_matrix, config, progress=progress, errors=errors)
    params = table.params.astype(np.float64)
    rows: list[dict[str, Any]] = []
    for raw in budgets:
        budget = Budget.parse(raw)
        for name in names:
            row: dict[str, Any] = {
                "allocator": name,
                "budget": budget.text or str(budget.value),
                "budget_kind": budget.kind,
            }
            try:
                alloc = _allocate(table, config, name, budget, routing_shares)
            except PlanError as error:
                rows.append({**row, "status": "infeasible", "message": str(error)})
                continue
            nbytes = int(table.bytes[np.arange(len(alloc.choice)), alloc.choice].sum())
            rows.append(
                {
                    **row,
                    "status": alloc.status,
                    "average_payload_bits": float(params @ alloc.bits / params.sum()),
                    "effective_bits": nbytes * 8 / float(params.sum()),
                    "expert_bytes": nbytes,
                    "predicted_error": alloc.error,
                    "alpha_objective": alloc.alpha_objective,
                    "objective": alloc.objective,
                    "bound": alloc.bound,
                    "gap": alloc.gap,
                    "seconds": alloc.seconds,
                    "message": "; ".join(alloc.notes),
                }
            )
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


__all__ = ["PlanConfig", "cost_table", "make_plan", "measure_errors", "plan_summary", "plan_tensors", "sweep"]
