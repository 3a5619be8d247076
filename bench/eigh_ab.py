"""A/B: symmetric eigenvalues of a float64 Gram through ``scipy.linalg.eigh(driver="evd")`` (one-stage ``dsyevd``)
against LAPACK's two-stage ``dsyevd_2stage`` (which scipy does not expose; called through ctypes on numpy's bundled
OpenBLAS, as ``alphaq/diagnostics/lapack.py`` does).

The Gram is ``W W^T`` of a heavy-tailed (Student t, 3 degrees of freedom) random ``W`` [K, 2K], float64. Each
timing holds one BLAS thread (threadpoolctl), as the inspect stage's workers do; the drivers alternate
(A B C A B C ...) so that load from other processes on a shared machine hits them alike; the figure is the median
of ``--repeats`` runs (the fastest run, less disturbed by other load, is kept too). For context the one-stage
``dsyevd`` of numpy's OpenBLAS (the 2-stage driver's library; scipy bundles another OpenBLAS build) is timed too.
Prints one line per order and writes ``bench/results/eigh_ab.json``.

Usage: ``python bench/eigh_ab.py [--orders 1024 2048 4096 6144] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import scipy.linalg
from threadpoolctl import threadpool_info, threadpool_limits

_COL_MAJOR = 102
_PREFIXES = (
    ("scipy_LAPACKE_{}64_", ctypes.c_int64),
    ("LAPACKE_{}64_", ctypes.c_int64),
    ("scipy_LAPACKE_{}", ctypes.c_int32),
    ("LAPACKE_{}", ctypes.c_int32),
)


def _lapacke(name: str) -> Any:
    """``LAPACKE_<name>`` of numpy's bundled OpenBLAS through ctypes, or None."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for library in sorted(libs.glob("libscipy_openblas*.so*")) if libs.is_dir() else []:
        handle = ctypes.CDLL(str(library))
        for prefix, int_type in _PREFIXES:
            function = getattr(handle, prefix.format(name), None)
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


def two_stage(gram: np.ndarray) -> np.ndarray:
    """[K, K] -> [K] through ``dsyevd_2stage`` (a copy of ``gram`` is overwritten)."""
    function = _lapacke("dsyevd_2stage")
    work = np.array(gram, dtype=np.float64, order="C", copy=True)  # [K, K]
    evals = np.empty(work.shape[0], dtype=np.float64)  # [K]
    info = function(_COL_MAJOR, b"N", b"L", work.shape[0], work.ctypes.data, work.shape[0], evals.ctypes.data)
    if info != 0:
        raise np.linalg.LinAlgError(f"dsyevd_2stage info={info}")
    return evals


def one_stage(gram: np.ndarray) -> np.ndarray:
    """[K, K] -> [K] through ``dsyevd`` of numpy's OpenBLAS via ctypes (context: the same library as the 2-stage)."""
    function = _lapacke("dsyevd")
    work = np.array(gram, dtype=np.float64, order="C", copy=True)  # [K, K]
    evals = np.empty(work.shape[0], dtype=np.float64)  # [K]
    info = function(_COL_MAJOR, b"N", b"L", work.shape[0], work.ctypes.data, work.shape[0], evals.ctypes.data)
    if info != 0:
        raise np.linalg.LinAlgError(f"dsyevd info={info}")
    return evals


def scipy_evd(gram: np.ndarray) -> np.ndarray:
    """[K, K] -> [K] through ``scipy.linalg.eigh(driver="evd")`` on a float64 copy (as alphaq calls it)."""
    work = np.array(gram, dtype=np.float64, order="F", copy=True)  # [K, K]
    return scipy.linalg.eigh(work, eigvals_only=True, driver="evd", overwrite_a=True, check_finite=False)


def _gram(order: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_t(3.0, size=(order, 2 * order)) / np.sqrt(2 * order)  # [K, 2K] float64
    return w @ w.T  # [K, K]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[1024, 2048, 4096, 6144])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eigh_ab.json")
    args = parser.parse_args()
    if _lapacke("dsyevd_2stage") is None:
        raise SystemExit("numpy's bundled OpenBLAS has no LAPACKE_dsyevd_2stage: nothing to compare")
    rows = []
    for order in args.orders:
        gram = _gram(order, seed=order)
        times: dict[str, list[float]] = {"scipy_evd": [], "dsyevd_2stage": [], "numpy_openblas_dsyevd": []}
        with threadpool_limits(limits=1):
            ref = scipy_evd(gram)
            np.testing.assert_allclose(two_stage(gram), ref, rtol=0, atol=1e-11 * ref[-1])
            for _ in range(args.repeats):
                for name, fn in (
                    ("scipy_evd", scipy_evd),
                    ("dsyevd_2stage", two_stage),
                    ("numpy_openblas_dsyevd", one_stage),
                ):
                    start = time.perf_counter()
                    fn(gram)
                    times[name].append(time.perf_counter() - start)
        evd, two = statistics.median(times["scipy_evd"]), statistics.median(times["dsyevd_2stage"])
        one = statistics.median(times["numpy_openblas_dsyevd"])
        row = {
            "order": order,
            "scipy_evd_s": evd,
            "dsyevd_2stage_s": two,
            "numpy_openblas_dsyevd_s": one,
            "two_stage_speedup": evd / two,
            "min_s": {name: min(runs) for name, runs in times.items()},
            "two_stage_speedup_of_min": min(times["scipy_evd"]) / min(times["dsyevd_2stage"]),
            "runs_s": times,
            "load_avg_after": os.getloadavg(),
        }
        rows.append(row)
        print(
            f"order {order:5d}: scipy evd {evd:7.3f} s  dsyevd_2stage {two:7.3f} s  (2-stage {evd / two:.2f}x, "
            f"fastest runs {row['two_stage_speedup_of_min']:.2f}x)  [ctypes dsyevd {one:7.3f} s]  "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    blas = [{k: info.get(k) for k in ("filepath", "version", "architecture")} for info in threadpool_info()]
    result = {
        "what": "float64 Gram W W^T of Student-t(3) W [K, 2K]; eigenvalues only; 1 BLAS thread; median of repeats",
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs (shared with other processes: see load_avg_after)",
        "processor": platform.processor(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": blas,
        "repeats": args.repeats,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
