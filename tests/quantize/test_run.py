"""``alphaq quantize`` end to end on tiny checkpoints: reference equality, plan bytes, copies, fused, FP8/MXFP4,
sharding, crash and resume, and every bad input."""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from alphaq.cli import app
from alphaq.errors import AlphaQError, ConfigError, PlanError
from alphaq.load import open_checkpoint
from alphaq.load.checkpoint import Checkpoint, MatrixRef
from alphaq.plan.plan_file import Plan, PlanTensor, save_plan
from alphaq.plan.units import matrix_nbytes
from alphaq.quantize import QuantSpec, dequantize_groupwise, quantize_groupwise, quantize_hqq
from alphaq.quantize import compute
from alphaq.quantize import run as qrun
from alphaq.quantize import shards
from alphaq.quantize.writer import base_name, read_quantized_tensors

runner = CliRunner()
WIDTHS = (2, 3, 4, 8)


def expert_widths(m: MatrixRef) -> int:
    """Experts cycle through 2, 3, 4, 8 bits; attention at 8 bits; the rest kept at 16."""
    if m.role.value == "expert":
        return WIDTHS[(int(m.expert or 0) + int(m.layer or 0)) % 4]
    return 8 if m.role.value == "attention" else 16


def make_plan(ckpt: Checkpoint, path: Path, bits_for: Callable[[MatrixRef], int] = expert_widths, *,
              group_size: int = 32, fingerprint: str | None = "checkpoint",
              skip: Callable[[MatrixRef], bool] | None = None, extra: tuple[PlanTensor, ...] = ()) -> Path:
    """A plan.json for ``ckpt`` with the widths of ``bits_for`` (no inspect run needed)."""
    tensors = []
    for m in ckpt.matrices:
        if skip is not None and skip(m):
            continue
        bits = bits_for(m)
        tensors.append(PlanTensor(
            name=m.name, tensor=m.tensor, layer=m.layer, expert=m.expert, proj=m.proj, role=m.role.value,
            rows=m.shape[0], cols=m.shape[1], params=m.params, bits=bits, group_size=None if bits == 16 else group_size,
            bytes=matrix_nbytes(m.shape[0], m.shape[1], bits, group_size), error=0.0 if bits == 16 else 0.1 / bits,
            unit=f"L{m.layer}.E{m.expert}" if m.role.value == "expert" else None))
    tensors.extend(extra)
    checkpoint = {"path": str(ckpt.path), "model_type": ckpt.model_type}
    if fingerprint is not None:
        checkpoint["fingerprint"] = ckpt.fingerprint if fingerprint == "checkpoint" else fingerprint
    plan = Plan(provenance={"checkpoint": checkpoint, "created": "2025-01-01T00:00:00+00:00",
                            "options": {"allocator": "test", "quant_method": "rtn", "granularity": "expert"},
                            "budget": {"given": "3.5"}},
                summary={"total_bytes": sum(t.bytes for t in tensors),
                         "expert_bytes": sum(t.bytes for t in tensors if t.role == "expert")},
                tensors=tuple(tensors))
    save_plan(plan, path)
    return path


def quantize(model: Path, tmp_path: Path, bits_for: Callable[[MatrixRef], int] = expert_widths, name: str = "out",
             **kwargs) -> qrun.QuantizeResult:
    ckpt = open_checkpoint(model)
    plan = make_plan(ckpt, tmp_path / f"{name}-plan.json", bits_for)
    return qrun.run_quantize(model, plan, tmp_path / name, **kwargs)


def reference(w: torch.Tensor, spec: QuantSpec, method: str):
    return quantize_hqq(w, spec) if method == "hqq" else quantize_groupwise(w, spec, clip_search=method == "rtn_clip")


def assert_equals_reference(ckpt: Checkpoint, out: Path, bits_for: Callable[[MatrixRef], int], method: str = "rtn",
                            group_size: int = 32) -> int:
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


# -- results -----------------------------------------------------------------------------------------


