"""Shared helpers of the quantize-stage tests: plans with cycling widths, reference checks, resharding."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from alphaq.load import open_checkpoint
from alphaq.load.checkpoint import Checkpoint, MatrixRef
from alphaq.planning.plan_file import Plan, PlanTensor, save_plan, tensor_totals
from alphaq.planning.units import matrix_nbytes
from alphaq.quantization import QuantSpec, dequantize_groupwise, quantize_groupwise, quantize_hqq, shards
from alphaq.quantization import run as qrun
from alphaq.quantization.writer import base_name, read_quantized_tensors

WIDTHS = (2, 3, 4, 8)


def expert_widths(m: MatrixRef) -> int:
    """Experts cycle through 2, 3, 4, 8 bits; attention at 8 bits; the rest kept at 16."""
    if m.role.value == "expert":
        return WIDTHS[(int(m.expert or 0) + int(m.layer or 0)) % 4]
    return 8 if m.role.value == "attention" else 16


def make_plan(
    ckpt: Checkpoint,
    path: Path,
    bits_for: Callable[[MatrixRef], int] = expert_widths,
    *,
    group_size: int = 32,
    fingerprint: str | None = "checkpoint",
    skip: Callable[[MatrixRef], bool] | None = None,
    extra: tuple[PlanTensor, ...] = (),
) -> Path:
    """A plan.json for ``ckpt`` with the widths of ``bits_for`` (no inspect run needed)."""
    tensors = []
    for m in ckpt.matrices:
        if skip is not None and skip(m):
            continue
        bits = bits_for(m)
        tensors.append(
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
                group_size=None if bits == 16 else group_size,
                bytes=matrix_nbytes(m.shape[0], m.shape[1], bits, group_size),
                error=0.0 if bits == 16 else 0.1 / bits,
                unit=f"L{m.layer}.E{m.expert}" if m.role.value == "expert" else None,
            )
        )
    tensors.extend(extra)
    checkpoint = {"path": str(ckpt.path), "model_type": ckpt.model_type}
    if fingerprint is not None:
        checkpoint["fingerprint"] = ckpt.fingerprint if fingerprint == "checkpoint" else fingerprint
    plan = Plan(
        provenance={
            "checkpoint": checkpoint,
            "created": "2025-01-01T00:00:00+00:00",
            "options": {"allocator": "test", "quant_method": "rtn", "granularity": "expert"},
            "budget": {"given": "3.5"},
        },
        summary=tensor_totals(tensors),
        tensors=tuple(tensors),
    )
    save_plan(plan, path)
    return path


def quantize(
    model: Path, tmp_path: Path, bits_for: Callable[[MatrixRef], int] = expert_widths, name: str = "out", **kwargs
) -> qrun.QuantizeResult:
    ckpt = open_checkpoint(model)
    plan = make_plan(ckpt, tmp_path / f"{name}-plan.json", bits_for)
    return qrun.run_quantize(model, plan, tmp_path / name, **kwargs)


def reference(w: torch.Tensor, spec: QuantSpec, method: str):
    return quantize_hqq(w, spec) if method == "hqq" else quantize_groupwise(w, spec, clip_search=method == "rtn_clip")


def assert_equals_reference(
    ckpt: Checkpoint, out: Path, bits_for: Callable[[MatrixRef], int], method: str = "rtn", group_size: int = 32
) -> int:
    """Every planned matrix read back equals the reference quantizer on the source weights; returns their count."""
    stored = read_quantized_tensors(out)
    planned = [m for m in ckpt.matrices if bits_for(m) != 16]
    assert sorted(stored) == sorted(base_name(m) for m in planned)
    for m in planned:
        packed = stored[base_name(m)]
        expected = reference(ckpt.read_matrix(m), QuantSpec(bits_for(m), group_size), method)
        got = packed.unpack()
        assert torch.equal(got.q, expected.q) and torch.equal(got.scale, expected.scale), m.name
        assert torch.equal(got.zero, expected.zero), m.name
        assert torch.equal(packed.dequantize(), dequantize_groupwise(expected)), m.name
    return len(planned)


def stored_bytes(out: Path) -> dict[str, bytes]:
    """Every tensor of a checkpoint folder as (dtype, shape, raw bytes)."""
    index = json.loads((out / "model.safetensors.index.json").read_text())
    result = {}
    for name, shard in index["weight_map"].items():
        with safe_open(str(out / shard), framework="pt") as fh:
            t = fh.get_tensor(name)
        result[name] = (str(t.dtype), tuple(t.shape), bytes(shards.tensor_bytes(t)))
    return result


def reshard(source: Path, target: Path, count: int) -> Path:
    """Copy a single-file checkpoint into ``count`` shards with an index."""
    target.mkdir()
    for item in source.iterdir():
        if item.suffix != ".safetensors":
            shutil.copy(item, target / item.name)
    with safe_open(str(source / "model.safetensors"), framework="pt") as fh:
        tensors = {n: fh.get_tensor(n) for n in fh.keys()}
    names = sorted(tensors)
    weight_map = {}
    for i in range(count):
        file = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::count]}
        save_file(part, str(target / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return target


def write_checkpoint(directory: Path, config: dict, tensors: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory
