"""Per-matrix analysis of the inspect stage: which matrices, their eigenvalues (streamed), their metrics rows.

Pure computation over an open checkpoint: :func:`select_matrices` picks the matrices a config selects,
:func:`analyse_matrices` yields each one's details row (:data:`DETAIL_COLUMNS`) and compressed spectrum. On CPU the
matrices are read with numpy and streamed through LAPACK (:func:`alphaq.diagnostics.spectrum.stream_eigenvalues`),
without torch; on another device, or for FARMS, through torch. With ``engine="weightwatcher"`` weightwatcher computes
every row instead (:mod:`alphaq.audit.ww_engine`). The Ray backend runs the same function in its tasks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from alphaq.audit.run import InspectConfig

#: Matrices whose smaller side is below this are not fitted (status "skipped").
MIN_SIDE = 8
#: Bytes of float32 weights stacked into one batched eigenvalue call.
BATCH_BYTES = 256 * 1024 * 1024
#: A tall matrix whose float32 copy exceeds this (an embedding, an output head) is never held whole on CPU: its
#: Gram ``W^T W`` is summed over blocks of rows read straight from the file (a 151936 x 2048 head held whole,
#: widened, next to another: the 4.3 GB peak of a Qwen1.5-MoE-sized audit; 0.6 GB with blocks).
LARGE_MATRIX_BYTES = 256 * 1024 * 1024
#: float32 bytes of one such block of rows.
ROW_BLOCK_BYTES = 64 * 1024 * 1024
#: A saved spectrum keeps every eigenvalue up to this count, else the top 256 and quantiles of the rest.
SPECTRUM_POINTS = 1024
_IDENTITY_COLUMNS = frozenset(
    {"name", "tensor", "layer", "expert", "proj", "role", "rows", "cols", "params", "dtype", "fit"}
)

DETAIL_COLUMNS = [
    "name",
    "tensor",
    "layer",
    "expert",
    "proj",
    "role",
    "rows",
    "cols",
    "params",
    "dtype",
    "num_evals",
    "alpha",
    "alpha_weighted",
    "D",
    "sigma",
    "xmin",
    "xmax",
    "num_pl_spikes",
    "lambda_max",
    "norm",
    "log_norm",
    "spectral_norm",
    "log_spectral_norm",
    "log_alpha_norm",
    "stable_rank",
    "matrix_rank",
    "entropy",
    "detX_num",
    "detX_val",
    "R_lognormal",
    "p_lognormal",
    "R_exponential",
    "p_exponential",
    "R_truncated",
    "p_truncated",
    "fit",
    "status",
    "warning",
    "message",
]
#: Columns of the details table holding integers or nothing (pandas "Int64").
DETAIL_INT_COLUMNS = ("layer", "expert")


def compress_spectrum(evals: np.ndarray, max_points: int = SPECTRUM_POINTS) -> np.ndarray:
    """Keep a spectrum small for plotting: all of it, or the top 256 and quantiles of the rest (ascending)."""
    evals = np.sort(np.asarray(evals, dtype=np.float64))
    if evals.size <= max_points:
        return evals
    head, tail = evals[:-256], evals[-256:]
    picks = np.quantile(head, np.linspace(0.0, 1.0, max_points - 256))
    return np.concatenate([picks, tail])


def analyse_matrices(
    ckpt: Any, refs: Sequence[Any], config: InspectConfig
) -> Iterator[tuple[Any, dict[str, Any], np.ndarray | None]]:
    """Eigenvalues and metrics of ``refs`` (same-shape matrices consecutive, so their eigenvalues batch).

    Args:
        ckpt: the open checkpoint.
        refs: its matrices to analyse.
        config: the options.

    Returns:
        An iterator of (ref, its details row, its compressed spectrum or None when not fitted).
    """
    if config.engine == "weightwatcher":
        from alphaq.audit.ww_engine import analyse_matrices_ww

        yield from analyse_matrices_ww(ckpt, refs, config)
        return
    for ref, evals, status, message in _spectra(ckpt, refs, config):
        yield (
            ref,
            _metrics_row(ref, evals, status, message, config),
            (None if evals is None else compress_spectrum(evals)),
        )


def base_row(ref: Any, config: InspectConfig) -> dict[str, Any]:
    """The identity columns of a matrix's details row (status ``success`` until told otherwise, no metrics)."""
    return {
        "name": ref.name,
        "tensor": ref.tensor,
        "layer": ref.layer,
        "expert": ref.expert,
        "proj": ref.proj,
        "role": ref.role.value,
        "rows": ref.shape[0],
        "cols": ref.shape[1],
        "params": ref.params,
        "dtype": ref.dtype,
        "fit": config.fit,
        "status": "success",
        "warning": "",
        "message": "",
    }


