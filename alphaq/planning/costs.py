"""The planner's cost tables: predicted error of every unit at every width, its bytes and its importance.

Error models, per matrix m at width b:

- ``measured`` (default): relative Frobenius error ``||W - Q_b(W)||_F / ||W||_F`` of actually quantizing
  and dequantizing the matrix with the project's quantizer (:func:`alphaq.quantization.methods.quantize_dequantize`,
  group-wise, RTN by default). Matrices with more than ``max_rows`` rows are measured on evenly spaced
  rows, as few as keep the estimate within 1 % (:mod:`alphaq.planning.error_measure`); groups run along the
  columns, so rows are independent and the sample is unbiased. Matrices are measured several at a time
  (:func:`alphaq.parallel.thread_map`).
- ``analytic``: the paper's ``Var(W) * 2^(-2b)``, Var over all weights (a ``var`` column of the
  details table is used when present, else the weights are read).

A unit's error is the parameter-weighted mean of its matrices' errors. Importance
``s_u = (median_alpha / alpha_u) ** gamma`` (median over units with a fitted alpha; units whose fits all
failed get 1, the median, and are listed in ``CostTable.failed``). The objective the allocators minimise
is ``sum_u s_u * params_u * err_u(b_u) / sum_u params_u``: parameter-weighted, so a large matrix counts
more than a small one at the same relative error (the paper's cost has no size factor because its
budget counts matrices, not parameters), and divided by the total so it reads as a mean error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from alphaq.errors import ConfigError, PlanError
from alphaq.parallel import thread_map
from alphaq.planning.error_measure import measure_matrix
from alphaq.planning.units import Unit
from alphaq.progress import ProgressFn

if TYPE_CHECKING:
    import pandas as pd
    import torch

ErrorModel = Literal["measured", "analytic"]
ERROR_MODELS: tuple[str, ...] = ("measured", "analytic")
#: Rows measured per matrix by the ``measured`` model (evenly spaced when a matrix has more).
DEFAULT_MAX_ROWS = 1024
#: read_matrix(name) -> float32 tensor [rows, cols].
ReadMatrix = Callable[[str], "torch.Tensor"]


@dataclass(frozen=True, eq=False)
class MatrixErrors:
    """Predicted error of every routed-expert matrix at every candidate width.

    Attributes:
        names: matrix names, in the order of :func:`alphaq.planning.units.expert_rows`.
        widths: candidate widths.
        error: [M, W] predicted error (relative Frobenius for ``measured``, MSE for ``analytic``).
        sq_norm: [M] ``||W||_F^2`` (from the weights or the ``norm`` column; NaN when unknown).
        model: the error model.
        rows: [M] rows each matrix was measured on (``measured``; None otherwise).
    """

    names: tuple[str, ...]
    widths: tuple[int, ...]
    error: np.ndarray
    sq_norm: np.ndarray
    model: str
    rows: np.ndarray | None = None

    def index(self) -> dict[str, int]:
        """Matrix name -> row of ``error``."""
        return {name: i for i, name in enumerate(self.names)}


def matrix_errors(
    details: pd.DataFrame,
    read_matrix: ReadMatrix | None,
    widths: Sequence[int],
    group_size: int,
    model: ErrorModel = "measured",
    *,
    method: str = "rtn",
    max_rows: int = DEFAULT_MAX_ROWS,
    progress: ProgressFn | None = None,
) -> MatrixErrors:
    """Predict every routed-expert matrix's error at every width (the expensive, reusable step).

    Args:
        details: inspect details (routed-expert rows are used).
        read_matrix: ``name -> float32 tensor [rows, cols]``; may be None only for ``analytic`` with a
            ``var`` column.
        widths: candidate widths.
        group_size: quantization group size.
        model: ``measured`` or ``analytic``.
        method: quantizer for ``measured`` (``rtn``, ``rtn_clip``, ``hqq``).
        max_rows: rows measured per matrix by ``measured``.
        progress: called as ``progress(1, name, total)`` after each matrix.

    Returns:
        The :class:`MatrixErrors`.

    Raises:
        ConfigError: unknown model.
        PlanError: weights needed but no reader, or a matrix read with the wrong shape.
    """
    from alphaq.planning.units import expert_rows

    if model not in ERROR_MODELS:
        raise ConfigError(f"unknown error model {model!r}; use measured or analytic")
    rows = expert_rows(details)
    has_var = "var" in rows.columns and bool(rows["var"].notna().all())
    needs_weights = model == "measured" or not has_var
    if needs_weights and read_matrix is None:
        raise PlanError(
            f"the {model} error model needs the weights; pass the checkpoint (read_matrix) "
            "or use --error-model analytic with a details table that has a var column"
        )
    bits = np.asarray(widths, dtype=np.float64)
    norm_col = rows["norm"].to_numpy(dtype=np.float64, na_value=np.nan) if "norm" in rows.columns else None
    error = np.zeros((len(rows), len(bits)))
    sq_norm = np.full(len(rows), np.nan) if norm_col is None else norm_col.copy()
    measured_rows = np.zeros(len(rows), dtype=np.int64)
    items = [(str(r.name), (int(r.rows), int(r.cols))) for r in rows[["name", "rows", "cols"]].itertuples(index=False)]

    def one(item: tuple[str, tuple[int, int]]) -> tuple[float, np.ndarray, int]:
        name, shape = item
        w = _read(read_matrix, name, shape)
        square = float(w.double().square().sum())
        if model == "analytic":
            return square, float(w.double().var(unbiased=False)) * 2.0 ** (-2 * bits), shape[0]
        try:
            measured = measure_matrix(w, widths, group_size, method, max_rows)
        except ValueError as exc:  # weights beyond the format's float16 scales (|w| > 65504)
            raise PlanError(
                f"matrix {name} cannot be quantized ({exc}), so no width can be planned for "
                "it; repair or replace the checkpoint's weights, then re-run inspect and plan"
            ) from exc
        return square, measured.error, measured.rows

    if needs_weights:  # several matrices at once, one torch thread each (alphaq.parallel)
        for i, (square, err, used) in enumerate(thread_map(one, items)):
            sq_norm[i], error[i], measured_rows[i] = square, err, used
            if progress is not None:
                progress(1, items[i][0], len(rows))
    else:
        error[:] = rows["var"].to_numpy(dtype=np.float64)[:, None] * 2.0 ** (-2 * bits)
        if progress is not None:
            for name, _ in items:
                progress(1, name, len(rows))
    return MatrixErrors(
        tuple(str(n) for n in rows["name"]),
        tuple(int(b) for b in widths),
        error,
        sq_norm,
        model,
        rows=measured_rows if model == "measured" else None,
    )


def prediction_units(error_model: str | None) -> tuple[str, str, str]:
    """How to show a plan's predicted error: ``(label, format, unit note)`` for its error model.

    ``measured`` predicts the relative Frobenius error ``||W - W_hat|| / ||W||`` (comparable with the error
    eval and quantize measure); ``analytic`` predicts the paper's mean squared error ``Var(W) 2^(-2b)``,
    an absolute quantity in squared weight units that cannot be compared with a relative error.

    Args:
        error_model: the plan's ``options.error_model`` (None: an older plan, taken as measured).

    Returns:
        ``("predicted error", "{:.5f}", "relative ||W-W^||/||W||")`` or
        ``("predicted MSE", "{:.3e}", "Var(W) 2^-2b, squared weight units")``.
    """
    if error_model == "analytic":
        return "predicted MSE", "{:.3e}", "Var(W) 2^-2b, squared weight units"
    return "predicted error", "{:.5f}", "relative ||W-W^||/||W||"


def _read(read_matrix: ReadMatrix, name: str, shape: tuple[int, int]) -> torch.Tensor:
    import torch

    w = read_matrix(name)
    if not isinstance(w, torch.Tensor) or tuple(w.shape) != shape:
        got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
        raise PlanError(
            f"matrix {name} was read as {got}, details say {shape}; the details belong to another "
            "checkpoint: re-run `alphaq inspect` on this one"
        )
    return check_finite(name, w.detach().to(torch.float32))


def check_finite(name: str, w: torch.Tensor) -> torch.Tensor:
    """``w`` unchanged, or a one-line PlanError naming the matrix when it holds NaN or Inf.

    Args:
        name: the matrix's tensor name.
        w: its weight.

    Returns:
        ``w``.

    Raises:
        PlanError: NaN or Inf values (``alphaq inspect`` flags such a matrix ``nonfinite``).
    """
    import torch

    if bool(torch.isfinite(w.sum())):  # the common case in one pass: a NaN or Inf makes the sum non-finite
        return w
    if not bool(torch.isfinite(w).all()):
        bad = int((~torch.isfinite(w)).sum())
        raise PlanError(
            f"matrix {name} holds {bad} NaN/Inf value(s) (inspect flags it nonfinite), so no width can be "
            "planned for it; repair or replace the checkpoint's weights, then re-run inspect and plan"
        )
    return w


@dataclass(frozen=True, eq=False)
class CostTable:
    """Everything an allocator needs about the units.

    Attributes:
        units: the planning units.
        widths: candidate widths (columns).
        error: [U, W] predicted error (parameter-weighted mean over the unit's matrices).
        bytes: [U, W] int64 stored bytes (payload + scales + zeros) at each width.
        importance: [U] alpha importance ``(median_alpha / alpha) ** gamma`` (1 for failed fits).
        group_size: quantization group size.
        gamma: exponent of the importance.
        error_model: ``measured`` or ``analytic``.
        rms: [U] root-mean-square weight of each unit (NaN when unknown).
        failed: keys of units without a fitted alpha (importance 1).
        matrices: the per-matrix errors the table was built from.
        real_bits: a bits budget counts ``8 * bytes``, the stored bits with scales (the ``gguf`` target:
            Q2_K is 2.625 bits per weight); False counts the payload width itself (the paper's convention).
    """

    units: tuple[Unit, ...]
    widths: tuple[int, ...]
    error: np.ndarray
    bytes: np.ndarray
    importance: np.ndarray
    group_size: int
    gamma: float
    error_model: str
    rms: np.ndarray
    failed: tuple[str, ...]
    matrices: MatrixErrors | None = None
    real_bits: bool = False

    @property
    def params(self) -> np.ndarray:
        """[U] int64 parameters per unit."""
        return np.array([u.params for u in self.units], dtype=np.int64)

    @property
    def total_params(self) -> int:
        """Parameters of all units."""
        return int(self.params.sum())

    @property
    def payload_bits(self) -> np.ndarray:
        """[U, W] int64 payload bits ``params * width``, or the stored bits ``8 * bytes`` with ``real_bits``:
        what an average-bits budget counts."""
        if self.real_bits:
            return 8 * self.bytes
        return self.params[:, None] * np.asarray(self.widths, dtype=np.int64)[None, :]

    def cost(self, importance: np.ndarray | None = None) -> np.ndarray:
        """[U, W] objective terms ``s_u * params_u * error / total params`` (alpha importance by default)."""
        s = self.importance if importance is None else np.asarray(importance, dtype=np.float64)
        return s[:, None] * self.params[:, None] * self.error / self.total_params


def alpha_importance(units: Sequence[Unit], gamma: float) -> tuple[np.ndarray, tuple[str, ...]]:
    """``(median_alpha / alpha_u) ** gamma`` per unit, 1 where alpha is NaN; and the keys of those units.

    Lower alpha (heavier-tailed, better trained) means more important, hence more bits.
    """
    alpha = np.array([u.alpha for u in units], dtype=np.float64)
    ok = np.isfinite(alpha) & (alpha > 0)
    importance = np.ones(len(units))
    if ok.any():
        importance[ok] = (float(np.median(alpha[ok])) / alpha[ok]) ** gamma
    return importance, tuple(u.key for u, good in zip(units, ok) if not good)


def build_cost_table(
    units: Sequence[Unit],
    errors: MatrixErrors,
    group_size: int,
    gamma: float = 1.0,
    *,
    matrix_bytes: Callable[[int, int, int], int] | None = None,
    real_bits: bool = False,
) -> CostTable:
    """Aggregate per-matrix errors into units and attach bytes and alpha importance.

    Args:
        units: from :func:`alphaq.planning.units.build_units` on the same details.
        errors: from :func:`matrix_errors`.
        group_size: quantization group size.
        gamma: importance exponent (>= 0; 0 ignores alpha).
        matrix_bytes: ``(rows, cols, width) -> bytes`` of one matrix in the target format (default: alphaq's
            packed layout at ``group_size``; the ``gguf`` target passes the ggml types' bytes).
        real_bits: a bits budget counts the stored bits ``8 * bytes`` instead of ``params * width``.

    Returns:
        The :class:`CostTable`.

    Raises:
        ConfigError: negative or non-finite gamma.
        PlanError: a unit's matrix has no error row.
    """
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ConfigError(f"gamma={gamma!r} must be a finite number >= 0 (1 = the paper's default)")
    index = errors.index()
    error = np.zeros((len(units), len(errors.widths)))
    nbytes = np.zeros((len(units), len(errors.widths)), dtype=np.int64)
    rms = np.full(len(units), np.nan)
    for i, unit in enumerate(units):
        missing = [m for m in unit.matrices if m not in index]
        if missing:
            raise PlanError(
                f"no error was measured for matrix {missing[0]}; build the errors and the units from "
                "the same details table"
            )
        rows = [index[m] for m in unit.matrices]
        params = np.array([r * c for r, c in unit.shapes], dtype=np.float64)  # [m]
        error[i] = params @ errors.error[rows] / params.sum()
        rms[i] = math.sqrt(float(errors.sq_norm[rows].sum()) / params.sum())
        nbytes[i] = [
            unit.nbytes(b, group_size) if matrix_bytes is None else sum(matrix_bytes(r, c, b) for r, c in unit.shapes)
            for b in errors.widths
        ]
    importance, failed = alpha_importance(units, gamma)
    return CostTable(
        units=tuple(units),
        widths=errors.widths,
        error=error,
        bytes=nbytes,
        importance=importance,
        group_size=group_size,
        gamma=float(gamma),
        error_model=errors.model,
        rms=rms,
        failed=failed,
        matrices=errors,
        real_bits=real_bits,
    )
