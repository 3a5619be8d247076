"""GPTQ: the algorithm's values against RTN and a plain reference, calibration Hessians, ``alphaq quantize --method gptq``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from alphaq.cli import app
from alphaq.errors import ConfigError
from alphaq.load import open_checkpoint
from alphaq.quantization import QuantSpec, dequantize_groupwise, quantize_groupwise
from alphaq.quantization import run as qrun
from alphaq.quantization.calibration import capture_hessians
from alphaq.quantization.gptq import inverse_hessian_factor, output_error, quantize_gptq
from alphaq.quantization.primitives import codes, group_params, round_zero_points
from alphaq.quantization.shards import read_quantized_tensors
from alphaq.quantization.writer import base_name
from tests.quantization.quantize_helpers import make_plan

runner = CliRunner()
TEXT = (
    "The river ran past the old mill, and the miller's sons watched the water rise over the stones. "
    "In the evening they walked to the village, where the baker sold bread and the smith mended tools. "
)


def correlated_inputs(n: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Inputs [n, cols] with strongly correlated columns (what makes GPTQ's error spreading pay off)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5
    return torch.randn(n, cols, generator=g) @ mix + 0.1 * torch.randn(n, cols, generator=g)


def plain_gptq(w: torch.Tensor, h: torch.Tensor, spec: QuantSpec, damp: float = 0.01) -> torch.Tensor:
    """The paper's algorithm column by column in float64 (no blocks): the dequantized weight [R, C]."""
    w = w.to(torch.float64).clone()
    cols = w.shape[1]
    h = h.to(torch.float64) + damp * float(h.diagonal().mean()) * torch.eye(cols, dtype=torch.float64)
    u = torch.linalg.cholesky(torch.linalg.inv(h), upper=True)  # [C, C]
    out = torch.zeros_like(w)
    for j in range(cols):
        if j % spec.group_size == 0:
            group = w[:, j : j + spec.group_size].to(torch.float32)
            s16, z16 = group_params(group.amin(1), group.amax(1), spec.max_code)
            s, z = s16.to(torch.float64).unsqueeze(1), z16.to(torch.float64).unsqueeze(1)
        q = codes(w[:, j : j + 1], s, z, spec.max_code)
        out[:, j : j + 1] = (q - z) * s
        e = (w[:, j : j + 1] - out[:, j : j + 1]) / u[j, j]
        w[:, j:] -= e @ u[j : j + 1, j:]
    return out


# -- the algorithm -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_gptq_lowers_output_error_below_rtn_on_correlated_inputs(bits: int) -> None:
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    x = correlated_inputs(2048, 256)
    spec = QuantSpec(bits, 128)
    gptq = output_error(x, w, dequantize_groupwise(quantize_gptq(w, 2 * x.T @ x, spec)))
    rtn = output_error(x, w, dequantize_groupwise(quantize_groupwise(w, spec)))
    assert gptq < 0.9 * rtn, (bits, gptq, rtn)


@pytest.mark.parametrize(("bits", "group_size", "cols"), [(2, 128, 256), (3, 128, 200), (4, 32, 72), (8, 64, 128)])
def test_identity_hessian_is_exactly_rtn(bits: int, group_size: int, cols: int) -> None:
    w = torch.randn(48, cols, generator=torch.Generator().manual_seed(bits)) * 0.05
    spec = QuantSpec(bits, group_size)
    rtn = quantize_groupwise(w, spec)
    for h in (torch.eye(cols), torch.zeros(cols, cols)):  # zero: a matrix no calibration token reached
        got = quantize_gptq(w, h, spec)
        assert torch.equal(got.q, rtn.q) and torch.equal(got.scale, rtn.scale) and torch.equal(got.zero, rtn.zero)
    integer = quantize_gptq(w, torch.eye(cols), spec, integer_zeros=True)
    expected = round_zero_points(w, rtn)
    assert torch.equal(integer.q, expected.q) and torch.equal(integer.zero, expected.zero)
    assert torch.equal(integer.zero, torch.round(integer.zero))


@pytest.mark.parametrize(("group_size", "cols"), [(128, 256), (32, 96), (256, 256)])
def test_blocked_gptq_matches_the_plain_column_by_column_algorithm(group_size: int, cols: int) -> None:
    w = torch.randn(32, cols, generator=torch.Generator().manual_seed(3))
    x = correlated_inputs(1024, cols, seed=4)
    spec = QuantSpec(3, group_size)
    got = dequantize_groupwise(quantize_gptq(w, 2 * x.T @ x, spec)).to(torch.float64)
    want = plain_gptq(w, 2 * x.T @ x, spec)
    same = (got - want).abs() < 1e-6
    assert float(same.float().mean()) > 0.99  # float32 vs float64 may flip a rare tie
    assert output_error(x, w, got) == pytest.approx(output_error(x, w, want), rel=0.02)


