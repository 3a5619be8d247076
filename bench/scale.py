"""How does ``--backend ray`` compare with the local backend here, and what would a DeepSeek-V3-sized run take?

Measured on this machine:

1. the per-matrix cost of a DeepSeek-V3 routed-expert matrix (7168 x 2048, random bf16 weights, one thread: what
   one Ray task gets): inspect = bf16 -> float32 read + Gram eigenvalues + every ESD metric (``ww`` fit), as
   :func:`alphaq.audit.run.analyse_matrices` does; quantize = ``rtn`` 4-bit, group 128 (:func:`quantize_matrix`);
2. the same workload run by the local backend and by ``--backend ray`` on a local Ray with as many CPUs as
   ``os.cpu_count()`` (a synthetic Mixtral-layout checkpoint of ``--layers`` x ``--experts`` x 3 matrices of
   ``--shape``): wall times, their ratio, and a check that both give identical outputs.

Extrapolated (not measured): a DeepSeek-V3 audit and quantize (58 MoE layers x 256 experts x 3 = 44,544 matrices
of 7168 x 2048) on N nodes of ``--cores-per-node`` cores, as
``matrices x per-matrix time / (N x cores x efficiency)``, where efficiency is the measured Ray-vs-ideal parallel
efficiency of step 2, bounded below by the time to read the weights (FP8, 1 byte per weight) from shared storage
at ``--storage-gbs`` GB/s aggregate. See ``docs/scale.md``.

Prints a table and writes ``bench/results/scale.json`` atomically.

Run: ``python bench/scale.py [--quick]`` (about 3 minutes on a shared 2-core CPU; needs ``pip install 'alphaq[ray]'``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from alphaq.atomic import write_json

RESULT = Path(__file__).resolve().parent / "results" / "scale.json"
DEEPSEEK = {"moe_layers": 58, "experts": 256, "projections": 3, "shape": (7168, 2048)}


def per_matrix_times(shape: tuple[int, int], repeats: int) -> dict[str, float]:
    """Median seconds of one matrix's inspect and quantize on one thread."""
    from alphaq.diagnostics.esd_metrics import esd_metrics
    from alphaq.diagnostics.spectrum import eigenvalues
    from alphaq.quantization.compute import quantize_matrix
    from alphaq.quantization.layout import QuantSpec

    g = torch.Generator().manual_seed(0)
    stored = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)  # [out, in]
    inspect_s, quantize_s = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        w = stored.to(torch.float32)
        evals = eigenvalues(w, workers=1)
        esd_metrics(evals, method="ww", max_dim=max(shape))
        inspect_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        quantize_matrix(stored.to(torch.float32), QuantSpec(4, 128), "rtn")
        quantize_s.append(time.perf_counter() - start)
    return {"inspect_s": sorted(inspect_s)[len(inspect_s) // 2], "quantize_s": sorted(quantize_s)[len(quantize_s) // 2]}


def synthetic_checkpoint(folder: Path, layers: int, experts: int, shape: tuple[int, int]) -> Path:
    """A Mixtral-layout checkpoint of random bf16 expert matrices (w1/w3 [I, H], w2 [H, I]) in 2 shards."""
    import json

    from safetensors.torch import save_file

    inter, hidden = shape
    g = torch.Generator().manual_seed(1)
    folder.mkdir(parents=True)
    tensors = {}
    for layer in range(layers):
        for e in range(experts):
            stem = f"model.layers.{layer}.block_sparse_moe.experts.{e}"
            for proj, dims in (("w1", (inter, hidden)), ("w3", (inter, hidden)), ("w2", (hidden, inter))):
                tensors[f"{stem}.{proj}.weight"] = (torch.randn(dims, generator=g) * 0.02).to(torch.bfloat16)
    names = sorted(tensors)
    weight_map = {}
    for i in range(2):
        file = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in names[i::2]}, str(folder / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in names[i::2]})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text(
        json.dumps(
            {"model_type": "mixtral", "hidden_size": hidden, "num_hidden_layers": layers, "num_local_experts": experts}
        )
    )
    return folder


def four_bit_plan(model: Path, path: Path) -> Path:
    """Every matrix at 4 bits, group 128 (no inspect needed)."""
    from alphaq.load import open_checkpoint
    from alphaq.planning.plan_file import Plan, PlanTensor, save_plan, tensor_totals
    from alphaq.planning.units import matrix_nbytes

    ckpt = open_checkpoint(model)
    tensors = tuple(
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
            group_size=128,
            bytes=matrix_nbytes(m.shape[0], m.shape[1], 4, 128),
            error=0.0,
            unit=f"L{m.layer}.E{m.expert}",
        )
        for m in ckpt.matrices
    )
    save_plan(
        Plan(
            provenance={
                "checkpoint": {"path": str(model), "fingerprint": ckpt.fingerprint},
                "options": {"quant_method": "rtn"},
            },
            summary=tensor_totals(list(tensors)),
            tensors=tensors,
        ),
        path,
    )
    return path


def local_vs_ray(root: Path, layers: int, experts: int, shape: tuple[int, int]) -> dict[str, Any]:
    """Wall seconds of inspect and quantize, local and on a local Ray; outputs checked identical."""
    import ray

    from alphaq.audit.run import inspect
    from alphaq.distributed import RayBackend
    from alphaq.quantization.run import run_quantize

    model = synthetic_checkpoint(root / "model", layers, experts, shape)
    plan = four_bit_plan(model, root / "plan.json")
    cpus = os.cpu_count() or 1
    backend = RayBackend()
    out: dict[str, Any] = {"matrices": layers * experts * 3, "shape": list(shape), "ray_cpus": cpus}
    inspect(model)  # warm up as the Ray workers are (imports, first allocations)
    run_quantize(model, plan, root / "q-warm")
    for threads, suffix in ((1, "_1thread"), (cpus, "")):  # one thread: the sequential baseline of the efficiency
        torch.set_num_threads(threads)
        start = time.perf_counter()
        local = inspect(model)
        out[f"inspect_local{suffix}_s"] = time.perf_counter() - start
        start = time.perf_counter()
        local_q = run_quantize(model, plan, root / f"q-local{suffix}")
        out[f"quantize_local{suffix}_s"] = time.perf_counter() - start
    start = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(prefix="aqray-"))
    out["ray_start_s"] = time.perf_counter() - start
    try:
        inspect(model, backend=backend)  # warm the workers (first import of torch in each: seconds)
        run_quantize(model, plan, root / "q-ray-warm", backend=backend)
        start = time.perf_counter()
        distributed = inspect(model, backend=backend)
        out["inspect_ray_s"] = time.perf_counter() - start
        start = time.perf_counter()
        ray_q = run_quantize(model, plan, root / "q-ray", backend=backend)
        out["quantize_ray_s"] = time.perf_counter() - start
    finally:
        ray.shutdown()
    out["inspect_identical"] = bool(
        local.details.equals(distributed.details) and local.experts.equals(distributed.experts)
    )
    out["quantize_identical"] = [s["sha256"] for s in local_q.manifest["shards"]] == [
        s["sha256"] for s in ray_q.manifest["shards"]
    ]
    out["inspect_ray_over_local"] = out["inspect_ray_s"] / out["inspect_local_s"]
    out["quantize_ray_over_local"] = out["quantize_ray_s"] / out["quantize_local_s"]
    return out


