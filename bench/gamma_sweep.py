"""Gamma study of the alphaq allocator on the bundled model: which importance exponent to default to.

For gamma in 0, 1, 4, 16, 64, 256 and budgets 2.5, 3, 3.5, 4 bits, `alphaq compare` plans the bundled model with
the alphaq allocator (and uniform, for the paired comparison), scores every plan on the first WINDOWS windows of
WikiText-2 test and records the perplexity increase with its paired-bootstrap 95 % interval against the original
and against uniform, plus whether the plan *is* the uniform plan (same tensor widths). Prints a table and writes
bench/results/gamma_sweep.json.

    python bench/gamma_sweep.py [--windows 256] [--out /tmp/alphaq-gamma]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

GAMMAS = (0.0, 1.0, 4.0, 16.0, 64.0, 256.0)
BUDGETS = ("2.5", "3", "3.5", "4")
RESULTS = Path(__file__).resolve().parent / "results" / "gamma_sweep.json"


def _widths(plan_file: Path) -> list[int]:
    data = json.loads(plan_file.read_text())
    return [t["bits"] for t in data["tensors"] if t["unit"] is not None]


def main() -> None:
    from alphaq.evaluation.compare import run_compare
    from alphaq.evaluation.options import CompareConfig
    from alphaq.planning.planner import PlanConfig
    from alphaq.provenance import versions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("/tmp/alphaq-gamma"))
    args = parser.parse_args()
    started = time.perf_counter()
    rows, inspect_dir = [], None
    for gamma in GAMMAS:
        out = args.out / f"gamma-{gamma:g}"
        config = CompareConfig(
            budgets=tuple(BUDGETS),
            allocators=("uniform", "alphaq"),
            max_windows=args.windows,
            plan=PlanConfig(budget="3", gamma=gamma),
            seeds=(0,),
            inspect_dir=inspect_dir,
        )
        table = run_compare(None, config, out)
        inspect_dir = inspect_dir or out
        for _, row in table[table["entry"] == "alphaq"].iterrows():
            budget = str(row["budget"])
            same = _widths(out / "plans" / f"alphaq-{budget}.json") == _widths(out / "plans" / f"uniform-{budget}.json")
            rows.append(
                {
                    "gamma": gamma,
                    "budget": budget,
                    "ppl": row["ppl"],
                    "ppl_increase": row["ppl_increase"],
                    "ci": [row["ci_low"], row["ci_high"]],
                    "vs_uniform": row["vs_uniform"],
                    "vs_uniform_ci": [row["vs_uniform_low"], row["vs_uniform_high"]],
                    "significant_vs_uniform": bool(row["significant_vs_uniform"]),
                    "equals_uniform": same,
                    "average_payload_bits": row["average_payload_bits"],
                }
            )
            print(
                f"gamma {gamma:>5g} budget {budget:>3}: ppl {row['ppl']:.3f} (+{row['ppl_increase']:.3f} "
                f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]) vs uniform {row['vs_uniform']:+.3f} "
                f"[{row['vs_uniform_low']:+.3f}, {row['vs_uniform_high']:+.3f}]"
                f"{' = uniform' if same else ''}",
                flush=True,
            )
        uniform = table[table["entry"] == "uniform"]
        original = float(table[table["entry"] == "original"]["ppl"].iloc[0])
    record = {
        "bench": "gamma_sweep",
        "windows": args.windows,
        "budgets": list(BUDGETS),
        "gammas": list(GAMMAS),
        "original_ppl": original,
        "uniform": {
            str(r["budget"]): {"ppl": r["ppl"], "ppl_increase": r["ppl_increase"], "ci": [r["ci_low"], r["ci_high"]]}
            for _, r in uniform.iterrows()
        },
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''} ({__import__('os').cpu_count()} CPUs)",
        "versions": versions(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"wrote {RESULTS} ({record['seconds']} s)")


if __name__ == "__main__":
    main()
