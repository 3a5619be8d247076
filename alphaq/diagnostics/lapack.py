"""Symmetric eigenvalues straight from LAPACK (``dsyevd``, and ``dsyevd_2stage`` for large orders), when numpy
bundles them.

numpy's ``eigvalsh`` runs ``syevd``, whose one-stage reduction to tridiagonal form (``sytrd``) is half
matrix-vector products: memory-bound, it dominates for large Gram matrices. ``syevd_2stage`` first reduces to a
band with matrix-matrix products, then chases the band down (``sy2sb`` + ``sb2st``): for eigenvalues only it does
the same arithmetic with far less memory traffic. numpy's wheels ship OpenBLAS with full LAPACK (the
``libscipy_openblas64_`` library under ``numpy.libs``) but expose no 2-stage driver, so it is called through
ctypes (LAPACKE, column-major; a symmetric matrix reads the same in either order). The two-stage driver is used
from :data:`TWO_STAGE_MIN` rows on, where it beat ``numpy.linalg.eigvalsh`` (1.5 s vs 2.1 s at order 2048 on the
loaded machine of the first measurement). Against the one-stage driver called here directly it is only level at
2048 (idle 2-core CPU, one thread, float64 copy of a heavy-tailed float32 Gram: ``dsyevd`` 0.54-0.58 s,
``dsyevd_2stage`` 0.56 s, numpy's ``eigvalsh`` 0.75 s) and slower at 1024 (0.07 s vs 0.12 s), so its gain is for
larger orders.

Single precision was measured and rejected against the 1e-4 relative tolerance on alpha (weightwatcher's
float64 SVD as the reference). numpy's ``eigvalsh`` of a float32 matrix already runs ``dsyevd`` on a float64 copy
(numpy's linalg computes float32 input in double), which is why the Gram route agrees with float64 to ~3e-7.
True single precision is faster but loses 1e-5 relative on the top eigenvalues: on 12 heavy-tailed 1024x2816
matrices ``ssyevd`` (0.059 s vs 0.077 s, one thread) moved alpha by up to 2.9e-5; on 8 of 2048x7168
``ssyevd_2stage`` (0.50 s vs 0.65 s) moved it by up to 4.7e-4, past the tolerance.

Below :data:`TWO_STAGE_MIN` the one-stage ``dsyevd`` is called through LAPACKE too: the same routine as
``numpy.linalg.eigvalsh`` runs, with one float64 copy of the input instead of numpy's two (a cast, then its own
column-major copy) and no result cast (about 5 % of a 1024 Gram's time). Where the library or a symbol is missing
(numpy built against another BLAS), :func:`eigvalsh` falls back to ``numpy.linalg.eigvalsh``.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any

import numpy as np

#: Gram matrices from this order on use the two-stage driver (below it the one-stage one is as fast).
TWO_STAGE_MIN = 1536
_COL_MAJOR = 102
#: symbol prefixes with their LAPACK integer type: ILP64 builds of numpy's bundled OpenBLAS first, then LP64.
_PREFIXES = (("scipy_LAPACKE_{}64_", ctypes.c_int64), ("LAPACKE_{}64_", ctypes.c_int64),
             ("scipy_LAPACKE_{}", ctypes.c_int32), ("LAPACKE_{}", ctypes.c_int32))


@functools.lru_cache(maxsize=None)
def _driver(name: str) -> Any:
    """The ctypes function ``LAPACKE_<name>`` (``dsyevd`` or ``dsyevd_2stage``) of numpy's bundled OpenBLAS, or
    None."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for library in sorted(libs.glob("libscipy_openblas*.so*")) if libs.is_dir() else []:
        try:
            handle = ctypes.CDLL(str(library))
        except OSError:
            continue
        for prefix, int_type in _PREFIXES:
            function = getattr(handle, prefix.format(name), None)
            if function is not None:
                function.restype = int_type
                function.argtypes = [ctypes.c_int, ctypes.c_char, ctypes.c_char, int_type, ctypes.c_void_p,
                                     int_type, ctypes.c_void_p]
                return function
    return None


def two_stage_available() -> bool:
    """Whether the two-stage driver was found (else :func:`eigvalsh` uses the one-stage one or numpy's)."""
    return _driver("dsyevd_2stage") is not None


def eigvalsh(gram: np.ndarray, *, two_stage: bool | None = None) -> np.ndarray:
    """Eigenvalues of a symmetric matrix, ascending, float64.

    Args:
        gram: symmetric [K, K] float32 or float64 array (only its lower triangle, in column-major terms, is read;
            numpy's ``eigvalsh`` reads the lower triangle too). It is copied to float64 and never modified.
        two_stage: force (True) or avoid (False) the two-stage driver; None: from :data:`TWO_STAGE_MIN` on.

    Returns:
        float64 array [K], ascending.

    Raises:
        numpy.linalg.LinAlgError: LAPACK did not converge or got NaN/Inf.
    """
    use_two_stage = (gram.shape[0] >= TWO_STAGE_MIN) if two_stage is None else two_stage
    name = "dsyevd_2stage" if use_two_stage else "dsyevd"
    function = _driver(name)
    if function is None:
        return np.linalg.eigvalsh(gram).astype(np.float64, copy=False)
    work = np.array(gram, dtype=np.float64, order="C", copy=True)  # [K, K], overwritten by LAPACK
    n = work.shape[0]
    evals = np.empty(n, dtype=np.float64)  # [K]
    info = function(_COL_MAJOR, b"N", b"L", n, work.ctypes.data, n, evals.ctypes.data)
    if info != 0:  # LAPACKE checks for NaN itself (info -5); a positive info: no convergence
        raise np.linalg.LinAlgError(f"{name} failed (info={info}; NaN in the matrix when negative)")
    return evals
