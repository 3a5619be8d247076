"""``alphaq quantize`` end to end on tiny checkpoints: reference equality, plan bytes, copies, fused, FP8/MXFP4
and sharding (crash/resume and bad input: test_run_errors.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from alphaq.cli import app
from alphaq.load import open_checkpoint
from alphaq.load.checkpoint import MatrixRef
from alphaq.quantization import QuantSpec, compute, dequantize_groupwise, shards
from alphaq.quantization.writer import base_name
from tests.quantization.quantize_helpers import (  # noqa: F401
    WIDTHS,
    assert_equals_reference,
    expert_widths,
    make_plan,
    quantize,
    reference,
    reshard,
    stored_bytes,
    write_checkpoint,
)

runner = CliRunner()


# -- results -----------------------------------------------------------------------------------------


def test_mixtral_equals_reference_plan_bytes_and_copies(tiny_checkpoints, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(compute, "ROW_BLOCK_VALUES", 5 * 32)  # rtn on blocks of 5 rows (64-column matrices: 2 rows)
    model = tiny_checkpoints["mixtral"]
    ticks: list[tuple[int, str, int]] = []
    seen: list[int] = []
    result = quantize(
        model, tmp_path, progress=lambda n, item, total: ticks.append((n, item, total)), on_bytes=seen.append
    )
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
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model.safetensors.index.json",
        "quantize.json",
    ]
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
        out / "model.safetensors"
    )
    # progress: one tick per tensor, with the source bytes
    assert len(ticks) == len(seen) == count + len(copied) and ticks[-1][2] == len(ticks)
    assert sum(seen) == totals["source_bytes"]


@pytest.mark.parametrize("method", ["rtn", "rtn_clip", "hqq"])
def test_quantize_rows_and_error_equal_the_reference(method: str, monkeypatch) -> None:
    from alphaq.quantization import relative_error

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
    result = runner.invoke(
        app, ["quantize", str(model), "--plan", str(run / "plan.json"), "--out", str(tmp_path / "q")]
    )
    assert result.exit_code == 0, result.output
    assert "MB/s" in result.output and (tmp_path / "q" / "quantize.html").is_file()
    manifest = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert manifest["options"]["method"] == "rtn"  # taken from the plan's error model
    experts = [r for r in manifest["tensors"] if r["role"] == "expert"]
    assert len(experts) == 24
    for record in experts:  # both measure rtn on the full matrix (rows <= max_rows)
        assert record["rel_error"] == pytest.approx(record["predicted_error"], rel=1e-9)
    assert (
        manifest["totals"]["expert_quantized_bytes"]
        == json.loads((run / "plan.json").read_text())["summary"]["expert_bytes"]
    )


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
    for name in (
        "model.layers.1.mlp.experts.gate_up_proj",
        "model.layers.1.mlp.experts.down_proj",
        "model.layers.0.mlp.experts.gate_up_proj_bias",
    ):  # whole fused tensors and biases: unchanged
        source = ckpt.read_tensor(name)
        assert stored[name][2] == bytes(shards.tensor_bytes(source)), name
    quant = json.loads((out / "config.json").read_text())["quantization_config"]
    assert sorted(quant["dense_tensors"]) == [
        "model.layers.0.mlp.experts.1.down_proj",
        "model.layers.0.mlp.experts.1.gate_proj",
        "model.layers.0.mlp.experts.1.up_proj",
    ]
    assert quant["fused_tensors"]["model.layers.0.mlp.experts.gate_up_proj"] == {
        "split": "interleaved",
        "orientation": "in_out",
        "parts": ["gate", "up"],
        "num_experts": 4,
    }
    assert "model.layers.1.mlp.experts.gate_up_proj" not in quant["fused_tensors"]
    assert result.totals["dense_tensors"] == 3 and result.totals["bytes_match_plan"]


def test_sharded_input_gives_one_output_shard_per_source_shard(tiny_checkpoints, tmp_path: Path) -> None:
    model = reshard(tiny_checkpoints["qwen2_moe"], tmp_path / "sharded", 3)
    ckpt = open_checkpoint(model)
    result = quantize(model, tmp_path)
    out = tmp_path / "out"
    assert assert_equals_reference(ckpt, out, expert_widths) == result.totals["quantized_tensors"]
    assert [(s["name"], s["source_file"]) for s in result.manifest["shards"]] == [
        (f"model-{i:05d}-of-00003.safetensors", f"model-{i:05d}-of-00003.safetensors") for i in (1, 2, 3)
    ]
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
    model = write_checkpoint(
        tmp_path / "fp8",
        {"model_type": "deepseek_v3", "hidden_size": 128, "num_hidden_layers": 1, "quantization_config": quant_config},
        tensors,
    )

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
    tensors = {
        prefix + "gate_up_proj_blocks": torch.randint(0, 256, (2, 48, 1, 16), dtype=torch.uint8, generator=g),
        prefix + "gate_up_proj_scales": torch.randint(120, 130, (2, 48, 1), dtype=torch.uint8, generator=g),
        prefix + "down_proj_blocks": torch.randint(0, 256, (2, 32, 1, 16), dtype=torch.uint8, generator=g),
        prefix + "down_proj_scales": torch.randint(120, 130, (2, 32, 1), dtype=torch.uint8, generator=g),
    }
    model = write_checkpoint(
        tmp_path / "oss", {"model_type": "gpt_oss", "hidden_size": 32, "num_hidden_layers": 1}, tensors
    )

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


def test_units_on_several_threads_write_the_same_bytes_as_one(tiny_checkpoints, tmp_path: Path) -> None:
    """The quantize stage runs ``torch.get_num_threads()`` units at once (alphaq.parallel): same shards, same hashes."""
    model = tiny_checkpoints["mixtral"]
    threads = torch.get_num_threads()
    outputs = {}
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            quantize(model, tmp_path / f"t{count}")
            outputs[count] = {
                p.name: p.read_bytes() for p in sorted((tmp_path / f"t{count}" / "out").glob("*.safetensors"))
            }
    finally:
        torch.set_num_threads(threads)
    assert outputs[1] and outputs[1] == outputs[2]
