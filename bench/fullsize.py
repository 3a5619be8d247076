"""Every stage of alphaq on a checkpoint of real size: Qwen1.5-MoE-A2.7B's config, names and shapes (28.6 GB bf16).

1. ``write``: the checkpoint (:mod:`fullsize_checkpoint`: 14.3 B parameters, 4,538 matrices, heavy-tailed
   synthetic weights), shard by shard, larger than this machine's memory.
2. ``stages``: each stage as its own ``alphaq`` process, as a user runs it: ``inspect``, ``plan --budget 3.5``,
   ``quantize``, ``export --format compressed-tensors``, ``export --format gguf --allow-fallback`` and ``report``,
   each timed (wall, user and system CPU) with its peak resident memory (``ru_maxrss`` of that process from
   ``os.wait4``, which counts the checkpoint pages it maps), the load average around it, what it wrote, and its
   rate per matrix or per byte. ``--run`` also times ``alphaq run --no-eval`` as one command (the 45-minute goal).
   Outputs that are only measured (the compressed-tensors and the quantized checkpoint's shards) are deleted as soon
   as their size is recorded, so the whole bench fits in about 70 GB of disk.
3. The extrapolation to DeepSeek-V3 (58 MoE layers x 256 experts x 3 matrices of 2048 x 7168, 671 B parameters)
   on N nodes, from the rates measured here (per matrix, scaled by the matrix's arithmetic) and the Ray parallel
   efficiency of ``bench/results/scale.json``.

Prints a table and writes ``bench/results/fullsize.json`` atomically (``--quick``: a 2-layer, 8-expert checkpoint
with the real shapes, its result in ``--dir``).

Run: ``python bench/fullsize.py --dir /data/fullsize [--run]`` (needs ~70 GB free; about an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from alphaq.atomic import write_json

RESULT = Path(__file__).resolve().parent / "results" / "fullsize.json"
SCALE = Path(__file__).resolve().parent / "results" / "scale.json"
#: DeepSeek-V3's routed experts: gate/up [2048, 7168], down [7168, 2048].
DEEPSEEK_V3 = {"moe_layers": 58, "experts": 256, "projections": 3, "shape": (2048, 7168), "params": 671e9}
QWEN_EXPERT = (1408, 2048)
GOALS = {"peak_rss_gb": 2.0, "quantize_mb_s_per_core": 100.0, "run_no_eval_minutes": 45.0}


def _dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _git_commit() -> str | None:
    """The checkout's commit (``+dirty`` with uncommitted changes): which code a stage was timed with."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        )
    except OSError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _watch_high_water(pid: int) -> list[int]:
    """Poll ``VmHWM`` (kB) of process ``pid`` every 0.2 s on a thread until it ends: the process's own peak,
    without its children (llama.cpp's tools), which ``ru_maxrss`` of :func:`os.wait4` includes."""
    import threading

    peak = [0]

    def poll() -> None:
        status = Path(f"/proc/{pid}/status")
        while True:
            try:
                text = status.read_text(encoding="utf-8")
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
            if "State:\tZ" in text:
                return
            time.sleep(0.2)

    threading.Thread(target=poll, daemon=True).start()
    return peak


def timed(name: str, argv: list[str], log: Path) -> dict[str, Any]:
    """Run ``argv`` as a child process; wall and CPU seconds, peak RSS, load averages, exit status."""
    load_before = os.getloadavg()
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        own_peak = _watch_high_water(child.pid)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    record = {
        "stage": name,
        "git_commit": _git_commit(),
        "command": " ".join(argv),
        "exit_status": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 2),
        "user_s": round(usage.ru_utime, 2),
        "sys_s": round(usage.ru_stime, 2),
        "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 3),  # the process and every tool it ran
        "alphaq_process_peak_rss_gb": round(own_peak[0] * 1024 / 1e9, 3),  # the alphaq process alone (VmHWM)
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"{name:<26} {wall:8.1f} s  peak RSS {record['peak_rss_gb']:.2f} GB "
        f"(alphaq {record['alphaq_process_peak_rss_gb']:.2f} GB)  exit {record['exit_status']}",
        flush=True,
    )
    if record["exit_status"] != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        record["error"] = " | ".join(tail)
        print(f"  failed: {record['error']}", flush=True)
    return record


STAGES = ("inspect", "plan", "quantize", "export_compressed_tensors", "export_gguf", "report")


