"""The weightwatcher engine of the inspect stage (``alphaq inspect --engine weightwatcher``).

Every matrix's spectrum and metrics are computed by weightwatcher 0.7.7 itself (``WeightWatcher.analyze()`` with
its default settings, ``detX=True`` and its accurate SVD): its float64 SVD, its WWFit power law, its norm metrics. It is several times
slower than alphaq's own engine (bench/results/inspect_vs_weightwatcher*.json) and is there to cross-check it on a
user's model: the rows have the same columns (:data:`alphaq.audit.analysis.DETAIL_COLUMNS`), so the two
``details.csv`` compare column by column.

One matrix at a time: its weights [out, in] go into a bias-free ``torch.nn.Linear`` (no copy, no random init),
the only layer of the module weightwatcher analyses, so memory stays one matrix (plus weightwatcher's float64 copy).
weightwatcher's ``-1`` for a failed fit becomes NaN, as in alphaq's own rows (never ``-1`` as a value).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from alphaq.audit.analysis import DETAIL_COLUMNS

if TYPE_CHECKING:
    from alphaq.audit.run import InspectConfig

#: weightwatcher's analyze() columns copied into a details row (same names in both): the details table's
#: ``num_evals`` .. ``detX_val`` run.
WW_COLUMNS = tuple(DETAIL_COLUMNS[DETAIL_COLUMNS.index("num_evals") : DETAIL_COLUMNS.index("detX_val") + 1])
#: Columns that depend on the power-law fit: NaN when weightwatcher's fit did not succeed (it writes -1).
FIT_COLUMNS = ("alpha", "alpha_weighted", "D", "sigma", "xmin", "num_pl_spikes", "log_alpha_norm")
_INT_COLUMNS = frozenset({"num_evals", "num_pl_spikes", "matrix_rank", "detX_num"})


def weightwatcher_metrics(matrix: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """weightwatcher's metrics of one weight matrix, and the eigenvalues it fitted.

    Args:
        matrix: the weights [out, in] (float32 or float64, finite).

    Returns:
        ``(columns, eigenvalues)``: the :data:`WW_COLUMNS` plus ``status`` (``success``/``failed``) and ``warning``
        (``over-trained``, ``under-trained`` or ``""``), fit columns NaN unless the fit succeeded; the eigenvalues
        of ``W^T W`` weightwatcher computed (ascending, float64).

    Raises:
        AlphaQError: weightwatcher returned no row for the matrix.
    """
    import torch

    from alphaq.errors import AlphaQError

    rows, cols = matrix.shape
    linear = torch.nn.utils.skip_init(torch.nn.Linear, cols, rows, bias=False)
    weights = np.require(matrix, requirements=["C", "W"])  # a copy only if read-only (a memory map) or strided
    linear.weight = torch.nn.Parameter(torch.from_numpy(weights), requires_grad=False)
    watcher = _evals_keeping_watcher()(model=torch.nn.ModuleDict({"matrix": linear}))
    with _quiet():
        # svd_method="accurate": scipy's float64 SVD even where CUDA is present (its "fast" default would then use
        # torch's float32 SVD on the GPU); on a CPU-only machine the two are the same.
        details = watcher.analyze(
            min_evals=1, max_evals=min(rows, cols), max_N=max(rows, cols), detX=True, svd_method="accurate"
        )
    if len(details) != 1 or watcher.kept_evals is None:
        raise AlphaQError(f"weightwatcher returned no result for a {rows}x{cols} matrix")
    record = details.iloc[0]
    status = "success" if str(record.get("status", "")).lower() == "success" else "failed"
    out: dict[str, Any] = {}
    for column in WW_COLUMNS:
        value = record.get(column, math.nan)
        value = math.nan if value is None else float(value)
        if status != "success" and column in FIT_COLUMNS:
            value = math.nan
        out[column] = int(value) if column in _INT_COLUMNS and math.isfinite(value) else value
    warning = str(record.get("warning", "") or "")
    out["status"], out["warning"] = status, warning if status == "success" else ""
    out["message"] = "" if status == "success" else "weightwatcher's power-law fit failed"
    return out, np.sort(np.asarray(watcher.kept_evals, dtype=np.float64))


def analyse_matrices_ww(
    ckpt: Any, refs: Sequence[Any], config: InspectConfig
) -> Iterator[tuple[Any, dict[str, Any], np.ndarray | None]]:
    """:func:`alphaq.audit.analysis.analyse_matrices` computed by weightwatcher.

    Args:
        ckpt: the open checkpoint.
        refs: its matrices to analyse (any order).
        config: the options (``engine="weightwatcher"``; ``tail_test`` runs on weightwatcher's eigenvalues and xmin).

    Returns:
        An iterator of (ref, its details row, its compressed spectrum or None when not fitted).
    """
    from alphaq.audit.analysis import (
        MIN_SIDE,
        base_row,
        compress_spectrum,
        nonfinite_message,
        too_small_message,
        with_tail_test,
    )
    from alphaq.diagnostics.spectrum import count_nonfinite

    for ref in refs:
        row = base_row(ref, config)
        if min(ref.shape) < MIN_SIDE:
            row.update(status="skipped", message=too_small_message(ref))
            yield ref, row, None
            continue
        matrix = ckpt.read_array(ref)  # [out, in] float32
        bad = count_nonfinite(matrix)
        if bad:
            row.update(status="nonfinite", message=nonfinite_message(bad))
            yield ref, row, None
            continue
        metrics, evals = weightwatcher_metrics(matrix)
        row.update(metrics)
        yield ref, with_tail_test(row, evals, config), compress_spectrum(evals)


@functools.lru_cache(maxsize=1)
def _evals_keeping_watcher() -> type:
    """A ``weightwatcher.WeightWatcher`` subclass that keeps the eigenvalues of the (one) layer it analyses
    (``analyze()`` drops them), built on first use so that importing this module does not import weightwatcher.

    weightwatcher configures the root logger when it is imported (``logging.basicConfig(level=INFO)``) and logs
    warnings about the SVD it picks; both are undone here, so importing it changes nothing else in the process.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        with _quiet():
            import weightwatcher
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)

    class EvalsKeepingWatcher(weightwatcher.WeightWatcher):  # type: ignore[misc]
        kept_evals: np.ndarray | None = None

        def apply_esd(self, ww_layer: Any, params: Any = None) -> Any:
            layer = super().apply_esd(ww_layer, params)
            self.kept_evals = np.array(layer.evals, dtype=np.float64, copy=True)
            return layer

    return EvalsKeepingWatcher


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence weightwatcher inside the call only: its prints (stdout and stderr), its warnings, its logger below
    ERROR."""
    logger = logging.getLogger("weightwatcher")
    level = logger.level
    logger.setLevel(logging.ERROR)
    sink = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
            warnings.catch_warnings(),
            np.errstate(all="ignore"),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


__all__ = ["FIT_COLUMNS", "WW_COLUMNS", "analyse_matrices_ww", "weightwatcher_metrics"]