def test_inverse_hessian_factor_dampens_and_handles_dead_inputs() -> None:
    x = correlated_inputs(512, 16)
    x[:, 5] = 0.0  # an input never active
    h = 2 * x.T @ x
    u = inverse_hessian_factor(h, 0.01).to(torch.float64)
    damped = h.to(torch.float64).clone()
    damped[5, 5] = 1.0
    damped += 0.01 * float(damped.diagonal().mean()) * torch.eye(16, dtype=torch.float64)
    torch.testing.assert_close(u.T @ u, torch.linalg.inv(damped), rtol=1e-3, atol=1e-5)
    assert torch.all(u[5, 6:] == 0) and torch.all(u[:5, 5] == 0)
    with pytest.raises(ValueError, match="expected"):
        quantize_gptq(torch.randn(4, 16), torch.eye(8), QuantSpec(4, 8))


# -- calibration -------------------------------------------------------------------------------------


def test_capture_hessians_reproduces_the_routing(tiny_checkpoints) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoints["mixtral"]), dtype=torch.float32).eval()
    cfg = model.config
    windows = torch.randint(0, cfg.vocab_size, (3, 16), generator=torch.Generator().manual_seed(0))
    layers = model.model.layers
    block_inputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(layers))}
    hooks = [
        layer.mlp.register_forward_pre_hook(
            lambda _m, args, i=i: block_inputs[i].append(args[0].reshape(-1, args[0].shape[-1]).clone())
        )
        for i, layer in enumerate(layers)
    ]
    sums = capture_hessians(model, windows, linear_names=["model.layers.0.self_attn.o_proj"], batch_windows=2)
    for hook in hooks:
        hook.remove()
    tokens = windows.numel()
    hidden, inter, experts = cfg.hidden_size, cfg.intermediate_size, cfg.num_local_experts
    for i in range(len(layers)):
        in_counts = [sums.counts.get((i, e, "in"), 0) for e in range(experts)]
        assert sum(in_counts) == tokens * cfg.num_experts_per_tok
        assert in_counts == [sums.counts.get((i, e, "down"), 0) for e in range(experts)]
        x = torch.cat(block_inputs[i])  # [T, H], both forward passes
        _, _, top_k = layers[i].mlp.gate(x)
        for e in range(experts):
            routed = x[(top_k == e).any(dim=1)]
            h_in = sums.hessian((i, e, "in"))
            if routed.shape[0] == 0:
                assert h_in is None
                continue
            assert h_in.shape == (hidden, hidden) and sums.hessian((i, e, "down")).shape == (inter, inter)
            torch.testing.assert_close(h_in, 2 * routed.T @ routed / routed.shape[0], rtol=1e-4, atol=1e-6)
            gate, up = (routed @ layers[i].mlp.experts.gate_up_proj[e].T).chunk(2, dim=-1)
            act = layers[i].mlp.experts.act_fn(gate) * up
            torch.testing.assert_close(
                sums.hessian((i, e, "down")), 2 * act.T @ act / act.shape[0], rtol=1e-4, atol=1e-6
            )
    assert sums.counts["model.layers.0.self_attn.o_proj"] == tokens


# -- alphaq quantize --method gptq -------------------------------------------------------------------


def _layer0_plan(ckpt, path: Path) -> Path:
    """Layer 0's experts at 2/3/4 bits, the rest kept (fast; load_quantized runs quantized experts only)."""

    def bits(m) -> int:
        return (2, 3, 4)[int(m.expert) % 3] if m.role.value == "expert" and m.layer == 0 else 16

    return make_plan(ckpt, path, bits, group_size=128)


