"""``alphaq export --format compressed-tensors --granularity model`` on every MoE type of the installed transformers.

For each type, the tiny random model of :mod:`tests.load.test_architectures_all` (transformers' own class, 2 layers,
4 experts) is saved, planned at 4 bits (``alphaq plan``'s path), exported with one symmetric scheme for every routed
expert, and loaded with ``AutoModelForCausalLM.from_pretrained``. Its logits must equal, to float tolerance, those of
the source checkpoint with every exported matrix replaced by alphaq's own symmetric dequantization (so transformers
decodes exactly what alphaq wrote), and stay close to the simulated plan's
(:func:`alphaq.evaluation.simulate.apply_plan`, alphaq's asymmetric RTN at the same widths). A type that cannot load
is listed in :data:`NOT_LOADABLE` with its one-line reason, and the test asserts that the export refuses it with that
reason (and, for transformers' own limits, that the load really fails).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from alphaq.errors import CheckpointError, ConfigError
from alphaq.export import ct_format as ctf
from alphaq.export.compressed_tensors import export_compressed_tensors
from alphaq.export.ct_modules import model_width, plan_modules
from alphaq.load import Role, open_checkpoint
from alphaq.load.support import CT_CONV1D_REASON, CT_FUSED_REASON, CT_NOT_LOADABLE
from tests.fixtures.tiny_all import BUILT, tiny_config
from tests.fixtures.tiny_all import causal_lm_class as _torch_causal_lm

IDS = torch.tensor([[1, 5, 9, 20, 33, 7]])  # [1, 6]
FUSED_REASON = CT_FUSED_REASON
CONV1D_REASON = CT_CONV1D_REASON
#: Types whose compressed-tensors export does not load in transformers 5.25, with the reason (one line each; the
#: export's refusal contains FUSED_REASON or CONV1D_REASON).
NOT_LOADABLE = CT_NOT_LOADABLE


def _build(model_type: str, folder: Path) -> Any:
    """The tiny model of ``model_type`` (MLA attention made runnable: one kv head per head, qk = nope + rope; one
    zero expert for LongCat), saved to ``folder``; returned in eval mode, float32."""
    config = tiny_config(model_type)
    for cfg in {id(c): c for c in (config, getattr(config, "text_config", None)) if c is not None}.values():
        if getattr(cfg, "kv_lora_rank", None):
            cfg.num_key_value_heads = cfg.num_attention_heads
            if hasattr(cfg, "qk_head_dim"):
                cfg.qk_head_dim = cfg.qk_nope_head_dim + cfg.qk_rope_head_dim
        if getattr(cfg, "zero_expert_num", 0):  # LongCat: 256 identity experts would take every token from 4 real
            cfg.zero_expert_num = 1
    torch.manual_seed(0)
    model = _torch_causal_lm(model_type)(config).float().eval()
    model.save_pretrained(folder)
    return model


def _plan(src: Path, run: Path, widths: str = "4", budget: str = "4") -> Path:
    from alphaq.planning import PlanConfig
    from alphaq.planning.run import run_plan

    run_plan(src, PlanConfig(budget=budget, widths=widths, group_size=32, error_model="analytic"), run)
    return run / "plan.json"


def _exported_reference(src: Path, manifest: dict, out: Path) -> Path:
    """A copy of ``src`` whose exported matrices hold alphaq's symmetric dequantization of the manifest's widths."""
    from safetensors.torch import load_file, save_file

    from alphaq.quantization.layout import QuantSpec
    from alphaq.quantization.primitives import dequantize_groupwise

    shutil.copytree(src, out)
    by_tensor = {f"{m['module']}.weight": m for m in manifest["modules"]}
    for shard in out.glob("*.safetensors"):
        tensors = load_file(shard)
        for name, m in by_tensor.items():
            if name in tensors:
                w = tensors[name].to(torch.float32)  # [R, C]
                qt = ctf.symmetric_quantize(w, QuantSpec(m["bits"], m["group_size"]))
                tensors[name] = dequantize_groupwise(qt).to(tensors[name].dtype)
        save_file(tensors, shard, metadata={"format": "pt"})
    return out


def _expert_merges(model: Any) -> list[list[str]]:
    """The source patterns of transformers' conversions that merge per-expert ``.weight`` tensors of ``model``:
    where its compressed-tensors loader decompresses experts (``HfQuantizer.update_weight_conversions``)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter

    merges = []
    for converter in get_model_conversion_mapping(model):
        sources = list(getattr(converter, "_original_source_patterns", []) or [])
        if isinstance(converter, WeightConverter) and sources and all(s.endswith(".weight") for s in sources):
            if any("experts" in s for s in sources):
                merges.append(sources)
    return merges


def _logits(model: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS, use_cache=False).logits  # [1, 6, V]


def test_allow_list_is_one_line_each_and_covers_known_types() -> None:
    assert set(NOT_LOADABLE) <= set(BUILT), sorted(set(NOT_LOADABLE) - set(BUILT))
    assert all(reason.strip() and "\n" not in reason for reason in NOT_LOADABLE.values())
    assert len(BUILT) - len(NOT_LOADABLE) >= 45  # 47 of 69 in transformers 5.25


