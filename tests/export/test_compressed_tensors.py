"""alphaq export --format compressed-tensors: the format mapping by hand, round trips through the real
compressed-tensors and transformers on tiny Mixtral / Qwen2-MoE checkpoints and the bundled model, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from alphaq.cli import app
from alphaq.errors import CheckpointError, ConfigError, PlanError
from alphaq.export import ct_format as ctf
from alphaq.export.compressed_tensors import MANIFEST_FILE, dequantize_compressed_tensors, export_compressed_tensors
from alphaq.quantization.layout import QuantSpec
from alphaq.quantization.primitives import dequantize_groupwise, quantize_groupwise

DEMO = Path(__file__).resolve().parents[2] / "alphaq" / "data" / "demo-moe"
IDS = torch.tensor([[1, 5, 9, 20, 33, 7, 40, 41, 2, 60, 11, 3]])  # [1, 12], inside the tiny vocab (96)
TEXT = (
    "The river ran past the old mill, and the miller's sons watched the water rise. "
    "Nobody in the village remembered a flood like it. "
) * 40


# -- the mapping, by hand ---------------------------------------------------------------------------


def test_integer_zero_point_rounds_the_zero_and_rechooses_the_codes() -> None:
    # range [-0.4, 2.6] at 2 bits: scale 3/3 = 1 (exact), zero 0.4 -> float16 0.39990..., rounded to 0
    w = torch.tensor([[-0.4, 0.0, 0.6, 1.0, 2.6, 2.2, 1.4, 0.2]])
    native = quantize_groupwise(w, QuantSpec(2, 8))
    assert float(native.scale[0, 0]) == 1.0
    assert float(native.zero[0, 0]) == pytest.approx(0.4, abs=1e-3)
    qt = ctf.integer_zero_point(w, native)
    assert float(qt.zero[0, 0]) == 0.0
    assert qt.q.tolist() == [[0, 0, 1, 1, 3, 2, 1, 0]]  # round(w / 1 + 0), clamped to 0..3
    assert dequantize_groupwise(qt).tolist() == [[0.0, 0.0, 1.0, 1.0, 3.0, 2.0, 1.0, 0.0]]


def test_symmetric_quantize_by_hand() -> None:
    # 4 bits: codes -8..7; need max(4 / 8, 3.5 / 7) = 0.5 -> k = w / 0.5
    w = torch.tensor([[-4.0, -2.0, 0.0, 1.0, 3.5, -1.0, 0.5, 2.0]])
    qt = ctf.symmetric_quantize(w, QuantSpec(4, 8))
    assert float(qt.scale[0, 0]) == 0.5
    assert (qt.q.to(torch.int64) - 8).tolist() == [[-8, -4, 0, 2, 7, -2, 1, 4]]
    assert torch.equal(dequantize_groupwise(qt), w)


@pytest.mark.parametrize(("bits", "symmetric"), [(2, False), (3, False), (4, False), (8, False), (4, True), (8, True)])
def test_compress_matrix_packs_the_codes_compressed_tensors_reads(bits: int, symmetric: bool) -> None:
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

    torch.manual_seed(bits)
    w = torch.randn(24, 64)
    spec = QuantSpec(bits, 32)
    qt = ctf.symmetric_quantize(w, spec) if symmetric else ctf.integer_zero_point(w, quantize_groupwise(w, spec))
    module = ctf.CtModule("m", "m", bits, 32, symmetric, 24, 64, 0, 0, bits)
    state = ctf.compress_matrix(qt, module)
    assert {f"m.{k}": (str(v.dtype), tuple(v.shape)) for k, v in state.items()} == {
        name: ({"I32": "torch.int32", "F32": "torch.float32", "I64": "torch.int64"}[dt], shape)
        for name, dt, shape in module.tensor_specs()
    }
    half = 1 << (bits - 1)
    codes = unpack_from_int32(state["weight_packed"], bits, torch.Size([24, 64]))
    assert torch.equal(codes.to(torch.int64), qt.q.to(torch.int64) - half)
    assert state["weight_shape"].tolist() == [24, 64]
    assert torch.equal(state["weight_scale"], qt.scale.to(torch.float32))
    if not symmetric:
        zp = unpack_from_int32(state["weight_zero_point"], bits, torch.Size([24, 2]), packed_dim=0)
        assert torch.equal(zp.to(torch.float32), qt.zero.to(torch.float32) - half)


def test_module_refuses_partial_groups_and_one_bit_symmetric() -> None:
    with pytest.raises(ConfigError, match="not a multiple of group size 128.*--group-size"):
        ctf.CtModule("m", "m", 4, 128, False, 8, 96, 0, 0, 4)
    with pytest.raises(ConfigError, match="symmetric scheme needs at least 2 bits"):
        ctf.CtModule("m", "m", 1, 32, True, 8, 64, 0, 0, 1)


# -- round trips on tiny checkpoints written by transformers ----------------------------------------


def _tiny(tiny_checkpoints: dict[str, Path], model_type: str, tmp: Path) -> Path:
    """A copy of the session's tiny checkpoint with the demo tokenizer (load_quantized needs one)."""
    src = tmp / f"{model_type}-src"
    shutil.copytree(tiny_checkpoints[model_type], src)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO / name, src / name)
    return src


