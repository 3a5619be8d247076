"""Checkpoint reading: sharding, fused layouts, FP8 and MXFP4 dequantization, and bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from alphaq.errors import CheckpointError
from alphaq.load import Role, open_checkpoint
from alphaq.load.weights import FP4_E2M1_VALUES, dequantize_mxfp4


def _write(directory: Path, config: dict, tensors: dict[str, torch.Tensor], shards: int = 1) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(directory / "model.safetensors"))
        return directory
    weight_map = {}
    for i in range(shards):
        part = {n: tensors[n] for n in names[i::shards]}
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(directory / file))
        weight_map.update({n: file for n in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


def _mixtral_tensors(layers=2, experts=3, hidden=16, inter=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = {
        "model.embed_tokens.weight": torch.randn(50, hidden, generator=g),
        "lm_head.weight": torch.randn(50, hidden, generator=g),
    }
    for layer in range(layers):
        p = f"model.layers.{layer}.block_sparse_moe"
        t[f"{p}.gate.weight"] = torch.randn(experts, hidden, generator=g)
        for e in range(experts):
            t[f"{p}.experts.{e}.w1.weight"] = torch.randn(inter, hidden, generator=g)
            t[f"{p}.experts.{e}.w3.weight"] = torch.randn(inter, hidden, generator=g)
            t[f"{p}.experts.{e}.w2.weight"] = torch.randn(hidden, inter, generator=g)
        t[f"model.layers.{layer}.input_layernorm.weight"] = torch.ones(hidden)
    return t


def test_sharded_checkpoint_reads_every_tensor(tmp_path):
    tensors = _mixtral_tensors()
    path = _write(
        tmp_path / "m",
        {"model_type": "mixtral", "hidden_size": 16, "num_hidden_layers": 2, "num_local_experts": 3},
        tensors,
        shards=3,
    )
    ckpt = open_checkpoint(path)
    assert len({t.file for t in ckpt.tensors.values()}) == 3
    assert len(ckpt.experts()) == 2 * 3 * 3
    for ref in ckpt.experts():
        torch.testing.assert_close(ckpt.read_matrix(ref), tensors[ref.tensor])
    assert {s.reason for s in ckpt.skipped} == {"1-D tensor (norm, bias or scalar)"}


def test_fingerprint_changes_with_weights(tmp_path):
    cfg = {"model_type": "mixtral", "hidden_size": 16, "num_hidden_layers": 2}
    a = open_checkpoint(_write(tmp_path / "a", cfg, _mixtral_tensors(seed=0))).fingerprint
    b = open_checkpoint(_write(tmp_path / "b", cfg, _mixtral_tensors(seed=1))).fingerprint
    a2 = open_checkpoint(tmp_path / "a").fingerprint
    assert a == a2 and a != b and len(a) == 16


def test_transformers_v5_fused_experts_out_in(tmp_path):
    g = torch.Generator().manual_seed(0)
    gate_up = torch.randn(4, 2 * 24, 16, generator=g)  # [E, 2I, H]
    down = torch.randn(4, 16, 24, generator=g)  # [E, H, I]
    path = _write(
        tmp_path / "v5",
        {"model_type": "qwen3_moe", "hidden_size": 16, "num_hidden_layers": 1},
        {
            "model.layers.0.mlp.experts.gate_up_proj": gate_up,
            "model.layers.0.mlp.experts.down_proj": down,
            "model.layers.0.mlp.gate.weight": torch.randn(4, 16, generator=g),
        },
    )
    ckpt = open_checkpoint(path)
    refs = {m.name: m for m in ckpt.experts()}
    assert len(refs) == 12
    torch.testing.assert_close(
        ckpt.read_matrix(refs["model.layers.0.mlp.experts.gate_up_proj[1].gate"]), gate_up[1, :24]
    )
    torch.testing.assert_close(ckpt.read_matrix(refs["model.layers.0.mlp.experts.gate_up_proj[1].up"]), gate_up[1, 24:])
    torch.testing.assert_close(ckpt.read_matrix(refs["model.layers.0.mlp.experts.down_proj[3]"]), down[3])


def test_fp8_block_dequantization_and_mtp_layer_ignored(tmp_path):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(256, 384, generator=g)
    scale_inv = torch.rand(2, 3, generator=g) + 0.5  # one scale per 128x128 block
    w8 = (w / scale_inv.repeat_interleave(128, 0).repeat_interleave(128, 1)).to(torch.float8_e4m3fn)
    name = "model.layers.0.mlp.experts.0.gate_proj.weight"
    tensors = {
        name: w8,
        name + "_scale_inv": scale_inv,
        "model.layers.1.mlp.experts.0.gate_proj.weight": torch.randn(256, 384, generator=g),
    }  # MTP layer
    config = {
        "model_type": "deepseek_v3",
        "hidden_size": 384,
        "num_hidden_layers": 1,
        "quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]},
    }
    ckpt = open_checkpoint(_write(tmp_path / "fp8", config, tensors))
    (ref,) = ckpt.experts()
    got = ckpt.read_matrix(ref)
    expected = w8.float() * scale_inv.repeat_interleave(128, 0).repeat_interleave(128, 1)
    torch.testing.assert_close(got, expected)
    assert torch.allclose(got, w, rtol=0.13, atol=0.02)  # FP8 keeps ~3 mantissa bits
    reasons = {s.name: s.reason for s in ckpt.skipped}
    assert "multi-token-prediction" in reasons["model.layers.1.mlp.experts.0.gate_proj.weight"]
    assert reasons[name + "_scale_inv"] == "quantization scales"


def test_qwen_mtp_block_and_mamba_a_log_are_not_matrices(tmp_path):
    g = torch.Generator().manual_seed(0)
    expert = "model.layers.0.mlp.experts.0.gate_proj.weight"
    tensors = {
        expert: torch.randn(8, 16, generator=g),
        "mtp.layers.0.mlp.experts.0.gate_proj.weight": torch.randn(8, 16, generator=g),  # hub Qwen3-Next MTP block
        "mtp.fc.weight": torch.randn(16, 32, generator=g),
        "model.layers.0.mamba.A_log": torch.randn(32, 4, generator=g),  # Jamba's Mamba-1 [d_inner, d_state]
    }
    ckpt = open_checkpoint(_write(tmp_path / "q", {"model_type": "qwen3_next", "hidden_size": 16}, tensors))
    assert [m.name for m in ckpt.experts()] == [expert]
    reasons = {s.name: s.reason for s in ckpt.skipped}
    assert "multi-token-prediction" in reasons["mtp.layers.0.mlp.experts.0.gate_proj.weight"]
    assert "multi-token-prediction" in reasons["mtp.fc.weight"]
    assert "A_log" in reasons["model.layers.0.mamba.A_log"]


def test_mxfp4_decoding_by_hand():
    blocks = torch.tensor([[[0x21] + [0] * 15]], dtype=torch.uint8)  # codes: low 1 (0.5), high 2 (1.0)
    scales = torch.tensor([[128]], dtype=torch.uint8)  # 2^(128-127) = 2
    values = dequantize_mxfp4(blocks, scales)  # [1, 32]
    assert values.shape == (1, 32)
    assert values[0, :2].tolist() == [1.0, 2.0] and values[0, 2:].abs().sum() == 0
    assert FP4_E2M1_VALUES[15] == -6.0


def test_gpt_oss_mxfp4_experts(tmp_path):
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (2, 48, 1, 16), dtype=torch.uint8, generator=g)  # [E, 2I, H/32, 16], H=32
    scales = torch.randint(120, 130, (2, 48, 1), dtype=torch.uint8, generator=g)
    prefix = "model.layers.0.mlp.experts.gate_up_proj"
    path = _write(
        tmp_path / "oss",
        {"model_type": "gpt_oss", "hidden_size": 32, "num_hidden_layers": 1},
        {prefix + "_blocks": blocks, prefix + "_scales": scales},
    )
    ckpt = open_checkpoint(path)
    refs = {m.name: m for m in ckpt.experts()}
    gate = ckpt.read_matrix(refs[prefix + "[1].gate"])
    full = dequantize_mxfp4(blocks[1], scales[1])  # [2I, H]
    assert gate.shape == (24, 32)
    torch.testing.assert_close(gate, full[0::2])


@pytest.mark.parametrize(
    "problem",
    [
        "missing",
        "file",
        "no_config",
        "no_safetensors",
        "truncated",
        "bad_json",
        "index_missing_tensor",
        "index_missing_shard",
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, problem):
    path = tmp_path / "ckpt"
    cfg = {"model_type": "mixtral", "hidden_size": 16, "num_hidden_layers": 2}
    if problem == "missing":
        path = tmp_path / "nope"
    elif problem == "file":
        path.write_text("x")
    elif problem == "no_config":
        path.mkdir()
        save_file({"a": torch.zeros(2, 2)}, str(path / "model.safetensors"))
    elif problem == "no_safetensors":
        path.mkdir()
        (path / "config.json").write_text(json.dumps(cfg))
        (path / "pytorch_model.bin").write_bytes(b"\0")
    elif problem == "truncated":
        _write(path, cfg, _mixtral_tensors())
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif problem == "bad_json":
        path.mkdir()
        (path / "config.json").write_text(json.dumps(cfg))
        (path / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"{not}")
    elif problem == "index_missing_tensor":
        _write(path, cfg, _mixtral_tensors(), shards=2)
        index = json.loads((path / "model.safetensors.index.json").read_text())
        index["weight_map"]["model.layers.9.extra.weight"] = "model-00001-of-00002.safetensors"
        (path / "model.safetensors.index.json").write_text(json.dumps(index))
    elif problem == "index_missing_shard":
        _write(path, cfg, _mixtral_tensors(), shards=2)
        (path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    assert ";" in message  # problem; fix


def test_roles_of_non_expert_matrices(tmp_path):
    ckpt = open_checkpoint(
        _write(tmp_path / "m", {"model_type": "mixtral", "hidden_size": 16, "num_hidden_layers": 2}, _mixtral_tensors())
    )
    roles = {m.name: m.role for m in ckpt.matrices}
    assert roles["model.embed_tokens.weight"] is Role.EMBEDDING
    assert roles["lm_head.weight"] is Role.LM_HEAD
    assert roles["model.layers.1.block_sparse_moe.gate.weight"] is Role.ROUTER


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_read_array_equals_read_matrix_for_plain_and_fused_tensors(tmp_path, dtype):
    import numpy as np

    g = torch.Generator().manual_seed(1)
    tensors = {k: v.to(dtype) for k, v in _mixtral_tensors(layers=1, experts=2).items()}
    tensors["model.layers.0.mlp.experts.gate_up_proj"] = torch.randn(3, 2 * 24, 16, generator=g).to(dtype)  # [E, 2I, H]
    tensors["model.layers.0.mlp.experts.down_proj"] = torch.randn(3, 24, 16, generator=g).to(dtype)  # [E, I, H]: in_out
    plain = open_checkpoint(_write(tmp_path / "plain", {"model_type": "mixtral", "hidden_size": 16}, tensors))
    fused = open_checkpoint(
        _write(
            tmp_path / "fused",
            {"model_type": "qwen3_moe", "hidden_size": 16},
            {k: v for k, v in tensors.items() if ".mlp." in k},
        )
    )
    refs = plain.matrices + fused.matrices
    assert any(r.fused and r.orientation == "in_out" for r in fused.matrices)
    assert {r.fused_part for r in fused.matrices} >= {"gate", "up"}
    for ckpt in (plain, fused):
        for ref in ckpt.matrices:
            got = ckpt.read_array(ref)
            assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.flags.c_contiguous
            np.testing.assert_array_equal(got, ckpt.read_matrix(ref).numpy())
    assert len(refs) > 10
