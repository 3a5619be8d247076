"""Eigenvalues of weight matrices: the empirical spectral density (ESD) that HT-SR fits.

``eigenvalues`` returns the eigenvalues of ``W^T W`` (squared singular values, no ``1/N``), as
weightwatcher 0.7.7 does. ``farms_eigenvalues`` pools the ESDs of square sub-blocks (FARMS), as the
AlphaQ code does. Both return float64 numpy arrays sorted ascending.

torch is imported inside the functions so that importing this module stays cheap; on CPU, numpy inputs
(``Checkpoint.read_array``) never import it. :func:`stream_eigenvalues` is the streaming form the inspect stage
uses: matrices computed ``workers`` at a time while the caller reads the next one, in order.
"""

from __future__ import annotations

import os
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

EigenMethod = Literal["gram", "svd"]
_Key = TypeVar("_Key")

#: A chunk of a batch converted to the working dtype at once holds at most this many bytes.
_CHUNK_BYTES = 512 * 1024 * 1024
#: :func:`stream_eigenvalues` holds at most this many results per worker ahead of a slower matrix.
_LOOKAHEAD = 8


@dataclass(frozen=True, eq=False)
class Gram:
    """A matrix given by its Gram matrix, computed by the caller (in row blocks, for a matrix too large to hold).

    :func:`stream_eigenvalues` takes it in place of the matrix: its eigenvalues are the matrix's squared singular
    values, the same as ``W^T W``'s.

    Attributes:
        values: [K, K] symmetric Gram (``W^T W`` of a tall matrix), float32 or float64.
    """

    values: np.ndarray


