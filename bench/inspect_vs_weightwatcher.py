"""How fast is alphaq's spectral audit against weightwatcher 0.7.7, at equal alphas?

The same matrices go through both:

* weightwatcher: ``WeightWatcher(model).analyze()`` with default settings on a torch module whose
  ``nn.Linear`` layers hold the matrices (float64 scipy SVD on CPU, its WWFit, its norm metrics);
* alphaq: ``eigenvalues`` batched over same-shape matrices (Gram route) in float64 and in float32,
  then ``esd_metrics(..., method="ww")`` per matrix.

Matrices: 8 random-but-heavy-tailed "experts" 1024x2816 (Student-t entries, dof 2.5-4 per expert,
so their ESDs have power-law tails of different exponents), 4 of 512x1408 and 2 routers 16x1024
(16 eigenvalues: weightwatcher's small-N fit); ``--quick`` shrinks them (256x704, 128x352, 16x256).
Prints times, the speed-up and the largest relative alpha difference, and writes
``bench/results/inspect_vs_weightwatcher.json`` atomically.

``--real`` uses real expert shapes instead (2 x 2048x7168 as in DeepSeek-V3, 14336x4096 as in Mixtral).

Run: ``python bench/inspect_vs_weightwatcher.py [--quick | --real] [--threads 2 1] [--repeats R] [--output F]`` (about 1-3 minutes on a
shared 2-core CPU; ``--quick`` a few seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alphaq.atomic import write_json
from alphaq.diagnostics.esd_metrics import esd_metrics
from alphaq.diagnostics.spectrum import eigenvalues

RESULT = Path(__file__).resolve().parent / "results" / "inspect_vs_weightwatcher.json"
FULL_GROUPS = (("expert", 8, 1024, 2816), ("small", 4, 512, 1408), ("router", 2, 16, 1024))
QUICK_GROUPS = (("expert", 8, 256, 704), ("small", 4, 128, 352), ("router", 2, 16, 256))
#: Real expert shapes (``--real``): DeepSeek-V3 / Qwen3-235B routed expert (2048 x 7168 gate/up, [I, H]) and
#: Mixtral-8x7B expert (14336 x 4096 w1/w3); weightwatcher's bidiagonalisation of these no longer fits in cache.
REAL_GROUPS = (("deepseek_v3_expert", 2, 2048, 7168), ("mixtral_expert", 1, 14336, 4096))


def make_matrices(groups: tuple[tuple[str, int, int, int], ...], seed: int) -> dict[str, torch.Tensor]:
    """Heavy-tailed random matrices (float32), named ``{group}{index}``."""
    rng = np.random.default_rng(seed)
    out = {}
    for group, count, rows, cols in groups:
        for index in range(count):
            dof = float(rng.uniform(2.5, 4.0))
            scale = 1.0 / np.sqrt(cols)
            out[f"{group}{index}"] = torch.from_numpy((rng.standard_t(dof, size=(rows, cols)) * scale).astype(np.float32))
    return out


def run_weightwatcher(matrices: dict[str, torch.Tensor]) -> tuple[float, dict[str, dict[str, Any]]]:
    """weightwatcher's analyze() with default settings; returns (seconds, per-matrix columns)."""
    import weightwatcher

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    module = torch.nn.ModuleDict()
    for name, w in matrices.items():
        linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            linear.weight.copy_(w)
        module[name] = linear
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its small-N fit prints
        details = weightwatcher.WeightWatcher(model=module).analyze()
    seconds = time.perf_counter() - start
    rows = {str(r["name"]): {k: r[k] for k in ("alpha", "xmin", "D", "num_pl_spikes")} for _, r in details.iterrows()}
    return seconds, rows


def run_alphaq(matrices: dict[str, torch.Tensor], dtype: torch.dtype) -> tuple[float, float, dict[str, dict[str, Any]]]:
    """alphaq: batched eigenvalues per shape, then esd_metrics; returns (seconds, eigen seconds, rows)."""
    start = time.perf_counter()
    groups: dict[tuple[int, ...], list[str]] = {}
    for name, w in matrices.items():
        groups.setdefault(tuple(w.shape), []).append(name)
    spectra: dict[str, np.ndarray] = {}
    for names in groups.values():
        stacked = torch.stack([matrices[n] for n in names])  # [B, M, N]
        for name, evals in zip(names, eigenvalues(stacked, dtype=dtype)):
            spectra[name] = evals
    eigen_seconds = time.perf_counter() - start
    rows = {}
    for name, evals in spectra.items():
        m = esd_metrics(evals, method="ww", max_dim=max(matrices[name].shape))
        rows[name] = {"alpha": m.alpha, "xmin": m.xmin, "D": m.D, "num_pl_spikes": m.num_pl_spikes}
    return time.perf_counter() - start, eigen_seconds, rows