@pytest.mark.slow
@pytest.mark.parametrize("model_type", BUILT)
def test_model_granularity_export_loads_in_transformers(model_type: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from alphaq.evaluation.simulate import apply_plan
    from alphaq.planning.plan_file import load_plan

    src = tmp_path / "src"
    model = _build(model_type, src)
    ckpt = open_checkpoint(src)
    experts = [m for m in ckpt.matrices if m.role is Role.EXPERT]
    reason = NOT_LOADABLE.get(model_type, "")
    if reason.startswith("no expert matrices"):
        assert experts == []
        return
    if FUSED_REASON in reason:  # refused from the headers alone, before anything is read
        with pytest.raises(CheckpointError, match=re.escape(f": {ckpt.model_type} {FUSED_REASON}")):
            plan_modules(ckpt, {m.name: (4, 32) for m in experts}, "model")
        assert _expert_merges(model) == []  # the reason: no merge for the dequantizer to run in front of
        return

    plan = _plan(src, tmp_path / "run")
    if CONV1D_REASON in reason:
        with pytest.raises(CheckpointError, match=rf"^{model_type}: .*{CONV1D_REASON}"):
            export_compressed_tensors(plan, tmp_path / "ct", model=src, granularity="model")
        # the reason is real: the same scheme written with --granularity layer does not load
        result = export_compressed_tensors(plan, tmp_path / "ct", model=src, granularity="layer")
        assert result.manifest["engines"]["transformers"].startswith(f"no: {model_type}: ")
        with pytest.raises(RuntimeError, match="conversion"):
            AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32)
        return
    assert not reason, f"{model_type} is allow-listed but was not refused"

    assert _expert_merges(model), "a loadable type merges per-expert weights at load"
    result = export_compressed_tensors(plan, tmp_path / "ct", model=src, granularity="model")
    manifest = result.manifest
    assert manifest["engines"]["transformers"].startswith("yes"), manifest["engines"]
    exported = {m["source"] for m in manifest["modules"] if m["expert"] is not None}
    assert exported == {m.name for m in experts}
    assert {(m["bits"], m["symmetric"]) for m in manifest["modules"]} == {(4, True)}

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(
        _exported_reference(src, manifest, tmp_path / "reference"), dtype=torch.float32
    )
    ct, ref = _logits(loaded), _logits(reference)
    torch.testing.assert_close(ct, ref, rtol=1e-5, atol=1e-5)

    fp = _logits(model)
    apply_plan(model, load_plan(plan), method="rtn")
    sim = _logits(model)
    noise = float((sim - fp).abs().max())  # what alphaq's own 4-bit RTN moves the logits by
    assert 0 < noise and float((ct - sim).abs().max()) < 3 * noise + 1e-4


def test_mixed_plan_is_widened_to_one_scheme_and_loads(tmp_path: Path) -> None:
    """A plan mixing 2/4/8-bit experts: transformers decodes every fused expert with the first expert scheme, so
    ``model`` writes them all at the widest width, says so, and loads exactly."""
    from transformers import AutoModelForCausalLM

    src = tmp_path / "src"
    _build("qwen3_moe", src)
    plan = _plan(src, tmp_path / "run", widths="2,4,8", budget="5")
    result = export_compressed_tensors(plan, tmp_path / "ct", model=src, granularity="model")
    modules = result.manifest["modules"]
    assert len({m["planned_bits"] for m in modules}) > 1, "the plan should mix widths"
    assert {m["bits"] for m in modules} == {max(m["planned_bits"] for m in modules)}
    (warning,) = [w for w in result.manifest["warnings"] if "wider than planned" in w]
    assert "\n" not in warning
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(
        _exported_reference(src, result.manifest, tmp_path / "reference"), dtype=torch.float32
    )
    torch.testing.assert_close(_logits(loaded), _logits(reference), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [2, 3, 8])
def test_every_pack_quantized_width_loads(bits: int, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    src = tmp_path / "src"
    _build("mixtral", src)
    plan = _plan(src, tmp_path / "run", widths=str(bits), budget=str(bits))
    result = export_compressed_tensors(plan, tmp_path / "ct", model=src, granularity="model")
    assert {m["bits"] for m in result.manifest["modules"]} == {bits}
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ct", dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(
        _exported_reference(src, result.manifest, tmp_path / "reference"), dtype=torch.float32
    )
    torch.testing.assert_close(_logits(loaded), _logits(reference), rtol=1e-5, atol=1e-5)


def test_plans_transformers_cannot_decode_are_refused_in_one_line(tmp_path: Path) -> None:
    """Pure checks on the headers: experts partly kept at 16 bits, two expert group sizes, 1-bit symmetric."""
    src = tmp_path / "src"
    _build("olmoe", src)
    ckpt = open_checkpoint(src)
    experts = ckpt.experts()
    widths = {m.name: (4, 32) for m in experts}
    assert model_width(ckpt, widths) == 4
    assert model_width(ckpt, {m.name: (16, None) for m in experts}) is None
    cases = [
        ({**widths, experts[0].name: (16, None)}, r"keeps 1 routed expert matrices .* at 16 bits"),
        ({**widths, experts[0].name: (4, 64)}, r"group sizes 32, 64"),
        ({m.name: (1, 32) for m in experts}, r"symmetric scheme needs at least 2 bits"),
    ]
    for case, pattern in cases:
        with pytest.raises(ConfigError, match=pattern) as info:
            plan_modules(ckpt, case, "model")
        assert "\n" not in str(info.value)