def run_stages(
    model: Path, work: Path, *, budget: str, run_command: bool, keep: bool, only: tuple[str, ...] = STAGES
) -> list[dict[str, Any]]:
    """Time the stages ``only`` on ``model``; outputs under ``work`` (removed at the end unless ``keep``; a later
    stage run alone reuses the run folder an earlier call kept)."""
    alphaq = [str(Path(sys.executable).with_name("alphaq"))]
    run = work / "run"
    ct, gguf = work / "ct", work / "model.gguf"
    for path in (ct, gguf, work / "run-all", *((run,) if "inspect" in only else ())):
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    stages = [
        ("inspect", [*alphaq, "inspect", str(model), "--out", str(run)], None),
        ("plan", [*alphaq, "plan", str(model), "--budget", budget, "--out", str(run)], None),
        ("quantize", [*alphaq, "quantize", str(model), "--plan", str(run / "plan.json"), "--out", str(run / "quantized")], run / "quantized"),
        ("export_compressed_tensors", [*alphaq, "export", str(run / "plan.json"), "--format", "compressed-tensors", "--out", str(ct), "--model", str(model)], ct),
        ("export_gguf", [*alphaq, "export", str(run / "plan.json"), "--format", "gguf", "--out", str(gguf), "--model", str(model), "--allow-fallback"], gguf),
        ("report", [*alphaq, "report", str(run)], None),
        # last (it replaces plan.json): another budget in the same folder loads the errors from plan_errors.npz
        ("plan_again", [*alphaq, "plan", str(model), "--budget", "3", "--out", str(run), "--no-html"], None),
    ]  # fmt: skip
    records = []
    for name, argv, output in stages:
        if name not in only and not (name == "plan_again" and "plan" in only):
            continue
        if name == "plan":  # measure, do not load an earlier run's errors
            (run / "plan_errors.npz").unlink(missing_ok=True)
        record = timed(name, argv, logs / f"{name}.log")
        if output is not None and output.exists():
            record["output_bytes"] = _dir_bytes(output)
            for shard in [output] if output.is_file() else list(output.glob("*.safetensors")):
                shard.unlink()  # measured only: free the disk for the next stage
        records.append(record)
    if run_command:
        argv = [*alphaq, "run", str(model), "--no-eval", "--budget", budget, "--out", str(work / "run-all")]
        record = timed("run --no-eval", argv, logs / "run.log")
        record["output_bytes"] = _dir_bytes(work / "run-all")
        records.append(record)
        shutil.rmtree(work / "run-all", ignore_errors=True)
    _add_rates(records, run)
    if not keep:
        shutil.rmtree(run, ignore_errors=True)
    return records


def _add_rates(records: list[dict[str, Any]], run: Path) -> None:
    """Per-matrix and per-byte rates from the stages' own JSON (matrix counts, bytes)."""
    by_stage = {r["stage"]: r for r in records}
    inspect_json = run / "inspect.json"
    if inspect_json.is_file() and "inspect" in by_stage:
        manifest = json.loads(inspect_json.read_text(encoding="utf-8"))
        count = int((manifest.get("timing") or {}).get("matrices") or 0)
        if count:
            by_stage["inspect"]["matrices"] = count
            by_stage["inspect"]["matrices_per_s"] = round(count / by_stage["inspect"]["wall_s"], 3)
    plan_json = run / "plan.json"
    if plan_json.is_file() and "plan" in by_stage:
        plan = json.loads(plan_json.read_text(encoding="utf-8"))
        measured = sum(1 for t in plan.get("tensors", []) if t.get("expert") is not None)
        by_stage["plan"]["expert_matrices"] = measured
        by_stage["plan"]["matrices_per_s"] = round(measured / by_stage["plan"]["wall_s"], 3)
    quantize_json = run / "quantized" / "quantize.json"
    if quantize_json.is_file() and "quantize" in by_stage:
        totals = json.loads(quantize_json.read_text(encoding="utf-8")).get("totals", {})
        source = int(totals.get("source_bytes", 0))
        record = by_stage["quantize"]
        record["source_bytes"] = source
        record["mb_s"] = round(source / record["wall_s"] / 1e6, 1)
        record["mb_s_per_core"] = round(record["mb_s"] / (os.cpu_count() or 1), 1)