def _plan(model: Path, run: Path, **config: object) -> Path:
    from alphaq.planning import PlanConfig
    from alphaq.planning.run import run_plan

    run_plan(model, PlanConfig(group_size=32, **config), run)  # type: ignore[arg-type]
    return run / "plan.json"


def _expected_weights(model: Path, manifest: dict) -> dict[str, torch.Tensor]:
    """Module -> alphaq's own dequantization of what the export must hold (rtn, integer zeros / symmetric)."""
    from alphaq.load import open_checkpoint
    from alphaq.quantization.compute import quantize_rows

    ckpt = open_checkpoint(model)
    refs = {m.name: m for m in ckpt.matrices}
    out = {}
    for m in manifest["modules"]:
        w = ckpt.read_matrix(refs[m["source"]], dtype=torch.float32)
        spec = QuantSpec(m["bits"], m["group_size"])
        qt = (
            ctf.symmetric_quantize(w, spec)
            if m["symmetric"]
            else ctf.integer_zero_point(w, quantize_rows(w, spec, "rtn"))
        )
        out[m["module"]] = dequantize_groupwise(qt)
    return out


def _dense_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}


@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe"])
def test_round_trip_per_expert_plan(tiny_checkpoints: dict[str, Path], tmp_path: Path, model_type: str) -> None:
    from transformers import AutoModelForCausalLM

    from alphaq.quantization.loading import load_quantized
    from alphaq.quantization.run import run_quantize

    src = _tiny(tiny_checkpoints, model_type, tmp_path)
    plan = _plan(src, tmp_path / "run", budget="5", widths="2,4,8", granularity="matrix")
    result = export_compressed_tensors(plan, tmp_path / "ct", model=src)
    bits = {m["bits"] for m in result.manifest["modules"]}
    assert len(bits) > 1, "the plan should mix widths"
    config = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    by_bits = {g["weights"]["num_bits"]: g for g in config["config_groups"].values()}
    assert set(by_bits) == bits
    for m in result.manifest["modules"]:
        assert m["module"] in by_bits[m["bits"]]["targets"]
        assert by_bits[m["bits"]]["weights"]["symmetric"] is False
    assert result.manifest["plan"]["fingerprint"] and result.manifest["checkpoint"]["fingerprint"]
    assert result.manifest["engines"]["vllm"].startswith("no:")

    # compressed-tensors' own dequantizer decodes every module to exactly alphaq's values
    dequantize_compressed_tensors(tmp_path / "ct", tmp_path / "dense")
    dense = _dense_weights(tmp_path / "dense")
    for module, expected in _expected_weights(src, result.manifest).items():
        assert torch.equal(dense[f"{module}.weight"], expected), module
    # ... and transformers runs it: logits close to the alphaq-loaded checkpoint of the same plan (float zeros)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", dtype=torch.float32)
    run_quantize(src, plan, tmp_path / "alphaq")
    alphaq_model, _ = load_quantized(tmp_path / "alphaq")
    original = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    with torch.no_grad():
        ct, aq, fp = model(IDS).logits, alphaq_model(IDS).logits, original(IDS).logits  # [1, 12, V]
    gap = float((ct - aq).abs().max())
    assert gap < 0.05 and gap < 3 * float((aq - fp).abs().max())
    # transformers 5 cannot decode per-expert zero points itself: it fails loudly (not silently wrong)
    with pytest.raises(RuntimeError, match="conversion"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32)