def eigenvalues(
    weights: torch.Tensor,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    method: EigenMethod = "gram",
    workers: int | None = None,
) -> np.ndarray:
    """Eigenvalues of ``W^T W`` (squared singular values of ``W``), sorted ascending.

    Method. ``"gram"`` (default) forms the Gram matrix of the smaller side, ``W W^T`` or ``W^T W``
    ([K, K], K = min(M, N)), in ``dtype`` and takes its symmetric eigenvalues; ``"svd"`` squares the
    singular values of ``W``. On CPU both run through numpy's LAPACK (OpenBLAS; ``A @ A.T`` is a symmetric
    rank-k update, half a GEMM; ``gesdd`` for ``"svd"``); the matrices of a batch run ``workers`` at a
    time, each on one BLAS thread, because the tridiagonalisation inside ``syevd`` is memory-bound and gains
    little from more threads on one matrix (8 matrices 1024x2816, float32, 2 cores: 0.49 s this way, 0.61 s
    one at a time on 2 BLAS threads). On another device they run through ``torch.linalg.eigvalsh`` /
    ``torch.linalg.svdvals``. Measured on a quiet 2-core CPU, one thread, per 1024x2816 matrix: Gram
    0.035 s + ``syevd`` 0.074 s in float32, scipy's float64 SVD (weightwatcher's route) 0.58 s; per
    2048x7168 matrix 0.34 + 0.66 s against 5.3 s (``bench/inspect_vs_weightwatcher.py``). In float64 the
    Gram eigenvalues agree with scipy's float64 SVD to about 1e-13 relative in the bulk and the tail: their absolute error is about ``eps * lambda_max``, so
    only eigenvalues below ``~1e-7 * lambda_max`` (far below any power-law ``xmin``) lose the 1e-9
    relative agreement, and rounding can leave tiny negative values, clipped to 0. In float32 both
    routes agree with float64 to about 1e-5 relative in the bulk. Use ``method="svd"`` with float64
    when the near-zero singular values of a rank-deficient matrix matter.

    Args:
        weights: one matrix [M, N] or same-shape matrices stacked [B, M, N] (any float dtype): a torch tensor
            or a numpy array (on CPU a numpy array is computed without importing torch).
        dtype: working precision, ``torch.float32`` (None, the default) or ``torch.float64`` (or the numpy
            dtypes / names ``"float32"``, ``"float64"``).
        device: torch device for the computation (``"cpu"``, ``"cuda"``).
        method: ``"gram"`` or ``"svd"`` (see above).
        workers: on CPU, matrices of a batch computed in parallel, each with a single-threaded BLAS
            (None: :func:`default_workers`; 1: one at a time with the BLAS's own threads).

    Returns:
        float64 array [K] or [B, K], K = min(M, N), each row sorted ascending.

    Raises:
        ValueError: ``weights`` is not 2-D/3-D, is empty, or holds NaN/Inf; ``dtype`` or ``method``
            is not supported; the eigenvalues overflow float64 (float32 weights whose float32 Gram overflows, above
            ~1e19, are computed again in float64 automatically).
    """
    if isinstance(weights, np.ndarray) and str(device) == "cpu":
        return _array_eigenvalues(weights, _numpy_dtype(dtype), method, workers)
    import torch

    if isinstance(weights, np.ndarray):
        weights = torch.from_numpy(weights)
    work_dtype = torch.float32 if dtype is None else dtype
    if isinstance(work_dtype, str) or not isinstance(work_dtype, torch.dtype):
        work_dtype = torch.float64 if _numpy_dtype(dtype) == np.float64 else torch.float32
    if work_dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {work_dtype}")
    if method not in ("gram", "svd"):
        raise ValueError(f"method must be 'gram' or 'svd', got {method!r}")
    if weights.ndim not in (2, 3):
        raise ValueError(f"weights must be [M, N] or [B, M, N], got shape {tuple(weights.shape)}")
    if weights.numel() == 0:
        raise ValueError(f"weights is empty (shape {tuple(weights.shape)})")

    batched = weights.ndim == 3
    stack = weights if batched else weights.unsqueeze(0)  # [B, M, N]
    rows, cols = int(stack.shape[1]), int(stack.shape[2])
    item_bytes = rows * cols * torch.finfo(work_dtype).bits // 8
    per_chunk = max(1, _CHUNK_BYTES // max(1, item_bytes))
    on_cpu = torch.device(device).type == "cpu"
    threads = default_workers() if workers is None else int(workers)
    if threads < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    out = []
    # NaN/Inf weights make the Gram (hence every eigenvalue) non-finite or LAPACK fail, so finiteness
    # is checked on the results: one pass over the input saved for the common, finite case
    try:
        with torch.no_grad(), np.errstate(invalid="ignore", over="ignore"):
            for start in range(0, int(stack.shape[0]), per_chunk):
                chunk = stack[start : start + per_chunk].to(device=device, dtype=work_dtype)  # [b, M, N]
                if on_cpu:
                    out.append(_numpy_eigenvalues(chunk.numpy(), method, rows <= cols, threads))
                else:
                    out.append(_torch_eigenvalues(chunk, method, rows <= cols))
                del chunk
        failure = None
    except (np.linalg.LinAlgError, RuntimeError, ValueError) as error:  # torch: RuntimeError; scipy: ValueError on NaN
        failure = error
    if failure is not None or not all(np.isfinite(part).all() for part in out):
        if not bool(torch.isfinite(weights).all()):
            raise ValueError("weights hold NaN or Inf values; check finiteness before computing eigenvalues")
        if work_dtype == torch.float32:  # finite weights whose Gram overflows float32 (|w| ~ 1e19): float64 holds it
            return eigenvalues(weights, dtype=torch.float64, device=device, method=method, workers=workers)
        if failure is not None:
            raise ValueError(
                f"eigenvalue computation failed ({failure}); if the weights are huge, scale them down"
            ) from failure
        raise ValueError(f"eigenvalues overflow in {work_dtype}; scale the weights down")
    result = np.sort(np.concatenate(out, axis=0), axis=-1)  # [B, K]
    np.maximum(result, 0.0, out=result)
    return result if batched else result[0]


def _numpy_eigenvalues(chunk: np.ndarray, method: EigenMethod, wide: bool, workers: int) -> np.ndarray:
    """[b, M, N] -> [b, K] float64 through LAPACK, ``workers`` matrices at a time.

    Each matrix is one BLAS/LAPACK call sequence that releases the GIL; with ``workers > 1`` the matrices of the
    chunk run on that many threads, each with a single-threaded BLAS (threadpoolctl), which uses the cores
    better than one multi-threaded tridiagonalisation (a memory-bound, poorly parallel step).
    """

    def one(matrix: np.ndarray) -> np.ndarray:  # [M, N] -> [K]
        return _matrix_eigenvalues(matrix, method)

    if workers <= 1 or len(chunk) == 1:
        return np.stack([one(matrix) for matrix in chunk])
    from concurrent.futures import ThreadPoolExecutor

    with _single_threaded_blas(), ThreadPoolExecutor(max_workers=min(workers, len(chunk))) as pool:
        return np.stack(list(pool.map(one, chunk)))


def _matrix_eigenvalues(matrix: np.ndarray, method: EigenMethod = "gram") -> np.ndarray:
    """[M, N] in its working dtype -> [K] float64 (unsorted) through LAPACK: the Gram of the smaller side
    (numpy's matmul runs syrk for ``A @ A.T``) and :func:`alphaq.diagnostics.lapack.eigvalsh`, or ``gesdd``."""
    from alphaq.diagnostics.lapack import eigvalsh

    if method == "svd":
        return np.square(np.linalg.svd(matrix, compute_uv=False).astype(np.float64))
    gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix  # [K, K]
    return eigvalsh(gram)


def default_workers() -> int:
    """Matrices computed in parallel on CPU: torch's thread count when torch is loaded, else ``OMP_NUM_THREADS``,
    else the CPUs this process may use."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        return max(1, int(torch.get_num_threads()))
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _guarded_eigenvalues(
    matrix: np.ndarray, work: type, method: EigenMethod
) -> tuple[np.ndarray | None, Exception | None]:
    """(eigenvalues, None), or (None, the LAPACK error) when the computation fails."""
    with np.errstate(invalid="ignore", over="ignore"):
        try:
            if isinstance(matrix, Gram):
                from alphaq.diagnostics.lapack import eigvalsh

                return eigvalsh(np.asarray(matrix.values, dtype=work)), None
            return _matrix_eigenvalues(np.asarray(matrix, dtype=work), method), None
        except (np.linalg.LinAlgError, ValueError) as error:
            return None, error


def _numpy_dtype(dtype: Any) -> type:
    """torch / numpy dtype or name -> np.float32 or np.float64 (None: float32)."""
    name = "float32" if dtype is None else str(dtype).removeprefix("torch.")
    if name in ("float32", "<class 'numpy.float32'>"):
        return np.float32
    if name in ("float64", "<class 'numpy.float64'>"):
        return np.float64
    raise ValueError(f"dtype must be float32 or float64, got {dtype}")


def _array_eigenvalues(weights: np.ndarray, work: type, method: EigenMethod, workers: int | None) -> np.ndarray:
    """:func:`eigenvalues` for numpy input on CPU (no torch)."""
    if method not in ("gram", "svd"):
        raise ValueError(f"method must be 'gram' or 'svd', got {method!r}")
    if weights.ndim not in (2, 3):
        raise ValueError(f"weights must be [M, N] or [B, M, N], got shape {tuple(weights.shape)}")
    if weights.size == 0:
        raise ValueError(f"weights is empty (shape {tuple(weights.shape)})")
    stack = weights if weights.ndim == 3 else weights[None]  # [B, M, N]
    items = ((i, matrix) for i, matrix in enumerate(stack))
    out = [evals for _, evals in stream_eigenvalues(items, dtype=work, method=method, workers=workers)]
    result = np.stack(out)  # [B, K]
    return result if weights.ndim == 3 else result[0]


def stream_eigenvalues(
    items: Iterable[tuple[_Key, np.ndarray | None]],
    *,
    dtype: Any = None,
    method: EigenMethod = "gram",
    workers: int | None = None,
) -> Iterator[tuple[_Key, np.ndarray | None]]:
    """Eigenvalues of a stream of matrices on CPU, in order, ``workers`` at a time (numpy/LAPACK, no torch).

    Each matrix runs on a thread of its own with a single-threaded BLAS (LAPACK releases the GIL), while this
    generator pulls the next item from ``items``: a reader of ``items`` overlaps file reads with the
    computation. At most ``workers + 1`` matrices are held besides the one being read, so peak memory is
    about ``workers + 2`` matrices plus ``workers`` Gram matrices, whatever the stream's length. Results come
    back in input order, but a slow matrix does not hold the others up: the workers go on with the matrices
    behind it, whose eigenvalues wait (up to 8 per worker) until it is done.

    Args:
        items: (key, matrix [M, N] numpy array, its :class:`Gram`, or None to pass the key through) pairs.
        dtype: working precision, float32 (None) or float64 (numpy/torch dtype or name).
        method: ``"gram"`` or ``"svd"`` (see :func:`eigenvalues`).
        workers: matrices in parallel (None: :func:`default_workers`; 1: in this thread, BLAS threads as set).

    Returns:
        An iterator of (key, float64 eigenvalues [K] ascending and clipped at 0, or None), in input order.

    Raises:
        ValueError: a matrix holds NaN/Inf, its eigenvalues overflow in float64 (a float32 overflow is computed
            again in float64), or LAPACK fails.
    """
    work = _numpy_dtype(dtype)
    threads = default_workers() if workers is None else int(workers)
    if threads < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    def one(matrix: np.ndarray) -> np.ndarray:
        evals, failure = _guarded_eigenvalues(matrix, work, method)
        if evals is None or not np.isfinite(evals).all():
            if isinstance(matrix, Gram):
                raise ValueError(f"eigenvalue computation failed ({failure}); if the weights are huge, scale them down")
            if not np.isfinite(matrix).all():
                raise ValueError("weights hold NaN or Inf values; check finiteness before computing eigenvalues")
            if work == np.float32:  # finite weights whose Gram overflows float32 (|w| ~ 1e19): float64 holds it
                evals, failure = _guarded_eigenvalues(matrix, np.float64, method)
            if evals is None:
                raise ValueError(f"eigenvalue computation failed ({failure}); if the weights are huge, scale them down")
            if not np.isfinite(evals).all():
                raise ValueError("eigenvalues overflow in float64; scale the weights down")
        evals.sort()
        return np.maximum(evals, 0.0, out=evals)

    if threads == 1:
        for key, matrix in items:
            yield key, None if matrix is None else one(matrix)
        return
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    # In input order: (key, future or None). A matrix is held until its computation ends, so at most
    # ``threads + 1`` are held (one queued for the next free worker) besides the one being read. Finished results
    # (eigenvalues only) wait here for the slower matrices ahead of them, up to ``_LOOKAHEAD`` per worker: a large
    # matrix at the head does not idle the other workers.
    pending: deque[tuple[_Key, Any]] = deque()

    def finished_heads() -> Iterator[tuple[_Key, np.ndarray | None]]:
        while pending and (pending[0][1] is None or pending[0][1].done()):
            done_key, future = pending.popleft()
            yield done_key, None if future is None else future.result()

    with _single_threaded_blas(), ThreadPoolExecutor(max_workers=threads) as pool:
        for key, matrix in items:
            pending.append((key, None if matrix is None else pool.submit(one, matrix)))
            del matrix
            yield from finished_heads()
            while True:
                running = [future for _, future in pending if future is not None and not future.done()]
                if len(running) <= threads and len(pending) <= _LOOKAHEAD * threads:
                    break
                wait(running, return_when=FIRST_COMPLETED)
                yield from finished_heads()
        for done_key, future in pending:  # the end of the stream: in order
            yield done_key, None if future is None else future.result()


def count_nonfinite(matrix: np.ndarray) -> int:
    """NaN/Inf values of a float array; one sum in the common, finite case."""
    with np.errstate(invalid="ignore", over="ignore"):
        if np.isfinite(matrix.sum()):
            return 0
    return int(matrix.size - np.count_nonzero(np.isfinite(matrix)))


def _single_threaded_blas() -> Any:
    """Limit BLAS/OpenMP pools to one thread while several matrices run in parallel (no-op without threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def _torch_eigenvalues(chunk: torch.Tensor, method: EigenMethod, wide: bool) -> np.ndarray:
    """[b, M, N] -> [b, K] float64 on the chunk's device."""
    import torch

    if method == "svd":
        evals = torch.linalg.svdvals(chunk).square()  # [b, K]
    else:
        gram = chunk @ chunk.mT if wide else chunk.mT @ chunk  # [b, K, K]
        evals = torch.linalg.eigvalsh(gram)  # [b, K]
    return evals.to(device="cpu", dtype=torch.float64).numpy()


def farms_eigenvalues(weight: torch.Tensor, *, block: int = 128, max_blocks: int = 256, seed: int = 0) -> np.ndarray:
    """FARMS eigenvalues: pooled ESDs of square sub-blocks of one matrix.

    ``weight`` is cut into a non-overlapping grid of ``block x block`` sub-matrices (a remainder
    strip at the right/bottom edge is dropped); at most ``max_blocks`` of them are drawn without
    replacement with ``numpy.random.Generator(PCG64(seed))`` (the AlphaQ code draws them unseeded with
    ``random.sample``, so its alphas vary run to run); the squared singular values of every drawn
    block are pooled. As in the AlphaQ code, each block's eigenvalues are the raw ``sigma^2`` (no
    ``1/block`` normalisation: every block has the same shape, so a common scale would not change a
    power-law exponent). A matrix smaller than one block in either direction falls back to the
    eigenvalues of the whole matrix, as the AlphaQ code does. Computed in float32 like the AlphaQ code
    (its eigenvalues are returned as float64).

    Args:
        weight: one matrix [M, N].
        block: side of the square sub-blocks.
        max_blocks: most blocks pooled.
        seed: seed of the block draw; equal seeds give identical results.

    Returns:
        float64 array [num_blocks * block] sorted ascending (or [min(M, N)] for the fallback).

    Raises:
        ValueError: ``weight`` is not 2-D or holds NaN/Inf, or ``block``/``max_blocks`` < 1.
    """
    import torch

    if block < 1 or max_blocks < 1:
        raise ValueError(f"block and max_blocks must be >= 1, got block={block}, max_blocks={max_blocks}")
    if weight.ndim != 2:
        raise ValueError(f"weight must be [M, N], got shape {tuple(weight.shape)}")
    rows, cols = int(weight.shape[0]), int(weight.shape[1])
    if rows < block or cols < block:
        return eigenvalues(weight, dtype=torch.float32, method="svd")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight holds NaN or Inf values; check finiteness before computing eigenvalues")

    grid_rows, grid_cols = rows // block, cols // block
    total = grid_rows * grid_cols
    rng = np.random.Generator(np.random.PCG64(seed))
    chosen = np.arange(total) if total <= max_blocks else np.sort(rng.choice(total, size=max_blocks, replace=False))
    with torch.no_grad():
        tiles = (
            weight[: grid_rows * block, : grid_cols * block]
            .to(torch.float32)
            .reshape(grid_rows, block, grid_cols, block)
            .permute(0, 2, 1, 3)
            .reshape(total, block, block)
        )  # [G, block, block]
        picked = tiles[torch.from_numpy(chosen)]  # [S, block, block]
        evals = torch.linalg.svdvals(picked).square()  # [S, block]
    return np.sort(evals.to(torch.float64).numpy().ravel())
