from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from alphaq.errors import PlanError
from alphaq.evaluation.simulate import apply_plan, checks_frame
from alphaq.load import open_checkpoint
from alphaq.load.model import load_model
from alphaq.planning.planner import PlanConfig
from alphaq.planning.run import run_plan
from alphaq.zoo.demo import demo_model_path


@pytest.fixture(scope="module")
def mixed_plan(tmp_path_factory: pytest.TempPathFactory):
    """A per-matrix random plan: gate, up and down of one expert get different widths."""
    run_dir = tmp_path_factory.mktemp("plan")
    return run_plan(None, PlanConfig(budget="3", granularity="matrix", allocator="random", seed=3), run_dir)


def test_fused_expert_views_match_checkpoint_tensors() -> None:
    model, _ = load_model()
    ckpt = open_checkpoint(demo_model_path())
    experts = model.model.layers[1].mlp.experts
    inter = experts.gate_up_proj.shape[1] // 2
    for proj, expected in (
        ("w1", experts.gate_up_proj[2, :inter]),
        ("w3", experts.gate_up_proj[2, inter:]),
        ("w2", experts.down_proj[2]),
    ):
        name = f"model.layers.1.block_sparse_moe.experts.2.{proj}.weight"
        stored = ckpt.read_tensor(name).to(torch.float32)
        assert torch.equal(stored, expected.detach())


def test_simulated_plan_equals_quantized_checkpoint(mixed_plan, tmp_path: Path) -> None:
    from alphaq.quantization.loading import load_quantized
    from alphaq.quantization.run import run_quantize

    plan = mixed_plan.plan
    widths = {(t.layer, t.expert): set() for t in plan.tensors if t.role == "expert"}
    for t in plan.tensors:
        if t.role == "expert":
            widths[(t.layer, t.expert)].add(t.bits)
    assert any(len(w) > 1 for w in widths.values())  # the test can tell w1 from w3
    run_quantize(None, mixed_plan.run_dir / "plan.json", tmp_path / "q")
    quantized, _ = load_quantized(tmp_path / "q")
    model, _ = load_model()
    result = apply_plan(model, plan)
    planned = sum(t.bits < 16 for t in plan.tensors)
    assert len(result.checks) == planned and result.kept == len(plan.tensors) - planned
    ids = torch.randint(0, model.config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        simulated, packed = model(ids).logits, quantized(ids).logits
    assert torch.allclose(simulated, packed, atol=1e-4, rtol=1e-4)
    frame = checks_frame(result)
    assert (frame["rel_error"] > 0).all()
    # rtn, full rows: the measured error equals the plan's predicted (measured-model) error closely
    assert (frame["rel_error"] - frame["predicted_error"]).abs().max() < 0.05


def test_plan_for_another_model_is_rejected(mixed_plan) -> None:
    import dataclasses

    plan = mixed_plan.plan
    bad = next(t for t in plan.tensors if t.bits < 16)
    broken = dataclasses.replace(
        plan, tensors=(dataclasses.replace(bad, tensor="model.layers.0.nope.weight"),), plan_fingerprint=""
    )
    model, _ = load_model()
    with pytest.raises(PlanError):
        apply_plan(model, broken)


@pytest.mark.parametrize("model_type", ["gpt_oss", "mixtral"])
def test_fused_3d_experts_are_simulated_in_their_slice(model_type: str, tmp_path: Path) -> None:
    """GPT-OSS keeps its experts fused in 3-D in the checkpoint and in the model ([E, H, 2I] gate|up interleaved,
    [E, I, H] down); Mixtral's per-expert checkpoint matrices are merged by transformers into [E, 2I, H]. Each
    planned matrix is quantized in the very slice that holds it: the model's slice equals the quantize-dequantized
    checkpoint matrix, and every other value is untouched."""
    from alphaq.load.checkpoint import MatrixRef
    from alphaq.planning.plan_file import Plan
    from alphaq.quantization.layout import QuantSpec
    from alphaq.quantization.methods import quantize_dequantize
    from tests.fixtures.tiny_models import SPECS, make_tiny_checkpoint

    spec = next(s for s in SPECS if s.model_type == model_type)
    src = make_tiny_checkpoint(spec, tmp_path / "src")
    for name in ("tokenizer.json", "tokenizer_config.json"):  # load_model loads a tokenizer too
        shutil.copy(demo_model_path() / name, src / name)
    ckpt = open_checkpoint(src)
    plan: Plan = run_plan(
        src, PlanConfig(budget="3", granularity="matrix", allocator="random", seed=5, sweep_allocators=()), tmp_path
    ).plan
    model, _ = load_model(src)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = apply_plan(model, plan)
    assert len(result.checks) == sum(t.bits < 16 for t in plan.tensors) > 0
    refs: dict[str, MatrixRef] = {m.name: m for m in ckpt.matrices}
    experts = model.model.layers[0].mlp.experts
    expected_gate_up = before["model.layers.0.mlp.experts.gate_up_proj"].clone()
    expected_down = before["model.layers.0.mlp.experts.down_proj"].clone()
    for t in plan.tensors:
        if t.layer != 0 or t.expert is None:
            continue
        w = ckpt.read_matrix(refs[t.name])  # [out, in] as alphaq read it
        w_hat = w if t.bits >= 16 else quantize_dequantize(w, QuantSpec(t.bits, int(t.group_size)), method="rtn")
        if model_type == "gpt_oss":  # [E, in, out], gate/up interleaved along out
            if t.proj == "down":
                expected_down[t.expert] = w_hat.T
            else:
                expected_gate_up[t.expert, :, (0 if t.proj == "gate" else 1) :: 2] = w_hat.T
        else:  # [E, out, in], gate rows then up rows
            inter = experts.down_proj.shape[-1]
            if t.proj == "down":
                expected_down[t.expert] = w_hat
            else:
                rows = slice(0, inter) if t.proj == "gate" else slice(inter, 2 * inter)
                expected_gate_up[t.expert, rows] = w_hat
    torch.testing.assert_close(experts.gate_up_proj.detach(), expected_gate_up, rtol=0, atol=1e-6)
    torch.testing.assert_close(experts.down_proj.detach(), expected_down, rtol=0, atol=1e-6)
    assert not torch.equal(experts.gate_up_proj.detach(), before["model.layers.0.mlp.experts.gate_up_proj"])