def test_layer_granularity_loads_directly_in_transformers(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    src = _tiny(tiny_checkpoints, "mixtral", tmp_path)
    plan = _plan(src, tmp_path / "run", budget="4", widths="4", granularity="layer")
    result = export_compressed_tensors(plan, tmp_path / "ct", model=src, granularity="layer")
    config = json.loads((tmp_path / "ct" / "config.json").read_text())["quantization_config"]
    (group,) = config["config_groups"].values()
    assert group["weights"]["num_bits"] == 4 and group["weights"]["symmetric"] is True
    assert group["targets"][0] == (
        r"re:^model\.layers\.0\.block_sparse_moe\.experts\.\d+\."
        r"(w1|w2|w3|gate_proj|up_proj|down_proj)$"
    )
    assert result.manifest["engines"]["vllm"].startswith("yes")
    assert result.manifest["engines"]["transformers"].startswith("yes")
    direct = AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32)
    expected = _expected_weights(src, result.manifest)
    experts = direct.model.layers[0].mlp.experts
    inter = experts.down_proj.shape[-1]
    assert torch.equal(experts.gate_up_proj[1][:inter], expected["model.layers.0.block_sparse_moe.experts.1.w1"])
    assert torch.equal(experts.down_proj[1], expected["model.layers.0.block_sparse_moe.experts.1.w2"])
    dequantize_compressed_tensors(tmp_path / "ct", tmp_path / "dense")
    dense = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(direct(IDS).logits, dense(IDS).logits)


# -- the bundled model ------------------------------------------------------------------------------