def extrapolate(records: list[dict[str, Any]], nodes: list[int], cores: int, storage_gbs: float) -> dict[str, Any]:
    """DeepSeek-V3 inspect / plan / quantize hours on ``nodes`` x ``cores`` from this run's per-matrix rates.

    A stage's cost per Qwen expert matrix is its wall time x this machine's cores / matrices (core-seconds, idle
    included), scaled to a DeepSeek-V3 matrix by the arithmetic (Gram + eigensolver for inspect, weights for the
    others), divided by the cores and, for the Ray stages (inspect, quantize), by Ray's parallel efficiency measured
    by ``bench/scale.py``; the plan stage runs on the driver alone, so its row does not shrink with the nodes.
    Every stage is at least the time to read the FP8 weights once at ``storage_gbs``."""
    by_stage = {r["stage"]: r for r in records}
    efficiency = {"inspect": 0.55, "quantize": 0.34}
    if SCALE.is_file():
        efficiency = json.loads(SCALE.read_text(encoding="utf-8"))["measured"]["ray_efficiency"]
    k_ds, m_ds = min(DEEPSEEK_V3["shape"]), max(DEEPSEEK_V3["shape"])
    k_q, m_q = min(QWEN_EXPERT), max(QWEN_EXPERT)
    scale = {  # DeepSeek matrix cost / Qwen expert matrix cost
        "inspect": (k_ds**2 * (m_ds + k_ds)) / (k_q**2 * (m_q + k_q)),  # Gram + eigensolver
        "plan": (k_ds * m_ds) / (k_q * m_q),  # quantize-dequantize: linear in the weights
        "quantize": (k_ds * m_ds) / (k_q * m_q),
    }
    matrices = DEEPSEEK_V3["moe_layers"] * DEEPSEEK_V3["experts"] * DEEPSEEK_V3["projections"]
    read_s = DEEPSEEK_V3["params"] / (storage_gbs * 1e9)  # FP8: one byte per weight, read once per stage
    cpus = os.cpu_count() or 1
    per_matrix = {}
    for stage in ("inspect", "plan", "quantize"):
        record = by_stage.get(stage, {})
        if stage == "quantize" and record.get("source_bytes"):  # core-seconds per Qwen expert matrix
            per_matrix[stage] = (record["wall_s"] * cpus) * (k_q * m_q * 2) / record["source_bytes"]
        elif record.get("matrices_per_s"):
            per_matrix[stage] = cpus / record["matrices_per_s"]
    table = []
    for n in nodes:
        row: dict[str, Any] = {"nodes": n, "cores": n * cores}
        for stage, core_s in per_matrix.items():
            if stage == "plan":  # no Ray backend: the driver's threads measure every matrix (as here, per core)
                compute = matrices * core_s * scale[stage] / cores
            else:
                compute = matrices * core_s * scale[stage] / (n * cores * efficiency[stage])
            row[f"{stage}_hours"] = round(max(compute, read_s) / 3600, 3)
            row[f"{stage}_storage_bound"] = compute < read_s
        table.append(row)
    return {
        "workload": {**DEEPSEEK_V3, "matrices": matrices},
        "per_qwen_matrix_core_s": {k: round(v, 4) for k, v in per_matrix.items()},
        "cost_scale_deepseek_over_qwen": {k: round(v, 2) for k, v in scale.items()},
        "ray_efficiency": efficiency,
        "cores_per_node": cores,
        "storage_gbs": storage_gbs,
        "table": table,
    }


def _write(model: Path, quick: bool) -> None:
    from fullsize_checkpoint import QWEN15_MOE_CONFIG, scaled_config, write_checkpoint

    config = scaled_config(layers=2, experts=8) if quick else dict(QWEN15_MOE_CONFIG)
    start = time.perf_counter()
    written = write_checkpoint(model, config)
    seconds = time.perf_counter() - start
    print(f"checkpoint {model}: {written['bytes'] / 1e9:.1f} GB, {written['matrices']} matrices ({seconds:.0f} s)")