def test_mixtral_equals_reference_plan_bytes_and_copies(tiny_checkpoints, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(compute, "ROW_BLOCK_VALUES", 5 * 32)  # rtn on blocks of 5 rows (64-column matrices: 2 rows)
    model = tiny_checkpoints["mixtral"]
    ticks: list[tuple[int, str, int]] = []
    seen: list[int] = []
    result = quantize(model, tmp_path, progress=lambda n, item, total: ticks.append((n, item, total)),
                      on_bytes=seen.append)
    out, ckpt = tmp_path / "out", open_checkpoint(model)
    count = assert_equals_reference(ckpt, out, expert_widths)
    totals = result.totals
    assert count == totals["quantized_tensors"] == 24 + 8  # 24 experts, 8 attention matrices
    # bytes on disk equal the plan's prediction to the byte, per tensor and in total
    plan = {t["name"]: t for t in json.loads((tmp_path / "out-plan.json").read_text())["tensors"]}
    for record in result.manifest["tensors"]:
        assert record["bytes"] == plan[record["name"]]["bytes"] == record["predicted_bytes"]
        assert record["bytes"] == record["payload_bytes"] + record["scale_bytes"] + record["zero_bytes"]
        assert 0 < record["rel_error"] < 0.6 and record["predicted_error"] == pytest.approx(0.1 / record["bits"])
    assert totals["bytes_match_plan"] and totals["quantized_bytes"] == totals["predicted_bytes"]
    expert_plan = sum(t["bytes"] for t in plan.values() if t["role"] == "expert")
    assert totals["expert_quantized_bytes"] == totals["expert_predicted_bytes"] == expert_plan
    # copied tensors (16-bit matrices, norms, router) are byte-identical to the source
    stored = stored_bytes(out)
    copied = [r["name"] for r in result.manifest["copied"]]
    assert "lm_head.weight" in copied and "model.norm.weight" in copied and len(copied) == totals["copied_tensors"]
    for name in copied:
        source = ckpt.read_tensor(name)
        assert stored[name] == (str(source.dtype), tuple(source.shape), bytes(shards.tensor_bytes(source))), name
    assert len(stored) == 3 * count + len(copied)
    # the folder: shards, index, config, copied files, quantize.json; no temporary or progress files left
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                     "model.safetensors.index.json", "quantize.json"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == totals["output_bytes"] == sum(len(v[2]) for v in stored.values())
    config = json.loads((out / "config.json").read_text())
    source_config = json.loads((model / "config.json").read_text())
    assert {k: v for k, v in config.items() if k != "quantization_config"} == source_config
    quant = config["quantization_config"]
    assert (quant["quant_method"], quant["format"], quant["method"]) == ("alphaq", "alphaq-groupwise-v1", "rtn")
    assert quant["checkpoint_fingerprint"] == ckpt.fingerprint and len(quant["plan_fingerprint"]) == 64
    entry = quant["tensors"]["model.layers.1.block_sparse_moe.experts.2.w2"]
    assert (entry["bits"], entry["group_size"], entry["shape"]) == (8, 32, [32, 64])
    assert quant["dense_tensors"] == {} and quant["fused_tensors"] == {}
    manifest = json.loads((out / "quantize.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["options"]["method"] == "rtn"
    assert manifest["files"] == ["generation_config.json"] and manifest["warnings"] == []
    assert manifest["timing"]["throughput_mb_s"] > 0 and manifest["shards"][0]["sha256"] == shards.sha256_file(
        out / "model.safetensors")
    # progress: one tick per tensor, with the source bytes
    assert len(ticks) == len(seen) == count + len(copied) and ticks[-1][2] == len(ticks)
    assert sum(seen) == totals["source_bytes"]


@pytest.mark.parametrize("method", ["rtn", "rtn_clip", "hqq"])
def test_quantize_rows_and_error_equal_the_reference(method: str, monkeypatch) -> None:
    from alphaq.quantize import relative_error

    monkeypatch.setattr(compute, "ROW_BLOCK_VALUES", 3 * 200)  # blocks of 3 rows, the last one partial
    w = torch.randn(16, 200, generator=torch.Generator().manual_seed(1)) * 0.02
    w[3, :50] = 0.0  # an all-zero group
    spec = QuantSpec(3, 64)
    got, expected = compute.quantize_rows(w, spec, method), reference(w, spec, method)
    assert torch.equal(got.q, expected.q) and torch.equal(got.scale, expected.scale)
    assert torch.equal(got.zero, expected.zero)
    exact = relative_error(w, dequantize_groupwise(expected))
    assert compute.reconstruction_error(w, got, chunk_values=400) == pytest.approx(exact, rel=1e-12)
    packed, error = compute.quantize_matrix(w.bfloat16(), spec, method)
    assert error == pytest.approx(relative_error(w.bfloat16().float(), packed.dequantize()), rel=1e-12)
    zero = compute.quantize_rows(torch.zeros(4, 64), spec, method)
    assert compute.reconstruction_error(torch.zeros(4, 64), zero) == 0.0


def test_kernel_path_gives_the_same_bits() -> None:
    """The quantize-pack kernel path (on CPU tensors alphaq.kernels falls back to its torch reference)."""
    pytest.importorskip("alphaq.kernels.ops")
    w = torch.randn(24, 200, generator=torch.Generator().manual_seed(2)).bfloat16()
    spec = QuantSpec(3, 64)
    (plain, error), (kernel, kernel_error) = (compute.quantize_matrix(w, spec, "rtn", kernels=k) for k in (False, True))
    assert torch.equal(plain.packed, kernel.packed) and torch.equal(plain.scale, kernel.scale)
    assert torch.equal(plain.zero, kernel.zero) and error == kernel_error


@pytest.mark.parametrize("method", ["rtn_clip", "hqq"])
def test_other_methods_equal_their_reference(tiny_checkpoints, tmp_path: Path, method: str) -> None:
    def bits_for(m: MatrixRef) -> int:  # a few matrices only: hqq is slow
        return (3 if m.proj == "down" else 2) if m.role.value == "expert" and m.layer == 1 and m.expert == 0 else 16

    model = tiny_checkpoints["olmoe"]
    result = quantize(model, tmp_path, bits_for, method=method)
    assert assert_equals_reference(open_checkpoint(model), tmp_path / "out", bits_for, method) == 3
    assert result.manifest["options"]["method"] == method
    assert json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]["method"] == method


def test_measured_plan_predicts_the_error_exactly(tiny_checkpoints, tmp_path: Path) -> None:
    """A plan made by `alphaq plan` (rtn-measured errors) then quantized by `alphaq quantize`, both on the CLI."""
    model, run = tiny_checkpoints["qwen2_moe"], tmp_path / "run"
    planned = runner.invoke(app, ["plan", str(model), "--out", str(run), "--budget", "3", "--no-html"])
    assert planned.exit_code == 0, planned.output
    result = runner.invoke(app, ["quantize", str(model), "--plan", str(run / "plan.json"),
                                 "--out", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    assert "MB/s" in result.output and (tmp_path / "q" / "quantize.html").is_file()
    manifest = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert manifest["options"]["method"] == "rtn"  # taken from the plan's error model
    experts = [r for r in manifest["tensors"] if r["role"] == "expert"]
    assert len(experts) == 24
    for record in experts:  # both measure rtn on the full matrix (rows <= max_rows)
        assert record["rel_error"] == pytest.approx(record["predicted_error"], rel=1e-9)
    assert manifest["totals"]["expert_quantized_bytes"] == json.loads((run / "plan.json").read_text())["summary"][
        "expert_bytes"]


def test_fused_gpt_oss_experts(tiny_checkpoints, tmp_path: Path) -> None:
    def bits_for(m: MatrixRef) -> int:  # layer 0: expert 1 kept at 16 (split, dense); layer 1 all 16 (copied)
        return 4 if m.role.value == "expert" and m.layer == 0 and m.expert != 1 else 16

    model = tiny_checkpoints["gpt_oss"]
    ckpt = open_checkpoint(model)
    result = quantize(model, tmp_path, bits_for)
    out = tmp_path / "out"
    assert assert_equals_reference(ckpt, out, bits_for) == 9
    stored = stored_bytes(out)
    assert "model.layers.0.mlp.experts.3.gate_proj.qweight" in stored
    assert "model.layers.0.mlp.experts.gate_up_proj" not in stored  # split
    for ref in (m for m in ckpt.matrices if m.layer == 0 and m.expert == 1):
        source = ckpt.read_matrix(ref, dtype=torch.float32)  # the tiny checkpoint is float32
        name = base_name(ref) + ".weight"
        assert stored[name] == ("torch.float32", ref.shape, bytes(shards.tensor_bytes(source))), name
    for name in ("model.layers.1.mlp.experts.gate_up_proj", "model.layers.1.mlp.experts.down_proj",
                 "model.layers.0.mlp.experts.gate_up_proj_bias"):  # whole fused tensors and biases: unchanged
        source = ckpt.read_tensor(name)
        assert stored[name][2] == bytes(shards.tensor_bytes(source)), name
    quant = json.loads((out / "config.json").read_text())["quantization_config"]
    assert sorted(quant["dense_tensors"]) == ["model.layers.0.mlp.experts.1.down_proj",
                                              "model.layers.0.mlp.experts.1.gate_proj",
                                              "model.layers.0.mlp.experts.1.up_proj"]
    assert quant["fused_tensors"]["model.layers.0.mlp.experts.gate_up_proj"] == {
        "split": "interleaved", "orientation": "in_out", "parts": ["gate", "up"], "num_experts": 4}
    assert "model.layers.1.mlp.experts.gate_up_proj" not in quant["fused_tensors"]
    assert result.totals["dense_tensors"] == 3 and result.totals["bytes_match_plan"]


def test_sharded_input_gives_one_output_shard_per_source_shard(tiny_checkpoints, tmp_path: Path) -> None:
    model = reshard(tiny_checkpoints["qwen2_moe"], tmp_path / "sharded", 3)
    ckpt = open_checkpoint(model)
    result = quantize(model, tmp_path)
    out = tmp_path / "out"
    assert assert_equals_reference(ckpt, out, expert_widths) == result.totals["quantized_tensors"]
    assert [(s["name"], s["source_file"]) for s in result.manifest["shards"]] == [
        (f"model-{i:05d}-of-00003.safetensors", f"model-{i:05d}-of-00003.safetensors") for i in (1, 2, 3)]
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    source = json.loads((model / "model.safetensors.index.json").read_text())["weight_map"]
    for ref in ckpt.matrices:  # each matrix lands in the shard numbered like its source shard
        stored = base_name(ref) + ".qweight" if expert_widths(ref) != 16 else ref.tensor
        assert index[stored] == source[ref.tensor]


def test_single_file_source_is_split_above_the_shard_size(tiny_checkpoints, tmp_path: Path) -> None:
    model = tiny_checkpoints["mixtral"]
    whole = quantize(model, tmp_path, name="whole")
    split = quantize(model, tmp_path, name="split", max_shard_bytes=20_000)
    shards_meta = split.manifest["shards"]
    assert len(shards_meta) > 3 and all(s["source_file"] == "model.safetensors" for s in shards_meta)
    for shard in (tmp_path / "split").glob("model-*.safetensors"):
        with safe_open(str(shard), framework="pt") as fh:
            data = sum(fh.get_tensor(n).numel() * fh.get_tensor(n).element_size() for n in fh.keys())
        assert data <= 20_000 or len(list(safe_open(str(shard), framework="pt").keys())) == 1
    assert stored_bytes(tmp_path / "split") == stored_bytes(tmp_path / "whole")
    assert whole.totals["output_bytes"] == split.totals["output_bytes"]


def _write(directory: Path, config: dict, tensors: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory


def test_fp8_source_quantized_from_dequantized_weights(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(64, 128, generator=g).bfloat16()}
    for e in range(2):
        w = torch.randn(128, 256, generator=g)
        scale_inv = torch.rand(1, 2, generator=g) + 0.5
        name = f"model.layers.0.mlp.experts.{e}.gate_proj.weight"
        tensors[name] = (w / scale_inv.repeat_interleave(128, 1)).to(torch.float8_e4m3fn)
        tensors[name + "_scale_inv"] = scale_inv
    quant_config = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    model = _write(tmp_path / "fp8", {"model_type": "deepseek_v3", "hidden_size": 128, "num_hidden_layers": 1,
                                      "quantization_config": quant_config}, tensors)

    def bits_for(m: MatrixRef) -> int:
        return 4 if m.expert == 0 else 16

    ckpt = open_checkpoint(model)
    quantize(model, tmp_path, bits_for)
    out = tmp_path / "out"
    assert assert_equals_reference(ckpt, out, bits_for) == 1
    stored = stored_bytes(out)
    assert "model.layers.0.mlp.experts.0.gate_proj.weight_scale_inv" not in stored
    kept = "model.layers.0.mlp.experts.1.gate_proj.weight"
    for name in (kept, kept + "_scale_inv"):
        assert stored[name][2] == bytes(shards.tensor_bytes(ckpt.read_tensor(name))), name
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "alphaq" and config["source_quantization_config"] == quant_config


def test_mxfp4_source_quantized_per_expert(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    prefix = "model.layers.0.mlp.experts."
    tensors = {prefix + "gate_up_proj_blocks": torch.randint(0, 256, (2, 48, 1, 16), dtype=torch.uint8, generator=g),
               prefix + "gate_up_proj_scales": torch.randint(120, 130, (2, 48, 1), dtype=torch.uint8, generator=g),
               prefix + "down_proj_blocks": torch.randint(0, 256, (2, 32, 1, 16), dtype=torch.uint8, generator=g),
               prefix + "down_proj_scales": torch.randint(120, 130, (2, 32, 1), dtype=torch.uint8, generator=g)}
    model = _write(tmp_path / "oss", {"model_type": "gpt_oss", "hidden_size": 32, "num_hidden_layers": 1}, tensors)

    def bits_for(m: MatrixRef) -> int:
        return 3 if m.proj in ("gate", "up") else 16

    ckpt = open_checkpoint(model)
    quantize(model, tmp_path, bits_for)
    out = tmp_path / "out"
    assert assert_equals_reference(ckpt, out, bits_for) == 4
    stored = stored_bytes(out)
    assert not any(n.startswith(prefix + "gate_up_proj") for n in stored)
    for name in (prefix + "down_proj_blocks", prefix + "down_proj_scales"):
        assert stored[name][2] == bytes(shards.tensor_bytes(ckpt.read_tensor(name)))


# -- crash and resume --------------------------------------------------------------------------------


def test_interrupted_run_resumes_to_identical_bytes(tiny_checkpoints, tmp_path: Path, monkeypatch) -> None:
    model = reshard(tiny_checkpoints["olmoe"], tmp_path / "sharded", 3)
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json")
    qrun.run_quantize(model, plan, tmp_path / "clean")
    real, calls = qrun._write_output_shard, []

    def crash_on_second(job, shard, out):  # noqa: ANN001
        calls.append(shard.name)
        if len(calls) == 2:
            (out / f".{shard.name}.x1y2.tmp").write_bytes(b"partial")  # what a killed process leaves
            raise KeyboardInterrupt
        return real(job, shard, out)

    monkeypatch.setattr(qrun, "_write_output_shard", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        qrun.run_quantize(model, plan, tmp_path / "resumed")
    resumed = tmp_path / "resumed"
    assert sorted(p.name for p in resumed.iterdir()) == [
        ".alphaq-quantize-progress.json", ".model-00002-of-00003.safetensors.x1y2.tmp",
        "model-00001-of-00003.safetensors"]
    first = (resumed / "model-00001-of-00003.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(qrun, "_write_output_shard", real)
    result = qrun.run_quantize(model, plan, resumed)
    assert [s["resumed"] for s in result.manifest["shards"]] == [True, False, False]
    assert (resumed / "model-00001-of-00003.safetensors").stat().st_mtime_ns == first  # skipped, not rewritten
    clean_files = sorted(p.name for p in (tmp_path / "clean").iterdir())
    assert sorted(p.name for p in resumed.iterdir()) == clean_files
    for name in clean_files:
        if name != "quantize.json":
            assert (resumed / name).read_bytes() == (tmp_path / "clean" / name).read_bytes(), name
    clean = json.loads((tmp_path / "clean" / "quantize.json").read_text())
    again = json.loads((resumed / "quantize.json").read_text())
    for manifest in (clean, again):
        for key in ("created", "timing"):
            manifest.pop(key)
        for record in manifest["tensors"] + manifest["copied"]:
            record.pop("seconds")
        for shard in manifest["shards"]:
            shard.pop("resumed")
    assert clean == again


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("problem, error, needle", [
    ("other_checkpoint", PlanError, "made for another checkpoint"),
    ("unknown_tensor", PlanError, "not in the checkpoint"),
    ("other_shape", PlanError, "in the plan but"),
    ("unplanned_expert", PlanError, "routed-expert matrix(es) of the checkpoint are not in"),
    ("unsupported_width", ConfigError, "cannot write 2-bit weights"),
    ("unknown_method", ConfigError, "unknown quantization method"),
    ("no_cuda", ConfigError, "no CUDA device"),
    ("no_space", AlphaQError, "free but the quantized checkpoint needs"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny_checkpoints, tmp_path: Path, monkeypatch, problem, error,
                                                  needle) -> None:
    model = tiny_checkpoints["qwen3_moe"]
    ckpt = open_checkpoint(model)
    kwargs: dict = {}
    plan_kwargs: dict = {}
    if problem == "other_checkpoint":
        plan_kwargs["fingerprint"] = "0123456789abcdef"
    elif problem in ("unknown_tensor", "other_shape"):
        m = ckpt.matrices[0]
        name = "model.layers.9.mlp.gate.weight" if problem == "unknown_tensor" else m.name
        rows = m.shape[0] + (8 if problem == "other_shape" else 0)
        plan_kwargs["extra"] = (PlanTensor(name=name, tensor=name, layer=9, expert=None, proj="router", role="router",
                                           rows=rows, cols=m.shape[1], params=rows * m.shape[1], bits=16,
                                           group_size=None, bytes=rows * m.shape[1] * 2, error=0.0),)
        if problem == "other_shape":
            plan_kwargs["skip"] = lambda r: r.name == m.name
    elif problem == "unplanned_expert":
        plan_kwargs["skip"] = lambda r: r.role.value == "expert" and r.expert == 2
    elif problem == "unsupported_width":
        monkeypatch.setitem(qrun.METHOD_BITS, "hqq", (3, 4, 8))
        kwargs["method"] = "hqq"
    elif problem == "unknown_method":
        kwargs["method"] = "gptq"
    elif problem == "no_cuda":
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
        kwargs["device"] = "cuda"
    elif problem == "no_space":
        monkeypatch.setattr(qrun.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    plan = make_plan(ckpt, tmp_path / "plan.json", **plan_kwargs)
    out = tmp_path / "new" / "out"
    with pytest.raises(error, match=needle.replace("(", r"\(").replace(")", r"\)")) as caught:
        qrun.run_quantize(model, plan, out, **kwargs)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "new").exists()


def test_out_folder_must_be_new_or_an_unfinished_run_of_the_same_job(tiny_checkpoints, tmp_path: Path) -> None:
    model = tiny_checkpoints["qwen3_moe"]
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(AlphaQError, match="out directory not empty; choose another --out or remove it"):
        qrun.run_quantize(model, plan, busy)
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]
    qrun.run_quantize(model, plan, tmp_path / "done")
    with pytest.raises(AlphaQError, match="out directory not empty"):  # a finished run is not resumed
        qrun.run_quantize(model, plan, tmp_path / "done")
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / qrun.PROGRESS_FILE).write_text(json.dumps({"key": {"method": "hqq"}, "shards": {}}))
    (unfinished / "model.safetensors").write_bytes(b"a finished shard of that run")
    with pytest.raises(AlphaQError, match="unfinished run of another plan, checkpoint or options"):
        qrun.run_quantize(model, plan, unfinished)
    stopped = tmp_path / "stopped"  # stopped before its first shard (e.g. a NaN weight): started afresh
    stopped.mkdir()
    (stopped / qrun.PROGRESS_FILE).write_text(json.dumps({"key": {"method": "hqq"}, "shards": {}}))
    (stopped / ".model.safetensors.ab12.tmp").write_bytes(b"partial")
    assert qrun.run_quantize(model, plan, stopped).totals["bytes_match_plan"]
    assert not (stopped / qrun.PROGRESS_FILE).exists() and not list(stopped.glob(".*.tmp"))
    (tmp_path / "empty").mkdir()
    assert qrun.run_quantize(model, plan, tmp_path / "empty").totals["bytes_match_plan"]


def test_disk_write_failure_names_the_path_and_free_space(tiny_checkpoints, tmp_path: Path, monkeypatch) -> None:
    model = tiny_checkpoints["qwen3_moe"]
    plan = make_plan(open_checkpoint(model), tmp_path / "plan.json")

    def full_disk(path, tensors, fill):  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(qrun.st, "write_shard", full_disk)
    with pytest.raises(AlphaQError, match=r"cannot write .*model\.safetensors: No space left on device \(.* GB free\)"):
        qrun.run_quantize(model, plan, tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists() and not (tmp_path / "out" / "quantize.json").exists()


def test_a_weight_that_cannot_be_quantized_is_named_and_the_fixed_plan_starts_afresh(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    tensors = {f"model.layers.0.block_sparse_moe.experts.{e}.w1.weight": torch.randn(16, 32, generator=g)
               for e in range(2)}
    tensors["model.layers.0.block_sparse_moe.experts.1.w1.weight"][3, 5] = float("nan")
    model = _write(tmp_path / "nan", {"model_type": "mixtral", "hidden_size": 32, "num_hidden_layers": 1}, tensors)
    ckpt = open_checkpoint(model)
    with pytest.raises(AlphaQError, match=r"experts\.1\.w1\.weight: cannot quantize \(weight contains NaN.*plan it at "
                                          "16 bits") as caught:
        qrun.run_quantize(model, make_plan(ckpt, tmp_path / "plan.json", lambda m: 4), tmp_path / "out")
    assert "\n" not in str(caught.value) and not (tmp_path / "out" / "model.safetensors").exists()
    fixed = make_plan(ckpt, tmp_path / "fixed.json", lambda m: 4 if m.expert == 0 else 16)
    result = qrun.run_quantize(model, fixed, tmp_path / "out")
    assert result.totals["quantized_tensors"] == 1 and result.totals["copied_tensors"] == 1


def test_plan_without_fingerprint_is_matched_by_names_with_a_warning(tiny_checkpoints, tmp_path: Path) -> None:
    model = tiny_checkpoints["qwen3_moe"]
    ckpt = open_checkpoint(model)
    plan = make_plan(ckpt, tmp_path / "plan.json", fingerprint=None)
    result = qrun.run_quantize(model, plan, tmp_path / "out")
    assert "no checkpoint fingerprint" in result.manifest["warnings"][0]


def test_cli_bad_input_exit_code_and_one_line(tiny_checkpoints, tmp_path: Path) -> None:
    plan = make_plan(open_checkpoint(tiny_checkpoints["mixtral"]), tmp_path / "plan.json")
    result = runner.invoke(app, ["quantize", str(tiny_checkpoints["olmoe"]), "--plan", str(plan), "--out",
                                 str(tmp_path / "q")])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "made for another checkpoint" in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "q").exists()


def test_demo_model_end_to_end_on_the_cli(tmp_path: Path) -> None:
    from alphaq.modeling import demo_model_path

    demo = demo_model_path()
    plan = make_plan(open_checkpoint(demo), tmp_path / "plan.json", group_size=128)
    out = tmp_path / "demo-q"
    result = runner.invoke(app, ["quantize", "--plan", str(plan), "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "quantize.json").read_text())
    totals = manifest["totals"]
    assert totals["quantized_tensors"] == 96 + 16 and totals["bytes_match_plan"]
    assert sorted(manifest["files"]) == ["generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    assert totals["output_bytes"] < totals["source_bytes"] / 2
    assert (out / "quantize.html").is_file()