def test_bundled_model_export_matches_alphaq(demo_run: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alphaq.evaluation.perplexity import perplexity
    from alphaq.load.model import tokenize_text
    from alphaq.quantization.loading import load_quantized

    out = tmp_path / "ct"
    result = CliRunner().invoke(
        app, ["export", str(demo_run / "plan.json"), "--format", "compressed-tensors", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "wrote a compressed-tensors checkpoint" in result.output and "vllm: no:" in result.output
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["schema_version"] == 1 and manifest["totals"]["quantized_modules"] == 96
    dequantize_compressed_tensors(out, tmp_path / "dense")
    dense = _dense_weights(tmp_path / "dense")
    for module, expected in _expected_weights(DEMO, manifest).items():
        assert torch.equal(dense[f"{module}.weight"], expected), module
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", dtype=torch.float32)
    alphaq_model, tokenizer = load_quantized(demo_run / "quantized")
    assert isinstance(AutoTokenizer.from_pretrained(out), type(tokenizer))
    ids = torch.tensor(tokenize_text(tokenizer, TEXT))
    ppl_ct = perplexity(model, ids, 256, max_windows=4).ppl
    ppl_aq = perplexity(alphaq_model, ids, 256, max_windows=4).ppl
    assert abs(ppl_ct - ppl_aq) / ppl_aq < 0.05  # integer zero points move perplexity by a few % (4 windows)

    # alphaq's own checkpoint of the same plan with integer zero points holds exactly the exported values
    from alphaq.quantization.shards import read_quantized_tensors

    q_int = tmp_path / "q-int"
    quantized = CliRunner().invoke(
        app,
        [
            "quantize",
            "--plan",
            str(demo_run / "plan.json"),
            "--out",
            str(q_int),
            "--zero-points",
            "integer",
            "--no-html",
        ],
    )
    assert quantized.exit_code == 0, quantized.output
    assert json.loads((q_int / "quantize.json").read_text())["options"]["zero_points"] == "integer"
    packed = read_quantized_tensors(q_int)
    assert len(packed) == 96
    for base, tensor in packed.items():
        assert torch.equal(tensor.dequantize(torch.float32), dense[f"{base}.weight"].float()), base


# -- bad input --------------------------------------------------------------------------------------


def _invoke(plan: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["export", str(plan), "--format", "compressed-tensors", "--out", str(out), *extra])
    return result.exit_code, result.output


def _assert_refused(code: int, output: str, out: Path, pattern: str) -> None:
    import re

    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_plan_for_another_checkpoint_is_refused(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tiny_checkpoints["mixtral"], tmp_path / "run", budget="4", widths="4,8")
    code, output = _invoke(plan, tmp_path / "ct", "--model", str(tiny_checkpoints["qwen2_moe"]))
    _assert_refused(code, output, tmp_path / "ct", "made for another checkpoint")
    with pytest.raises(PlanError):
        export_compressed_tensors(plan, tmp_path / "ct", model=tiny_checkpoints["qwen2_moe"])


def test_recorded_checkpoint_is_found_from_any_folder_and_a_missing_one_asks_for_model(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """plan.json records the checkpoint relative to its folder: export finds it from any working directory, and
    one that moved away is refused with --model in the message (not the bundled demo's fingerprint mismatch)."""
    src = tmp_path / "models" / "tiny"
    shutil.copytree(tiny_checkpoints["mixtral"], src)
    monkeypatch.chdir(tmp_path)
    plan = tmp_path / _plan(Path("models/tiny"), Path("runs/a"), budget="4", widths="4,8")  # relative paths
    assert json.loads(plan.read_text())["provenance"]["checkpoint"]["path"] == "../../models/tiny"
    monkeypatch.chdir(tmp_path / "runs")
    code, output = _invoke(plan, tmp_path / "ct")
    assert code == 0, output
    shutil.move(str(src), str(tmp_path / "models" / "moved"))
    code, output = _invoke(plan, tmp_path / "ct2")
    _assert_refused(code, output, tmp_path / "ct2", r"not found .*; pass --model")


def test_widths_vllm_cannot_serve_are_refused(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tiny_checkpoints["mixtral"], tmp_path / "run", budget="3", widths="3")
    code, output = _invoke(plan, tmp_path / "ct", "--model", str(tiny_checkpoints["mixtral"]), "--granularity", "layer")
    _assert_refused(code, output, tmp_path / "ct", r"layer 0's widest expert width is 3 bits.*--widths 4,8")


def test_group_size_that_leaves_partial_groups_is_refused(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    from alphaq.planning import PlanConfig
    from alphaq.planning.run import run_plan

    run_plan(tiny_checkpoints["mixtral"], PlanConfig(budget="4", widths="4", group_size=128), tmp_path / "run")
    code, output = _invoke(tmp_path / "run" / "plan.json", tmp_path / "ct", "--model", str(tiny_checkpoints["mixtral"]))
    _assert_refused(code, output, tmp_path / "ct", r"not a multiple of group size 128.*--group-size")


def test_fused_expert_layout_is_refused(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """transformers 5's in-memory layout (all experts of a layer in one 3-D tensor) has no per-expert module."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    fused = tmp_path / "fused"
    fused.mkdir()
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoints["mixtral"])
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        fused / "model.safetensors",
        metadata={"format": "pt"},
    )
    shutil.copy(tiny_checkpoints["mixtral"] / "config.json", fused / "config.json")
    plan = _plan(fused, tmp_path / "run", budget="4", widths="4")
    code, output = _invoke(plan, tmp_path / "ct", "--model", str(fused))
    _assert_refused(code, output, tmp_path / "ct", r"experts\.(gate_up|down)_proj: mixtral stores all experts .*fused")
    with pytest.raises(CheckpointError, match="fused layout"):
        export_compressed_tensors(plan, tmp_path / "ct", model=fused)


def test_fused_architecture_and_existing_out_are_refused(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    plan = _plan(tiny_checkpoints["gpt_oss"], tmp_path / "run", budget="4", widths="4")
    code, output = _invoke(plan, tmp_path / "ct", "--model", str(tiny_checkpoints["gpt_oss"]))
    _assert_refused(code, output, tmp_path / "ct", r"gpt_oss stores all experts of a layer in one tensor")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("x")
    mixtral_plan = _plan(tiny_checkpoints["mixtral"], tmp_path / "run2", budget="4", widths="4")
    code, output = _invoke(mixtral_plan, occupied, "--model", str(tiny_checkpoints["mixtral"]))
    assert code == 2 and "not an empty folder" in output
    assert sorted(p.name for p in occupied.iterdir()) == ["keep.txt"]


def test_cli_model_granularity_loads_directly_and_refuses_in_one_line(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """``--granularity model``: the loadable export (one symmetric scheme for every routed expert, widened from a
    mixed plan with a warning); a layout transformers cannot load is one error line."""
    from transformers import AutoModelForCausalLM

    src = _tiny(tiny_checkpoints, "qwen2_moe", tmp_path)
    plan = _plan(src, tmp_path / "run", budget="5", widths="2,4,8")
    code, output = _invoke(plan, tmp_path / "ct", "--model", str(src), "--granularity", "model")
    assert code == 0, output
    assert "transformers: yes: AutoModelForCausalLM.from_pretrained" in output
    assert "warning: " in output and "wider than planned" in output
    manifest = json.loads((tmp_path / "ct" / MANIFEST_FILE).read_text())
    assert manifest["options"]["granularity"] == "model"
    widest = max(m["planned_bits"] for m in manifest["modules"])
    assert {(m["bits"], m["symmetric"]) for m in manifest["modules"] if m["expert"] is not None} == {(widest, True)}
    direct = AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32)
    dequantize_compressed_tensors(tmp_path / "ct", tmp_path / "dense")
    dense = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(direct(IDS).logits, dense(IDS).logits, rtol=1e-5, atol=1e-5)

    code, output = _invoke(plan, tmp_path / "ct-hqq", "--model", str(src), "--granularity", "model", "--method", "hqq")
    _assert_refused(code, output, tmp_path / "ct-hqq", r"--method hqq applies to --granularity expert only")
    fused = _plan(tiny_checkpoints["gpt_oss"], tmp_path / "run-oss", budget="4", widths="4")
    code, output = _invoke(
        fused, tmp_path / "ct-oss", "--model", str(tiny_checkpoints["gpt_oss"]), "--granularity", "model"
    )
    _assert_refused(code, output, tmp_path / "ct-oss", r"gpt_oss stores all experts .*no compressed-tensors checkpoint")
