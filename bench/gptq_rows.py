"""The paper's setting next to the data-free one: the same plans executed with rtn (data-free) and with GPTQ.

On the bundled model, for budgets 2.5 and 3: the alphaq plan (data-free), the uniform plan and the calibrated
frequency plan (routing counted on WikiText-2 valid), each quantized with ``--method rtn`` and with ``--method gptq``
(128 windows of WikiText-2 *valid* as calibration, group 128, act-order off), and scored by ``alphaq eval
--quantized`` on the first WINDOWS windows of WikiText-2 *test* next to the original on the same windows.
Prints a table and writes bench/results/gptq_rows.json.

    ALPHAQ_DATA_DIR=/work/shared/data python bench/gptq_rows.py [--windows 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "gptq_rows.json"
BUDGETS = ("2.5", "3")
ALLOCATORS = ("alphaq", "uniform", "frequency")


def main() -> None:
    from alphaq.evaluation import EvalOptions, datasets
    from alphaq.evaluation.eval_run import run_eval
    from alphaq.planning.planner import PlanConfig
    from alphaq.planning.run import run_plan
    from alphaq.provenance import versions
    from alphaq.quantization.run import run_quantize

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=256)
    args = parser.parse_args()
    calibration = datasets.wikitext2_valid()
    options = EvalOptions(max_windows=args.windows)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="alphaq-gptq-rows-") as tmp:
        root = Path(tmp)
        inspect_dir = None
        for budget in BUDGETS:
            for allocator in ALLOCATORS:
                run = root / f"{allocator}-{budget}"
                if inspect_dir is not None:  # reuse the first inspect run
                    for name in ("details.csv", "details.parquet", "experts.csv", "spectra.npz", "inspect.json"):
                        if (inspect_dir / name).exists():
                            run.mkdir(parents=True, exist_ok=True)
                            (run / name).write_bytes((inspect_dir / name).read_bytes())
                run_plan(
                    None,
                    PlanConfig(
                        budget=budget,
                        allocator=allocator,
                        calibration_text=calibration if allocator == "frequency" else None,
                    ),
                    run,
                )
                inspect_dir = inspect_dir or run
                for method in ("rtn", "gptq"):
                    t0 = time.perf_counter()
                    q = run / f"q-{method}"
                    run_quantize(
                        None,
                        run / "plan.json",
                        q,
                        method=method,
                        calibration_text=calibration if method == "gptq" else None,
                    )
                    seconds = time.perf_counter() - t0
                    record = run_eval(None, quantized=q, options=options).record
                    rows.append(
                        {
                            "budget": budget,
                            "allocator": allocator,
                            "method": method,
                            "ppl": record["ppl"],
                            "ppl_increase": record["ppl_increase"],
                            "original_ppl": record["baseline"]["ppl"],
                            "rel_error": record["verification"]["mean_rel_error"],
                            "quantize_seconds": round(seconds, 1),
                        }
                    )
                    print(
                        f"{budget:>4} {allocator:<10} {method:<5} ppl {record['ppl']:.3f} "
                        f"(+{record['ppl_increase']:.3f}) rel. error {record['verification']['mean_rel_error']:.4f} "
                        f"[{seconds:.0f} s]",
                        flush=True,
                    )
    out = {
        "bench": "gptq_rows",
        "windows": args.windows,
        "calibration": str(calibration),
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()} ({__import__('os').cpu_count()} CPUs)",
        "versions": versions(),
    }
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
