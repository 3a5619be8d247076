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

Two measurements:

* whole command (what a user waits for, start-up and imports included): the matrices are written to a
  float32 Mixtral-layout safetensors checkpoint; ``alphaq inspect CKPT --out DIR --no-html`` runs as a
  subprocess, against a subprocess that imports weightwatcher and torch, builds the torch model from the same
  checkpoint and runs ``analyze()``; interleaved, ``--repeats`` times each, medians reported with the load
  average around each run, and every alpha of details.csv compared with weightwatcher's. Both packages run
  from byte-compiled modules, as ``pip install`` leaves them (alphaq's are compiled first: an editable checkout
  run with ``PYTHONDONTWRITEBYTECODE`` would otherwise recompile every module each run, about 0.08 s);
* kernel only (in process, imports excluded): the eigenvalue + fit code on the in-memory matrices, as before.

Peak memory: the ``alphaq inspect`` subprocess's peak RSS (``os.wait4``) on the bench checkpoint, on one of
``--memory-matrices`` 1024x2816 experts (far bigger than one tensor) and on a one-matrix checkpoint (start-up
baseline), against the size of the largest tensor plus its Gram matrix.

``--real`` uses real expert shapes instead (2 x 2048x7168 as in DeepSeek-V3, 14336x4096 as in Mixtral).

