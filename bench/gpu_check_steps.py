"""The Python steps of ``bench/gpu_check.sh`` (each writes JSON; each runs on a CPU too, for its test).

Subcommands::

    python bench/gpu_check_steps.py env OUT.json                 # device, driver, versions
    python bench/gpu_check_steps.py layer DIR [--experts 60 --rows 1408 --cols 2048]
                                                                 # one Qwen1.5-MoE-shaped MoE layer (bf16 safetensors)
    python bench/gpu_check_steps.py quantize CKPT OUT.json [--device cuda --bits 4]
                                                                 # run_quantize throughput on it (rtn, uniform plan)
    python bench/gpu_check_steps.py junit JUNIT.xml OUT.json     # pytest's JUnit XML as JSON
    python bench/gpu_check_steps.py summary DIR                  # DIR/steps.jsonl -> DIR/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

#: Qwen1.5-MoE-A2.7B's routed experts: 60 per layer, gate/up [1408, 2048], down [2048, 1408].
QWEN15_EXPERTS, QWEN15_INTERMEDIATE, QWEN15_HIDDEN = 60, 1408, 2048
GROUP_SIZE = 128


def _write(path: str | Path, record: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")


def env_record() -> dict[str, Any]:
    """Device, CUDA, torch and triton versions of this machine."""
    import torch

    record: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    try:
        import triton

        record["triton"] = triton.__version__
    except ImportError:
        record["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        record.update(
            {
                "device": props.name,
                "capability": f"{props.major}.{props.minor}",
                "memory_bytes": props.total_memory,
                "sms": props.multi_processor_count,
            }
        )
    return record


def write_layer(
    folder: str | Path,
    *,
    experts: int = QWEN15_EXPERTS,
    rows: int = QWEN15_INTERMEDIATE,
    cols: int = QWEN15_HIDDEN,
    seed: int = 0,
) -> dict[str, Any]:
    """One MoE layer of a qwen2_moe checkpoint: ``experts`` x (gate, up [rows, cols], down [cols, rows]) bf16.

    Entries are Student-t(4) draws scaled to std 0.02 (a heavier tail than Gaussian, as trained experts have).

    Returns:
        What was written (folder, tensors, bytes, seconds).
    """
    import torch
    from safetensors.torch import save_file

    start = time.perf_counter()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "qwen2_moe",
        "architectures": ["Qwen2MoeForCausalLM"],
        "hidden_size": cols,
        "moe_intermediate_size": rows,
        "intermediate_size": 4 * rows,
        "num_experts": experts,
        "num_experts_per_tok": 4,
        "num_hidden_layers": 1,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "shared_expert_intermediate_size": 4 * rows,
        "vocab_size": 151936,
        "torch_dtype": "bfloat16",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # sampled on the GPU where there is one (fast)
    torch.manual_seed(seed)
    student = torch.distributions.StudentT(torch.tensor(4.0, device=device))
    tensors: dict[str, torch.Tensor] = {}
    for e in range(experts):
        for proj, shape in (("gate_proj", (rows, cols)), ("up_proj", (rows, cols)), ("down_proj", (cols, rows))):
            w = student.sample(shape) * (0.02 / 2**0.5)  # [R, C]; t(4) has variance 2
            tensors[f"model.layers.0.mlp.experts.{e}.{proj}.weight"] = w.to(torch.bfloat16).cpu()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
    return {
        "folder": str(out),
        "experts": experts,
        "tensors": len(tensors),
        "shapes": {"gate_up": [rows, cols], "down": [cols, rows]},
        "bytes": nbytes,
        "seconds": time.perf_counter() - start,
    }


def quantize_throughput(checkpoint: str | Path, *, device: str = "cuda", bits: int = 4) -> dict[str, Any]:
    """``run_quantize`` (rtn, a uniform ``bits``-bit plan, group 128) on ``checkpoint``; seconds and GB/s.

    Returns:
        The record (source and output bytes, seconds, GB/s of bf16 input, the stage's own timing).
    """
    from alphaq.load import open_checkpoint
    from alphaq.planning.plan_file import Plan, PlanTensor, save_plan
    from alphaq.planning.units import matrix_nbytes
    from alphaq.quantization.run import run_quantize

    ckpt = open_checkpoint(checkpoint)
    tensors = [
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
            bits=bits,
            group_size=GROUP_SIZE,
            bytes=matrix_nbytes(m.shape[0], m.shape[1], bits, GROUP_SIZE),
            error=None,
            unit=None,
        )
        for m in ckpt.matrices
    ]
    with tempfile.TemporaryDirectory(prefix="alphaq-gpu-check-") as tmp:
        plan = Path(tmp) / "plan.json"
        save_plan(
            Plan(provenance={"checkpoint": {"fingerprint": ckpt.fingerprint}}, summary={}, tensors=tuple(tensors)), plan
        )
        start = time.perf_counter()
        result = run_quantize(checkpoint, plan, Path(tmp) / "out", method="rtn", device=device)
        seconds = time.perf_counter() - start
    source = int(result.totals["source_bytes"])
    return {
        "device": device,
        "method": "rtn",
        "bits": bits,
        "group_size": GROUP_SIZE,
        "matrices": len(tensors),
        "source_bytes": source,
        "output_bytes": int(result.totals["output_bytes"]),
        "seconds": seconds,
        "gb_per_s": source / seconds / 1e9,
        "timing": result.timing,
    }


def junit_record(path: str | Path) -> dict[str, Any]:
    """Counts and the failed tests (name, message) of a pytest JUnit XML file."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    failed, skipped = [], []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                failed.append({"test": name, "kind": tag, "message": (node.get("message") or "")[:500]})
        node = case.find("skipped")
        if node is not None:
            skipped.append({"test": name, "reason": (node.get("message") or "")[:200]})
    return {
        **counts,
        "seconds": sum(float(s.get("time", 0)) for s in suites),
        "failed": failed,
        "skipped_tests": skipped,
    }


def summary(folder: str | Path) -> dict[str, Any]:
    """``folder/steps.jsonl`` (one line per step: name, rc, seconds, limit) and the JSON files beside it."""
    folder = Path(folder)
    steps_file = folder / "steps.jsonl"
    lines = steps_file.read_text(encoding="utf-8").splitlines() if steps_file.is_file() else []
    steps = [json.loads(line) for line in lines if line.strip()]
    for step in steps:
        step["timed_out"] = step.get("rc") in (124, 137)
    return {
        "steps": steps,
        "ok": all(step.get("rc") == 0 for step in steps),
        "seconds": sum(float(step.get("seconds", 0)) for step in steps),
        "files": sorted(p.name for p in folder.iterdir() if p.is_file()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("env")
    p.add_argument("out", type=Path)
    p = sub.add_parser("layer")
    p.add_argument("folder", type=Path)
    p.add_argument("--experts", type=int, default=QWEN15_EXPERTS)
    p.add_argument("--rows", type=int, default=QWEN15_INTERMEDIATE)
    p.add_argument("--cols", type=int, default=QWEN15_HIDDEN)
    p.add_argument("--record", type=Path, help="JSON record of what was written")
    p = sub.add_parser("quantize")
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--device", default="cuda")
    p.add_argument("--bits", type=int, default=4)
    p = sub.add_parser("junit")
    p.add_argument("xml", type=Path)
    p.add_argument("out", type=Path)
    p = sub.add_parser("summary")
    p.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    if args.command == "env":
        record = env_record()
        _write(args.out, record)
    elif args.command == "layer":
        record = write_layer(args.folder, experts=args.experts, rows=args.rows, cols=args.cols)
        if args.record is not None:
            _write(args.record, record)
    elif args.command == "quantize":
        record = quantize_throughput(args.checkpoint, device=args.device, bits=args.bits)
        _write(args.out, record)
    elif args.command == "junit":
        record = junit_record(args.xml)
        _write(args.out, record)
    else:
        record = summary(args.folder)
        _write(args.folder / "gpu_check.json", record)
    print(json.dumps({k: v for k, v in record.items() if not isinstance(v, (list, dict))}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
