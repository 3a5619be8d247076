"""open_in_memory: a state dict classified as a folder is, fused experts split, tied and integer tensors left out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alphaq.errors import CheckpointError
from alphaq.load.in_memory import is_in_memory, open_in_memory

E, H, INTER = 4, 16, 24  # experts, hidden, expert intermediate


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    p = "model.layers.0.mlp"
    embed = torch.randn(32, H, generator=g)
    return {
        "model.embed_tokens.weight": embed,
        f"{p}.gate.weight": torch.randn(E, H, generator=g),
        f"{p}.experts.gate_up_proj": torch.randn(E, 2 * INTER, H, generator=g).to(torch.bfloat16),  # [E, 2I, H]
        f"{p}.experts.down_proj": torch.randn(E, H, INTER, generator=g),  # [E, H, I]
        "model.layers.0.input_layernorm.weight": torch.ones(H),
        "model.layers.0.self_attn.position_ids": torch.arange(2 * H).reshape(2, H),  # an integer buffer
        "lm_head.weight": embed,  # tied
    }


def test_fused_experts_are_split_per_expert_and_read_as_their_slices():
    state = _state()
    ckpt = open_in_memory(state, model_config={"model_type": "qwen3_moe", "hidden_size": H})
    experts = ckpt.experts()
    assert len(experts) == E * 3
    gate = next(m for m in experts if m.expert == 2 and m.proj == "gate")
    up = next(m for m in experts if m.expert == 2 and m.proj == "up")
    down = next(m for m in experts if m.expert == 2 and m.proj == "down")
    assert (gate.shape, up.shape, down.shape) == ((INTER, H), (INTER, H), (H, INTER))
    assert gate.dtype == "BF16" and down.dtype == "F32"
    fused = state["model.layers.0.mlp.experts.gate_up_proj"][2].float()
    np.testing.assert_array_equal(ckpt.read_array(gate), fused[:INTER].numpy())
    np.testing.assert_array_equal(ckpt.read_array(up), fused[INTER:].numpy())
    np.testing.assert_array_equal(ckpt.read_matrix(down).numpy(), state["model.layers.0.mlp.experts.down_proj"][2])
    assert ckpt.num_experts == E and ckpt.model_type == "qwen3_moe"


def test_tied_and_integer_tensors_are_skipped_with_a_reason():
    ckpt = open_in_memory(_state(), model_config={"model_type": "qwen3_moe"})
    names = {m.name for m in ckpt.matrices}
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    reasons = {s.name: s.reason for s in ckpt.skipped}
    assert reasons["lm_head.weight"] == "tied to model.embed_tokens.weight (same storage)"
    assert reasons["model.layers.0.self_attn.position_ids"].startswith("I64 tensor")
    assert "1-D" in reasons["model.layers.0.input_layernorm.weight"]


def test_a_plain_matrix_read_is_a_copy():
    state = _state()
    ckpt = open_in_memory(state, model_config={"model_type": "qwen3_moe"})
    router = next(m for m in ckpt.matrices if m.proj == "router")
    matrix = ckpt.read_matrix(router)
    matrix.zero_()
    assert state["model.layers.0.mlp.gate.weight"].abs().sum() > 0


def test_fingerprint_covers_every_byte_and_the_config():
    base = open_in_memory(_state(), model_config={"model_type": "qwen3_moe"}).fingerprint
    assert open_in_memory(_state(), model_config={"model_type": "qwen3_moe"}).fingerprint == base
    changed = _state()
    changed["model.layers.0.mlp.experts.down_proj"][3, 5, 7] += 1.0
    assert open_in_memory(changed, model_config={"model_type": "qwen3_moe"}).fingerprint != base
    assert open_in_memory(_state(), model_config={"model_type": "olmoe"}).fingerprint != base
    assert len(base) == 16


def test_a_meta_tensor_is_refused_when_read():
    state = {"model.layers.0.mlp.experts.0.up_proj.weight": torch.empty(INTER, H, device="meta")}
    ckpt = open_in_memory(state)  # per-expert names: readable without a config
    with pytest.raises(CheckpointError, match="meta device"):
        ckpt.read_matrix(ckpt.matrices[0])


def test_paths_and_ids_are_not_in_memory(tmp_path):
    assert not is_in_memory(None) and not is_in_memory("owner/name") and not is_in_memory(tmp_path)
    assert is_in_memory({}) and is_in_memory(torch.nn.Linear(2, 2))