Run: ``python bench/inspect_vs_weightwatcher.py [--quick | --real] [--threads 2 1] [--repeats R] [--output F]``
(about 2-4 minutes on a shared 2-core CPU; ``--quick`` under a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import io
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alphaq.atomic import write_json
from alphaq.diagnostics.esd_metrics import esd_metrics
from alphaq.diagnostics.spectrum import eigenvalues

RESULT = Path(__file__).resolve().parent / "results" / "inspect_vs_weightwatcher.json"
REAL_RESULT = RESULT.with_name("inspect_vs_weightwatcher_real.json")
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
            out[f"{group}{index}"] = torch.from_numpy(
                (rng.standard_t(dof, size=(rows, cols)) * scale).astype(np.float32)
            )
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
    return [
        {"api": i["internal_api"], "library": Path(i["filepath"]).name, "threads": i["num_threads"]}
        for i in threadpool_info()
    ]


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
        results[key] = {
            "seconds": seconds,
            "all_seconds": timings[key],
            "eigen_seconds": eig_seconds,
            "speedup": ww_seconds / seconds,
            **diff,
        }
        print(
            f"{key.replace('_', ' '):<22}{seconds:>10.2f}{eig_seconds:>9.2f}{ww_seconds / seconds:>9.1f}x"
            f"{diff['max_rel_alpha_diff']:>20.2e}{diff['same_tail']:>6}/{diff['matrices']}"
        )
    results["alpha"] = {name: {key: float(rows[key][name]["alpha"]) for key in rows} for name in matrices}
    results["threads"] = {"torch": torch.get_num_threads(), "blas": _blas_threads()}
    return results


_WW_WORKER = """
import json, sys, time, contextlib, io, logging
start = time.perf_counter()
import torch, weightwatcher
from safetensors.torch import load_file
logging.getLogger("weightwatcher").setLevel(logging.ERROR)
tensors = load_file(sys.argv[1] + "/model.safetensors")
model = torch.nn.ModuleDict()
for i, (name, w) in enumerate(tensors.items()):
    linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        linear.weight.copy_(w)
    model[f"m{i}"] = linear
names = dict(zip(model.keys(), tensors))
with contextlib.redirect_stdout(io.StringIO()):
    details = weightwatcher.WeightWatcher(model=model).analyze()
alphas = {names[str(r["name"])]: float(r["alpha"]) for _, r in details.iterrows()}
json.dump({"alpha": alphas, "seconds_in_process": time.perf_counter() - start}, open(sys.argv[2], "w"))
"""


_GROUP_LAYER = {"expert": 0, "small": 1, "deepseek_v3_expert": 0, "mixtral_expert": 1}


def tensor_name(matrix: str) -> str:
    """Mixtral-layout checkpoint name of a bench matrix (routers: gates; every other group a layer of its own, so
    no two matrices share a name)."""
    group = matrix.rstrip("0123456789")
    index = int(matrix[len(group) :])
    if group == "router":
        return f"model.layers.{index}.block_sparse_moe.gate.weight"
    return f"model.layers.{_GROUP_LAYER[group]}.block_sparse_moe.experts.{index}.w1.weight"


def write_checkpoint(matrices: dict[str, torch.Tensor], folder: Path) -> Path:
    """A float32 Mixtral-layout checkpoint (config.json + model.safetensors) holding the matrices."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({tensor_name(n): w.numpy() for n, w in matrices.items()}, str(folder / "model.safetensors"))
    hidden = max(int(w.shape[1]) for w in matrices.values())
    config = {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_size": hidden,
        "num_hidden_layers": 2,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "vocab_size": 4096,
    }
    (folder / "config.json").write_text(__import__("json").dumps(config))
    return folder


def _alphaq_command() -> list[str]:
    script = Path(sys.executable).with_name("alphaq")
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from alphaq.cli import app; app()"]


_LAUNCHER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
seconds = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": seconds, "rss_kib": rss, "rc": done.returncode, "stderr": done.stderr.decode()[-2000:]}))
"""


def timed_subprocess(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process, started by a small launcher process (a child forked
    from this big benchmark process would inherit its memory high-water mark); raises when it fails."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, *command], env=env, capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({result['rc']}): {result['stderr']}")
    return float(result["seconds"]), result["rss_kib"] / 1024.0  # Linux: KiB


def compile_alphaq() -> None:
    """Byte-compile the alphaq package where it is imported from (what ``pip install`` does for an install)."""
    import compileall

    import alphaq

    compileall.compile_dir(str(Path(alphaq.__file__).parent), quiet=1)


def whole_command(matrices: dict[str, torch.Tensor], repeats: int, threads: int | None, work: Path) -> dict[str, Any]:
    """Both tools as fresh processes on the same checkpoint, interleaved; medians, loads and alpha agreement."""
    import csv

    ckpt = write_checkpoint(matrices, work / "ckpt")
    compile_alphaq()
    env = dict(os.environ)
    if threads is not None:
        env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
    runs: dict[str, list[dict[str, Any]]] = {"weightwatcher": [], "alphaq": []}
    commands = {
        "weightwatcher": [sys.executable, "-c", _WW_WORKER, str(ckpt), str(work / "ww.json")],
        "alphaq": [*_alphaq_command(), "inspect", str(ckpt), "--out", str(work / "run"), "--no-html"],
    }
    for _ in range(max(1, repeats)):
        for key, command in commands.items():
            load_before = os.getloadavg()[0]
            seconds, rss = timed_subprocess(command, env)
            runs[key].append({"seconds": seconds, "peak_rss_mib": rss, "load_1min": [load_before, os.getloadavg()[0]]})
    ww_alpha = __import__("json").loads((work / "ww.json").read_text())["alpha"]
    with (work / "run" / "details.csv").open() as fh:
        ours = {row["name"]: float(row["alpha"]) for row in csv.DictReader(fh)}
    rel = {name: abs(ours[name] - a) / abs(a) for name, a in ww_alpha.items()}
    out: dict[str, Any] = {"checkpoint_mib": (ckpt / "model.safetensors").stat().st_size / 2**20}
    for key, items in runs.items():
        out[key] = {"median_seconds": statistics.median(r["seconds"] for r in items), "runs": items}
    out["speedup"] = out["weightwatcher"]["median_seconds"] / out["alphaq"]["median_seconds"]
    out["max_rel_alpha_diff"] = max(rel.values())
    out["matrices_compared"] = len(rel)
    print(
        f"whole command (median of {len(runs['alphaq'])}): weightwatcher {out['weightwatcher']['median_seconds']:.2f} s, "
        f"alphaq inspect {out['alphaq']['median_seconds']:.2f} s -> {out['speedup']:.1f}x; "
        f"max rel alpha diff {out['max_rel_alpha_diff']:.2e} over {len(rel)} matrices"
    )
    return out


def peak_memory(rows: int, cols: int, count: int, seed: int, work: Path) -> dict[str, Any]:
    """Peak RSS of ``alphaq inspect`` on ``count`` matrices [rows, cols] against one (start-up baseline)."""
    gram_mib = min(rows, cols) ** 2 * 4 / 2**20
    tensor_mib = rows * cols * 4 / 2**20
    out: dict[str, Any] = {"matrix": [rows, cols], "tensor_mib": tensor_mib, "gram_mib": gram_mib}
    for label, n in (("one_matrix", 1), ("many_matrices", count)):
        ckpt = write_checkpoint(make_matrices((("expert", n, rows, cols),), seed), work / f"mem-{n}")
        seconds, rss = timed_subprocess(
            [*_alphaq_command(), "inspect", str(ckpt), "--out", str(work / f"mem-run-{n}"), "--no-html"],
            dict(os.environ),
        )
        out[label] = {"matrices": n, "checkpoint_mib": n * tensor_mib, "peak_rss_mib": rss, "seconds": seconds}
        for file in ckpt.iterdir():
            file.unlink()
    out["rss_growth_mib"] = out["many_matrices"]["peak_rss_mib"] - out["one_matrix"]["peak_rss_mib"]
    print(
        f"peak RSS: {out['one_matrix']['peak_rss_mib']:.0f} MiB on 1 matrix {rows}x{cols}, "
        f"{out['many_matrices']['peak_rss_mib']:.0f} MiB on {count} ({out['many_matrices']['checkpoint_mib']:.0f} MiB "
        f"checkpoint); tensor + Gram = {tensor_mib + gram_mib:.1f} MiB"
    )
    return out


def _machine() -> dict[str, Any]:
    model = ""
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.processor()
    mem = ""
    try:
        mem = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "memory": mem,
        "platform": platform.platform(),
        "note": "shared machine: other jobs run; see load_average",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (seconds instead of minutes)")
    parser.add_argument(
        "--real",
        action="store_true",
        help="real expert shapes: 2 x 2048x7168 (DeepSeek-V3) and 14336x4096 (Mixtral); minutes",
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="*",
        default=[],
        help="thread counts for torch and BLAS, one configuration each (default: as set)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each method (kernel: the fastest reported; whole command: the median)",
    )
    parser.add_argument(
        "--memory-matrices",
        type=int,
        default=32,
        help="1024x2816 matrices of the peak-memory checkpoint (0: skip that measurement)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--output", type=Path, default=None, help=f"JSON result (default {RESULT}; {REAL_RESULT.name} with --real)"
    )
    args = parser.parse_args(argv)
    import weightwatcher  # import cost kept out of the timings

    groups = QUICK_GROUPS if args.quick else REAL_GROUPS if args.real else FULL_GROUPS
    matrices = make_matrices(groups, args.seed)
    warm = make_matrices((("warm", 2, 64, 128),), args.seed)  # first-call costs kept out of the timings
    run_weightwatcher(warm)
    for dtype in (torch.float64, torch.float32):
        run_alphaq(warm, dtype)
    configs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="alphaq-bench-") as tmp:
        for threads in args.threads or [None]:
            set_threads(threads)
            label = "default" if threads is None else f"threads={threads}"
            print(f"== {label} (torch {torch.get_num_threads()} threads)")
            configs[label] = run_config(matrices, args.repeats)
            configs[label]["whole_command"] = whole_command(matrices, args.repeats, threads, Path(tmp) / label)
            configs[label]["kernel_speedup_float32"] = configs[label]["alphaq_float32"]["speedup"]
        memory = (
            peak_memory(1024, 2816, args.memory_matrices, args.seed, Path(tmp)) if args.memory_matrices > 0 else None
        )

    payload = {
        "benchmark": "inspect_vs_weightwatcher",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "real": args.real,
        "repeats": max(1, args.repeats),
        "matrices": [{"group": g, "count": c, "rows": r, "cols": k} for g, c, r, k in groups],
        "cpu_count": os.cpu_count(),
        "machine": _machine(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "peak_memory": memory,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "weightwatcher": getattr(weightwatcher, "__version__", "0.7.7"),
        },
        "results": configs,
    }
    output = args.output or (REAL_RESULT if args.real else RESULT)
    write_json(output, payload)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
