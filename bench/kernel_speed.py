"""Benchmark the fused dequant-matmul kernel against a bf16 ``x @ W.T`` (docs/kernels.md).

On a CUDA GPU: for MoE expert shapes ``[rows, cols]`` of ``W`` (Mixtral 14336x4096 and 4096x14336,
Qwen1.5-MoE 1408x2048 and 2048x1408, Qwen3-MoE 768x2048 and 2048x768, DeepSeek-V3 2048x7168 and 7168x2048),
batches 1/2/4/8/16 and widths 2/3/4/8 (group size 128), time ``alphaq.kernels.dequant_matmul`` and
``x @ W.T`` in bfloat16 with ``triton.testing.do_bench`` (L2 flushed between runs), check the result
against the float32 reference, and report the speed-up and the achieved memory bandwidth in GB/s (packed
weights + scales + zeros + x + y bytes over the time; bf16: W + x + y) and as a fraction of the device's
HBM peak. Results go to ``bench/results/kernels.json`` (``--out``), rewritten after every shape so that a
run cut short by a time limit keeps what it measured.

Without a GPU it says so and runs a small correctness smoke of every kernel in the Triton
interpreter instead (exit 0). ``--compile-only`` compiles the kernels for sm_90 (H100/H200) without a
GPU and prints registers, spills and load widths.

Usage::

    python bench/kernel_speed.py                 # GPU timing (autotuned), or the CPU smoke
    python bench/kernel_speed.py --no-autotune   # default configurations only (faster first run)
    python bench/kernel_speed.py --compile-only  # sm_90 build report, no GPU needed
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

#: (name, rows, cols) of an expert's ``W`` [rows, cols] (y = x @ W.T): gate/up are [intermediate, hidden],
#: down is [hidden, intermediate].
SHAPES: tuple[tuple[str, int, int], ...] = (
    ("mixtral-w1", 14336, 4096),
    ("mixtral-w2", 4096, 14336),
    ("qwen15-moe-up", 1408, 2048),
    ("qwen15-moe-down", 2048, 1408),
    ("qwen3-moe-up", 768, 2048),
    ("qwen3-moe-down", 2048, 768),
    ("deepseek-v3-up", 2048, 7168),
    ("deepseek-v3-down", 7168, 2048),
)
WIDTHS: tuple[int, ...] = (2, 3, 4, 8)
BATCHES: tuple[int, ...] = (1, 2, 4, 8, 16)
GROUP_SIZE = 128
#: Batch-1 speed-up targets over bf16 (issue 5).
TARGETS: dict[int, float] = {4: 3.0, 2: 4.5}
#: Peak HBM bandwidth (bytes/s) by device-name fragment, most specific first.
PEAK_BANDWIDTH: tuple[tuple[str, float], ...] = (
    ("H200", 4.8e12),
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),  # SXM5 / "H100 80GB HBM3"
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),
)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "kernels.json"


def peak_bandwidth(device_name: str) -> float:
    """Peak memory bandwidth in bytes/s for a device name, NaN when unknown."""
    for fragment, peak in PEAK_BANDWIDTH:
        if fragment.lower() in device_name.lower():
            return peak
    return math.nan


def _relative_error(y: Any, y_ref: Any) -> float:
    return float((y.double() - y_ref.double()).norm() / y_ref.double().norm().clamp_min(1e-30))


def bench_case(name: str, rows: int, cols: int, bits: int, batch: int, autotune: bool, peak: float) -> dict[str, Any]:
    """Time one (shape, width, batch) on the GPU; returns one result row."""
    import torch
    from triton.testing import do_bench

    from alphaq.kernels import launch, ops, reference

    gen = torch.Generator(device="cuda").manual_seed(rows * 31 + cols + bits)
    w = torch.randn(rows, cols, device="cuda", dtype=torch.bfloat16, generator=gen) * 0.02  # [R, C]
    x = torch.randn(batch, cols, device="cuda", dtype=torch.bfloat16, generator=gen)  # [M, C]
    packed, scale, zero = ops.quantize_pack(w, bits, GROUP_SIZE)

    def fused() -> Any:
        return launch.dequant_matmul(x, packed, scale, zero, bits, GROUP_SIZE, cols, autotune=autotune)

    def dense() -> Any:
        return x @ w.T

    y = fused()  # compiles (and autotunes) once
    y_ref = reference.dequant_matmul(x, packed, scale, zero, bits, GROUP_SIZE, cols)
    t_fused = do_bench(fused, return_mode="median") * 1e-3
    t_dense = do_bench(dense, return_mode="median") * 1e-3
    moved = packed.nbytes + scale.nbytes + zero.nbytes + x.nbytes + y.nbytes
    dense_moved = w.nbytes + x.nbytes + y.nbytes
    return {
        "shape": name,
        "rows": rows,
        "cols": cols,
        "bits": bits,
        "batch": batch,
        "group_size": GROUP_SIZE,
        "kernel": "gemv" if batch <= launch.GEMV_MAX_M else "dot",
        "fused_us": t_fused * 1e6,
        "bf16_us": t_dense * 1e6,
        "speedup": t_dense / t_fused,
        "fused_bytes": moved,
        "bf16_bytes": dense_moved,
        "fused_gb_per_s": moved / t_fused / 1e9,
        "bf16_gb_per_s": dense_moved / t_dense / 1e9,
        "fused_bandwidth_tbps": moved / t_fused / 1e12,
        "bf16_bandwidth_tbps": dense_moved / t_dense / 1e12,
        "fused_peak_fraction": moved / t_fused / peak,
        "bf16_peak_fraction": dense_moved / t_dense / peak,
        "relative_error": _relative_error(y, y_ref),
    }


def run_gpu(
    out: Path,
    autotune: bool,
    widths: tuple[int, ...],
    batches: tuple[int, ...],
    shapes: tuple[tuple[str, int, int], ...],
) -> int:
    """Benchmark every case on the current CUDA device and write the JSON; returns an exit code."""
    import torch
    import triton

    from alphaq.atomic import write_json

    device = torch.cuda.get_device_name()
    peak = peak_bandwidth(device)
    print(f"device: {device}; peak bandwidth {peak / 1e12:.2f} TB/s; autotune={autotune}")
    print(
        f"{'shape':>16} {'bits':>4} {'M':>3} {'fused us':>9} {'bf16 us':>8} {'speedup':>7} "
        f"{'GB/s':>7} {'of peak':>7} {'bf16 GB/s':>9} {'bf16 of peak':>12} {'rel err':>8}"
    )
    rows: list[dict[str, Any]] = []
    meta = {
        "device": device,
        "peak_bandwidth_bytes_per_s": peak,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "autotune": autotune,
        "group_size": GROUP_SIZE,
        "timer": "triton.testing.do_bench median, L2 flushed",
    }
    for name, r, c in shapes:
        for bits in widths:
            for batch in batches:
                row = bench_case(name, r, c, bits, batch, autotune, peak)
                rows.append(row)
                print(
                    f"{name:>16} {bits:>4} {batch:>3} {row['fused_us']:>9.1f} {row['bf16_us']:>8.1f} "
                    f"{row['speedup']:>7.2f} {row['fused_gb_per_s']:>7.0f} "
                    f"{row['fused_peak_fraction']:>7.1%} {row['bf16_gb_per_s']:>9.0f} "
                    f"{row['bf16_peak_fraction']:>12.1%} {row['relative_error']:>8.1e}",
                    flush=True,
                )
        write_json(out, {**meta, "complete": False, "results": rows})  # partial, in case a time limit stops the run
    targets = []
    for bits, target in TARGETS.items():
        speedups = [row["speedup"] for row in rows if row["bits"] == bits and row["batch"] == 1]
        if speedups:
            targets.append(
                {
                    "bits": bits,
                    "batch": 1,
                    "target_speedup": target,
                    "min_speedup": min(speedups),
                    "met": min(speedups) >= target,
                }
            )
            print(
                f"batch 1, {bits} bits: speed-up {min(speedups):.2f}..{max(speedups):.2f} "
                f"(target >= {target}x: {'met' if min(speedups) >= target else 'NOT met'})"
            )
    write_json(out, {**meta, "complete": True, "targets": targets, "results": rows})
    print(f"wrote {out}")
    return 0


def run_cpu_smoke() -> int:
    """Tiny interpreter run of every kernel against the torch reference; returns an exit code."""
    import torch

    from alphaq.kernels import launch, ops, reference

    if not launch.triton_available():
        print("triton is not installed: nothing to smoke-test (the torch reference path still works)")
        return 0
    failures = 0
    start = time.perf_counter()
    for bits in WIDTHS:
        w = torch.randn(32, 256, dtype=torch.bfloat16)
        packed, scale, zero = ops.quantize_pack(w, bits, GROUP_SIZE, backend="triton")
        ref = reference.quantize_pack(w, bits, GROUP_SIZE)
        exact = all(torch.equal(a, b) for a, b in zip((packed, scale, zero), ref))
        dequant = torch.equal(
            ops.unpack_dequantize(packed, scale, zero, bits, GROUP_SIZE, 256, backend="triton"),
            reference.unpack_dequantize(*ref, bits, GROUP_SIZE, 256),
        )
        errors = []
        for batch in (1, 4, 16):
            x = torch.randn(batch, 256, dtype=torch.float16)
            y = ops.dequant_matmul(x, packed, scale, zero, bits, GROUP_SIZE, 256, backend="triton")
            errors.append(_relative_error(y, reference.dequant_matmul(x, *ref, bits, GROUP_SIZE, 256)))
        ok = exact and dequant and max(errors) <= 1e-3
        failures += not ok
        print(
            f"{bits} bits: pack bit-exact {exact}, dequant exact {dequant}, matmul rel err "
            f"{max(errors):.1e} (M = 1, 4, 16): {'ok' if ok else 'FAILED'}"
        )
    print(f"interpreter smoke: {'ok' if not failures else f'{failures} FAILED'} in {time.perf_counter() - start:.1f} s")
    return 1 if failures else 0


def run_compile_only(widths: tuple[int, ...], batches: tuple[int, ...]) -> int:
    """Compile the kernels for sm_90 without a GPU and print what the compiler made of them."""
    import torch

    from alphaq.kernels import launch
    from alphaq.kernels.aot import compile_launch

    name, rows, cols = SHAPES[0]
    print(f"sm_90 build of the kernels for {name} [{rows}, {cols}], group size {GROUP_SIZE}")
    for bits in widths:
        w = torch.zeros(rows, cols, dtype=torch.bfloat16)
        plans = [launch.plan_quantize_pack(w, bits, GROUP_SIZE, interpret=False)[0]]
        packed = torch.zeros(rows, cols // 8 * bits, dtype=torch.uint8)
        params = torch.ones(rows, cols // GROUP_SIZE, dtype=torch.float16)
        plans.append(
            launch.plan_unpack_dequantize(
                packed, params, params, bits, GROUP_SIZE, cols, torch.bfloat16, interpret=False
            )[0]
        )
        labels = ["", ""]
        for batch in batches:
            x = torch.zeros(batch, cols, dtype=torch.bfloat16)
            plans.append(
                launch.plan_dequant_matmul(
                    x, packed, params, params, bits, GROUP_SIZE, cols, interpret=False, sm_count=132
                )[0]
            )
            labels.append(f"M={batch}")
        for plan, label in zip(plans, labels):
            compiled = compile_launch(plan)
            print(
                f"{bits} bits {plan.kernel:>26} {label:>5} {plan.meta} {plan.num_warps} warps: "
                f"{compiled.registers:.0f} registers, "
                f"{compiled.spills:.0f} B spilled, {compiled.shared_bytes} B shared, "
                f"{compiled.shuffles} shuffles, loads {compiled.global_loads}",
                flush=True,
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the GPU benchmark, the compile report or the CPU smoke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results (GPU runs only)")
    parser.add_argument("--no-autotune", action="store_true", help="default kernel configurations only")
    parser.add_argument("--compile-only", action="store_true", help="sm_90 build report, no GPU needed")
    parser.add_argument("--bits", type=int, nargs="+", default=list(WIDTHS))
    parser.add_argument("--batch", type=int, nargs="+", default=list(BATCHES))
    parser.add_argument("--shape", nargs="+", choices=[s[0] for s in SHAPES], default=[s[0] for s in SHAPES])
    args = parser.parse_args(argv)
    widths, batches = tuple(args.bits), tuple(args.batch)
    shapes = tuple(s for s in SHAPES if s[0] in args.shape)
    if args.compile_only:
        return run_compile_only(widths, batches)
    import torch

    if not torch.cuda.is_available():
        print(
            "no CUDA device: the kernel timings need a GPU (H100/H200). Running a small correctness "
            "smoke of the kernels in the Triton interpreter instead."
        )
        return run_cpu_smoke()
    return run_gpu(args.out, not args.no_autotune, widths, batches, shapes)


if __name__ == "__main__":
    sys.exit(main())