def compare(reference: dict[str, dict[str, Any]], ours: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rel = [abs(ours[n]["alpha"] - r["alpha"]) / abs(r["alpha"]) for n, r in reference.items()]
    same_xmin = sum(int(ours[n]["num_pl_spikes"] == r["num_pl_spikes"]) for n, r in reference.items())
    return {"max_rel_alpha_diff": float(max(rel)), "same_tail": same_xmin, "matrices": len(reference)}


def set_threads(threads: int | None) -> None:
    """Same thread count for torch (OpenMP/MKL) and for numpy/scipy's BLAS (weightwatcher's SVD)."""
    if threads is None:
        return
    import scipy.linalg  # noqa: F401  (load scipy's own BLAS before limiting it)
    import weightwatcher  # noqa: F401

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=threads)


def _blas_threads() -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{"api": i["internal_api"], "library": Path(i["filepath"]).name, "threads": i["num_threads"]}
            for i in threadpool_info()]


def run_config(matrices: dict[str, torch.Tensor], repeats: int) -> dict[str, Any]:
    """Every method ``repeats`` times, interleaved (slow spells of a shared machine hit all); prints a
    table and returns the fastest run of each."""
    timings: dict[str, list[float]] = {"weightwatcher": [], "alphaq_float64": [], "alphaq_float32": []}
    eigen: dict[str, list[float]] = {"alphaq_float64": [], "alphaq_float32": []}
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    dtypes = {"alphaq_float64": torch.float64, "alphaq_float32": torch.float32}
    for _ in range(max(1, repeats)):
        seconds, rows["weightwatcher"] = run_weightwatcher(matrices)
        timings["weightwatcher"].append(seconds)
        for key, dtype in dtypes.items():
            seconds, eig_seconds, rows[key] = run_alphaq(matrices, dtype)
            timings[key].append(seconds)
            eigen[key].append(eig_seconds)

    ww_seconds = min(timings["weightwatcher"])
    results: dict[str, Any] = {"weightwatcher": {"seconds": ww_seconds, "all_seconds": timings["weightwatcher"]}}
    print(f"{'method':<22}{'seconds':>10}{'eig s':>9}{'speed-up':>10}{'max rel alpha diff':>20}{'same tail':>11}")
    print(f"{'weightwatcher 0.7.7':<22}{ww_seconds:>10.2f}{'':>9}{'1.0x':>10}{'(reference)':>20}{'':>11}")
    for key in dtypes:
        seconds, eig_seconds = min(timings[key]), min(eigen[key])
        diff = compare(rows["weightwatcher"], rows[key])
        results[key] = {"seconds": seconds, "all_seconds": timings[key], "eigen_seconds": eig_seconds,
                        "speedup": ww_seconds / seconds, **diff}
        print(f"{key.replace('_', ' '):<22}{seconds:>10.2f}{eig_seconds:>9.2f}{ww_seconds / seconds:>9.1f}x"
              f"{diff['max_rel_alpha_diff']:>20.2e}{diff['same_tail']:>6}/{diff['matrices']}")
    results["alpha"] = {name: {key: float(rows[key][name]["alpha"]) for key in rows} for name in matrices}
    results["threads"] = {"torch": torch.get_num_threads(), "blas": _blas_threads()}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds instead of minutes)")
    parser.add_argument("--real", action="store_true",
                        help="real expert shapes: 2 x 2048x7168 (DeepSeek-V3) and 14336x4096 (Mixtral); minutes")
    parser.add_argument("--threads", type=int, nargs="*", default=[],
                        help="thread counts for torch and BLAS, one configuration each (default: as set)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each method, the fastest reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULT, help=f"JSON result (default {RESULT})")
    args = parser.parse_args(argv)
    import weightwatcher  # import cost kept out of the timings

    groups = QUICK_GROUPS if args.quick else REAL_GROUPS if args.real else FULL_GROUPS
    matrices = make_matrices(groups, args.seed)
    warm = make_matrices((("warm", 2, 64, 128),), args.seed)  # first-call costs kept out of the timings
    run_weightwatcher(warm)
    for dtype in (torch.float64, torch.float32):
        run_alphaq(warm, dtype)
    configs: dict[str, Any] = {}
    for threads in args.threads or [None]:
        set_threads(threads)
        label = "default" if threads is None else f"threads={threads}"
        print(f"== {label} (torch {torch.get_num_threads()} threads)")
        configs[label] = run_config(matrices, args.repeats)

    payload = {
        "benchmark": "inspect_vs_weightwatcher",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "real": args.real,
        "repeats": max(1, args.repeats),
        "matrices": [{"group": g, "count": c, "rows": r, "cols": k} for g, c, r, k in groups],
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                     "weightwatcher": getattr(weightwatcher, "__version__", "0.7.7")},
        "results": configs,
    }
    write_json(args.output, payload)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