def sample_check(model: Path, per_layer: int = 2) -> dict[str, Any]:
    """The plan's adaptive row samples against whole matrices: for ``per_layer`` experts of every layer (gate, up,
    down), the relative difference of the sampled error from the whole matrix's at each default width."""
    import numpy as np
    import torch

    from alphaq.load import open_checkpoint
    from alphaq.planning.costs import DEFAULT_MAX_ROWS
    from alphaq.planning.error_measure import measure_matrix

    ckpt = open_checkpoint(model)
    refs = [m for m in ckpt.matrices if m.expert is not None and m.expert < per_layer]
    widths, deviations, rows = (2, 3, 4, 8), [], []
    for ref in refs:
        w = ckpt.read_matrix(ref, dtype=torch.float32)
        sampled = measure_matrix(w, widths, 128, "rtn", DEFAULT_MAX_ROWS)
        whole = measure_matrix(w, widths, 128, "rtn", max(w.shape))
        deviations.append(float(np.max(np.abs(sampled.error / whole.error - 1.0))))
        rows.append(sampled.rows)
    return {
        "matrices": len(refs),
        "widths": list(widths),
        "rows_measured": {str(r): rows.count(r) for r in sorted(set(rows))},
        "max_relative_deviation": round(max(deviations), 5),
        "mean_relative_deviation": round(float(np.mean(deviations)), 5),
        "within_1_percent": sum(d <= 0.01 for d in deviations),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path.home() / ".cache" / "alphaq" / "bench" / "fullsize")
    parser.add_argument("--budget", default="3.5")
    parser.add_argument("--run", action="store_true", help="also time `alphaq run --no-eval` as one command")
    parser.add_argument("--quick", action="store_true", help="2 layers, 8 experts, real shapes (a smoke run)")
    parser.add_argument("--write-only", action="store_true", help="write the checkpoint and stop")
    parser.add_argument("--keep", action="store_true", help="keep the run folder")
    parser.add_argument("--stages", default=",".join(STAGES), help="stages to time (others keep their saved result)")
    parser.add_argument("--nodes", default="1,4,16,64")
    parser.add_argument("--cores-per-node", type=int, default=32)
    parser.add_argument("--storage-gbs", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=None, help="result JSON (default bench/results/fullsize.json)")
    parser.add_argument("--sample-check", type=Path, default=None, help=argparse.SUPPRESS)  # child: write its JSON
    args = parser.parse_args()
    model = args.dir / ("qwen15-moe-quick" if args.quick else "qwen15-moe")
    if args.write_only:
        _write(model, args.quick)
        return
    if args.sample_check is not None:
        write_json(args.sample_check, sample_check(model))
        return
    # Written by a child: a forked stage inherits its parent's peak RSS (Linux copies the high-water mark), so
    # this process stays small (no torch) and every stage's ru_maxrss is its own.
    start = time.perf_counter()
    argv = [sys.executable, __file__, "--write-only", "--dir", str(args.dir), *(["--quick"] if args.quick else [])]
    subprocess.run(argv, check=True)
    written = json.loads((model / "fullsize_checkpoint.json").read_text(encoding="utf-8"))["record"]
    config = written.pop("config")
    written["write_s"] = round(time.perf_counter() - start, 1)
    only = tuple(s for s in args.stages.split(",") if s)
    unknown = sorted(set(only) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; use {', '.join(STAGES)}")
    out = args.out or (args.dir / "fullsize_quick.json" if args.quick else RESULT)
    records = run_stages(
        model, args.dir / "work", budget=args.budget, run_command=args.run, keep=args.keep or only != STAGES, only=only
    )
    if only != STAGES and out.is_file():  # keep the saved records of the stages not run now
        saved = json.loads(out.read_text(encoding="utf-8"))["stages"]
        fresh = {r["stage"] for r in records}
        records = [r for r in saved if r["stage"] not in fresh] + records
        order = ("inspect", "plan", "plan_again", *STAGES[2:], "run --no-eval")
        records.sort(key=lambda r: order.index(r["stage"]))
    check = args.dir / "sample_check.json"
    argv = [sys.executable, __file__, "--dir", str(args.dir), "--sample-check", str(check)]
    subprocess.run([*argv, *(["--quick"] if args.quick else [])], check=True)
    result = {
        "benchmark": "fullsize",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "checkpoint": {**written, "model_type": config["model_type"], "folder": str(model)},
        "budget": args.budget,
        "stages": records,
        "plan_sample_check": json.loads(check.read_text(encoding="utf-8")),
        "goals": GOALS,
        "deepseek_v3": extrapolate(
            records, [int(n) for n in args.nodes.split(",")], args.cores_per_node, args.storage_gbs
        ),
    }
    write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