def estimate(
    per_matrix: dict[str, float], efficiency: dict[str, float], nodes: list[int], cores: int, storage_gbs: float
) -> list[dict[str, Any]]:
    """Extrapolated hours of a DeepSeek-V3 audit and quantize on N nodes (see the module docstring)."""
    count = DEEPSEEK["moe_layers"] * DEEPSEEK["experts"] * DEEPSEEK["projections"]
    rows, cols = DEEPSEEK["shape"]
    read_s = count * rows * cols / (storage_gbs * 1e9)  # FP8 weights: 1 byte each
    table = []
    for n in nodes:
        entry: dict[str, Any] = {"nodes": n, "cores": n * cores}
        for stage in ("inspect", "quantize"):
            compute_s = count * per_matrix[f"{stage}_s"] / (n * cores * efficiency[stage])
            entry[f"{stage}_hours"] = max(compute_s, read_s) / 3600
        table.append(entry)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small matrices, one repeat (smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--cores-per-node", type=int, default=32)
    parser.add_argument("--storage-gbs", type=float, default=2.0, help="aggregate shared-storage read GB/s (assumed)")
    args = parser.parse_args()
    # a throwaway local Ray with token auth, its token in the environment (set before ray is imported: Ray reads
    # it once, on import), nothing written to ~/.ray
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    torch.set_num_threads(1)
    shape = (256, 512) if args.quick else (1024, 2048)
    big = (1792, 512) if args.quick else DEEPSEEK["shape"]
    per_matrix = per_matrix_times(big, 1 if args.quick else args.repeats)
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="alphaq-scale-") as tmp:
        compare = local_vs_ray(Path(tmp), args.layers, args.experts, shape)
    cpus = compare["ray_cpus"]
    # parallel efficiency of Ray on this machine: sequential (1-thread local) time / (CPUs x Ray wall), at most 1
    efficiency = {
        stage: min(1.0, compare[f"{stage}_local_1thread_s"] / (cpus * compare[f"{stage}_ray_s"]))
        for stage in ("inspect", "quantize")
    }
    nodes = [1, 4, 16, 64]
    table = estimate(per_matrix, efficiency, nodes, args.cores_per_node, args.storage_gbs)
    result = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "ray": __import__("ray").__version__,
        },
        "measured": {
            "per_matrix": {"shape": list(big), "threads": 1, **per_matrix},
            "local_vs_ray": compare,
            "ray_efficiency": efficiency,
        },
        "extrapolated": {
            "workload": {
                **DEEPSEEK,
                "shape": list(DEEPSEEK["shape"]),
                "matrices": DEEPSEEK["moe_layers"] * DEEPSEEK["experts"] * 3,
            },
            "cores_per_node": args.cores_per_node,
            "storage_gbs": args.storage_gbs,
            "table": table,
        },
        "quick": args.quick,
    }
    print(
        f"per matrix {big[0]}x{big[1]}, 1 thread: inspect {per_matrix['inspect_s']:.3f} s, "
        f"quantize {per_matrix['quantize_s']:.3f} s"
    )
    print(
        f"{compare['matrices']} matrices {shape[0]}x{shape[1]} on {cpus} CPUs: inspect local "
        f"{compare['inspect_local_s']:.2f} s / ray {compare['inspect_ray_s']:.2f} s "
        f"(x{compare['inspect_ray_over_local']:.2f}), quantize local {compare['quantize_local_s']:.2f} s / ray "
        f"{compare['quantize_ray_s']:.2f} s (x{compare['quantize_ray_over_local']:.2f}); identical: "
        f"{compare['inspect_identical'] and compare['quantize_identical']}"
    )
    print(
        f"  1-thread local: inspect {compare['inspect_local_1thread_s']:.2f} s, quantize "
        f"{compare['quantize_local_1thread_s']:.2f} s; Ray efficiency inspect {efficiency['inspect']:.2f}, "
        f"quantize {efficiency['quantize']:.2f}"
    )
    print(
        f"DeepSeek-V3 (44,544 matrices), {args.cores_per_node} cores/node, storage {args.storage_gbs} GB/s (extrapolated):"
    )
    for entry in table:
        print(
            f"  {entry['nodes']:>3} nodes: inspect {entry['inspect_hours']:.2f} h, quantize {entry['quantize_hours']:.2f} h"
        )
    if not args.quick:
        write_json(RESULT, result)
        print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