def with_tail_test(row: dict[str, Any], evals: np.ndarray, config: InspectConfig) -> dict[str, Any]:
    """``row`` with the ``--tail-test`` columns (:data:`alphaq.diagnostics.tail_compare.TAIL_COLUMNS`) of a
    successful fit, when the config asks for them (powerlaw's likelihood ratios on the tail ``evals >= xmin``)."""
    if config.tail_test and row["status"] == "success":
        from alphaq.diagnostics.tail_compare import TAIL_COLUMNS, compare_power_law

        comparison = compare_power_law(evals, row["xmin"])
        row.update({column: getattr(comparison, column) for column in TAIL_COLUMNS})
    return row


def select_matrices(matrices: Sequence[Any], config: InspectConfig) -> list[Any]:
    """The matrices the config selects (layers, experts only)."""
    chosen = []
    for ref in matrices:
        if config.experts_only and ref.role.value not in ("expert", "shared_expert"):
            continue
        if config.layers is not None and ref.layer not in config.layers:
            continue
        chosen.append(ref)
    return chosen


def schedule_matrices(refs: Sequence[Any]) -> list[Any]:
    """The order matrices are computed in: the costliest first, same shapes consecutive, checkpoint order within.

    The eigenvalue cost of an [M, N] matrix is its Gram's (K^2 max(M, N), K = min(M, N)) plus the symmetric
    eigensolver's (K^3). Running the large ones first and the small ones last is the longest-processing-time rule:
    while the last large matrices finish, the small ones fill the other workers, instead of one large matrix
    computing alone at the end. The results do not depend on the order (each matrix is one single-threaded
    computation); the tables are written in checkpoint order.

    Args:
        refs: matrices with a ``shape`` (checkpoint order).

    Returns:
        The same matrices, reordered.
    """

    def cost(ref: Any) -> int:
        side, other = min(ref.shape), max(ref.shape)
        return side * side * (other + side)

    return sorted(refs, key=lambda ref: (-cost(ref), tuple(ref.shape)))  # stable: checkpoint order within a shape


# -- internals ---------------------------------------------------------------------------------------


def _spectra(
    ckpt: Any, refs: Sequence[Any], config: InspectConfig
) -> Iterator[tuple[Any, np.ndarray | None, str, str]]:
    """Yield (ref, ascending eigenvalues or None, status, message), batching same-shape matrices."""
    if config.device == "cpu" and not config.farms:
        yield from _cpu_spectra(ckpt, refs, config)
        return
    import torch

    from alphaq.diagnostics.spectrum import eigenvalues, farms_eigenvalues

    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    pending: list[tuple[Any, Any]] = []

    def flush() -> Iterator[tuple[Any, np.ndarray | None, str, str]]:
        if not pending:
            return
        stacked = torch.stack([m for _, m in pending])  # [B, out, in]
        batch_evals = eigenvalues(stacked, dtype=dtype, device=config.device)  # [B, K]
        for (ref, _), evals in zip(pending, batch_evals):
            yield ref, evals, "success", ""
        pending.clear()

    for ref in refs:
        if min(ref.shape) < MIN_SIDE:
            yield ref, None, "skipped", too_small_message(ref)
            continue
        matrix = ckpt.read_matrix(ref, dtype=torch.float32)
        if not torch.isfinite(matrix).all():
            yield ref, None, "nonfinite", nonfinite_message(int((~torch.isfinite(matrix)).sum()))
            continue
        if config.farms:
            yield ref, farms_eigenvalues(matrix, seed=config.seed), "success", ""
            continue
        if pending and (pending[0][1].shape != matrix.shape or (len(pending) + 1) * matrix.numel() * 4 > BATCH_BYTES):
            yield from flush()
        pending.append((ref, matrix))
    yield from flush()


