"""Symmetric eigenvalues of a Gram matrix: ``scipy.linalg.eigh(driver="evd")`` (LAPACK ``dsyevd``), and LAPACK's
two-stage ``dsyevd_2stage`` from :data:`TWO_STAGE_MIN` rows on, where it pays.

``dsyevd``'s one-stage reduction to tridiagonal form (``sytrd``) is half matrix-vector products: memory-bound, it
dominates for large Gram matrices. ``dsyevd_2stage`` first reduces to a band with matrix-matrix products, then
chases the band down (``sy2sb`` + ``sb2st``): for eigenvalues only it does the same arithmetic with far less memory
traffic. scipy does not expose it; numpy's wheels ship OpenBLAS with full LAPACK (``libscipy_openblas64_`` under
``numpy.libs``), so it is called there through ctypes (LAPACKE, column-major; a symmetric matrix reads the same in
either order). Where that library or symbol is missing (numpy built against another BLAS), scipy's one-stage
driver runs at every order.

The A/B that sets :data:`TWO_STAGE_MIN` (``bench/eigh_ab.py``, ``bench/results/eigh_ab.json``): float64 Gram of a
heavy-tailed random [K, 2K] matrix, one BLAS thread, drivers interleaved, on this project's shared 2-core Intel
Xeon (1-minute load 5-10 from other processes during the runs), median of 5 (of 3 in an earlier run):
``scipy.linalg.eigh(driver="evd")`` against ``dsyevd_2stage`` took 0.141 s vs 0.113 s at order 1024 (earlier run
0.134 vs 0.092), 0.95 vs 0.61 s at 2048 (1.10 vs 0.68), 13.2 vs 9.0 s at 4096 (8.4 vs 7.9; fastest runs 8.2 vs
6.8), 58.9 vs 29.9 s at 6144 (69 vs 31). The two-stage driver was faster at every order in both runs: 1.25-1.6x at
1024 and 2048, 1.07-1.46x at 4096 (1.2-1.26x of the fastest runs), 2-2.25x at 6144. So it runs from the smallest
order measured, 1024; below it, where a matrix takes under 0.1 s, scipy's driver runs.

Single precision was measured and rejected against the 1e-4 relative tolerance on alpha (weightwatcher's float64
SVD as the reference): on 12 heavy-tailed 1024x2816 matrices ``ssyevd`` (0.059 s vs 0.077 s, one thread) moved
alpha by up to 2.9e-5; on 8 of 2048x7168 ``ssyevd_2stage`` (0.50 s vs 0.65 s) moved it by up to 4.7e-4, past the
tolerance. A float32 Gram is therefore copied to float64 first (it then agrees with the float64 route to ~3e-7).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any

import numpy as np

#: Gram matrices from this order on use the two-stage driver (see the module's docstring for the measurement).
TWO_STAGE_MIN = 1024
_COL_MAJOR = 102
#: symbol prefixes with their LAPACK integer type: ILP64 builds of numpy's bundled OpenBLAS first, then LP64.
_PREFIXES = (
    ("scipy_LAPACKE_{}64_", ctypes.c_int64),
    ("LAPACKE_{}64_", ctypes.c_int64),
    ("scipy_LAPACKE_{}", ctypes.c_int32),
    ("LAPACKE_{}", ctypes.c_int32),
)


@functools.cache
def _two_stage_driver() -> Any:
    """The ctypes function ``LAPACKE_dsyevd_2stage`` of numpy's bundled OpenBLAS, or None."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for library in sorted(libs.glob("libscipy_openblas*.so*")) if libs.is_dir() else []:
        try:
            handle = ctypes.CDLL(str(library))
        except OSError:
            continue
        for prefix, int_type in _PREFIXES:
            function = getattr(handle, prefix.format("dsyevd_2stage"), None)
            if function is not None:
                function.restype = int_type
                function.argtypes = [
                    ctypes.c_int,
                    ctypes.c_char,
                    ctypes.c_char,
                    int_type,
                    ctypes.c_void_p,
                    int_type,
                    ctypes.c_void_p,
                ]
                return function
    return None


def two_stage_available() -> bool:
    """Whether the two-stage driver was found (else :func:`eigvalsh` runs scipy's one-stage driver at every order)."""
    return _two_stage_driver() is not None


def eigvalsh(gram: np.ndarray, *, two_stage: bool | None = None) -> np.ndarray:
    """Eigenvalues of a symmetric matrix, ascending, float64.

    Args:
        gram: symmetric [K, K] float32 or float64 array. It is copied to float64 and never modified.
        two_stage: force (True) or avoid (False) the two-stage driver; None: from :data:`TWO_STAGE_MIN` on.

    Returns:
        float64 array [K], ascending.

    Raises:
        numpy.linalg.LinAlgError: LAPACK did not converge.
        ValueError: the matrix holds NaN or Inf.
    """
    use_two_stage = (gram.shape[0] >= TWO_STAGE_MIN) if two_stage is None else two_stage
    function = _two_stage_driver() if use_two_stage else None
    work = np.array(gram, dtype=np.float64, order="C", copy=True)  # [K, K], overwritten by LAPACK
    if function is None:
        import scipy.linalg

        # the transpose is a Fortran-order view of the same symmetric matrix: scipy then overwrites it, no copy
        return scipy.linalg.eigh(work.T, eigvals_only=True, driver="evd", overwrite_a=True)
    n = work.shape[0]
    evals = np.empty(n, dtype=np.float64)  # [K]
    info = function(_COL_MAJOR, b"N", b"L", n, work.ctypes.data, n, evals.ctypes.data)
    if info != 0:  # LAPACKE checks for NaN itself (info -5); a positive info: no convergence
        if info < 0:
            raise ValueError(f"dsyevd_2stage got a matrix with NaN or Inf (info={info})")
        raise np.linalg.LinAlgError(f"dsyevd_2stage did not converge (info={info})")
    return evals