def test_quantize_gptq_end_to_end_on_the_bundled_model(tmp_path: Path) -> None:
    from alphaq import load_quantized
    from alphaq.quantization.calibration import calibrate
    from alphaq.zoo.demo import demo_model_path

    ckpt = open_checkpoint(demo_model_path())
    plan = _layer0_plan(ckpt, tmp_path / "plan.json")
    text = tmp_path / "calib.txt"
    text.write_text(TEXT * 30, encoding="utf-8")
    out = tmp_path / "q"
    result = runner.invoke(
        app,
        [
            "quantize",
            "--plan",
            str(plan),
            "--out",
            str(out),
            "--method",
            "gptq",
            "--calibration-text",
            str(text),
            "--calibration-windows",
            "128",
            "--no-html",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "quantize.json").read_text())
    calib = manifest["options"]["calibration"]
    assert manifest["options"]["method"] == "gptq"
    assert calib["damp"] == 0.01 and calib["block_size"] == 128 and calib["act_order"] is False
    assert calib["text"]["path"] == "../calib.txt" and len(calib["text"]["sha256"]) == 64  # relative to out
    assert 1 <= calib["windows"] < 128 and calib["windows_asked"] == 128
    assert calib["tokens"] == calib["windows"] * calib["context"]
    assert any("fewer than the 128 asked" in w for w in manifest["warnings"])
    assert manifest["totals"]["bytes_match_plan"] is True
    assert manifest["totals"]["quantized_bytes"] == manifest["totals"]["predicted_bytes"]
    # the codes are GPTQ's with the text's Hessian (the library call reproduces them), not rtn's
    w1s = [m for m in ckpt.matrices if m.layer == 0 and m.role.value == "expert" and m.name.endswith(".w1.weight")]
    q_proj = next(m for m in ckpt.matrices if m.name == "model.layers.0.self_attn.q_proj.weight")
    cal = calibrate(ckpt.path, [*w1s, q_proj], text, windows=128)
    ref = next(m for m in w1s if cal.hessian(m) is not None)  # an expert this short text routes tokens to
    got = read_quantized_tensors(out, [base_name(ref)])[base_name(ref)].unpack()
    assert cal.hessian(q_proj).shape == (q_proj.shape[1],) * 2  # attention at a fixed width: its input captured
    w = ckpt.read_matrix(ref, dtype=torch.float32)
    spec = QuantSpec((2, 3, 4)[int(ref.expert) % 3], 128)  # the width _layer0_plan gives this expert
    want = quantize_gptq(w, cal.hessian(ref), spec)
    assert torch.equal(got.q, want.q) and torch.equal(got.scale, want.scale) and torch.equal(got.zero, want.zero)
    assert not torch.equal(got.q, quantize_groupwise(w, spec).q)
    model, _ = load_quantized(out)
    with torch.no_grad():
        logits = model(input_ids=torch.arange(8).unsqueeze(0)).logits
    assert bool(torch.isfinite(logits).all())


def test_python_api_runs_gptq_with_its_options_through_the_config(tmp_path: Path) -> None:
    """alphaq.quantize takes what `alphaq quantize --method gptq` takes, and GptqOptions the CLI has no flag for."""
    import alphaq
    from alphaq.quantization.calibration import calibrate
    from alphaq.quantization.gptq import GptqOptions
    from alphaq.zoo.demo import demo_model_path

    ckpt = open_checkpoint(demo_model_path())
    plan = _layer0_plan(ckpt, tmp_path / "plan.json")
    text = tmp_path / "calib.txt"
    text.write_text(TEXT * 30, encoding="utf-8")
    options = GptqOptions(damp=0.05, block_size=32)
    config = alphaq.QuantizeConfig(plan=plan, method="gptq", calibration_text=text, calibration_windows=2, gptq=options)
    result = alphaq.quantize(None, config, tmp_path / "q")
    calib = result.manifest["options"]["calibration"]
    assert result.manifest["options"]["method"] == "gptq" and (calib["damp"], calib["block_size"]) == (0.05, 32)
    assert calib["windows"] == 2 and result.totals["bytes_match_plan"] is True
    w1s = [m for m in ckpt.matrices if m.layer == 0 and m.role.value == "expert" and m.name.endswith(".w1.weight")]
    cal = calibrate(ckpt.path, w1s, text, windows=2)
    ref = next(m for m in w1s if cal.hessian(m) is not None)
    got = read_quantized_tensors(tmp_path / "q", [base_name(ref)])[base_name(ref)].unpack()
    want = quantize_gptq(
        ckpt.read_matrix(ref, dtype=torch.float32),
        cal.hessian(ref),
        QuantSpec((2, 3, 4)[int(ref.expert) % 3], 128),
        options,
    )
    assert torch.equal(got.q, want.q) and torch.equal(got.scale, want.scale) and torch.equal(got.zero, want.zero)


def test_gptq_needs_a_calibration_text_and_only_gptq_takes_one(tmp_path: Path) -> None:
    from alphaq.planning.planner import PlanConfig
    from alphaq.quantization.methods import quantize_dequantize
    from alphaq.zoo.demo import demo_model_path

    plan = _layer0_plan(open_checkpoint(demo_model_path()), tmp_path / "plan.json")
    result = runner.invoke(app, ["quantize", "--plan", str(plan), "--out", str(tmp_path / "q"), "--method", "gptq"])
    assert result.exit_code == 2
    assert "gptq is calibrated on text; pass --calibration-text FILE" in result.output
    assert not (tmp_path / "q").exists()
    with pytest.raises(ConfigError, match="used by --method gptq only"):
        qrun.run_quantize(None, plan, tmp_path / "q", method="rtn", calibration_text=tmp_path / "t.txt")
    with pytest.raises(ConfigError, match="gptq is calibrated on text"):
        PlanConfig(budget=3.0, quant_method="gptq")
    with pytest.raises(ConfigError, match="calibrated on text"):
        quantize_dequantize(torch.randn(4, 8), QuantSpec(4, 8), method="gptq")  # type: ignore[arg-type]
