"""``load_quantized`` on every MoE ``model_type`` of the installed transformers: logits equal the simulated plan's.

For each type the tiny model of ``tests/load/test_architectures_all.py`` (transformers' own class, 2 layers,
4 experts) is saved, planned at 3 bits a weight (random widths per matrix, so gate/up/down of one expert differ),
quantized by ``alphaq quantize``'s Python API and loaded with :func:`alphaq.load_quantized`. Its logits must equal
those of the source model with the plan applied by simulation (:func:`alphaq.evaluation.simulate.apply_plan`:
the dequantized experts written back into the original class), and differ from the unquantized source's.
Types that cannot be served are listed with their one-line reason, and the test checks that they fail with it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from alphaq.errors import AlphaQError
from alphaq.load.support import NOT_SERVED
from tests.fixtures.tiny_all import BUILT, tiny_config
from tests.fixtures.tiny_all import causal_lm_class as _torch_causal_lm

#: Types that alphaq does not quantize or load, with the reason (one line, matched against the raised error).
NOT_LOADABLE = NOT_SERVED


def _fix_config(model_type: str, config: Any) -> Any:
    """Fixes the tiny configs of ``tests/load`` need to run a forward and survive a save/load round trip (issues of
    the shrunk defaults, not of alphaq): DBRX's ``clip_qkv=None`` makes its attention call ``clamp(None, None)``;
    MLA models (DeepSeek-V2/V3, GLM-4.7-Flash, LongCat...) need ``qk_head_dim = nope + rope`` and one KV head per
    head; Gemma 4's ``per_layer_config=None`` is not saved, and the reloaded config has 512-wide global heads
    (and 262144 per-layer embedding rows); LongCat-Flash's 256 zero-computation experts beside 4 real ones would take nearly every route."""
    if model_type == "dbrx":
        config.attn_config.clip_qkv = 8.0
    if hasattr(config, "qk_rope_head_dim") and hasattr(config, "qk_nope_head_dim"):
        config.qk_head_dim = config.qk_rope_head_dim + config.qk_nope_head_dim
        config.num_key_value_heads = config.num_attention_heads
    if getattr(config, "zero_expert_num", None):
        config.zero_expert_num = 2
    if model_type == "gemma4_text":
        skip = ("per_layer_config", "model_type", "transformers_version")
        fields = {k: v for k, v in config.to_dict().items() if k not in skip}
        fields["vocab_size_per_layer_input"] = 256  # 262144 per-layer embedding rows: seconds to save and load
        config = type(config)(**fields, global_head_dim=16)
    return config


def _tiny(model_type: str, folder: Path) -> Path:
    from alphaq.zoo.demo import demo_model_path

    config = _fix_config(model_type, tiny_config(model_type))
    torch.manual_seed(0)
    _torch_causal_lm(model_type)(config).float().eval().save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # load_quantized returns a tokenizer too
        shutil.copy(demo_model_path() / name, folder / name)
    return folder


def _pipeline(model_type: str, tmp: Path) -> tuple[Any, Path]:
    from alphaq.planning.config import PlanConfig
    from alphaq.planning.run import run_plan
    from alphaq.quantization.run import run_quantize

    src = _tiny(model_type, tmp / "src")
    config = PlanConfig(
        budget="3", granularity="matrix", allocator="random", seed=1, error_model="analytic", sweep_allocators=()
    )
    planned = run_plan(src, config, tmp / "run")
    run_quantize(src, tmp / "run" / "plan.json", tmp / "q")
    return planned.plan, src


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits.float()  # [B, T, V]


LOADABLE = [t for t in BUILT if t not in NOT_LOADABLE]

#: Types whose experts class has a forward of its own (not ``@use_experts_implementation``'s): they keep it, and
#: their fused expert tensors are filled from the packed experts while their block runs.
FILLED_WHILE_RUNNING = {"dbrx", "jetmoe", "llama4", "llama4_text", "ergo"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these matrices are 64 x 64, and on a shared machine intra-op threads only wait on each
    other (the file runs about 2x faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_not_loadable_list_is_current() -> None:
    assert set(NOT_LOADABLE) <= set(BUILT), "stale NOT_LOADABLE entry"
    assert all(reason and "\n" not in reason for reason in NOT_LOADABLE.values())
    assert len(LOADABLE) >= 60


@pytest.mark.parametrize("model_type", LOADABLE)
def test_load_quantized_logits_equal_simulated_plan(model_type: str, tmp_path: Path) -> None:
    from alphaq.evaluation.simulate import apply_plan
    from alphaq.load.model import load_model
    from alphaq.quantization.loading import load_quantized
    from alphaq.quantization.modules import PackedExpertWeights, QuantizedExperts, QuantLinear

    plan, src = _pipeline(model_type, tmp_path)
    quantized, _ = load_quantized(tmp_path / "q")
    assert any(isinstance(m, QuantLinear) for m in quantized.modules())
    kind = PackedExpertWeights if model_type in FILLED_WHILE_RUNNING else QuantizedExperts
    assert sum(isinstance(m, kind) for m in quantized.modules()) >= 1
    assert not any(p.device.type == "meta" for p in quantized.parameters())
    reference, _ = load_model(src)
    ids = torch.randint(3, 200, (1, 6), generator=torch.Generator().manual_seed(0))  # [1, 6]
    source = _logits(reference, ids)
    result = apply_plan(reference, plan)
    assert result.checks, "the plan quantizes nothing"
    simulated, got = _logits(reference, ids), _logits(quantized, ids)
    scale = float(simulated.abs().max())
    torch.testing.assert_close(got, simulated, rtol=1e-4, atol=1e-4 * scale)
    assert not torch.allclose(source, simulated, rtol=1e-6, atol=1e-6 * scale)  # the plan changed the model


@pytest.mark.parametrize("model_type", sorted(NOT_LOADABLE))
def test_not_loadable_types_fail_in_one_line(model_type: str, tmp_path: Path) -> None:
    from alphaq.quantization.loading import load_quantized

    with pytest.raises(AlphaQError) as info:
        _pipeline(model_type, tmp_path)
        load_quantized(tmp_path / "q")
    message = str(info.value)
    assert NOT_LOADABLE[model_type] in message and "\n" not in message


@pytest.mark.parametrize("split", ["halves", "interleaved"])
@pytest.mark.parametrize("orientation", ["out_in", "in_out"])
def test_slot_view_is_the_matrix_the_checkpoint_reader_reads(split: str, orientation: str) -> None:
    """The slice load_quantized and simulate write is the matrix alphaq's reader reads from the same tensor."""
    from alphaq.load.weights import fused_expert_slice
    from alphaq.quantization.expert_map import ExpertSlot, slot_view

    fused = torch.randn(3, 8, 6) if orientation == "out_in" else torch.randn(3, 6, 8)  # [E, 2I, H] / [E, H, 2I]
    for e in range(3):
        for part in ("gate", "up"):
            slot = ExpertSlot("m", "w", e, part, orientation == "in_out", split == "interleaved")
            view = slot_view(fused, slot)  # [I, H]
            assert torch.equal(view, fused_expert_slice(fused[e], part, split, orientation))
            view.add_(1.0)  # a view, not a copy
    stacked = torch.randn(3 * 4, 6)  # DBRX: [E * I, H]
    slot = ExpertSlot("m", "w2", 1, "", transposed=True, stacked=3)
    assert torch.equal(slot_view(stacked, slot), stacked[4:8].T)
