"""How much faster is alphaq's power-law fit (``fit_ww`` with the exact KS search) than weightwatcher's ``WWFit``?

Both fit the same eigenvalue spectra and must agree (same xmin index, alpha and D to 1e-9 relative). Spectra:

* ``gaussian``: eigenvalues of ``W^T W / rows`` for a Gaussian ``W`` (Marchenko-Pastur bulk, no real tail);
* ``student_t``: ``W`` with Student-t(3) entries (a heavy-tailed spectrum, what a trained expert looks like);
* ``pareto``: a pure Pareto(alpha = 2.5) sample, whose KS distance is flat over thousands of candidates
  (the search's worst case).

each at N = 1024, 2048 and 4096 eigenvalues (a matrix with that many columns, twice as many rows). Times are the
median of ``--repeats`` runs (each fit run alone, one thread).

Run: ``python bench/ks_search_vs_wwfit.py`` (about a minute on 2 CPU cores). Prints a table and writes
``bench/results/ks_search_vs_wwfit.json`` (atomically).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULT = Path(__file__).resolve().parent / "results" / "ks_search_vs_wwfit.json"
SIZES = (1024, 2048, 4096)
KINDS = ("gaussian", "student_t", "pareto")


def spectrum(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positive eigenvalues [n] of one synthetic spectrum."""
    if kind == "pareto":
        return np.sort(rng.pareto(1.5, n) + 1.0)  # density exponent 2.5
    rows = 2 * n
    w = rng.standard_normal((rows, n)) if kind == "gaussian" else rng.standard_t(3.0, (rows, n))  # [rows, n]
    evals = np.linalg.eigvalsh(w.T @ w / rows)  # [n]
    return np.sort(evals[evals > 0])


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    from weightwatcher.WW_powerlaw import WWFit

    from alphaq.atomic import write_json
    from alphaq.diagnostics.powerlaw_fit import fit_ww

    rng = np.random.default_rng(0)
    rows = []
    print(f"{'spectrum':>10} {'N':>5} {'alphaq ms':>10} {'WWFit ms':>9} {'speed-up':>8} {'alpha':>8} {'agree':>5}")
    for kind in KINDS:
        for n in SIZES:
            x = spectrum(kind, n, rng)
            ours = fit_ww(x)
            theirs = WWFit(x)
            agree = bool(
                np.isclose(ours.alpha, theirs.alpha, rtol=1e-9)
                and np.isclose(ours.D, theirs.D, rtol=1e-9)
                and np.isclose(ours.xmin, theirs.xmin, rtol=0)
            )
            t_ours = median_seconds(lambda x=x: fit_ww(x), args.repeats)
            t_theirs = median_seconds(lambda x=x: WWFit(x), args.repeats)
            row = {
                "spectrum": kind,
                "n": int(x.size),
                "alphaq_seconds": t_ours,
                "wwfit_seconds": t_theirs,
                "speedup": t_theirs / t_ours,
                "alpha": float(ours.alpha),
                "wwfit_alpha": float(theirs.alpha),
                "D": float(ours.D),
                "wwfit_D": float(theirs.D),
                "agree": agree,
            }
            rows.append(row)
            print(
                f"{kind:>10} {x.size:5d} {1e3 * t_ours:10.2f} {1e3 * t_theirs:9.1f} {row['speedup']:7.1f}x "
                f"{ours.alpha:8.3f} {str(agree):>5}"
            )
    import weightwatcher

    payload = {
        "benchmark": "ks_search_vs_wwfit",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "weightwatcher": weightwatcher.__version__,
        },
        "protocol": {
            "repeats": args.repeats,
            "statistic": "median wall seconds of one fit",
            "seed": 0,
            "sizes": list(SIZES),
            "spectra": list(KINDS),
        },
        "rows": rows,
    }
    write_json(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
