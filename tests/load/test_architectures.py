"""The loader reads every architecture's real format (checkpoints saved by transformers' own classes)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from alphaq.load import Role, open_checkpoint
from alphaq.load.architectures import match_tensor, spec_for
from tests.fixtures.tiny_models import SPECS, E, H, I, L


@pytest.mark.parametrize("spec", SPECS, ids=[s.model_type for s in SPECS])
def test_counts_layers_experts_projections(spec, tiny_checkpoints):
    ckpt = open_checkpoint(tiny_checkpoints[spec.model_type])
    roles = Counter(m.role for m in ckpt.matrices)
    assert roles[Role.EXPERT] == spec.expert_matrices
    assert roles[Role.SHARED_EXPERT] == spec.shared_matrices
    assert roles[Role.DENSE_MLP] == spec.dense_matrices
    assert roles[Role.EMBEDDING] == 1
    experts = ckpt.experts()
    keys = Counter((m.layer, m.expert) for m in experts)
    assert len(keys) == spec.moe_layers * E and set(keys.values()) == {3}
    assert Counter(m.proj for m in experts) == {p: spec.moe_layers * E for p in ("gate", "up", "down")}
    assert ckpt.num_experts == E
    # Expert matrices have Linear orientation [out, in]: gate/up [I, H], down [H, I].
    for m in experts:
        assert m.shape == ((H, I) if m.proj == "down" else (I, H)), m
    assert sum(1 for m in ckpt.matrices if m.role is Role.ROUTER and m.proj == "router") == spec.moe_layers


_UNFUSED_OR_SWIGLU = [s for s in SPECS if s.model_type != "gpt_oss"]  # GPT-OSS: see the split test below


@pytest.mark.parametrize("spec", _UNFUSED_OR_SWIGLU, ids=[s.model_type for s in _UNFUSED_OR_SWIGLU])
def test_expert_matrices_equal_the_live_modules(spec, tiny_checkpoints):
    """Each matrix read back equals what the model's own module computes with (fused ones split right)."""
    import transformers

    path = tiny_checkpoints[spec.model_type]
    model = getattr(transformers, spec.model_class).from_pretrained(path, dtype=torch.float32)
    ckpt = open_checkpoint(path)
    layer = ckpt.experts()[0].layer
    x = torch.randn(5, H, generator=torch.Generator().manual_seed(0))
    for expert in (0, E - 1):
        mats = {m.proj: ckpt.read_matrix(m) for m in ckpt.experts() if m.layer == layer and m.expert == expert}
        ours = _expert_forward(mats, x, spec.model_type)
        theirs = _module_expert_forward(model, layer, expert, x, spec.model_type)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


def _expert_forward(mats, x, model_type):
    gate, up = x @ mats["gate"].T, x @ mats["up"].T
    return (torch.nn.functional.silu(gate) * up) @ mats["down"].T


def _module_expert_forward(model, layer, expert, x, model_type):
    block = model.model.layers[layer]
    moe = getattr(block, "block_sparse_moe", None) or block.mlp
    experts = moe.experts
    if hasattr(experts, "gate_up_proj"):  # transformers v5 fused experts
        gate_up = experts.gate_up_proj[expert]
        down = experts.down_proj[expert]
        if gate_up.shape[-1] == H:  # [2I, H]
            gate, up = (x @ gate_up.T).chunk(2, dim=-1)
        else:
            gate, up = (x @ gate_up).chunk(2, dim=-1)
        down_out = torch.nn.functional.silu(gate) * up
        return down_out @ (down.T if down.shape[-1] == I else down)
    if hasattr(moe, "input_linear"):
        gate, up = (x @ moe.input_linear.weight[expert].T).chunk(2, dim=-1)
        return (torch.nn.functional.silu(gate) * up) @ moe.output_linear.weight[expert].T
    e = experts[expert]
    names = ("w1", "w3", "w2") if hasattr(e, "w1") else ("gate_proj", "up_proj", "down_proj")
    gate, up = x @ getattr(e, names[0]).weight.T, x @ getattr(e, names[1]).weight.T
    return (torch.nn.functional.silu(gate) * up) @ getattr(e, names[2]).weight.T


def test_gpt_oss_split_is_interleaved_and_transposed(tiny_checkpoints):
    from safetensors.torch import load_file

    path = tiny_checkpoints["gpt_oss"]
    raw = load_file(str(path / "model.safetensors"))["model.layers.1.mlp.experts.gate_up_proj"]  # [E, H, 2I]
    ckpt = open_checkpoint(path)
    by_name = {m.name: m for m in ckpt.matrices}
    gate = ckpt.read_matrix(by_name["model.layers.1.mlp.experts.gate_up_proj[2].gate"])
    up = ckpt.read_matrix(by_name["model.layers.1.mlp.experts.gate_up_proj[2].up"])
    torch.testing.assert_close(gate, raw[2][:, 0::2].T.float())
    torch.testing.assert_close(up, raw[2][:, 1::2].T.float())


def test_router_is_not_an_expert_projection():
    spec = spec_for("qwen2_moe")
    assert match_tensor(spec, "model.layers.3.mlp.gate.weight").rule.role is Role.ROUTER
    assert match_tensor(spec, "model.layers.3.mlp.experts.7.gate_proj.weight").rule.role is Role.EXPERT
    assert match_tensor(spec, "model.layers.3.mlp.shared_expert_gate.weight").proj == "shared_gate"
    m = match_tensor(spec, "model.language_model.layers.12.mlp.experts.5.down_proj.weight")
    assert (m.layer, m.expert, m.proj) == (12, 5, "down")


def test_unknown_model_type_uses_generic_patterns(tmp_path, tiny_checkpoints):
    import json
    import shutil

    target = tmp_path / "renamed"
    shutil.copytree(tiny_checkpoints["olmoe"], target)
    config = json.loads((target / "config.json").read_text())
    config["model_type"] = "brand_new_moe"
    (target / "config.json").write_text(json.dumps(config))
    ckpt = open_checkpoint(target)
    assert len(ckpt.experts()) == L * E * 3


def test_docs_architecture_table_is_current():
    from pathlib import Path

    from alphaq.load.architectures import architectures_markdown

    doc = (Path(__file__).resolve().parents[2] / "docs" / "architectures.md").read_text()
    assert architectures_markdown() in doc
