"""Every MoE ``model_type`` of the installed transformers: its routed experts are found, exactly.

For each config class with a num_experts-like attribute and a causal-LM class, the test builds a tiny random
model with transformers' own class (2 layers, 4 experts, hidden 64), saves it with ``save_pretrained`` and
checks that the matrices :func:`alphaq.load.open_checkpoint` marks ``expert`` are exactly the weights under the
model's routed-expert modules (3-D fused tensors split into one matrix per expert, gate|up halves split too).
A new transformers release is checked, not assumed: a new MoE type fails here until the table knows it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from alphaq.load import Role, open_checkpoint
from alphaq.load.support import EXPERTS_NOT_MATRICES, NOT_BUILT, support_markdown
from tests.fixtures.tiny_all import BUILT, MOE_TYPES, E, H, I, build_tiny

_UNDER_EXPERTS = re.compile(r"(?:^|\.)experts\.")
_ATTENTION_EXPERTS = re.compile(r"(?:^|\.)(?:self_attention|self_attn|attention|attn)\.experts\.")


def expected_experts(saved: dict[str, tuple[int, ...]]) -> set[str]:
    """alphaq's matrix names for the routed-expert weights of a saved state dict, from names and shapes alone.

    A routed-expert weight is a tensor under an ``experts`` module (not ``shared_experts``, not JetMoE's attention
    experts), or a 3-D tensor whose first dimension is the number of experts (Granite's ``input_linear``, Ergo's
    ``up_proj``). Per-expert 2-D weights are one matrix each; a fused tensor (3-D [E, a, b], or 2-D [E * a, b]
    stacked) is E matrices, two per expert (``.gate``, ``.up``) when one of its dims is 2 * I (gate|up).
    """
    names: set[str] = set()
    for tensor, shape in saved.items():
        if len(shape) < 2 or tensor.endswith(("bias", "_bias")) or _ATTENTION_EXPERTS.search(tensor):
            continue
        under = _UNDER_EXPERTS.search(tensor) is not None
        fused = len(shape) == 3 and shape[0] == E and not re.search(r"shared|attn|attention", tensor)
        if not under and not fused:
            continue
        if len(shape) == 2 and re.search(r"(?:^|\.)experts\.\d+\.", tensor):
            names.add(tensor)
            continue
        dims = shape[1:] if len(shape) == 3 else (shape[0] // E, shape[1])
        parts = (".gate", ".up") if 2 * I in dims else ("",)
        names.update(f"{tensor}[{e}]{part}" for e in range(E) for part in parts)
    return names


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """Build and save each type once: model_type -> (folder, {tensor: shape} as saved)."""
    from safetensors import safe_open

    cache: dict[str, tuple[Any, dict[str, tuple[int, ...]]]] = {}

    def get(model_type: str) -> tuple[Any, dict[str, tuple[int, ...]]]:
        if model_type not in cache:
            folder = tmp_path_factory.mktemp(model_type)
            build_tiny(model_type).save_pretrained(folder, safe_serialization=True)
            shapes = {}
            for shard in sorted(folder.glob("*.safetensors")):
                with safe_open(str(shard), framework="pt") as fh:
                    shapes.update({k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()})
            cache[model_type] = (folder, shapes)
        return cache[model_type]

    return get


def test_every_moe_type_is_built_or_explained():
    """No type is skipped silently: each is built below, or listed in NOT_BUILT with its reason."""
    assert len(MOE_TYPES) >= 60, MOE_TYPES  # 71 in transformers 5.25
    assert {"mixtral", "dbrx", "jetmoe", "nemotron_h", "gemma4_text", "granitemoehybrid"} <= set(BUILT)
    assert set(NOT_BUILT) <= set(MOE_TYPES), "stale NOT_BUILT entry"
    assert set(EXPERTS_NOT_MATRICES) <= set(BUILT)
    assert all(
        reason.strip() and "\n" not in reason for reason in (*NOT_BUILT.values(), *EXPERTS_NOT_MATRICES.values())
    )


@pytest.mark.parametrize("model_type", BUILT)
def test_routed_experts_found_exactly(model_type, saved_tiny):
    folder, shapes = saved_tiny(model_type)
    expected = expected_experts(shapes)
    ckpt = open_checkpoint(folder)
    found = {m.name for m in ckpt.matrices if m.role is Role.EXPERT}
    if model_type in EXPERTS_NOT_MATRICES:
        assert expected == set() and found == set()
        return
    assert expected, f"{model_type}: the tiny model has no routed-expert weight; fix its OVERRIDES"
    assert found == expected, (sorted(expected - found)[:4], sorted(found - expected)[:4])
    experts = ckpt.experts()
    assert {m.expert for m in experts} == set(range(E))
    assert ckpt.num_experts == E
    for m in experts:  # every expert matrix reads back at its header shape
        assert m.shape[0] in (H, I) or m.shape[1] in (H, I), m


#: Roles the audit used to get wrong (issue 24), one tensor each: (model_type, tensor-name suffix, role).
ROLES = [
    ("hunyuan_v1_moe", "layers.1.mlp.gate.wg.weight", Role.ROUTER),
    ("hunyuan_v1_moe", "layers.1.mlp.shared_mlp.gate_proj.weight", Role.SHARED_EXPERT),
    ("afmoe", "layers.1.mlp.router.gate.weight", Role.ROUTER),
    ("hy_v3", "layers.1.mlp.router.gate.weight", Role.ROUTER),
    ("hy_v3", "layers.1.mlp.shared_mlp.down_proj.weight", Role.SHARED_EXPERT),
    ("longcat_flash", "layers.1.mlp.router.classifier.weight", Role.ROUTER),
    ("longcat_flash", "layers.1.self_attn.0.q_a_proj.weight", Role.ATTENTION),
    ("longcat_flash", "layers.1.self_attn.1.o_proj.weight", Role.ATTENTION),
    ("granitemoe_swa", "layers.1.shared_mlp.input_linear.weight", Role.SHARED_EXPERT),
    ("granitemoehybrid", "layers.1.shared_mlp.output_linear.weight", Role.SHARED_EXPERT),
    ("kimi_linear", "layers.1.block_sparse_moe.shared_experts.up_proj.weight", Role.SHARED_EXPERT),
    ("kimi_linear", "layers.1.self_attn.f_a_proj.weight", Role.ATTENTION),
    ("kimi_linear", "layers.1.self_attn.g_b_proj.weight", Role.ATTENTION),
    ("kimi_linear", "layers.1.self_attn.b_proj.weight", Role.ATTENTION),
    ("minimax_m3_vl_text", "layers.1.mlp.shared_experts.gate_up_proj.weight", Role.SHARED_EXPERT),
    ("zaya", "layers.1.self_attn.qkv_proj.q_proj.weight", Role.ATTENTION),
    ("zaya", "layers.1.self_attn.qkv_proj.v_proj_delayed.weight", Role.ATTENTION),
    ("zaya", "layers.1.mlp.gate.router_mlp.fc1.weight", Role.ROUTER),
    ("nemotron_h", "layers.0.mixer.q_proj.weight", Role.ATTENTION),
    ("nemotron_h", "layers.0.mixer.o_proj.weight", Role.ATTENTION),
    ("nemotron_h", "layers.1.mixer.gate.weight", Role.ROUTER),
    ("nemotron_h", "layers.1.mixer.shared_experts.up_proj.weight", Role.SHARED_EXPERT),
    ("qwen3_next", "layers.1.linear_attn.in_proj_qkvz.weight", Role.ATTENTION),
    ("qwen3_next", "layers.1.linear_attn.out_proj.weight", Role.ATTENTION),
    ("qwen3_5_moe_text", "layers.1.linear_attn.in_proj_qkv.weight", Role.ATTENTION),
    ("qwen3_5_moe_text", "layers.1.linear_attn.in_proj_z.weight", Role.ATTENTION),
    ("minimax", "layers.1.self_attn.out_proj.weight", Role.ATTENTION),
    ("minimax", "layers.1.self_attn.output_gate.weight", Role.ATTENTION),
    ("lfm2_moe", "layers.0.conv.in_proj.weight", Role.ATTENTION),
    ("lfm2_moe", "layers.1.self_attn.out_proj.weight", Role.ATTENTION),
    ("dbrx", "blocks.1.ffn.router.layer.weight", Role.ROUTER),
    ("dbrx", "blocks.1.norm_attn_norm.attn.Wqkv.weight", Role.ATTENTION),
    ("gemma4_text", "layers.1.router.proj.weight", Role.ROUTER),
    ("gemma4_text", "layers.1.mlp.gate_proj.weight", Role.DENSE_MLP),
    ("deepseek_v4", "layers.1.ffn.shared_experts.w1.weight", Role.SHARED_EXPERT),
    ("deepseek_v4", "layers.1.attn.wq_a.weight", Role.ATTENTION),
    ("ergo", "layers.1.feed_forward.gate_kernel", Role.ROUTER),
    ("ergo", "layers.1.feed_forward.shared_up_proj", Role.SHARED_EXPERT),
    ("doge", "layers.1.mlp.router_gate.weight", Role.ROUTER),
]


@pytest.mark.parametrize(("model_type", "suffix", "role"), ROLES, ids=[f"{t}:{s}" for t, s, _ in ROLES])
def test_role_of_each_named_tensor(model_type, suffix, role, saved_tiny):
    if model_type not in BUILT:
        pytest.fail(f"{model_type} is no longer built; update ROLES")
    folder, _ = saved_tiny(model_type)
    roles = {m.name: m.role for m in open_checkpoint(folder).matrices}
    names = [n for n in roles if n == suffix or n.endswith("." + suffix)]
    assert len(names) == 1, (suffix, sorted(roles)[:8])
    assert roles[names[0]] is role


def test_dbrx_stacked_experts_read_as_the_module_computes(saved_tiny):
    """DBRX stores experts stacked in 2-D [E * I, H]; each expert's slice reads back as the live weights."""
    from safetensors.torch import load_file

    folder, _ = saved_tiny("dbrx")
    raw = load_file(str(next(folder.glob("*.safetensors"))))
    ckpt = open_checkpoint(folder)
    by_name = {m.name: m for m in ckpt.matrices}
    stem = "transformer.blocks.1.ffn.experts.mlp."
    for proj, tensor in (("gate", "w1"), ("up", "v1"), ("down", "w2")):
        ref = by_name[f"{stem}{tensor}[2]"]
        assert ref.proj == proj
        block = raw[stem + tensor].view(E, I, H)[2]  # [I, H]
        expected = block.T if proj == "down" else block  # down is stored transposed: [out=H, in=I] after .T
        torch.testing.assert_close(ckpt.read_matrix(ref), expected.float())
        torch.testing.assert_close(torch.from_numpy(ckpt.read_array(ref)), expected.float())


def test_docs_architectures_holds_the_current_support_table() -> None:
    """docs/architectures.md's per-type table is generated from the expectations these tests check."""
    from pathlib import Path

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    table = support_markdown(MOE_TYPES, dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES))
    doc = (Path(__file__).resolve().parents[2] / "docs" / "architectures.md").read_text(encoding="utf-8")
    assert table in doc, (
        "docs/architectures.md is stale: paste alphaq.load.support.support_markdown(...) (see its test)"
    )