def _cpu_spectra(
    ckpt: Any, refs: Sequence[Any], config: InspectConfig
) -> Iterator[tuple[Any, np.ndarray | None, str, str]]:
    """:func:`_spectra` on CPU without torch: numpy reads (:meth:`Checkpoint.read_array`) streamed through
    :func:`alphaq.diagnostics.spectrum.stream_eigenvalues` (the next matrix is read while others compute)."""
    from alphaq.diagnostics.spectrum import Gram, count_nonfinite, stream_eigenvalues

    problems: dict[str, tuple[str, str]] = {}

    def matrices() -> Iterator[tuple[Any, np.ndarray | None]]:
        for ref in refs:
            if min(ref.shape) < MIN_SIDE:
                problems[ref.name] = ("skipped", too_small_message(ref))
                yield ref, None
                continue
            blocks = _row_blocks(ckpt, ref)
            if blocks is not None:  # too large to hold: its Gram, from blocks of rows
                gram, bad = _blocked_gram(blocks, np.float64 if config.dtype == "float64" else np.float32)
                if bad:
                    problems[ref.name] = ("nonfinite", nonfinite_message(bad))
                yield ref, None if gram is None else Gram(gram)
                continue
            matrix = ckpt.read_array(ref)  # [out, in] float32
            bad = count_nonfinite(matrix)
            if bad:
                problems[ref.name] = ("nonfinite", nonfinite_message(bad))
                matrix = None
            yield ref, matrix

    for ref, evals in stream_eigenvalues(matrices(), dtype=config.dtype):
        status, message = problems.pop(ref.name, ("success", ""))
        yield ref, evals, status, message


def _row_blocks(ckpt: Any, ref: Any) -> Iterator[np.ndarray] | None:
    """Blocks of rows (float32 [b, in]) of a tall plain-float matrix larger than :data:`LARGE_MATRIX_BYTES`, read
    from the file one at a time; None for any other matrix (read whole)."""
    from alphaq.load.safetensors_files import NUMPY_FLOATS, read_float_array

    rows, cols = ref.shape
    info = ckpt.tensors.get(ref.tensor)
    if (
        rows * cols * 4 <= LARGE_MATRIX_BYTES
        or rows < cols
        or getattr(ref, "fused", False)
        or info is None
        or info.dtype not in NUMPY_FLOATS
        or info.offset is None
        or tuple(info.shape) != tuple(ref.shape)
    ):
        return None
    step = max(1, ROW_BLOCK_BYTES // (4 * cols))
    return (read_float_array(info, rows=(start, min(rows, start + step))) for start in range(0, rows, step))


def _blocked_gram(blocks: Iterator[np.ndarray], work: type) -> tuple[np.ndarray | None, int]:
    """(``sum_b B_b^T B_b`` [in, in] in ``work`` precision, or None when NaN/Inf were met; their count) over blocks
    of rows [b, in]."""
    from alphaq.diagnostics.spectrum import count_nonfinite

    gram: np.ndarray | None = None
    bad = 0
    for block in blocks:
        bad += count_nonfinite(block)
        if bad:
            continue
        block = block.astype(work, copy=False)
        part = block.T @ block  # [in, in]
        gram = part if gram is None else np.add(gram, part, out=gram)
    return (None if bad else gram), bad


def too_small_message(ref: Any) -> str:
    """The message of a matrix too small to fit (status ``skipped``)."""
    return f"matrix {ref.shape[0]}x{ref.shape[1]} is too small to fit (min side {MIN_SIDE})"


def nonfinite_message(count: int) -> str:
    """The message of a matrix with ``count`` NaN/Inf weights (status ``nonfinite``)."""
    return f"{count} NaN/Inf weights; fix or re-download the checkpoint"


def _metrics_row(
    ref: Any, evals: np.ndarray | None, status: str, message: str, config: InspectConfig
) -> dict[str, Any]:
    from alphaq.diagnostics.esd_metrics import esd_metrics

    row = {**base_row(ref, config), "status": status, "message": message}
    if evals is None:
        return row
    metrics = esd_metrics(evals, method=config.fit, max_dim=max(ref.shape)).to_dict()
    row.update({k: v for k, v in metrics.items() if k in DETAIL_COLUMNS and k not in _IDENTITY_COLUMNS})
    return with_tail_test(row, evals, config)


__all__ = [
    "BATCH_BYTES",
    "DETAIL_COLUMNS",
    "DETAIL_INT_COLUMNS",
    "MIN_SIDE",
    "SPECTRUM_POINTS",
    "analyse_matrices",
    "base_row",
    "compress_spectrum",
    "nonfinite_message",
    "schedule_matrices",
    "select_matrices",
    "too_small_message",
    "with_tail_test",
]
