"""How fast does ``alphaq quantize`` quantize bf16 weights on the CPU (torch reference path)?

Per matrix, the quantize stage does what :func:`alphaq.quantization.compute.quantize_matrix` does on the CPU:
``quantize_rows`` (``rtn``: min-max round-to-nearest on blocks of rows; ``hqq``: half-quadratic zero-point
optimisation, 20 iterations at most, on the whole matrix), ``pack`` the codes, and ``reconstruction_error`` of
the dequantized matrix (float64, blocks of rows); the bf16 -> float32 conversion (done by ``read_matrix``) is
counted. Each stage is timed on random bf16 matrices of Mixtral's ``w2`` shape (4096 x 14336) and Qwen1.5-MoE's
expert shape (1408 x 2048), widths 2/3/4/8, group size 128; throughput is GB/s of bf16 input (2 bytes per
weight). Then one end-to-end ``run_quantize`` (rtn, 4 bits) on a synthetic 4-expert checkpoint of
4096 x 14336 bf16 matrices measures the whole stage with reading, writing and hashing the shard.

Prints a table and writes ``bench/results/quantize_throughput.json`` atomically.

Run: ``python bench/quantize_throughput.py [--quick] [--repeats R]`` (about 7 minutes on a shared 2-core CPU, most
of it HQQ on the large matrix; ``--quick`` shrinks the matrices for a smoke run).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from alphaq.atomic import write_json
from alphaq.quantization.compute import quantize_rows, reconstruction_error
from alphaq.quantization.layout import QuantSpec
from alphaq.quantization.packing import pack

RESULT = Path(__file__).resolve().parent / "results" / "quantize_throughput.json"
SHAPES = {"mixtral_w2": (4096, 14336), "qwen_moe_expert": (1408, 2048)}
QUICK_SHAPES = {"mixtral_w2": (512, 1792), "qwen_moe_expert": (176, 256)}
WIDTHS = (2, 3, 4, 8)
METHODS = ("rtn", "hqq")
GROUP_SIZE = 128
E2E_EXPERTS = 4


def time_matrix(w: torch.Tensor, method: str, bits: int, repeats: int) -> dict[str, Any]:
    """Best-of-``repeats`` seconds of each stage (quantize, pack, error) for one matrix."""
    spec = QuantSpec(bits, GROUP_SIZE)
    best: dict[str, float] = {}
    error = float("nan")
    for _ in range(repeats):
        t0 = time.perf_counter()
        w32 = w.float()  # what read_matrix returns
        qt = quantize_rows(w32, spec, method)
        t1 = time.perf_counter()
        pack(qt.q, bits)
        t2 = time.perf_counter()
        error = reconstruction_error(w32, qt)
        t3 = time.perf_counter()
        for stage, seconds in (("quantize", t1 - t0), ("pack", t2 - t1), ("error", t3 - t2), ("total", t3 - t0)):
            best[stage] = min(best.get(stage, float("inf")), seconds)
    gigabytes = w.numel() * 2 / 1e9
    return {
        "method": method,
        "bits": bits,
        "rows": w.shape[0],
        "cols": w.shape[1],
        "repeats": repeats,
        **{f"{stage}_seconds": round(s, 4) for stage, s in best.items()},
        "gb_per_s": gigabytes / best["total"],
        "quantize_pack_gb_per_s": gigabytes / (best["quantize"] + best["pack"]),
        "rel_error": error,
    }


def end_to_end(shape: tuple[int, int]) -> dict[str, Any]:
    """run_quantize (rtn, 4 bits, group 128) on a synthetic Mixtral-named checkpoint of E2E_EXPERTS bf16 matrices."""
    from safetensors.torch import save_file

    from alphaq.load import open_checkpoint
    from alphaq.planning.plan_file import Plan, PlanTensor, save_plan
    from alphaq.planning.units import matrix_nbytes
    from alphaq.quantization.run import run_quantize

    with tempfile.TemporaryDirectory(prefix="alphaq-bench-") as tmp:
        source = Path(tmp) / "model"
        source.mkdir()
        (source / "config.json").write_text(
            json.dumps(
                {
                    "model_type": "mixtral",
                    "hidden_size": shape[0],
                    "num_hidden_layers": 1,
                    "num_local_experts": E2E_EXPERTS,
                }
            )
        )
        g = torch.Generator().manual_seed(0)
        tensors = {
            f"model.layers.0.block_sparse_moe.experts.{e}.w2.weight": (
                torch.randn(*shape, generator=g) * 0.02
            ).bfloat16()
            for e in range(E2E_EXPERTS)
        }
        save_file(tensors, str(source / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        ckpt = open_checkpoint(source)
        plan_tensors = [
            PlanTensor(
                name=m.name,
                tensor=m.tensor,
                layer=m.layer,
                expert=m.expert,
                proj=m.proj,
                role=m.role.value,
                rows=m.shape[0],
                cols=m.shape[1],
                params=m.params,
                bits=4,
                group_size=GROUP_SIZE,
                bytes=matrix_nbytes(m.shape[0], m.shape[1], 4, GROUP_SIZE),
                error=None,
                unit=None,
            )
            for m in ckpt.matrices
        ]
        save_plan(
            Plan(provenance={"checkpoint": {"fingerprint": ckpt.fingerprint}}, summary={}, tensors=tuple(plan_tensors)),
            Path(tmp) / "plan.json",
        )
        start = time.perf_counter()
        result = run_quantize(source, Path(tmp) / "plan.json", Path(tmp) / "out", method="rtn")
        seconds = time.perf_counter() - start
    source_bytes = result.totals["source_bytes"]
    return {
        "experts": E2E_EXPERTS,
        "rows": shape[0],
        "cols": shape[1],
        "bits": 4,
        "method": "rtn",
        "source_bytes": source_bytes,
        "output_bytes": result.totals["output_bytes"],
        "seconds": round(seconds, 3),
        "gb_per_s": source_bytes / seconds / 1e9,
        "recorded_throughput_mb_s": result.timing["throughput_mb_s"],
        "quantize_seconds": result.timing["quantize_seconds"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small matrices (smoke run)")
    parser.add_argument("--repeats", type=int, default=2, help="best of R for rtn (hqq runs once)")
    args = parser.parse_args()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    print(
        f"quantize throughput, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPU(s), group {GROUP_SIZE}"
    )
    print(
        f"{'matrix':>16} {'shape':>12} {'method':>6} {'bits':>4} {'quant s':>8} {'pack s':>7} {'error s':>8} "
        f"{'GB/s':>7} {'q+p GB/s':>9} {'rel err':>8}"
    )
    rows = []
    for label, shape in shapes.items():
        w = (torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 0.02).bfloat16()
        for method in METHODS:
            for bits in WIDTHS:
                row = {"matrix": label, **time_matrix(w, method, bits, 1 if method == "hqq" else args.repeats)}
                rows.append(row)
                print(
                    f"{label:>16} {f'{shape[0]}x{shape[1]}':>12} {method:>6} {bits:>4} "
                    f"{row['quantize_seconds']:8.3f} {row['pack_seconds']:7.3f} {row['error_seconds']:8.3f} {row['gb_per_s']:7.3f} "
                    f"{row['quantize_pack_gb_per_s']:9.3f} {row['rel_error']:8.4f}",
                    flush=True,
                )
    e2e = end_to_end(shapes["mixtral_w2"])
    print(
        f"\nend to end: run_quantize rtn 4-bit on {e2e['experts']} x {e2e['rows']}x{e2e['cols']} bf16 "
        f"({e2e['source_bytes'] / 1e6:.0f} MB): {e2e['seconds']:.2f} s, {e2e['gb_per_s']:.3f} GB/s "
        f"(quantizing {e2e['quantize_seconds']:.2f} s)"
    )
    payload = {
        "benchmark": "quantize_throughput",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
        },
        "problem": {
            "shapes": {k: list(v) for k, v in shapes.items()},
            "widths": list(WIDTHS),
            "methods": list(METHODS),
            "group_size": GROUP_SIZE,
            "input_dtype": "bfloat16",
            "quick": args.quick,
            "gb_per_s": "bf16 input bytes (2 per weight) / seconds of quantize + pack + error",
        },
        "results": rows,
        "end_to_end": e2e,
    }
    write_json(RESULT, payload)
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
